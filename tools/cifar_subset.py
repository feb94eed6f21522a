"""Write a small real CIFAR-10 (the first images of each split) in the official python-batch
format, for machines without network: dataset.py reads it unchanged.

    python tools/cifar_subset.py --data_path ../shared/data --out .gpu_data --train 5000 --test 1000

Writes OUT/cifar-10-batches-py/data_batch_1..5 (the training images split evenly), test_batch
and batches.meta: 6,000 images are 27 MB (pickle protocol 2, as the official files). At most
40 MB is allowed (about 8,500 images), so
that the folder can travel with a repository to a machine that has no copy of CIFAR-10.
"""
import os
import pickle
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from core.cli import OneLineArgumentParser  # noqa: E402
from dataset import CIFAR_FOLDER, CLASS_NAMES, TEST_FILES, TRAIN_FILES, find_cifar_folder, read_batch_file  # noqa: E402

LIMIT_BYTES = 40_000_000
IMAGE_BYTES = 3 * 32 * 32
FILE_BYTES_PER_IMAGE = 4_500  # protocol 2 stores bytes as latin-1 text: about 1.45x the pixels


def write_batch(path, rgb, labels, name):
    data = np.ascontiguousarray(rgb.transpose(0, 3, 1, 2).reshape(len(rgb), -1))
    batch = {b'batch_label': name.encode(), b'labels': [int(x) for x in labels], b'data': data,
             b'filenames': [f'{name}_{i:05d}.png'.encode() for i in range(len(rgb))]}
    with open(path, 'wb') as f:
        pickle.dump(batch, f, protocol=2)


def first_images(folder, files, n):
    """The first n images and labels of the batch files, in order."""
    parts, have = [], 0
    for name in files:
        if have >= n:
            break
        rgb, labels = read_batch_file(os.path.join(folder, name))
        parts.append((rgb[:n - have], labels[:n - have]))
        have += len(parts[-1][0])
    if have < n:
        sys.exit(f"cifar_subset.py: error: {folder} holds {have} images in {', '.join(files)}, fewer than {n}")
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def main(argv=None):
    p = OneLineArgumentParser(prog='cifar_subset.py', description=__doc__.split('\n\n')[0])
    p.add_argument('--data_path', default='../shared/data', help='where cifar-10-batches-py is (default: ../shared/data)')
    p.add_argument('--out', default='.gpu_data', help='the folder to write into (default: .gpu_data)')
    p.add_argument('--train', type=int, default=5000, help='training images, a multiple of 5 (default: 5000)')
    p.add_argument('--test', type=int, default=1000, help='test images (default: 1000)')
    args = p.parse_args(argv)
    if args.train < 5 or args.train % 5 or args.test < 1:
        p.error(f"--train {args.train} --test {args.test}: --train must be a positive multiple of 5 (five batch "
                f"files) and --test positive")
    if (args.train + args.test) * FILE_BYTES_PER_IMAGE > LIMIT_BYTES:
        p.error(f"--train {args.train} --test {args.test} would write {(args.train + args.test) * FILE_BYTES_PER_IMAGE / 1e6:.0f} "
                f"MB, over the {LIMIT_BYTES / 1e6:.0f} MB limit: ask for fewer images")
    source = find_cifar_folder(args.data_path, download=False)
    out = os.path.join(args.out, CIFAR_FOLDER)
    os.makedirs(out, exist_ok=True)
    rgb, labels = first_images(source, TRAIN_FILES, args.train)
    per_file = args.train // 5
    for i, name in enumerate(TRAIN_FILES):
        write_batch(os.path.join(out, name), rgb[i * per_file:(i + 1) * per_file],
                    labels[i * per_file:(i + 1) * per_file], name)
    rgb, labels = first_images(source, TEST_FILES, args.test)
    write_batch(os.path.join(out, TEST_FILES[0]), rgb, labels, TEST_FILES[0])
    with open(os.path.join(out, 'batches.meta'), 'wb') as f:
        pickle.dump({b'label_names': [c.encode() for c in CLASS_NAMES], b'num_cases_per_batch': per_file,
                     b'num_vis': IMAGE_BYTES}, f, protocol=2)
    size = sum(os.path.getsize(os.path.join(out, n)) for n in os.listdir(out))
    print(f"wrote {args.train} training and {args.test} test images of {source} to {out} ({size / 1e6:.1f} MB)")
    return 0


if __name__ == '__main__':
    sys.exit(main())
