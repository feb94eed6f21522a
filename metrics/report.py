"""Scores as a reader sees them: test.py's tables for the terminal and its results page.

The rows are the no-colour baseline, each generator and the ground truth; the columns, the
measures (metrics/measures.py) that some row has.
"""
import html
import os

import cv2

import utils
from metrics.measures import BY_KEY, MEASURES

# The rows every table has besides the generators: the no-colour baseline and the true colours.
BASELINE = 'no color (ab=0)'
TRUTH = 'ground truth'
# With more than twice this many classes, the terminal shows the best and worst this many.
CLASSES_PRINTED = 10


def format_table(results, first_column=''):
    """One row per entry of `results` (the no-colour baseline, the generators, the ground truth);
    a column shows only where some row has its score."""
    columns = [m for m in MEASURES if any(m.key in r for r in results.values())]
    lines = [f"{first_column:28s}" + ''.join(f" {m.short:>{m.width}s}" for m in columns)]
    for label, r in results.items():
        lines.append(f"{label[:28]:28s}" + ''.join(f" {m.text(r[m.key]).rjust(m.width)}" if m.key in r
                                                   else ' ' * (m.width + 1) for m in columns))
    return '\n'.join(lines)


def format_class_table(per_class, labels, keys=('mean_ab_error', 'colorfulness')):
    """Per class, for each of `labels`, the scores of the measures `keys` joined by '/'. With many
    classes, the CLASSES_PRINTED best and worst by the first label's first score."""
    cells = [BY_KEY[key] for key in keys]
    width = max(18, 8 * len(cells))
    header = f"{'class':12s}" + ''.join(f" {label[:width]:>{width}s}" for label in labels)
    lines = [header, f"{'':12s} ({' / '.join(keys)})"]
    names = list(per_class[labels[0]])
    if len(names) > 2 * CLASSES_PRINTED:
        names.sort(key=lambda name: per_class[labels[0]][name][keys[0]])
        names = names[:CLASSES_PRINTED] + [None] + names[-CLASSES_PRINTED:]
    for name in names:
        if name is None:
            lines.append(f"... {len(per_class[labels[0]]) - 2 * CLASSES_PRINTED} classes between "
                         f"(all in metrics.json and on the results page) ...")
            continue
        lines.append(f"{name:12s}" + ''.join(
            ' ' + '/'.join(m.text(per_class[label][name][m.key]) if m.key in per_class[label][name] else '-'
                           for m in cells).rjust(width) for label in labels))
    return '\n'.join(lines)


PAGE_STYLE = """body { font: 15px/1.45 sans-serif; margin: 24px; color: #222; }
table { border-collapse: collapse; margin: 12px 0; }
th, td { border-bottom: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.truth td { color: #555; font-style: italic; }
dt { font-weight: bold; } dd { margin: 0 0 6px 16px; }
.grids { display: flex; flex-wrap: wrap; gap: 24px; }
figure { margin: 0; } figcaption { font-size: 13px; color: #555; max-width: 500px; margin-bottom: 4px; }
img { image-rendering: pixelated; max-width: 100%; height: auto; }"""


def figure(folder, picture, caption, columns):
    """A picture of `folder` on the page, shown at twice its size and linked by file name (so the
    page goes along with the folder), under its caption and the names of its columns."""
    esc = html.escape
    height, width = cv2.imread(os.path.join(folder, picture)).shape[:2]
    name = esc(picture)
    return (f'<figure><figcaption>{esc(caption)}; columns: {esc(", ".join(columns))}</figcaption>'
            f'<img src="{name}" width="{2 * width}" height="{2 * height}" alt="{name}"></figure>')


def write_results_page(path, results, grid_paths, precision, keep_dropout, per_class, picks=None,
                       images_name='CIFAR-10 test images', notes=(), pick_rule=''):
    """One self-contained HTML page: the metrics table (the no-colour baseline, each generator and
    the ground truth), what each measure means, a per-class table for each measure, the grids and
    the --pick pictures (`picks`: {title: {'picture': file name}}, chosen by `pick_rule`), linked
    by file name, so the page goes along with the folder."""
    esc = html.escape
    measures = [m for m in MEASURES if any(m.key in r for r in results.values())]
    head = ''.join(f'<th>{esc(m.title)}</th>' for m in measures)
    rows = [f'<tr{" class=truth" if label == TRUTH else ""}><td>{esc(label)}</td>' + ''.join(
        f'<td>{m.text(r[m.key]) if m.key in r else ""}</td>' for m in measures) + '</tr>'
        for label, r in results.items()]
    meanings = ''.join(f'<dt>{esc(m.title)}</dt><dd>{esc(m.meaning)}; {esc(m.which_way)}</dd>' for m in measures)
    class_tables = []
    names = list(per_class.get(BASELINE, {}))
    for m in measures:
        shown = [label for label in per_class if any(m.key in per_class[label][name] for name in names)]
        if not shown:
            continue
        class_tables.append(f'<h3>{esc(m.title)}</h3><table><tr><th>class</th>'
                            + ''.join(f'<th>{esc(label)}</th>' for label in shown) + '</tr>' + ''.join(
                                f'<tr><td>{esc(name)}</td>' + ''.join(
                                    f'<td>{m.text(per_class[label][name][m.key]) if m.key in per_class[label][name] else ""}</td>'
                                    for label in shown)
                                + '</tr>' for name in names) + '</table>')
    generators = [label for label in results if label not in (BASELINE, TRUTH)]
    columns = ['original', 'grayscale'] + generators
    folder = os.path.dirname(path)
    figures = [figure(folder, os.path.basename(p), f'{os.path.basename(p)}: one test image per row', columns)
               for p in grid_paths]
    picked = ''
    if picks:
        picked = (f'<h2>Picked by rule</h2><p>{esc(pick_rule)}</p><div class="grids">'
                  + ''.join(figure(folder, pick['picture'], title, columns) for title, pick in picks.items()) + '</div>')
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Colorization results</title>
<style>{PAGE_STYLE}</style></head><body>
<h1>Colorization results</h1>
<p>{results[BASELINE]['images']} {esc(images_name)}; precision {esc(precision)};
dropout {'on' if keep_dropout else 'off'} at test time.</p>
<table><tr><th></th>{head}</tr>
{chr(10).join(rows)}
</table>
{''.join(f'<p>{esc(note)}</p>' for note in notes)}
<dl>{meanings}</dl>
<h2>Per class</h2>
{''.join(class_tables)}
<h2>Grids</h2>
<div class="grids">{''.join(figures) or '<p>none drawn (--num_grids 0)</p>'}</div>
{picked}
</body></html>
"""
    utils.atomic_write(path, lambda f: f.write(page.encode('utf-8')))
