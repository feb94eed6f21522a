"""Write CIFAR-10 out as a folder of PNG photographs, for trying the folder data set on real images.

    python tools/cifar_folder.py --data_path /work/shared/data --out F [--size 64] [--train_images N] [--val_images N]

Writes F/train/<class name>/<index>.png from CIFAR-10's training split and F/val/<class name>/<index>.png
from its test split, the layout `folders.FolderImages` reads (`--dataset folder --data_path F`).
<index> is the image's place in its split, zero-padded so that file names sort in that order.
--size other than 32 resizes the 32x32 originals with bicubic interpolation (cv2.INTER_CUBIC);
at 32 the PNGs hold exactly CIFAR-10's pixels. --train_images and --val_images keep the first N
images of each split (default: all, 50,000 and 10,000). All ten class folders are made in both
splits, even where a limit leaves one empty, so that both splits number the classes alike.

The images are written into F.partial, which is renamed to F at the end: an interrupted run leaves
no F that looks complete (run again: a leftover F.partial of this tool's is removed first).
A non-empty F is refused.
"""
import os
import shutil
import sys

# The project's modules live in the repository root, the parent folder of tools/.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2  # noqa: E402
from tqdm import tqdm  # noqa: E402

from core.cli import OneLineArgumentParser, UserError, number_in, run_cli  # noqa: E402
from dataset import CLASS_NAMES, load_split  # noqa: E402

SPLITS = (('train', True), ('val', False))  # folder name, CIFAR-10 training split or not


def parse_args(argv=None):
    p = OneLineArgumentParser(prog='cifar_folder.py', description=__doc__.split('\n\n')[0])
    p.add_argument('--data_path', default='./data',
                   help='where CIFAR-10 is (cifar-10-batches-py/ in it, or that folder itself) (default: ./data)')
    p.add_argument('--out', required=True, help='the folder to create; it must not exist or be empty')
    p.add_argument('--size', type=number_in(int, 1), default=32,
                   help="the PNGs' side in pixels; other than 32, resized bicubically (default: 32, the originals)")
    p.add_argument('--train_images', type=number_in(int, 1), default=None,
                   help='write only the first N training images (default: all 50,000)')
    p.add_argument('--val_images', type=number_in(int, 1), default=None,
                   help='write only the first N test images (default: all 10,000)')
    return p.parse_args(argv)


def _is_ours(folder):
    """Whether `folder` (a leftover F.partial) holds nothing but what this tool writes there."""
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if name not in ('train', 'val') or not os.path.isdir(path) or os.path.islink(path):
            return False
        for class_name in os.listdir(path):
            if class_name not in CLASS_NAMES:
                return False
    return True


def check_out(out):
    """Refuse an existing non-empty --out; clear a leftover out.partial of an interrupted run."""
    if os.path.lexists(out):
        if not os.path.isdir(out):
            raise UserError(f"--out {out} exists and is not a folder; pick a new folder")
        if os.listdir(out):
            raise UserError(f"--out {out} is not empty; pick a new or empty folder (nothing was written)")
    partial = out + '.partial'
    if os.path.lexists(partial):
        if not os.path.isdir(partial) or os.path.islink(partial) or not _is_ours(partial):
            raise UserError(f"{partial} exists and is not a leftover of this tool; move it away first")
        print(f"removing {partial}, left by an interrupted run", file=sys.stderr)
        shutil.rmtree(partial)
    parent = os.path.dirname(out) or '.'
    if not os.path.isdir(parent):
        raise UserError(f"--out {out}: the folder {parent} does not exist")
    return partial


def write_split(images, limit, folder, size, desc):
    """The first `limit` images of a split as folder/<class>/<index>.png -> how many were written."""
    n = len(images) if limit is None else min(limit, len(images))
    for class_name in CLASS_NAMES:
        os.makedirs(os.path.join(folder, class_name), exist_ok=True)
    digits = max(5, len(str(n - 1)))
    for i in tqdm(range(n), desc=desc, unit='img', dynamic_ncols=True, mininterval=0.5):
        rgb = images.rgb[i]
        if size != rgb.shape[0]:
            rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_CUBIC)
        path = os.path.join(folder, CLASS_NAMES[int(images.labels[i])], f'{i:0{digits}d}.png')
        if not cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
            raise UserError(f"cannot write {path} (is the disk full?)")
    return n


def main(argv=None):
    args = parse_args(argv)
    out = os.path.normpath(args.out)
    partial = check_out(out)
    # Read both splits before writing anything, so that missing data fails at once.
    splits = [(name, load_split(args.data_path, train=train, download=False)) for name, train in SPLITS]
    limits = {'train': args.train_images, 'val': args.val_images}
    try:
        os.makedirs(partial)
    except OSError as e:
        raise UserError(f"cannot create {partial} ({e.strerror or e})")
    try:
        counts = {name: write_split(images, limits[name], os.path.join(partial, name), args.size, name)
                  for name, images in splits}
    except OSError as e:
        raise UserError(f"cannot write into {partial} ({e.strerror or e}); it is left there, run again to redo it")
    if os.path.isdir(out):
        if os.listdir(out):  # something appeared there while writing
            raise UserError(f"--out {out} is no longer empty; the images are in {partial}")
        os.rmdir(out)
    os.rename(partial, out)
    print(f"wrote {counts['train']} training and {counts['val']} validation images "
          f"({args.size}x{args.size} PNG, {len(CLASS_NAMES)} class folders each) to {out}")
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
