"""Draw the training curves of one or several train.py runs on one chart.

Six panels. Against the step: generator L1 loss, generator adversarial loss, discriminator loss
and discriminator accuracy, from the training losses train.py averages every --log_steps steps
(steps.csv; a log without it shows its per-epoch training rows), with the validation value of each
epoch as dots. Against the epoch: the validation mean |ab error| (the generator's L1 on the test
images) and the colorfulness of the recolored test images. train.py draws --save_path/curves.png
of its own run after each epoch; run this by hand on running or finished runs to compare them.
"""
import csv
import io
import os
import sys

import utils
from cli import OneLineArgumentParser, UserError, run_cli

STEP_PANELS = (('g_l1', 'generator L1 loss'), ('g_adv', 'generator adversarial loss'),
               ('d_loss', 'discriminator loss'), ('d_acc', 'discriminator accuracy'))
EPOCH_PANELS = (('g_l1', 'validation mean |ab error|'), ('colorfulness', 'validation colorfulness'))
COLORS = ('tab:blue', 'tab:orange', 'tab:green', 'tab:red', 'tab:purple', 'tab:brown', 'tab:pink', 'tab:gray')


def parse_args(argv=None):
    p = OneLineArgumentParser(prog='plot.py', description=__doc__.split('\n\n')[0])
    p.add_argument('--save_path', nargs='+', default=['./checkpoints'], metavar='RUN',
                   help="train.py's --save_path of each run: reads log.csv (and steps.csv) there (default: ./checkpoints)")
    p.add_argument('--labels', nargs='+', metavar='LABEL',
                   help='a name per run for the legend (default: the folder names)')
    p.add_argument('--out', help='the picture to write (default: RUN/curves.png for one run; '
                                 'curves_LABEL1_LABEL2.png in the current folder for several)')
    args = p.parse_args(argv)
    if args.labels and len(args.labels) != len(args.save_path):
        p.error(f"--labels gives {len(args.labels)} names for {len(args.save_path)} runs: give one per --save_path")
    return args


def _read_rows(path, needed, what):
    """The rows of a CSV file that has the columns `needed`; [] if the file is absent and `what`
    is None (an optional file)."""
    try:
        with open(path, newline='') as f:
            reader = csv.DictReader(f)
            missing = [c for c in needed if c not in (reader.fieldnames or [])]
            if reader.fieldnames and missing:
                raise UserError(f"{path} is not {what or 'a train.py log'}: it has no column {', '.join(missing)}")
            return list(reader)
    except FileNotFoundError:
        if what is None:
            return []
        raise UserError(f"{path} does not exist: point --save_path at the folder train.py writes log.csv to")
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{path} cannot be read ({getattr(e, 'strerror', None) or e})")


def _numbers(row, keys):
    """{key: float} of a row; a missing or empty value (an older log's column, or a line torn by
    a crash while it was written) is left out, and a value that is not a number gives None."""
    try:
        return {k: float(row[k]) for k in keys if row.get(k) not in (None, '')}
    except (TypeError, ValueError):
        return None


def read_log(log_path):
    """{phase: {epoch: {column: value}}} from train.py's log.csv. A row repeated for an epoch (a
    run resumed from an earlier checkpoint, or one stopped inside an epoch) counts as of its last
    line; a line torn by a crash while it was written is skipped."""
    keys = ('step',) + tuple(k for k, _ in STEP_PANELS)
    rows = _read_rows(log_path, ('epoch', 'phase') + keys, what='a train.py log')
    log = {'train': {}, 'val': {}}
    for row in rows:
        values = _numbers(row, keys + ('colorfulness',))
        if values is None or not all(k in values for k in keys) or row.get('phase') not in log:
            continue
        try:
            log[row['phase']][int(row['epoch'])] = values
        except ValueError:
            continue
    if not any(log.values()):
        raise UserError(f"{log_path} holds no epoch yet: train.py adds its rows at the end of each epoch")
    return log


def read_steps(steps_path):
    """{step: {column: value}} from train.py's steps.csv, or {} where the run has none."""
    keys = ('step',) + tuple(k for k, _ in STEP_PANELS)
    steps = {}
    for row in _read_rows(steps_path, keys, what=None):
        values = _numbers(row, keys)
        if values is not None and all(k in values for k in keys):
            steps[int(values['step'])] = values
    return steps


def draw_runs(save_paths, labels, out):
    """Draw the runs in `save_paths` (named `labels`) into the picture `out` (written atomically);
    returns `out`. Raises UserError if a log is missing, empty or not train.py's."""
    # Imported here so that train.py and the tests pay for matplotlib only when they draw. The
    # figure is built without pyplot, on an Agg canvas: no GUI backend, no global figure registry
    # to leak into over hundreds of epochs, and no change to the backend of whoever calls this.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    runs = [(read_log(os.path.join(p, 'log.csv')), read_steps(os.path.join(p, 'steps.csv'))) for p in save_paths]
    fig = Figure(figsize=(11, 10), dpi=100)  # fixed margins: a constrained layout costs a second per drawing
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.05, top=0.92, wspace=0.18, hspace=0.34)
    FigureCanvasAgg(fig)
    axes = list(fig.subplots(3, 2).flat)
    for ax, (key, title) in zip(axes[:4], STEP_PANELS):
        for (log, steps), label, color in zip(runs, labels, COLORS * len(runs)):
            if steps:
                xs = sorted(steps)
                ax.plot(xs, [steps[s][key] for s in xs], color=color, linewidth=1, label=f'{label} training')
            else:  # a log from before steps.csv: the training mean of each epoch
                rows = [log['train'][e] for e in sorted(log['train'])]
                ax.plot([r['step'] for r in rows], [r[key] for r in rows], color=color, marker='.',
                        label=f'{label} training (epoch means)')
            rows = [log['val'][e] for e in sorted(log['val'])]
            if rows:
                ax.plot([r['step'] for r in rows], [r[key] for r in rows], color=color, linestyle='none',
                        marker='o', markersize=6, markeredgecolor='black', label=f'{label} validation')
        ax.set_title(title)
        ax.set_xlabel('step')
    for ax, (key, title) in zip(axes[4:], EPOCH_PANELS):
        epochs_drawn = set()
        for (log, _), label, color in zip(runs, labels, COLORS * len(runs)):
            epochs = [e for e in sorted(log['val']) if key in log['val'][e]]
            if epochs:  # markers, so that a single epoch shows as a point
                ax.plot(epochs, [log['val'][e][key] for e in epochs], color=color, marker='o', markersize=5,
                        label=label)
                epochs_drawn.update(epochs)
        if not epochs_drawn:
            ax.text(0.5, 0.5, 'not in these logs', ha='center', va='center', transform=ax.transAxes)
        elif len(epochs_drawn) == 1:
            ax.set_xticks(sorted(epochs_drawn))  # else the locator labels a tiny range with fractions
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        ax.set_xlabel('epoch')
    for ax in fig.axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle('training curves: ' + ', '.join(f'{label} ({p})' for p, label in zip(save_paths, labels)))
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png')
    try:
        utils.atomic_write(out, lambda f: f.write(buffer.getvalue()))
    except OSError as e:
        raise UserError(f"could not write {out} ({e.strerror or e}): check that the folder is writable")
    return out


def draw_curves(save_path):
    """One run's chart, into save_path/curves.png (what train.py draws after each epoch)."""
    return draw_runs([save_path], [os.path.basename(os.path.normpath(save_path))],
                     os.path.join(save_path, 'curves.png'))


def main(argv=None):
    args = parse_args(argv)
    labels = args.labels or [os.path.basename(os.path.normpath(p)) for p in args.save_path]
    if args.out:
        out = args.out
    elif len(args.save_path) == 1:
        out = os.path.join(args.save_path[0], 'curves.png')
    else:
        out = 'curves_' + '_'.join(''.join(c if c.isalnum() or c in '-.' else '-' for c in label)
                                   for label in labels) + '.png'
    print(f"wrote {draw_runs(args.save_path, labels, out)}")
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
