"""The images a run trains and validates on: CIFAR-10's batch files held in memory as Lab
tensors, or a folder of photographs streamed by folders.py, behind one interface (`batches`)."""
import io
import os
import pickle

import numpy as np
import torch

from core.cli import UserError
from core.pictures import rgb_to_lab

CIFAR_FOLDER = 'cifar-10-batches-py'
# The names of the labels 0 to 9 (batches.meta of the official archive).
CLASS_NAMES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck')
CIFAR_URL = 'https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz'
CIFAR_MD5 = 'c58f30108f718f92721af3b95e74349a'
TRAIN_FILES = tuple(f'data_batch_{i}' for i in range(1, 6))
TEST_FILES = ('test_batch',)
DATASETS = ('cifar10', 'folder')

# What a CIFAR batch pickle may contain besides plain data: numpy arrays and their dtypes.
# Anything else (os.system, builtins.eval, ...) is refused before it can run.
_ALLOWED_GLOBALS = {
    ('numpy', 'ndarray'),
    ('numpy', 'dtype'),
    ('numpy.core.multiarray', '_reconstruct'),
    ('numpy._core.multiarray', '_reconstruct'),
    ('numpy.core.multiarray', 'scalar'),
    ('numpy._core.multiarray', 'scalar'),
    ('_codecs', 'encode'),  # how protocol 2 stores bytes: str -> bytes, no side effects
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only plain data and numpy arrays are allowed")


def safe_unpickle(data):
    """Unpickle bytes that may hold only plain data and numpy arrays."""
    return _NumpyOnlyUnpickler(io.BytesIO(data), encoding='bytes').load()


def read_batch_file(path):
    """One CIFAR batch file -> (N, 32, 32, 3) uint8 RGB and (N,) int64 labels; names the file on error."""
    try:
        with open(path, 'rb') as f:
            raw = f.read()
    except OSError as e:
        raise UserError(f"cannot read the data batch {path} ({e.strerror or e})")
    try:
        batch = safe_unpickle(raw)
    except Exception as e:
        raise UserError(f"data batch {path} is corrupt, truncated or unsafe ({e}); "
                        f"replace it with the file from the official CIFAR-10 archive")
    data = batch.get(b'data') if isinstance(batch, dict) else None
    labels = batch.get(b'labels') if isinstance(batch, dict) else None
    if (not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2
            or data.shape[1] != 3 * 32 * 32 or labels is None or len(labels) != len(data)):
        raise UserError(f"data batch {path} is not a CIFAR-10 batch (expected b'data' uint8 (N, 3072) "
                        f"and N b'labels'); replace it with the file from the official archive")
    rgb = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(rgb), np.asarray(labels, dtype=np.int64)


def find_cifar_folder(data_path, download=True):
    """The `cifar-10-batches-py` folder under `data_path` (or `data_path` itself); downloads the
    official archive there when it is missing."""
    for candidate in (os.path.join(data_path, CIFAR_FOLDER), data_path):
        if os.path.isfile(os.path.join(candidate, 'test_batch')):
            return candidate
    how_to_fix = (f"put the folder {CIFAR_FOLDER}/ (data_batch_1..5, test_batch) from the official "
                  f"archive {os.path.basename(CIFAR_URL)} under {data_path}, or point --data_path at it")
    if not download:
        raise UserError(f"no CIFAR-10 data in {data_path}: {how_to_fix}")
    try:
        from torchvision.datasets.utils import download_and_extract_archive
        os.makedirs(data_path, exist_ok=True)
        download_and_extract_archive(CIFAR_URL, download_root=data_path, md5=CIFAR_MD5)
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"no CIFAR-10 data in {data_path} and the download failed ({reason}): {how_to_fix}")
    folder = os.path.join(data_path, CIFAR_FOLDER)
    if not os.path.isfile(os.path.join(folder, 'test_batch')):
        raise UserError(f"the downloaded archive did not hold {CIFAR_FOLDER}/test_batch: {how_to_fix}")
    return folder


class LabImages:
    """A whole split in memory: `lab` (N, 32, 32, 3) float32 in network scale, pixels last, so
    that a gathered batch permuted to (B, 3, 32, 32) is already channels-last; `rgb`
    (N, 32, 32, 3) uint8, the originals, for scores; `labels` (N,)."""

    class_names = CLASS_NAMES
    image_size = 32

    def __init__(self, rgb, labels):
        self.rgb = rgb
        self.labels = labels
        self.lab = torch.from_numpy(rgb_to_lab(rgb, network_scale=True))

    def __len__(self):
        return len(self.lab)

    def batches(self, batch_size, shuffle=False, flip=False, generator=None, device='cpu', start=0, share=None,
                with_rgb=False):
        """Yield (indices, lab) batches on `device`: a random order and a random horizontal flip
        (p = 0.5) for training, the fixed order for validation. `start` skips the first batches;
        `share` maps a batch's indices (and flips) to the part this process takes of it, so that
        every process draws the same order and flips and together they see each whole batch.
        `with_rgb`: (indices, lab, the uint8 RGB originals as an (N, H, W, 3) array)."""
        n = len(self.lab)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        flips = torch.rand(n, generator=generator) < 0.5 if flip else None
        share = share or (lambda part: part)
        # On a GPU the split lives there and batches are gathered and flipped there, by the same
        # order and flips (drawn on the CPU as before): a step copies nothing from the host.
        on_gpu = torch.device(device).type == 'cuda'
        images = self.on_device(device) if on_gpu else self.lab
        device_order = order.to(device) if on_gpu else order
        device_flips = flips.to(device) if on_gpu and flips is not None else flips
        for first in range(start * batch_size, n, batch_size):
            idx = share(order[first:first + batch_size])
            lab = images[share(device_order[first:first + batch_size])]
            if flips is not None:
                # (B, H, W, C): the width axis is 2
                lab = torch.where(share(device_flips[first:first + batch_size])[:, None, None, None], lab.flip(2), lab)
            lab = lab.to(device, non_blocking=True).permute(0, 3, 1, 2)
            if with_rgb:
                rgb = self.rgb[idx.numpy()]
                if flips is not None:
                    rgb = np.where(share(flips[first:first + batch_size]).numpy()[:, None, None, None], rgb[:, :, ::-1], rgb)
                yield idx, lab, rgb
            else:
                yield idx, lab

    def on_device(self, device):
        """The Lab split on `device`, copied there once (CIFAR-10's training split: 614 MB)."""
        key = str(device)  # 'cuda' and 'cuda:0' are told apart: at worst one more copy
        if getattr(self, '_device_lab', (None, None))[0] != key:
            self._device_lab = key, self.lab.to(device)
        return self._device_lab[1]

    def num_batches(self, batch_size):
        return (len(self.lab) + batch_size - 1) // batch_size

    def take_skip_report(self, list_path=None):
        """CIFAR-10's batch files hold no image it cannot use (folders.FolderImages may skip some)."""
        return None

    def subset(self, keep):
        """The images at the indices `keep` (an int array), in that order, without converting again."""
        part = object.__new__(type(self))
        part.rgb, part.labels = self.rgb[keep], self.labels[keep]
        part.lab = self.lab[torch.from_numpy(np.asarray(keep, np.int64))]
        return part


def load_split(data_path, train, download=True):
    folder = find_cifar_folder(data_path, download=download)
    files = TRAIN_FILES if train else TEST_FILES
    parts = []
    for name in files:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise UserError(f"data batch {path} is missing: copy it from the official CIFAR-10 archive")
        parts.append(read_batch_file(path))
    rgb = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return LabImages(rgb, labels)


def open_splits(dataset, data_path, image_size, procs, num_workers=0, holdout=0, pin_memory=False):
    """(training set, test set, held-out images) of a run (train.py's --dataset, --data_path,
    --image_size, --num_workers, --holdout: the training set without its last N images, which
    are the held-out ones, else None); the test set and the held-out images on the first process
    only, which alone validates and chooses a decoding. The first process on each machine
    downloads CIFAR-10 if needed while the others wait."""
    if dataset == 'folder':
        def split(train):
            return open_split('folder', data_path, train, image_size, num_workers, pin_memory)
        train_set, test_set = split(train=True), split(train=False) if procs.is_main else None
    else:
        if procs.local_rank > 0:
            procs.barrier()
        train_set = load_split(data_path, train=True)
        test_set = load_split(data_path, train=False) if procs.is_main else None
        if procs.local_rank == 0:
            procs.barrier()
    held_out = None
    if holdout:
        train_set, held_out = split_holdout(train_set, holdout)
        held_out = held_out if procs.is_main else None
        print(f"--holdout {holdout}: training on the first {len(train_set)} training images, "
              f"the last {holdout} kept out for test.py --split holdout")
    return train_set, test_set, held_out


def check_last_batch(n_images, batch_size, world_size):
    """Refuse a last batch of each epoch too small for every process to take a part of it: on
    the images the run trains on, after everything that drops some."""
    last_batch = n_images % batch_size
    if 0 < last_batch < world_size:
        raise UserError(f"the last batch of each epoch holds {last_batch} of the {n_images} training images, "
                        f"fewer than the {world_size} processes: pick another --batch_size or fewer processes")


def split_holdout(train_set, holdout):
    """(the training images a run trains on, the last `holdout` ones it keeps out): the held-out
    images are where a decoding is chosen (test.py --split holdout), never seen in training."""
    n = len(train_set)
    if holdout <= 0:
        return train_set, None
    if holdout >= n:
        raise UserError(f"--holdout {holdout} keeps out all {n} training images: pick a number below {n}")
    return train_set.subset(np.arange(n - holdout)), train_set.subset(np.arange(n - holdout, n))


def open_split(dataset, data_path, train, image_size=32, num_workers=0, pin_memory=False):
    """One split of a data set: the training images, or the ones a run validates and test.py scores."""
    if dataset == 'folder':
        from core.folders import FolderImages
        return FolderImages(data_path, 'train' if train else 'val', image_size, num_workers, pin_memory)
    return load_split(data_path, train=train)
