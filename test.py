"""Score trained generators on the CIFAR-10 test set or a folder's val/ images, with comparison grids.

Every generator runs in eval mode over the whole test set. Scores: mean |ab error| in network
scale, MAE and PSNR of the uint8 RGB images, Nazeri accuracy, colorfulness; the no-color
baseline (ab = 0) is scored alongside, and every score per class where the images have classes.
"""
import html
import os
import sys
import webbrowser

import cv2
import numpy as np
import torch
from tqdm import tqdm

import checkpoints
import dataset
import pictures
import provenance
import published
import utils
from cli import Compute, OneLineArgumentParser, UserError, add_compute_flags, number_in, run_cli
from scores import ColorizationScores

GRID_ROWS = 14
CLASSES_PRINTED = 10
BASELINE = 'no color (ab=0)'


def parse_args(argv=None):
    p = OneLineArgumentParser(prog='test.py', description=__doc__.split('\n\n')[0])
    p.add_argument('--checkpoints', nargs='+', metavar='CK',
                   help="train.py checkpoints, generator .safetensors files or model folders (train.py, export.py), "
                        "or bare generator state dicts in the reference's layout "
                        "(default: the two generators the reference published, downloaded once into --weights_cache)")
    p.add_argument('--weights_cache', default=published.default_weights_cache(),
                   help="where the reference's published generators are kept (default: $XDG_CACHE_HOME/colorization-gan, "
                        "or ~/.cache/colorization-gan)")
    p.add_argument('--labels', nargs='+', help='names for the checkpoints in pictures and tables (default: file names)')
    p.add_argument('--dataset', choices=dataset.DATASETS, default='cifar10',
                   help="cifar10: its test set; folder: the val/ images of --data_path (default: cifar10)")
    p.add_argument('--data_path', default='./data', help='where the data set is (default: ./data)')
    p.add_argument('--num_workers', type=number_in(int, 0), default=2,
                   help='processes decoding a folder data set (default: 2)')
    p.add_argument('--save_path', default='output_imgs/',
                   help='grids, metrics.json and index.html (default: output_imgs/)')
    p.add_argument('--batch_size', type=number_in(int, 1), default=250, help='(default: 250)')
    p.add_argument('--num_grids', type=number_in(int, 0), default=5,
                   help=f'how many grids of {GRID_ROWS} test images to draw (default: 5)')
    p.add_argument('--keep_dropout', action='store_true',
                   help="keep the generator's dropout on at test time (default: off, see README)")
    p.add_argument('--show', action='store_true', help="open the results page in the default web browser")
    p.add_argument('--per_class', action='store_true',
                   help='also print the scores per class (metrics.json and the results page always have them); with '
                        f'more than {2 * CLASSES_PRINTED} classes, the {CLASSES_PRINTED} best and worst')
    p.add_argument('--pick', type=number_in(int, 1), metavar='N',
                   help='with two checkpoints A and B: also draw the N test images where A beats B most, where B '
                        'beats A most, and where both struggle most, by per-image mean |ab error| (see README)')
    add_compute_flags(p)
    args = p.parse_args(argv)
    n_checkpoints = len(args.checkpoints or published.PUBLISHED_GENERATORS)
    if args.labels and len(args.labels) != n_checkpoints:
        p.error(f"--labels has {len(args.labels)} names for {n_checkpoints} checkpoints")
    if args.pick and n_checkpoints != 2:
        p.error(f"--pick compares two checkpoints, and {n_checkpoints} were given")
    return args


PICK_RULE = ("From each test image's mean |ab error| under the two generators A and B: the images with the "
             "largest error(B) - error(A) (A better), the largest error(A) - error(B) (B better), and the largest "
             "min(error(A), error(B)) (both struggle); ties go to the earlier test image.")


def picked_images(errors_a, errors_b, n, label_a, label_b):
    """The rule behind --pick, from each test image's mean |ab error| under generators A and B
    (arrays in test-set order): {title: indices of the n images}, for the n largest
    error(B) - error(A) (A better), error(A) - error(B) (B better), and min(error(A), error(B))
    (both struggle); ties go to the earlier image."""
    rank = lambda key: np.argsort(-key, kind='stable')[:n].tolist()  # noqa: E731
    return {f'{label_a} better': rank(errors_b - errors_a), f'{label_b} better': rank(errors_a - errors_b),
            'both struggle': rank(np.minimum(errors_a, errors_b))}


def show_page(path):
    """Open the results page in the user's browser; where there is none (no display), say where it is."""
    uri = 'file://' + os.path.abspath(path)
    if sys.platform.startswith('linux') and not (os.environ.get('DISPLAY') or os.environ.get('WAYLAND_DISPLAY')):
        print(f"--show: this machine has no display; open {uri} in a browser")
    elif not webbrowser.open(uri):
        print(f"--show: no web browser was found; open {uri} in a browser")


def format_table(results, truth_colorfulness, first_column=''):
    header = f"{first_column:28s} {'mean|ab err|':>12s} {'MAE':>8s} {'PSNR dB':>8s} {'Nazeri acc':>10s} {'colorful':>9s}"
    lines = [header]
    for label, r in results.items():
        lines.append(f"{label[:28]:28s} {r['mean_ab_error']:12.4f} {r['mae']:8.3f} {r['psnr']:8.3f} "
                     f"{100 * r['nazeri_accuracy']:9.1f}% {r['colorfulness']:9.2f}")
    lines.append(f"{'ground truth':28s} {'':12s} {'':8s} {'':8s} {'':10s} {truth_colorfulness:9.2f}")
    return '\n'.join(lines)


def format_class_table(per_class, labels):
    """Per class: each checkpoint's mean |ab error| and colorfulness, and the truth's colorfulness.
    With many classes, the CLASSES_PRINTED best and worst by the first checkpoint's error."""
    header = f"{'class':12s}" + ''.join(f" {label[:18]:>18s}" for label in labels) + f" {'truth':>8s}"
    lines = [header, f"{'':12s}" + ' ' * len(labels) * 19 + ' (mean |ab error| / colorfulness)']
    names = list(per_class[labels[0]])
    if len(names) > 2 * CLASSES_PRINTED:
        names.sort(key=lambda name: per_class[labels[0]][name]['mean_ab_error'])
        names = names[:CLASSES_PRINTED] + [None] + names[-CLASSES_PRINTED:]
    for name in names:
        if name is None:
            lines.append(f"... {len(per_class[labels[0]]) - 2 * CLASSES_PRINTED} classes between "
                         f"(all in metrics.json and on the results page) ...")
            continue
        cells = ''.join(f" {per_class[label][name]['mean_ab_error']:9.4f}/{per_class[label][name]['colorfulness']:8.2f}"
                        for label in labels)
        lines.append(f"{name:12s}{cells} {per_class[labels[0]][name]['truth_colorfulness']:8.2f}")
    return '\n'.join(lines)


MEASURES = (  # metrics key, column title, format of the printed table, what it means
    ('mean_ab_error', 'mean |ab error|', '{:.4f}', 'mean absolute error of the predicted a and b channels in '
     'network scale (/127), on the raw generator output; lower is better'),
    ('mae', 'MAE', '{:.3f}', 'mean absolute difference of the uint8 RGB images (0-255); lower is better'),
    ('psnr', 'PSNR dB', '{:.3f}', 'peak signal-to-noise ratio of the uint8 RGB images, per image, then averaged; '
     'higher is better'),
    ('nazeri_accuracy', 'Nazeri acc', '{:.1%}', 'share of pixels whose rounded Lab values are within 2% of their '
     'range of the truth (|dL| <= 2, |da|, |db| <= 4.4); higher is better'),
    ('colorfulness', 'colorfulness', '{:.2f}', 'Hasler and Suesstrunk (2003), per image, then averaged; '
     'closer to the ground truth is better'),
)
PAGE_STYLE = """body { font: 15px/1.45 sans-serif; margin: 24px; color: #222; }
table { border-collapse: collapse; margin: 12px 0; }
th, td { border-bottom: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.truth td { color: #555; font-style: italic; }
dt { font-weight: bold; } dd { margin: 0 0 6px 16px; }
.grids { display: flex; flex-wrap: wrap; gap: 24px; }
figure { margin: 0; } figcaption { font-size: 13px; color: #555; max-width: 500px; margin-bottom: 4px; }
img { image-rendering: pixelated; max-width: 100%; height: auto; }"""


def write_results_page(path, results, labels, grid_paths, truth_colorfulness, precision, keep_dropout, per_class,
                       picks=None, images_name='CIFAR-10 test images'):
    """One self-contained HTML page: the metrics table, what each measure means, the per-class
    table, the grids and the --pick pictures (linked by file name, so the page goes along with
    the folder)."""
    esc = html.escape
    head = ''.join(f'<th>{esc(title)}</th>' for _, title, _, _ in MEASURES)
    rows = [f'<tr><td>{esc(label)}</td>' + ''.join(f'<td>{fmt.format(r[key])}</td>' for key, _, fmt, _ in MEASURES)
            + '</tr>' for label, r in results.items()]
    rows.append(f'<tr class="truth"><td>ground truth</td>{"<td></td>" * (len(MEASURES) - 1)}'
                f'<td>{truth_colorfulness:.2f}</td></tr>')
    class_head = ''.join(f'<th>{esc(label)}: mean |ab error|</th><th>{esc(label)}: colorfulness</th>' for label in labels)
    class_rows = [f'<tr><td>{esc(name)}</td>' + ''.join(
        f"<td>{per_class[label][name]['mean_ab_error']:.4f}</td><td>{per_class[label][name]['colorfulness']:.2f}</td>"
        for label in labels) + f"<td>{per_class[BASELINE][name]['truth_colorfulness']:.2f}</td></tr>"
        for name in per_class[BASELINE]]
    meanings = ''.join(f'<dt>{esc(title)}</dt><dd>{esc(meaning)}</dd>' for _, title, _, meaning in MEASURES)
    columns = esc(', '.join(['original', 'grayscale'] + labels))
    def figure(picture, caption):
        height, width = cv2.imread(os.path.join(os.path.dirname(path), picture)).shape[:2]  # shown at twice their size
        name = esc(picture)
        return (f'<figure><figcaption>{esc(caption)}; columns: {columns}</figcaption>'
                f'<img src="{name}" width="{2 * width}" height="{2 * height}" alt="{name}"></figure>')
    figures = [figure(os.path.basename(p), f'{os.path.basename(p)}: one test image per row') for p in grid_paths]
    picked = ''
    if picks:
        picked = (f'<h2>Picked by rule</h2><p>{esc(PICK_RULE)}</p><div class="grids">'
                  + ''.join(figure(pick['picture'], title) for title, pick in picks.items()) + '</div>')
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Colorization results</title>
<style>{PAGE_STYLE}</style></head><body>
<h1>Colorization results</h1>
<p>{results[BASELINE]['images']} {esc(images_name)}; precision {esc(precision)};
dropout {'on' if keep_dropout else 'off'} at test time.</p>
<table><tr><th></th>{head}</tr>
{chr(10).join(rows)}
</table>
<dl>{meanings}</dl>
<h2>Per class</h2>
<table><tr><th>class</th>{class_head}<th>ground truth: colorfulness</th></tr>
{chr(10).join(class_rows)}
</table>
<h2>Grids</h2>
<div class="grids">{''.join(figures) or '<p>none drawn (--num_grids 0)</p>'}</div>
{picked}
</body></html>
"""
    utils.atomic_write(path, lambda f: f.write(page.encode('utf-8')))


def load_generators(args, compute):
    """The generators to score, each with exact batch-norm statistics, and their labels."""
    if not args.checkpoints:  # as the reference's test.py: its two published generators, side by side
        fetched = published.fetch_published_generators(args.weights_cache)
        args.checkpoints = [path for _, path in fetched]
        args.labels = args.labels or [label for label, _ in fetched]
    labels = args.labels or [os.path.basename(os.path.normpath(p)) for p in args.checkpoints]
    if len(set(labels)) != len(labels):
        raise UserError("two checkpoints share a label: name them apart with --labels")
    ckpts = [checkpoints.load_checkpoint(p) for p in args.checkpoints]
    sizes = {checkpoints.generator_state(ckpt, p)[1]['image_size'] for ckpt, p in zip(ckpts, args.checkpoints)}
    if len(sizes) > 1:
        raise UserError(f"the checkpoints are of different image sizes ({', '.join(map(str, sorted(sizes)))}): "
                        f"score them in separate runs")

    def training_images(run_args):
        return dataset.open_split(args.dataset, args.data_path, True, run_args['image_size'], args.num_workers)
    generators = [checkpoints.generator_for_use(p, compute, training_images, ckpt)[0]
                  for p, ckpt in zip(args.checkpoints, ckpts)]
    for G in generators:
        checkpoints.set_dropout(G, args.keep_dropout)
    return generators, labels, sizes.pop()


class Scoring:
    """The scores of every generator and the baseline, overall and per class, and the pictures
    the grids and --pick draw from, gathered batch by batch."""

    def __init__(self, labels, class_names, n_grid_images, keep_every_image):
        self.labels = labels
        self.class_names = class_names
        self.scores = {label: ColorizationScores() for label in [BASELINE] + labels}
        self.class_scores = {label: {name: ColorizationScores() for name in class_names}
                             for label in [BASELINE] + labels}
        self.n_grid_images = n_grid_images
        self.columns = []  # per image drawn: original, grayscale, then one per generator
        self.keep_every_image = keep_every_image  # for --pick: each image's mean |ab error|, and its pictures
        self.image_errors = {label: [] for label in labels}
        self.every_column = []

    def add(self, lab, truth, classes, predictions_ab):
        """`predictions_ab`: each generator's predicted ab for the batch, in label order."""
        L, ab = lab[:, :1], lab[:, 1:]
        # (class name, members as a numpy mask for pictures, as a tensor mask for ab), once per batch
        groups = [(self.class_names[c], classes == c, torch.from_numpy(classes == c).to(lab.device))
                  for c in np.unique(classes) if c >= 0]
        gray = pictures.network_to_rgb(L, torch.zeros_like(ab))
        predictions = []
        for label, fake_ab in [(BASELINE, None)] + list(zip(self.labels, predictions_ab)):
            if fake_ab is None:
                fake_ab, rgb = torch.zeros_like(ab), gray
            else:
                rgb = pictures.network_to_rgb(L, fake_ab)
                predictions.append(rgb)
                if self.keep_every_image:
                    self.image_errors[label].append((fake_ab - ab).abs().mean(dim=(1, 2, 3)).cpu().numpy())
            self.scores[label].add(fake_ab, ab, rgb, truth)
            for name, members, picked in groups:
                self.class_scores[label][name].add(fake_ab[picked], ab[picked], rgb[members], truth[members])
        for i in range(min(len(truth), self.n_grid_images - len(self.columns))):
            self.columns.append(np.stack([truth[i], gray[i]] + [p[i] for p in predictions]))
        if self.keep_every_image:
            self.every_column.append(np.stack([truth, gray] + predictions, axis=1))

    def results(self):
        results = {label: s.result() for label, s in self.scores.items()}
        per_class = {label: {name: s.result() for name, s in by_class.items() if s.images}
                     for label, by_class in self.class_scores.items()}
        return results, per_class


def draw_grids(scoring, labels, save_path):
    paths = []
    for g in range(0, len(scoring.columns), GRID_ROWS):
        picture = pictures.image_grid(scoring.columns[g:g + GRID_ROWS], border=6, scale=1.6,
                                      column_labels=['original', 'grayscale'] + labels)
        path = os.path.join(save_path, f'grid_{g // GRID_ROWS:03d}.png')
        pictures.write_image(path, picture)
        paths.append(path)
    return paths


def draw_picks(scoring, labels, n, save_path):
    every_column = np.concatenate(scoring.every_column)
    rule = picked_images(*(np.concatenate(scoring.image_errors[label]) for label in labels), n, *labels)
    picks = {}
    for title, indices in rule.items():
        path = os.path.join(save_path, 'pick_' + ''.join(c if c.isalnum() else '_' for c in title) + '.png')
        pictures.write_image(path, pictures.image_grid(list(every_column[indices]), border=6, scale=1.6,
                                                       column_labels=['original', 'grayscale'] + labels))
        picks[title] = {'test_images': indices, 'picture': os.path.basename(path)}
    return picks


@torch.no_grad()
def main(argv=None):
    args = parse_args(argv)
    compute = Compute.from_flags(args)
    generators, labels, image_size = load_generators(args, compute)
    utils.check_writable_folder(args.save_path, '--save_path')
    test_set = dataset.open_split(args.dataset, args.data_path, False, image_size, args.num_workers,
                                  pin_memory=compute.device.type == 'cuda')
    scoring = Scoring(labels, test_set.class_names, args.num_grids * GRID_ROWS, keep_every_image=bool(args.pick))
    batches = test_set.batches(args.batch_size, device=compute.device, with_rgb=True)
    for idx, lab, truth in tqdm(batches, total=test_set.num_batches(args.batch_size), desc='colorize',
                                dynamic_ncols=True):
        with compute.autocast:
            predictions = [G(lab[:, :1]).float() for G in generators]
        scoring.add(lab, truth, test_set.labels[idx.numpy()], predictions)
    grid_paths = draw_grids(scoring, labels, args.save_path)
    picks = draw_picks(scoring, labels, args.pick, args.save_path) if args.pick else {}

    results, per_class = scoring.results()
    truth_colorfulness = results[BASELINE]['truth_colorfulness']
    print(format_table(results, truth_colorfulness))
    if args.per_class and per_class[BASELINE]:
        print(format_class_table(per_class, labels))
    images_name = 'CIFAR-10 test images' if args.dataset == 'cifar10' else f'val/ images of {args.data_path}'
    metrics = {'checkpoints': {label: dict(results[label], path=path) for label, path in zip(labels, args.checkpoints)},
               'baseline': results[BASELINE], 'truth_colorfulness': truth_colorfulness, 'per_class': per_class,
               'images': results[BASELINE]['images'], 'precision': compute.precision,
               'keep_dropout': args.keep_dropout, 'dataset': args.dataset, 'image_size': image_size,
               'provenance': provenance.provenance()}
    if picks:
        metrics['picks'], metrics['pick_rule'] = picks, PICK_RULE
    utils.write_json(os.path.join(args.save_path, 'metrics.json'), metrics)
    print(f"wrote {len(grid_paths)} grids{f', {len(picks)} pictures of picked images' if picks else ''} "
          f"and metrics.json to {args.save_path}")
    page_path = os.path.join(args.save_path, 'index.html')
    write_results_page(page_path, results, labels, grid_paths, truth_colorfulness, compute.precision,
                       args.keep_dropout, per_class, picks, images_name)
    print(f"wrote the results page {page_path}")
    if args.show:
        show_page(page_path)
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
