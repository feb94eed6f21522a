"""The saturation dial's frontier: each generator's scores as its predicted ab is multiplied by a
gain at test time (test.py --chroma_gain S S ...), as a table and a picture, and each generator
set against the others' dials at its own colourfulness.

The dial is the trivial remedy for grey colorizations: a recipe adds colour for free only where
it beats the other recipes turned by their dials to the same colourfulness.
"""
import math

from metrics.curves import save_figure

# (key in test.py's results, name, whether higher is better)
MEASURES = (('mean_ab_error', 'mean |ab error|', False), ('semantic_accuracy', 'semantic accuracy', True),
            ('classifier_fd', 'classifier FD', False))


def dial_label(label, gain):
    return f'{label} x{gain:g}'


def curves_of(results, labels, gains):
    """{generator label: [(gain, its scores), ...] in the order of gains} from test.py's results,
    whose rows are named by dial_label."""
    return {label: [(gain, results[dial_label(label, gain)]) for gain in gains] for label in labels}


def at_colourfulness(points, colourfulness, key):
    """`key` read off a dial's curve (a list of (gain, scores)) at `colourfulness`, by linear
    interpolation between the two points around it, the points taken in the order of their
    colourfulness; None outside the curve or where a point lacks the measure."""
    pts = sorted((s['colorfulness'], s.get(key)) for _, s in points)
    if any(v is None for _, v in pts):
        return None
    for (c0, v0), (c1, v1) in zip(pts, pts[1:]):
        if c0 <= colourfulness <= c1:
            return v0 if c1 == c0 else v0 + (v1 - v0) * (colourfulness - c0) / (c1 - c0)
    return None


def frontier_table(curves, truth_colourfulness):
    """Markdown: every generator at every gain, then each generator at gain 1 against every other
    generator's dial at the same colourfulness."""
    measures = [m for m in MEASURES if all(m[0] in s for points in curves.values() for _, s in points)]
    lines = [f"The truth's colourfulness: {truth_colourfulness:.2f}", '',
             '| generator | gain | colourfulness | ΔCF | ' + ' | '.join(_escaped(name) for _, name, _ in measures) + ' |',
             '|---|---|---|---|' + '---|' * len(measures)]
    for label, points in curves.items():
        for gain, s in points:
            lines.append(f"| {label} | {gain:g} | {s['colorfulness']:.2f} | {s['colorfulness_gap']:.2f} | "
                         + ' | '.join(_cell(key, s[key]) for key, _, _ in measures) + ' |')
    own = {label: dict(points)[1.0] for label, points in curves.items() if 1.0 in dict(points)}
    if len(own) > 1:
        lines += ['', "At equal colourfulness: each generator undialled (gain 1) against the others' dials turned "
                  "to its colourfulness (interpolated; blank where the dial does not reach it).", '',
                  '| generator | colourfulness | against | ' + ' | '.join(f'{_escaped(name)}: its / theirs'
                                                                        for _, name, _ in measures) + ' |',
                  '|---|---|---|' + '---|' * len(measures)]
        for label, s in own.items():
            for other, points in curves.items():
                if other == label:
                    continue
                cells = []
                for key, _, higher_better in measures:
                    theirs = at_colourfulness(points, s['colorfulness'], key)
                    cells.append(f"{_cell(key, s[key])} / {_cell(key, theirs) if theirs is not None else ''}"
                                 + (' ✓' if theirs is not None and _beats(s[key], theirs, higher_better) else ''))
                lines.append(f"| {label} | {s['colorfulness']:.2f} | {other} | " + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def _escaped(name):
    return name.replace('|', '\\|')  # a table cell's own bars


def _beats(ours, theirs, higher_better):
    return ours > theirs if higher_better else ours < theirs


def _cell(key, value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ''
    return f'{value:.1%}' if key == 'semantic_accuracy' else f'{value:.4f}' if key == 'mean_ab_error' else f'{value:.2f}'


def draw_frontier(curves, truth_colourfulness, path):
    """One panel a measure, colourfulness across (the truth's marked: ΔCF is the distance to its
    line), one curve a generator, one point a gain."""
    # Imported here: matplotlib costs a second, paid only by a run that draws.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    measures = [m for m in MEASURES if all(m[0] in s for points in curves.values() for _, s in points)]
    figure = Figure(figsize=(5 * len(measures), 4.2), dpi=110)
    FigureCanvasAgg(figure)
    for i, (key, name, higher_better) in enumerate(measures):
        ax = figure.add_subplot(1, len(measures), i + 1)
        for label, points in curves.items():
            pts = sorted((s['colorfulness'], s[key], gain) for gain, s in points)
            line, = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker='o', label=label)
            for c, v, gain in pts:
                ax.annotate(f'x{gain:g}', (c, v), textcoords='offset points', xytext=(3, 3), fontsize=7,
                            color=line.get_color())
        ax.axvline(truth_colourfulness, color='0.5', linestyle='--', linewidth=1)
        ax.set_xlabel("colourfulness (dashed: the truth's)")
        ax.set_ylabel(f"{name} ({'higher' if higher_better else 'lower'} is better)")
        ax.grid(alpha=0.3)
    figure.axes[0].legend(fontsize=8)
    figure.suptitle('The saturation dial: predicted ab times a gain at test time')
    figure.tight_layout()
    return save_figure(figure, path)
