"""Score trained generators on the CIFAR-10 test set or a folder's val/ images, with comparison grids.

Every generator runs in eval mode over every image of the split: the whole test set, or with
--split holdout the training images the runs kept out. Scores: mean |ab error| in network
scale, MAE and PSNR of the uint8 RGB images, Nazeri accuracy, colorfulness and the colourfulness
gap to the truth (DeltaCF); on CIFAR-10, what the scoring classifier still recognizes (semantic
accuracy) and the Frechet distance of its features to the true colours' (classifier FD); with
--fid, FID. The no-color baseline (ab = 0) is scored alongside, the true colours as the other
bound, and every score per class where the images have classes.
"""
import os
import sys
import webbrowser

import numpy as np
import torch
from tqdm import tqdm

import dataset
import utils
from core import pictures
from core.cli import (Compute, OneLineArgumentParser, UserError, add_compute_flags, add_decoding_flags, number_in,
                      run_cli)
from metrics import classifier, decoding, fid, frontier
from metrics.evaluation import Evaluation
from metrics.report import BASELINE, CLASSES_PRINTED, TRUTH, format_class_table, format_table, write_results_page
from storage import checkpoints, provenance, published

GRID_ROWS = 14


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
    p.add_argument('--split', choices=('test', 'holdout'), default='test',
                   help="the images scored: test, the test set (a folder's val/); holdout, the last N training "
                        "images that every generator's run kept out of training with train.py --holdout N, where "
                        "a decoding (--temperature, --blend, --chroma_gain) is chosen without looking at the test "
                        "set (default: test)")
    p.add_argument('--num_workers', type=number_in(int, 0), default=2,
                   help='processes decoding a folder data set (default: 2)')
    p.add_argument('--save_path', default='output_imgs/',
                   help='grids, metrics.json and index.html (default: output_imgs/)')
    p.add_argument('--batch_size', type=number_in(int, 1), default=250, help='(default: 250)')
    p.add_argument('--num_grids', type=number_in(int, 0), default=5,
                   help=f'how many grids of {GRID_ROWS} test images to draw (default: 5)')
    p.add_argument('--keep_dropout', action='store_true',
                   help="keep the generator's dropout on at test time (default: off, see docs/evaluation.md)")
    p.add_argument('--show', action='store_true', help="open the results page in the default web browser")
    p.add_argument('--per_class', action='store_true',
                   help='also print the scores per class (metrics.json and the results page always have them); with '
                        f'more than {2 * CLASSES_PRINTED} classes, the {CLASSES_PRINTED} best and worst')
    p.add_argument('--pick', type=number_in(int, 1), metavar='N',
                   help='with two or more checkpoints, the first two A and B: also draw the N test images where A '
                        'beats B most, where B beats A most, and where both struggle most, by per-image mean |ab '
                        'error|, each with every checkpoint\'s colours (see README)')
    p.add_argument('--classifier', default=classifier.DEFAULT_PATH, metavar='PATH|off',
                   help='the scoring classifier for semantic accuracy and classifier FD (CIFAR-10 classes at 32 px '
                        'only); off: skip them (default: weights/cifar10_classifier.safetensors)')
    p.add_argument('--fid', action='store_true',
                   help="also score FID against the true colour images (torchmetrics' Inception; slow on a CPU: "
                        "about 6 GFLOP an image)")
    p.add_argument('--fid_weights', metavar='PATH',
                   help=f'the Inception weights for --fid ({fid.WEIGHTS_NAME}); default: torch\'s cache, '
                        f'downloaded there once')
    p.add_argument('--chroma_gain', type=number_in(float, 0), nargs='+', default=[1.0], metavar='S',
                   help="the saturation dial: multiply every generator's predicted ab by S (kept in the network's "
                        "range) before anything is scored or drawn. Several values: every generator at every gain, "
                        "one pass, and the dial's frontier (each measure against colourfulness) in frontier.md and "
                        "frontier.png (default: 1)")
    add_decoding_flags(p, per_generator=True)
    add_compute_flags(p)
    args = p.parse_args(argv)
    if len(set(args.chroma_gain)) != len(args.chroma_gain):
        p.error("--chroma_gain lists a gain twice")
    if args.fid_weights and not args.fid:
        p.error("--fid_weights is for --fid: add --fid")
    n_checkpoints = len(args.checkpoints or published.PUBLISHED_GENERATORS)
    if args.labels and len(args.labels) != n_checkpoints:
        p.error(f"--labels has {len(args.labels)} names for {n_checkpoints} checkpoints")
    for flag in ('temperature', 'blend'):
        values = getattr(args, flag)
        if values and len(values) not in (1, n_checkpoints):
            p.error(f"--{flag} has {len(values)} values for {n_checkpoints} checkpoints: give one, or one per checkpoint")
    if args.pick and n_checkpoints < 2:
        p.error(f"--pick compares the first two checkpoints, and {n_checkpoints} was given")
    return args


PICK_RULE = ("From each test image's mean |ab error| under the first two generators A and B: the images with the "
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

    def training_images(run_args):  # those the run trained on, for a mid-epoch checkpoint's statistics
        return dataset.split_holdout(dataset.open_split(args.dataset, args.data_path, True, run_args['image_size'],
                                                        args.num_workers), run_args.get('holdout', 0))[0]
    loaded = [checkpoints.generator_for_use(p, compute, training_images, ckpt) for p, ckpt in zip(args.checkpoints, ckpts)]
    generators = [G for G, _ in loaded]
    def each(values):
        return [None] * len(generators) if not values else values * len(generators) if len(values) == 1 else values
    decodings = {}
    for label, (G, run_args), temperature, blend in zip(labels, loaded, each(args.temperature), each(args.blend)):
        checkpoints.set_dropout(G, args.keep_dropout)
        used = decoding.in_use(G, run_args, temperature, blend)
        if used:
            decodings[label] = used
    return generators, labels, sizes.pop(), [run_args.get('holdout', 0) for _, run_args in loaded], decodings


def images_to_score(args, image_size, holdouts, pin_memory):
    """(the split --split names, its name for tables and pages): the test set, or the training
    images every generator's run kept out (train.py --holdout); refused where a run saw them."""
    if args.split == 'test':
        return (dataset.open_split(args.dataset, args.data_path, False, image_size, args.num_workers, pin_memory),
                'CIFAR-10 test images' if args.dataset == 'cifar10' else f'val/ images of {args.data_path}')
    if len(set(holdouts)) != 1 or not holdouts[0]:
        kept = ', '.join(f"{label}: {n}" for label, n in zip(args.labels or args.checkpoints, holdouts))
        raise UserError(f"--split holdout scores the training images every run kept out, and these runs kept out "
                        f"different numbers or none ({kept}): train each with the same train.py --holdout N")
    training = dataset.open_split(args.dataset, args.data_path, True, image_size, args.num_workers, pin_memory)
    return dataset.split_holdout(training, holdouts[0])[1], f'the last {holdouts[0]} training images (held out)'


class Scoring:
    """The scores of every generator and the baseline, overall and per class (metrics/evaluation.py,
    as train.py's validation scores), and the pictures the grids and --pick draw from, gathered
    batch by batch. `judge`: a classifier.ClassifierScores that also sees the true colours, the
    grey images and each colorization (or None); `keep_sets`: keep every set's images for FID."""

    def __init__(self, labels, class_names, n_grid_images, keep_every_image, judge=None, keep_sets=False):
        self.labels = labels
        self.evaluation = Evaluation(class_names, judge, per_class=True)
        self.n_grid_images = n_grid_images
        self.columns = []  # per image drawn: original, grayscale, then one per generator
        self.keep_every_image = keep_every_image  # for --pick: each image's mean |ab error|, and its pictures
        self.image_errors = {label: [] for label in labels}
        self.every_column = []
        self.sets = {label: [] for label in [TRUTH, BASELINE] + labels} if keep_sets else None

    def add(self, lab, truth, classes, predictions_ab):
        """`predictions_ab`: each generator's predicted ab for the batch, in label order."""
        L, ab = lab[:, :1], lab[:, 1:]
        gray = pictures.network_to_rgb(L, torch.zeros_like(ab))
        colorizations = {BASELINE: (torch.zeros_like(ab), gray)}
        for label, fake_ab in zip(self.labels, predictions_ab):
            colorizations[label] = fake_ab, pictures.network_to_rgb(L, fake_ab)
            if self.keep_every_image:
                self.image_errors[label].append((fake_ab - ab).abs().mean(dim=(1, 2, 3)).cpu().numpy())
        self.evaluation.add(lab, truth, classes, colorizations)
        if self.sets is not None:
            for label, rgb in [(TRUTH, truth)] + [(label, rgb) for label, (_, rgb) in colorizations.items()]:
                self.sets[label].append(rgb)
        predictions = [colorizations[label][1] for label in self.labels]
        for i in range(min(len(truth), self.n_grid_images - len(self.columns))):
            self.columns.append(np.stack([truth[i], gray[i]] + [p[i] for p in predictions]))
        if self.keep_every_image:
            self.every_column.append(np.stack([truth, gray] + predictions, axis=1))

    def results(self):
        """({row: scores}, {row: {class name: scores}}) for the baseline, each generator and the
        ground truth (the truth's row holds what applies to it: colourfulness, and the
        classifier's scores)."""
        results, per_class = self.evaluation.results()
        results[TRUTH], per_class[TRUTH] = self.evaluation.truth_results()
        return results, per_class

    def add_fid(self, results, weights_path, device):
        """FID of the baseline and each generator against the true colours, into `results`."""
        gathered = {label: np.concatenate(parts) for label, parts in self.sets.items()}
        truth = gathered.pop(TRUTH)
        for label, value in fid.fid_scores(truth, gathered, weights_path, device).items():
            results[label]['fid'] = value


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
    # the rule compares the first two generators; the pictures show every generator's colours
    rule = picked_images(*(np.concatenate(scoring.image_errors[label]) for label in labels[:2]), n, *labels[:2])
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
    fid_weights = fid.weights_file(args.fid_weights) if args.fid else None  # offline and missing: fail before the work
    generators, labels, image_size, holdouts, decodings = load_generators(args, compute)
    dialled = len(args.chroma_gain) > 1  # every generator at every gain, each a row of its own
    generator_labels, gains = labels, args.chroma_gain
    if dialled:
        labels = [frontier.dial_label(label, gain) for label in labels for gain in gains]
    utils.check_writable_folder(args.save_path, '--save_path')
    test_set, images_name = images_to_score(args, image_size, holdouts, pin_memory=compute.device.type == 'cuda')
    judge, judge_note = classifier.judge_for(args.classifier, test_set.class_names, image_size, compute.device,
                                             truth=TRUTH)
    scoring = Scoring(labels, test_set.class_names, args.num_grids * GRID_ROWS, keep_every_image=bool(args.pick),
                      judge=judge, keep_sets=args.fid)
    batches = test_set.batches(args.batch_size, device=compute.device, with_rgb=True)
    for idx, lab, truth in tqdm(batches, total=test_set.num_batches(args.batch_size), desc='colorize',
                                dynamic_ncols=True):
        with compute.autocast:
            predictions = [G(lab[:, :1]).float() for G in generators]
        predictions = [pictures.with_chroma_gain(ab, gain) for ab in predictions for gain in gains]
        scoring.add(lab, truth, test_set.labels[idx.numpy()], predictions)
    grid_paths = draw_grids(scoring, labels, args.save_path)
    picks = draw_picks(scoring, labels, args.pick, args.save_path) if args.pick else {}

    results, per_class = scoring.results()
    if args.fid:
        scoring.add_fid(results, fid_weights, compute.device)
    notes = [judge_note] if judge_note else []
    notes += [f"{label} decodes at {decoding.describe(used)}: {used['source']}" for label, used in decodings.items()]
    print(format_table(results))
    for note in notes:
        print(note)
    if args.per_class and per_class[BASELINE]:
        print(format_class_table(per_class, labels))
        if judge is not None:
            print(format_class_table(per_class, [BASELINE] + labels + [TRUTH],
                                     ('colorfulness_gap', 'semantic_accuracy', 'classifier_fd')))
    truth_colorfulness = results[TRUTH]['colorfulness']
    paths = [path for path in args.checkpoints for _ in gains] if dialled else args.checkpoints
    metrics = {'checkpoints': {label: dict(results[label], path=path) for label, path in zip(labels, paths)},
               'baseline': results[BASELINE], 'truth': results[TRUTH], 'truth_colorfulness': truth_colorfulness,
               'per_class': per_class, 'images': results[BASELINE]['images'], 'precision': compute.precision,
               'keep_dropout': args.keep_dropout, 'dataset': args.dataset, 'split': args.split,
               'image_size': image_size,
               'provenance': provenance.provenance()}
    if judge is not None:
        metrics['classifier'] = {'path': args.classifier, **{k: v for k, v in judge.model_metadata.items()
                                                              if k in ('test_top1', 'command', 'seed', 'date')}}
    if args.fid:
        metrics['fid_weights'] = fid_weights
    if picks:
        metrics['picks'], metrics['pick_rule'] = picks, PICK_RULE
    if gains != [1.0]:
        metrics['chroma_gain'] = gains
    if decodings:  # how each distribution head decoded, and where that came from
        metrics['decoding'] = decodings
    if dialled:
        curves = frontier.curves_of(results, generator_labels, gains)
        table = frontier.frontier_table(curves, truth_colorfulness)
        utils.atomic_write(os.path.join(args.save_path, 'frontier.md'), lambda f: f.write(table), mode='w')
        frontier.draw_frontier(curves, truth_colorfulness, os.path.join(args.save_path, 'frontier.png'))
        print(table + f"wrote frontier.md and frontier.png to {args.save_path}")
    utils.write_json(os.path.join(args.save_path, 'metrics.json'), metrics)
    print(f"wrote {len(grid_paths)} grids{f', {len(picks)} pictures of picked images' if picks else ''} "
          f"and metrics.json to {args.save_path}")
    page_path = os.path.join(args.save_path, 'index.html')
    write_results_page(page_path, results, grid_paths, compute.precision, args.keep_dropout, per_class, picks,
                       images_name, notes, PICK_RULE)
    print(f"wrote the results page {page_path}")
    if args.show:
        show_page(page_path)
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
