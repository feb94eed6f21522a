"""Colorize pictures of any size with a trained generator, keeping their lightness exactly.

The generator runs at the size it was trained at (--predict_at model): each picture's lightness L
is resized to it (32x32 for the reference's networks), the predicted ab is scaled back up smoothly
to the picture's own size, and joined with the picture's own full-resolution L. Nazeri et al.'s
larger networks are fully convolutional, so they can also run at the picture's own size
(--predict_at photo), rounded to the multiple they accept and capped at --max_side. Only colour is added: the output has the input's size,
name, format, bit depth (8 or 16) and alpha, and its L equals the input's within one level of 255
(JPEG, being lossy, moves a few percent of the pixels by two or three levels when it stores them).

A run's --holdout holds nothing out here (these are the user's own pictures), except from a
mid-epoch checkpoint's batch-norm recalibration, which uses only the images the run trained on.
"""
import dataclasses
import itertools
import os
import sys

import cv2
import numpy as np
import torch
from tqdm import tqdm

import dataset
import utils
from core import pictures
from core.cli import (Compute, OneLineArgumentParser, UserError, add_compute_flags, add_decoding_flags, number_in,
                      run_cli)
from metrics import decoding
from storage import checkpoints

EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
SIXTEEN_BIT_EXTENSIONS = ('.png', '.tif', '.tiff')
KINDS = 'PNG, JPEG, BMP, TIFF or WebP'
# A batch also ends at this many pixels, so that 64 large photos are never held in memory at once
# (each picture's full-resolution L waits in the batch for the generator's answer).
MAX_BATCH_PIXELS = 1 << 26
GAMUT_STEPS = 10  # bisection steps: within 1/1024 of the largest share of colour RGB can show
GAP = 6
MAX_SIDE = 1024


def parse_args(argv=None):
    p = OneLineArgumentParser(prog='colorize.py', description=__doc__.split('\n\n')[0])
    p.add_argument('inputs', nargs='+', metavar='INPUT', help=f'{KINDS} files, or folders of them')
    p.add_argument('--checkpoint', required=True, metavar='CK',
                   help="a train.py checkpoint, a generator .safetensors file or model folder (train.py, export.py), "
                        "or a bare generator state dict in the reference's layout")
    p.add_argument('--output', required=True, metavar='DIR',
                   help='where the colorized pictures go, under the same file names (created if needed)')
    p.add_argument('--batch_size', type=number_in(int, 1), default=64, help='(default: 64)')
    p.add_argument('--compare', action='store_true',
                   help='also write NAME_compare.png: input, grayscale and colorized side by side')
    p.add_argument('--predict_at', choices=('model', 'photo'), default='model',
                   help="model: predict the colours at the model's training size and scale them up; photo (64-pixel "
                        "models and larger): at the picture's own size, rounded to the multiple the network takes, the "
                        "longer side capped at --max_side (default: model)")
    p.add_argument('--max_side', type=number_in(int, 32), default=MAX_SIDE,
                   help=f'with --predict_at photo, the longest side the network runs at (default: {MAX_SIDE})')
    p.add_argument('--chroma_gain', type=number_in(float, 0), default=1.0, metavar='S',
                   help="the saturation dial: multiply the predicted ab by S (kept in the network's range) before "
                        "the colours are joined with each picture's lightness (default: 1)")
    p.add_argument('--data_path', default=None,
                   help="where the model's training data is, for a mid-epoch checkpoint's exact batch-norm "
                        "statistics, computed on the images its run trained on (without those train.py --holdout "
                        "kept out) (default: the path its run recorded, else ./data)")
    add_decoding_flags(p)
    add_compute_flags(p)
    return p.parse_args(argv)


def find_images(inputs):
    """The files to colorize, in order, each once. Folders give their image files (not their
    subfolders); a file named on the command line is taken whatever its name, and judged later."""
    found = []
    for path in inputs:
        if os.path.isdir(path):
            for name in sorted(os.listdir(path)):
                full = os.path.join(path, name)
                # Dot files are hidden junk such as macOS's ._photo.jpg, not pictures.
                if not name.startswith('.') and name.lower().endswith(EXTENSIONS) and os.path.isfile(full):
                    found.append(full)
        elif os.path.isfile(path):
            found.append(path)
        else:
            raise UserError(f"INPUT {path} does not exist")
    if not found:
        raise UserError(f"no input images found in {' '.join(inputs)}: expected {KINDS} files")
    seen, unique = set(), []
    for path in found:
        if os.path.realpath(path) not in seen:
            seen.add(os.path.realpath(path))
            unique.append(path)
    return unique


def output_paths(images, folder, compare):
    """(output, comparison or None) for each image, in --output under the input's name. Refuses
    two inputs that would write the same file, and outputs that would overwrite an input."""
    inputs = {os.path.realpath(p) for p in images}
    written_for = {}
    targets = []
    for path in images:
        name = os.path.basename(path)
        pair = (os.path.join(folder, name),
                os.path.join(folder, os.path.splitext(name)[0] + '_compare.png') if compare else None)
        for target in filter(None, pair):
            if os.path.realpath(target) in inputs:
                raise UserError(f"--output {folder} would overwrite the input {target}: pick another folder")
            if target in written_for:
                raise UserError(f"{written_for[target]} and {path} would both be written as {target}: "
                                f"colorize them into separate --output folders")
            written_for[target] = path
        targets.append(pair)
    return targets


class Skip(Exception):
    """One picture cannot be colorized; the others go on."""


@dataclasses.dataclass
class Picture:
    lightness: np.ndarray        # (H, W) float32, L in [0, 100] at full resolution
    alpha: np.ndarray | None     # as read, copied into the output unchanged
    depth: type                  # np.uint8 or np.uint16: what the output is written as
    original: np.ndarray | None  # the pixels as read, for --compare only


def read_picture(path, keep_original):
    """A picture's full-resolution lightness, alpha and output depth, or Skip saying why not."""
    if not path.lower().endswith(EXTENSIONS):
        raise Skip(f"not a {KINDS} file")
    try:
        pixels = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    except cv2.error:
        pixels = None
    if pixels is None or pixels.size == 0:
        raise Skip("cannot be read as an image")
    if pixels.dtype not in (np.uint8, np.uint16):
        raise Skip(f"has {pixels.dtype} samples; only 8- and 16-bit pictures are supported")
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    channels = pixels.shape[2]
    if channels not in (1, 2, 3, 4):
        raise Skip(f"has {channels} channels; expected gray, colour, or either with alpha")
    colour = pixels[..., :3] if channels >= 3 else pixels[..., :1]
    alpha = pixels[..., -1] if channels in (2, 4) else None
    unit = np.float32(1 / np.iinfo(pixels.dtype).max)
    colour = np.multiply(colour, unit, dtype=np.float32)
    if colour.shape[2] == 1:
        colour = cv2.cvtColor(colour, cv2.COLOR_GRAY2BGR)
    # BGR2Lab is the RGB2Lab conversion on OpenCV's channel order: no reordering copies needed.
    lightness = cv2.cvtColor(colour, cv2.COLOR_BGR2Lab)[..., 0].copy()
    sixteen = pixels.dtype == np.uint16 and path.lower().endswith(SIXTEEN_BIT_EXTENSIONS)
    return Picture(lightness, alpha, np.uint16 if sixteen else np.uint8, pixels if keep_original else None)


def resize(image, width, height):
    # Shrinking averages every pixel a cell covers, so fine detail does not alias; growing is bicubic.
    shrink = width <= image.shape[1] and height <= image.shape[0]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def network_size(G, height, width, predict_at, max_side):
    """(height, width) the generator runs at for a picture of this size."""
    if G.fixed_size or predict_at == 'model':
        side = G.fixed_size or G.image_size
        return side, side
    scale = min(1.0, max_side / max(height, width))
    m = G.size_multiple
    return (max(m, round(height * scale / m) * m), max(m, round(width * scale / m) * m))


@torch.no_grad()
def predict_ab(G, batch, compute, predict_at='model', max_side=MAX_SIDE, chroma_gain=1.0):
    """The generator's ab for each picture's lightness resized to the size it runs at (see
    network_size), times `chroma_gain`: a list of (h, w, 2) arrays in [-1, 1]."""
    sizes = [network_size(G, *p.lightness.shape, predict_at, max_side) for p in batch]
    predictions = [None] * len(batch)
    for size in dict.fromkeys(sizes):  # one generator call per size
        members = [i for i, s in enumerate(sizes) if s == size]
        L = np.stack([pictures.lightness_to_network(np.clip(resize(batch[i].lightness, size[1], size[0]), 0, 100))
                      for i in members])
        with compute.autocast:
            ab = G(torch.from_numpy(L[:, None].astype(np.float32)).to(compute.device)).float()
        ab = pictures.with_chroma_gain(ab, chroma_gain)
        for i, one in zip(members, ab.permute(0, 2, 3, 1).cpu().numpy()):
            predictions[i] = one
    return predictions


def lab_to_bgr_keeping_lightness(lab):
    """(H, W, 3) float32 Lab -> (H, W, 3) float32 BGR in [0, 1] with the same L.

    OpenCV clips a colour that RGB cannot show to 0 or 1, which changes its lightness. Such a
    pixel gets instead the largest share of its predicted ab (found by bisection) that RGB can
    show: gray always can."""
    h, w, _ = lab.shape
    pixels = lab.reshape(1, h * w, 3)
    bgr = cv2.cvtColor(pixels, cv2.COLOR_Lab2BGR)
    clipped = np.flatnonzero(((bgr <= 0) | (bgr >= 1)).any(axis=2)[0])
    if clipped.size:
        L, ab = pixels[:, clipped, :1], pixels[:, clipped, 1:]
        low, high = np.zeros_like(L), np.ones_like(L)
        for _ in range(GAMUT_STEPS):
            share = (low + high) / 2
            trial = cv2.cvtColor(np.concatenate([L, ab * share], axis=2), cv2.COLOR_Lab2BGR)
            inside = ((trial > 0) & (trial < 1)).all(axis=2, keepdims=True)
            low, high = np.where(inside, share, low), np.where(inside, high, share)
        bgr[:, clipped] = cv2.cvtColor(np.concatenate([L, ab * low], axis=2), cv2.COLOR_Lab2BGR)
    return bgr.reshape(h, w, 3)


def round_keeping_lightness(bgr, lightness):
    """Float BGR -> uint8. Rounding each channel to the nearest level can move L by most of a level
    of 255; rounding each one down or up, whichever of the eight choices has the L nearest the
    target, keeps it within a fraction of one."""
    scaled = bgr * np.float32(255)
    best = np.rint(scaled)
    best_error = np.abs(cv2.cvtColor(best / np.float32(255), cv2.COLOR_BGR2Lab)[..., 0] - lightness)
    floor = np.floor(scaled)
    for offset in itertools.product((0, 1), repeat=3):
        candidate = np.minimum(floor + np.array(offset, np.float32), 255)
        error = np.abs(cv2.cvtColor(candidate / np.float32(255), cv2.COLOR_BGR2Lab)[..., 0] - lightness)
        better = error < best_error
        best[better], best_error[better] = candidate[better], error[better]
    return best.astype(np.uint8)


def colorize(picture, ab_small):
    """Full-resolution L joined with the predicted ab scaled up to the picture's size: float BGR."""
    h, w = picture.lightness.shape
    ab = pictures.ab_from_network(np.clip(resize(ab_small, w, h).reshape(h, w, 2), -1, 1))
    return lab_to_bgr_keeping_lightness(np.dstack([picture.lightness, ab]))


def to_depth(image, depth):
    return np.rint(image * np.iinfo(depth).max).astype(depth)


def with_alpha(bgr, alpha, depth):
    if alpha is None:
        return bgr
    if alpha.dtype != depth:  # a 16-bit picture whose format stores 8 bits
        alpha = to_depth(alpha / np.float32(np.iinfo(alpha.dtype).max), depth)
    return np.dstack([bgr, alpha])


def stored(picture, bgr):
    """The output's pixels: the input's bit depth (16-bit levels are fine enough to round plainly) and alpha."""
    if picture.depth == np.uint8:
        pixels = round_keeping_lightness(bgr, picture.lightness)
    else:
        pixels = to_depth(bgr, picture.depth)
    return with_alpha(pixels, picture.alpha, picture.depth)


def side_by_side(picture, output):
    """Input, grayscale and colorized (`output`, as stored), 8-bit, with white gaps between them;
    each keeps the input's alpha if it has one."""
    def eight_bit(pixels):
        return to_depth(pixels / np.float32(65535), np.uint8) if pixels.dtype == np.uint16 else pixels
    original = eight_bit(picture.original)
    if original.shape[2] < 3:
        original = np.dstack([cv2.cvtColor(original[..., :1], cv2.COLOR_GRAY2BGR), original[..., 1:]])
    h, w = picture.lightness.shape
    gray = cv2.cvtColor(np.dstack([picture.lightness, np.zeros((h, w, 2), np.float32)]), cv2.COLOR_Lab2BGR)
    # ab = 0 comes back gray only to float precision: one channel, repeated, is exactly gray.
    gray = np.repeat(to_depth(np.clip(gray[..., 1:2], 0, 1), np.uint8), 3, axis=2)
    alpha = None if picture.alpha is None else original[..., 3]
    panels = [original, with_alpha(gray, alpha, np.uint8), eight_bit(output)]
    gap = np.full((h, GAP, panels[0].shape[2]), 255, np.uint8)
    return np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)


def write_picture(path, image):
    """Encode by the file's extension and write atomically. JPEG is lossy: quality 100 with
    full-resolution colour is as close as it comes to the pixels it is given."""
    params = []
    if path.lower().endswith(('.jpg', '.jpeg')):
        params = [cv2.IMWRITE_JPEG_QUALITY, 100, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    pictures.write_encoded(path, image, params)


def report(path, reason):
    tqdm.write(f"{os.path.basename(__file__)}: skipped {path}: {reason}", file=sys.stderr)


def finish_batch(G, batch, compute, predict_at, max_side, chroma_gain=1.0):
    """Colorize and write a batch of (path, targets, picture); returns how many failed to write."""
    failed = 0
    predictions = predict_ab(G, [picture for _, _, picture in batch], compute, predict_at, max_side, chroma_gain)
    for (path, (target, comparison), picture), ab in zip(batch, predictions):
        output = stored(picture, colorize(picture, ab))
        try:
            write_picture(target, output)
            if comparison:
                write_picture(comparison, side_by_side(picture, output))
        except (OSError, cv2.error) as e:
            reason = getattr(e, 'strerror', None) or ' '.join(str(e).split())
            report(path, f"could not write its output ({reason})")
            failed += 1
    return failed


def main(argv=None):
    args = parse_args(argv)
    compute = Compute.from_flags(args)
    images = find_images(args.inputs)
    targets = output_paths(images, args.output, args.compare)

    def training_images(run_args):  # those the run trained on, as test.py takes them
        data_path = args.data_path or run_args.get('data_path') or './data'
        return dataset.split_holdout(dataset.open_split(run_args.get('dataset', 'cifar10'), data_path, True,
                                                        run_args['image_size']), run_args.get('holdout', 0))[0]
    G, run_args = checkpoints.generator_for_use(args.checkpoint, compute, training_images)
    used = decoding.in_use(G, run_args, args.temperature, args.blend)
    if used:
        print(f"decoding at {decoding.describe(used)}: {used['source']}")
    utils.check_writable_folder(args.output, '--output')

    failed = 0
    batch, batch_pixels = [], 0
    bar = tqdm(total=len(images), desc='colorize', unit='img', dynamic_ncols=True)
    for i, (path, pair) in enumerate(zip(images, targets)):
        try:
            picture = read_picture(path, keep_original=args.compare)
        except Skip as e:
            report(path, str(e))
            failed += 1
            bar.update()
        else:
            batch.append((path, pair, picture))
            batch_pixels += picture.lightness.size
        if batch and (len(batch) == args.batch_size or batch_pixels >= MAX_BATCH_PIXELS or i == len(images) - 1):
            failed += finish_batch(G, batch, compute, args.predict_at, args.max_side, args.chroma_gain)
            bar.update(len(batch))
            batch, batch_pixels = [], 0
    bar.close()
    print(f"colorized {len(images) - failed} of {len(images)} pictures into {args.output}"
          + (f"; {failed} skipped (see above)" if failed else ''))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
