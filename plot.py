"""Draw the training curves of a train.py run: its --save_path/log.csv becomes --save_path/curves.png.

Four panels (generator L1 loss, generator adversarial loss, discriminator loss, discriminator
accuracy), each with the training and the validation value of every epoch. train.py calls
`draw_curves` after each epoch; run it by hand on a finished or running training folder.
"""
import csv
import io
import os
import sys

import utils
from utils import UserError

PANELS = (('g_l1', 'generator L1 loss'), ('g_adv', 'generator adversarial loss'),
          ('d_loss', 'discriminator loss'), ('d_acc', 'discriminator accuracy'))
PHASES = (('train', 'tab:blue'), ('val', 'tab:orange'))


def parse_args(argv=None):
    p = utils.OneLineArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--save_path', default='./checkpoints',
                   help="train.py's --save_path: reads log.csv there, writes curves.png there (default: ./checkpoints)")
    return p.parse_args(argv)


def read_log(log_path):
    """{phase: {epoch: {column: value}}} from train.py's log.csv. A row repeated for an epoch (a
    run resumed from an earlier checkpoint, or one stopped inside an epoch) counts as of its last
    line; a line torn by a crash while it was written is skipped."""
    try:
        with open(log_path, newline='') as f:
            reader = csv.DictReader(f)
            needed = ('epoch', 'phase') + tuple(key for key, _ in PANELS)
            missing = [c for c in needed if c not in (reader.fieldnames or [])]
            if reader.fieldnames and missing:
                raise UserError(f"{log_path} is not a train.py log: it has no column {', '.join(missing)}")
            rows = list(reader)
    except FileNotFoundError:
        raise UserError(f"{log_path} does not exist: point --save_path at the folder train.py writes log.csv to")
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{log_path} cannot be read ({getattr(e, 'strerror', None) or e})")
    log = {phase: {} for phase, _ in PHASES}
    for row in rows:
        try:
            values = {key: float(row[key]) for key, _ in PANELS}
            epoch = int(row['epoch'])
        except (TypeError, ValueError):
            continue
        if row['phase'] in log:
            log[row['phase']][epoch] = values
    if not any(log.values()):
        raise UserError(f"{log_path} holds no epoch yet: train.py adds its rows at the end of each epoch")
    return log


def draw_curves(save_path):
    """Draw save_path/log.csv into save_path/curves.png (written atomically); returns its path.
    Raises UserError if the log is missing, empty or not train.py's."""
    # Imported here so that train.py and the tests pay for matplotlib only when they draw. The
    # figure is built without pyplot, on an Agg canvas: no GUI backend, no global figure registry
    # to leak into over hundreds of epochs, and no change to the backend of whoever calls this.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    log = read_log(os.path.join(save_path, 'log.csv'))
    all_epochs = {e for phase in log.values() for e in phase}
    fig = Figure(figsize=(10, 7), dpi=100, layout='constrained')
    FigureCanvasAgg(fig)
    for ax, (key, title) in zip(fig.subplots(2, 2).flat, PANELS):
        for phase, color in PHASES:
            epochs = sorted(log[phase])
            if epochs:  # markers, so that a single epoch shows as a point
                ax.plot(epochs, [log[phase][e][key] for e in epochs], marker='o', markersize=4, color=color,
                        label=phase)
        ax.set_title(title)
        ax.set_xlabel('epoch')
        if len(all_epochs) == 1:
            ax.set_xticks(sorted(all_epochs))  # else the locator labels a tiny range with fractions
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"training curves: {os.path.join(save_path, 'log.csv')}")
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png')
    path = os.path.join(save_path, 'curves.png')
    try:
        utils.atomic_write(path, lambda f: f.write(buffer.getvalue()))
    except OSError as e:
        raise UserError(f"could not write {path} ({e.strerror or e}): check that the folder is writable")
    return path


def main(argv=None):
    args = parse_args(argv)
    print(f"wrote {draw_curves(args.save_path)}")
    return 0


if __name__ == '__main__':
    sys.exit(utils.run_cli(main))
