"""Training curves: reading train.py's logs and drawing one or several runs on one chart (what
train.py draws after each epoch and plot.py draws by hand).

Ten panels. Against the step: generator L1 loss, generator adversarial loss, discriminator loss
and discriminator accuracy, from the training losses train.py averages every --log_steps steps
(steps.csv; a log without it shows its per-epoch training rows), with the validation value of each
epoch as dots. Against the epoch, on the test images: the validation mean |ab error| (the
generator's L1), the colourfulness of the recolored images and its gap to the truth's (DeltaCF),
the scoring classifier's semantic accuracy and its feature distance (classifier FD).
"""
import csv
import io
import os

import utils
from core.cli import UserError

STEP_PANELS = (('g_l1', 'generator L1 loss'), ('g_adv', 'generator adversarial loss'),
               ('d_loss', 'discriminator loss'), ('d_acc', 'discriminator accuracy'))
EPOCH_PANELS = (('g_l1', 'validation mean |ab error|'), ('colorfulness', 'validation colorfulness'),
                ('colorfulness_gap', 'validation colourfulness gap (ΔCF)'),
                ('semantic_accuracy', 'validation semantic accuracy (scoring classifier)'),
                ('classifier_fd', 'validation classifier FD'))
EPOCH_COLUMNS = tuple(key for key, _ in EPOCH_PANELS if key != 'g_l1')
COLORS = ('tab:blue', 'tab:orange', 'tab:green', 'tab:red', 'tab:purple', 'tab:brown', 'tab:pink', 'tab:gray')


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
        values = _numbers(row, keys + EPOCH_COLUMNS)
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
    fig = Figure(figsize=(11, 16), dpi=100)  # fixed margins: a constrained layout costs a second per drawing
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.04, top=0.94, wspace=0.18, hspace=0.38)
    FigureCanvasAgg(fig)
    axes = list(fig.subplots(5, 2).flat)[:len(STEP_PANELS) + len(EPOCH_PANELS)]
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
    return save_figure(fig, out)


def save_figure(fig, out):
    """A matplotlib figure as a PNG file written whole."""
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
