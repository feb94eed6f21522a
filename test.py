"""Recolorize the CIFAR-10 test set with trained generators, draw comparison grids, and score them.

Every generator runs in eval mode over the whole test set. Scores (SPEC.md): mean |ab error| in
network scale, MAE and PSNR of the uint8 RGB images, Nazeri accuracy, colorfulness; the no-color
baseline (ab = 0) is scored alongside.
"""
import os
import sys

import numpy as np
import torch
from tqdm import tqdm

import utils
from dataset import load_split
from models import Generator
from utils import UserError, number_in

GRID_ROWS = 14
BASELINE = 'no color (ab=0)'


def parse_args(argv=None):
    p = utils.OneLineArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--checkpoints', nargs='+', required=True, metavar='CK.pt',
                   help="train.py checkpoints, or bare generator state dicts in the reference's layout")
    p.add_argument('--labels', nargs='+', help='names for the checkpoints in pictures and tables (default: file names)')
    p.add_argument('--data_path', default='./data', help='where CIFAR-10 is (default: ./data)')
    p.add_argument('--save_path', default='output_imgs/', help='grids and metrics.json (default: output_imgs/)')
    p.add_argument('--batch_size', type=number_in(int, 1), default=250, help='(default: 250)')
    p.add_argument('--num_grids', type=number_in(int, 0), default=5,
                   help=f'how many grids of {GRID_ROWS} test images to draw (default: 5)')
    p.add_argument('--keep_dropout', action='store_true',
                   help="keep the generator's dropout on at test time (default: off, see README)")
    p.add_argument('--show', action='store_true', help='also show the grids in a window')
    p.add_argument('--device', default='auto', help='auto (CUDA, then MPS, then CPU), cpu, cuda, mps')
    p.add_argument('--precision', choices=('auto', 'fp32', 'bf16', 'fp16'), default='auto', help='(default: auto)')
    args = p.parse_args(argv)
    if args.labels and len(args.labels) != len(args.checkpoints):
        p.error(f"--labels has {len(args.labels)} names for {len(args.checkpoints)} checkpoints")
    return args


def generator_state(ckpt, path):
    """(state dict, gen_norm) from a train.py checkpoint or from a bare reference-layout state dict."""
    if isinstance(ckpt, dict) and isinstance(ckpt.get('generator'), dict):
        return ckpt['generator'], ckpt.get('args', {}).get('gen_norm', 'batch')
    if isinstance(ckpt, dict) and 'down1.model.0.weight' in ckpt and 'final.model.0.weight' in ckpt:
        # The reference's published weights: a plain state dict, our key layout.
        return ckpt, 'batch' if 'down1.model.1.running_mean' in ckpt else 'instance'
    raise UserError(f"{path} holds no generator: expected a train.py checkpoint or a generator state dict")


def load_generator(path, device):
    state, norm = generator_state(utils.load_checkpoint(path), path)
    G = Generator(norm)
    try:
        G.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"{path} is not a generator of this architecture (--gen_norm {norm}): "
                        f"{str(e).strip().splitlines()[0]}")
    return G.to(device).eval()


def set_dropout(model, on):
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.train(on)


def show_grids(paths):
    if sys.platform.startswith('linux') and not (os.environ.get('DISPLAY') or os.environ.get('WAYLAND_DISPLAY')):
        print('--show: this machine has no display; the grids are in the files above')
        return
    import cv2
    try:
        for path in paths:
            cv2.imshow(os.path.basename(path), cv2.imread(path))
            cv2.waitKey(0)
        cv2.destroyAllWindows()
    except cv2.error:
        print('--show: this OpenCV build has no window support; the grids are in the files above')


def format_table(results, truth_colorfulness):
    header = f"{'':28s} {'mean|ab err|':>12s} {'MAE':>8s} {'PSNR dB':>8s} {'Nazeri acc':>10s} {'colorful':>9s}"
    lines = [header]
    for label, r in results.items():
        lines.append(f"{label[:28]:28s} {r['mean_ab_error']:12.4f} {r['mae']:8.3f} {r['psnr']:8.3f} "
                     f"{100 * r['nazeri_accuracy']:9.1f}% {r['colorfulness']:9.2f}")
    lines.append(f"{'ground truth':28s} {'':12s} {'':8s} {'':8s} {'':10s} {truth_colorfulness:9.2f}")
    return '\n'.join(lines)


@torch.no_grad()
def main(argv=None):
    args = parse_args(argv)
    device = utils.pick_device(args.device)
    precision = utils.resolve_precision(args.precision, device)
    autocast = utils.autocast_context(device, precision)
    labels = args.labels or [os.path.basename(p) for p in args.checkpoints]
    if len(set(labels)) != len(labels):
        raise UserError("two checkpoints share a label: name them apart with --labels")
    generators = [load_generator(p, device) for p in args.checkpoints]
    for G in generators:
        set_dropout(G, args.keep_dropout)
    utils.check_writable_folder(args.save_path, '--save_path')
    test_set = load_split(args.data_path, train=False)

    scores = {label: utils.ColorizationScores() for label in [BASELINE] + labels}
    n_grid_images = args.num_grids * GRID_ROWS
    columns = []  # per image drawn: original, grayscale, then one per generator
    batches = test_set.batches(args.batch_size, device=device)
    for idx, lab in tqdm(batches, total=test_set.num_batches(args.batch_size), desc='colorize', dynamic_ncols=True):
        L, ab = lab[:, :1], lab[:, 1:]
        truth = test_set.rgb[idx.numpy()]
        gray = utils.network_to_rgb(L, torch.zeros_like(ab))
        scores[BASELINE].add(torch.zeros_like(ab), ab, gray, truth)
        predictions = []
        for label, G in zip(labels, generators):
            with autocast:
                fake_ab = G(L).float()
            rgb = utils.network_to_rgb(L, fake_ab)
            scores[label].add(fake_ab, ab, rgb, truth)
            predictions.append(rgb)
        for i in range(min(len(truth), n_grid_images - len(columns))):
            columns.append(np.stack([truth[i], gray[i]] + [p[i] for p in predictions]))

    grid_paths = []
    for g in range(0, len(columns), GRID_ROWS):
        picture = utils.image_grid(columns[g:g + GRID_ROWS], border=6, scale=1.6,
                                   column_labels=['original', 'grayscale'] + labels)
        path = os.path.join(args.save_path, f'grid_{g // GRID_ROWS:03d}.png')
        utils.write_image(path, picture)
        grid_paths.append(path)

    results = {label: s.result() for label, s in scores.items()}
    truth_colorfulness = results[BASELINE]['truth_colorfulness']
    print(format_table(results, truth_colorfulness))
    metrics = {'checkpoints': {label: dict(results[label], path=path) for label, path in zip(labels, args.checkpoints)},
               'baseline': results[BASELINE], 'truth_colorfulness': truth_colorfulness,
               'images': results[BASELINE]['images'], 'precision': precision, 'keep_dropout': args.keep_dropout}
    utils.write_json(os.path.join(args.save_path, 'metrics.json'), metrics)
    print(f"wrote {len(grid_paths)} grids and metrics.json to {args.save_path}")
    if args.show:
        show_grids(grid_paths)
    return 0


if __name__ == '__main__':
    sys.exit(utils.run_cli(main))
