"""Folders of photographs, decoded and converted to Lab batches by DataLoader workers.

`FolderImages` stands in for `dataset.LabImages` where training and validation use it: the same
`batches()` (same draws from the caller's generator, same `start` and `share`, the same
channels-last (B, 3, S, S) network-scale Lab), but the images are files, listed once and decoded
batch by batch, so that a data set of any size (Places365: 1.8 million photographs) fits.

Layouts under the data folder ROOT, tried in this order for each split:
  (a) ROOT/train/ and ROOT/val/, any depth; an image's class is its first subfolder there;
  (b) Places365's "easy format": ROOT/places365_standard/train|val/<class>/*.jpg (same rule);
  (c) Places365's 256x256 release: ROOT/data_256/<letter>/<class>[/<subclass>]/*.jpg for
      training (the class is the path below the letter) and ROOT/val_256/*.jpg for validation,
      labelled by places365_val.txt and named by categories_places365.txt (in ROOT or in
      ROOT/filelist_places365-standard/).
"""
import copy
import os
import re
from typing import NamedTuple

import cv2
import numpy as np
import torch
import torch.utils.data

from utils import UserError, atomic_write
from core.pictures import rgb_to_lab

EXTENSIONS = (b'jpg', b'jpeg', b'png', b'webp', b'bmp', b'tif', b'tiff')
_EXTENSIONS = frozenset(EXTENSIONS)
UNREADABLE, GRAYSCALE = 'unreadable', 'grayscale'
SKIP_REASONS = (UNREADABLE, GRAYSCALE)
# How many other images are tried in place of one that cannot be used before giving up.
MAX_TRIES = 200
# A photograph longer than this many times its width (or the reverse) is first cut to that shape
# around the crop, so that resizing a strip of 1 x 100000 pixels cannot exhaust the memory.
MAX_ASPECT = 4
# How many skipped files take_skip_report names: every unreadable one up to NAMED_UNREADABLE
# (they are what needs fixing), then grayscale ones up to NAMED_SKIPS names in all.
NAMED_SKIPS = 5
NAMED_UNREADABLE = 20
_JPEG_START, _JPEG_END = b'\xff\xd8', b'\xff\xd9'
_PNG_START, _PNG_END = b'\x89PNG\r\n\x1a\n', b'IEND'
# Trailing padding some writers leave after a JPEG's end marker or a PNG's last chunk.
_TAIL = 64
_SPLIT_FOLDERS = {'train': ('train', 'places365_standard/train', 'data_256'),
                  'val': ('val', 'places365_standard/val', 'val_256')}
_PLACES_LISTS = ('', 'filelist_places365-standard')


# ---------------------------------------------------------------- listing

class Listing(NamedTuple):
    """One split's image files, stored compactly: their paths below `folder` as one byte blob
    (no Python object per file, so that forked DataLoader workers share it instead of copying it)."""
    root: str
    folder: str              # the split's folder, relative to root: 'train', 'val_256', ...
    blob: np.ndarray         # uint8: the paths below `folder` (file system bytes, '/'-separated), end to end
    offsets: np.ndarray      # int64 (N + 1,): image i's path is blob[offsets[i]:offsets[i + 1]]
    labels: np.ndarray       # int64 (N,): class index, -1 where none
    class_names: tuple

    def path(self, i):
        """Image i's path relative to root, as a str (for messages)."""
        return os.path.join(self.folder, os.fsdecode(self.blob[self.offsets[i]:self.offsets[i + 1]].tobytes()))

    def subset(self, keep):
        """The listing of the images at the indices `keep` (an int array), in that order."""
        keep = np.asarray(keep, np.int64)
        starts, lengths = self.offsets[keep], self.offsets[keep + 1] - self.offsets[keep]
        offsets = np.zeros(len(keep) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # each kept path's bytes, gathered in one indexing: byte k of the new blob comes from
        # its path's old start plus its place within the path
        source = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
        return self._replace(blob=self.blob[source], offsets=offsets, labels=self.labels[keep])

    def full_path(self, i):
        """Image i's path as file system bytes, for opening it."""
        return os.path.join(os.fsencode(self.root), os.fsencode(self.folder),
                            self.blob[self.offsets[i]:self.offsets[i + 1]].tobytes())


def _walk(top):
    """(folder below top, its image file names) for top and every folder under it, as bytes,
    depth first with the names of each folder sorted: a fixed order on every file system.
    Dot files and dot folders are left out; folders reached twice through links are walked once."""
    seen = set()
    stack = [b'']
    while stack:
        rel = stack.pop()
        here = os.path.join(top, rel) if rel else top
        try:
            with os.scandir(here) as it:
                entries = list(it)
        except OSError as e:
            if not rel:
                raise UserError(f"cannot list the folder {os.fsdecode(top)} ({e.strerror or e})")
            continue  # an unreadable subfolder holds nothing usable
        files, folders = [], []
        for entry in entries:
            name = entry.name
            if name.startswith(b'.'):
                continue
            try:
                is_folder = entry.is_dir()
                if is_folder and entry.is_symlink():
                    st = entry.stat()
                    if (st.st_dev, st.st_ino) in seen:
                        continue
                    seen.add((st.st_dev, st.st_ino))
            except OSError:
                continue
            if is_folder:
                folders.append(name)
            elif b'.' in name and name.rpartition(b'.')[2].lower() in _EXTENSIONS:
                files.append(name)
        files.sort()
        folders.sort(reverse=True)  # popped from the end: in sorted order
        yield rel, files
        stack.extend(rel + b'/' + f if rel else f for f in folders)


def _subfolder_names(folder):
    """The names of the non-dot folders directly in `folder` (bytes), or none where it is missing."""
    try:
        with os.scandir(folder) as it:
            return {e.name for e in it if not e.name.startswith(b'.') and e.is_dir()}
    except OSError:
        return set()


def _read_pairs(path, what):
    """Lines '<name> <integer>' of a Places365 list file -> [(name, integer)]; UserError on a bad line."""
    pairs = []
    try:
        with open(path, encoding='utf-8') as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                parts = line.split()
                if len(parts) != 2 or not re.fullmatch(r'\d+', parts[1]):
                    raise UserError(f"line {number} of {path} is not '<{what}> <number>': {line.strip()[:80]!r}")
                pairs.append((parts[0], int(parts[1])))
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {path} ({getattr(e, 'strerror', None) or e})")
    return pairs


def _places_file(root, name):
    """The first of ROOT/name and ROOT/filelist_places365-standard/name that exists, else None."""
    for sub in _PLACES_LISTS:
        path = os.path.join(root, sub, name)
        if os.path.isfile(path):
            return path
    return None


def _places_categories(root):
    """Class names from categories_places365.txt ('/a/airfield 0' -> 'airfield'), in index order; None without it."""
    path = _places_file(root, 'categories_places365.txt')
    if path is None:
        return None
    pairs = _read_pairs(path, 'category')
    names = [None] * len(pairs)
    for name, index in pairs:
        if index >= len(pairs) or names[index] is not None:
            raise UserError(f"{path} does not number its {len(pairs)} categories 0 to {len(pairs) - 1} once each")
        # '/a/airfield' -> 'airfield', '/a/apartment_building/outdoor' -> 'apartment_building/outdoor'
        names[index] = re.sub(r'^/?[^/]/', '', name)
    return tuple(names)


def list_images(root, split):
    """The image files of `split` ('train' or 'val') under the data folder `root` -> Listing.
    Walks once with os.scandir; UserError (one line) where no layout or no image file is found."""
    if split not in _SPLIT_FOLDERS:
        raise ValueError(f"split must be 'train' or 'val', not {split!r}")
    root = os.fspath(root)
    candidates = _SPLIT_FOLDERS[split]
    folder = next((c for c in candidates if os.path.isdir(os.path.join(root, c))), None)
    if folder is None:
        if not os.path.isdir(root):
            raise UserError(f"the data folder {root} does not exist (it should hold {candidates[0]}/ and "
                            f"{_SPLIT_FOLDERS['val'][0] if split == 'train' else 'train'}/ folders of images)")
        looked = ', '.join(os.path.join(root, c) + '/' for c in candidates)
        raise UserError(f"no {'training' if split == 'train' else 'validation'} images under {root}: "
                        f"looked for the folders {looked} (Places365's 256x256 release)")
    top = os.fsencode(os.path.join(root, folder))
    places_release = folder in ('data_256', 'val_256')

    chunks, lengths, run_keys, run_counts = [], [], [], []
    for rel, files in _walk(top):
        if not files:
            continue
        prefix = rel + b'/' if rel else b''
        names = [prefix + f for f in files]
        chunks.append(b''.join(names))
        lengths.append(np.fromiter(map(len, names), np.int64, len(names)))
        parts = rel.split(b'/') if rel else []
        if folder == 'data_256':
            key = b'/'.join(parts[1:]) if len(parts) > 1 else None  # the path below the letter
        elif folder == 'val_256':
            key = None
        else:
            key = parts[0] if parts else None  # the first subfolder
        run_keys.append(key)
        run_counts.append(len(files))
    n = sum(run_counts)
    if n == 0:
        kinds = ', '.join('.' + e.decode() for e in EXTENSIONS)
        raise UserError(f"no image files ({kinds}) in {os.path.join(root, folder)}/ or its subfolders")
    blob = np.frombuffer(b''.join(chunks), np.uint8)
    del chunks
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(np.concatenate(lengths), out=offsets[1:])
    counts = np.asarray(run_counts, np.int64)

    if places_release:
        categories = _places_categories(root)
        if folder == 'data_256':
            if categories is not None:
                class_names = categories
            else:
                class_names = tuple(sorted({os.fsdecode(k) for k in run_keys if k is not None}))
            index = {name: i for i, name in enumerate(class_names)}
            run_labels = np.array([index.get(os.fsdecode(k), -1) if k is not None else -1 for k in run_keys], np.int64)
            labels = np.repeat(run_labels, counts)
        else:
            labels = np.full(n, -1, np.int64)
            class_names = ()
            val_list = _places_file(root, 'places365_val.txt')
            if categories is not None and val_list is not None:
                class_names = categories
                by_name = {os.fsencode(name): label for name, label in _read_pairs(val_list, 'file name')}
                for i in range(n):
                    name = blob[offsets[i]:offsets[i + 1]].tobytes()
                    label = by_name.get(name, by_name.get(name.rpartition(b'/')[2], -1))
                    labels[i] = label if label < len(class_names) else -1
    else:
        if all(k is None for k in run_keys):
            class_names = ()
            labels = np.full(n, -1, np.int64)
        else:
            # the classes of both splits, so that a class has the same index in train and val
            sibling = os.path.join(os.path.dirname(top), b'val' if split == 'train' else b'train')
            keys = {k for k in run_keys if k is not None} | _subfolder_names(sibling)
            class_names = tuple(sorted(os.fsdecode(k) for k in keys))
            index = {name: i for i, name in enumerate(class_names)}
            run_labels = np.array([index[os.fsdecode(k)] if k is not None else -1 for k in run_keys], np.int64)
            labels = np.repeat(run_labels, counts)
    return Listing(root, folder, blob, offsets, labels, class_names)


# ---------------------------------------------------------------- decoding

def _decode(path):
    """A file -> (H, W, 3) uint8 BGR, or (None, reason) where it cannot be used: unreadable
    (missing, empty, cut short, not an image) or grayscale (its three channels equal everywhere,
    as Nazeri et al.'s loader skips them: they teach no colour)."""
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError:
        return None, UNREADABLE
    if not data:
        return None, UNREADABLE
    # OpenCV decodes a JPEG or PNG cut short into a partly gray picture with only a warning.
    if data.startswith(_JPEG_START) and _JPEG_END not in data[-_TAIL:]:
        return None, UNREADABLE
    if data.startswith(_PNG_START) and _PNG_END not in data[-_TAIL:]:
        return None, UNREADABLE
    try:
        # IMREAD_COLOR: 8-bit BGR from CMYK, 16-bit, alpha, palette and grayscale files alike
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except (cv2.error, MemoryError, ValueError):
        return None, UNREADABLE
    del data
    if bgr is None or bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.size == 0:
        return None, UNREADABLE
    if bgr.dtype != np.uint8:
        bgr = (bgr >> 8).astype(np.uint8) if bgr.dtype == np.uint16 else None
        if bgr is None:
            return None, UNREADABLE
    b, g, r = bgr[..., 0], bgr[..., 1], bgr[..., 2]
    if np.array_equal(b, g) and np.array_equal(g, r):
        return None, GRAYSCALE
    return bgr, None


def _offset(position, spare):
    """The first row or column of a crop: `position` in [0, 1) spread over the spare + 1 choices,
    or the centre where position is negative."""
    if position < 0:
        return spare // 2
    return min(int(position * (spare + 1)), spare)


def resized_shape(h, w, size):
    """(height, width) after resizing so that the shorter side is `size`; neither side below it."""
    if h <= w:
        return size, max(size, int(round(w * size / h)))
    return max(size, int(round(h * size / w))), size


def fit(image, size, crop=(-1.0, -1.0), flip=False):
    """An (H, W, C) image -> (size, size, C): the shorter side resized to `size` (INTER_AREA when
    shrinking, INTER_CUBIC when growing), a square cut at `crop` ((row, column) positions in
    [0, 1); negative: the centre), flipped left to right where asked."""
    h, w = image.shape[:2]
    # a very long strip is first cut around the crop, to at most MAX_ASPECT times its short side
    if h > MAX_ASPECT * w:
        keep = MAX_ASPECT * w
        top = _offset(crop[0], h - keep)
        image, h = image[top:top + keep], keep
    elif w > MAX_ASPECT * h:
        keep = MAX_ASPECT * h
        left = _offset(crop[1], w - keep)
        image, w = image[:, left:left + keep], keep
    if min(h, w) != size:
        nh, nw = resized_shape(h, w, size)
        interpolation = cv2.INTER_AREA if min(h, w) > size else cv2.INTER_CUBIC
        image = cv2.resize(image, (nw, nh), interpolation=interpolation)
        h, w = nh, nw
    top, left = _offset(crop[0], h - size), _offset(crop[1], w - size)
    image = image[top:top + size, left:left + size]
    return image[:, ::-1] if flip else image


def _candidates(i, n):
    """The images tried, in order, in place of image i: the next ones where the data set is small,
    else i + 1, i + 3, i + 6, ... (triangular steps: near first, then ever farther, so that a run of
    broken files, such as a whole class folder, is left quickly), MAX_TRIES distinct ones at most."""
    if n - 1 <= MAX_TRIES:
        for k in range(1, n):
            yield (i + k) % n
        return
    seen = set()
    k = 0
    while len(seen) < MAX_TRIES:
        k += 1
        j = (i + k * (k + 1) // 2) % n
        if j != i and j not in seen:
            seen.add(j)
            yield j


def _as_is(item):
    return item


class _BatchMaker(torch.utils.data.Dataset):
    """What DataLoader workers hold: the compact listing and the image size. Item = one whole
    batch: (indices, flips, crops, with_rgb) -> ('ok', used indices, Lab (B, S, S, 3) float32
    tensor, RGB (B, S, S, 3) uint8 or None, [(index, reason) skipped]) or ('error', message)."""

    def __init__(self, listing, image_size):
        self.listing = listing
        self.image_size = image_size

    def __len__(self):
        return len(self.listing.labels)

    def __getitem__(self, task):
        indices, flips, crops, with_rgb = task
        n, size = len(self), self.image_size
        rgb = np.empty((len(indices), size, size, 3), np.uint8)
        used = np.empty(len(indices), np.int64)
        skipped = []
        for slot, i in enumerate(indices.tolist()):
            bgr, reason = _decode(self.listing.full_path(i))
            tried = [i]
            if bgr is None:
                skipped.append((i, reason))
                for j in _candidates(i, n):
                    bgr, reason = _decode(self.listing.full_path(j))
                    tried.append(j)
                    if bgr is not None:
                        break
                    skipped.append((j, reason))
            if bgr is None:
                shown = ', '.join(_printable(self.listing.path(t)) for t in tried[:3])
                return ('error', f"no usable image for {_printable(self.listing.path(i))}: it and the "
                                 f"{len(tried) - 1} files tried in its place are unreadable or grayscale "
                                 f"({shown}, ...); check the images in "
                                 f"{_printable(os.path.join(self.listing.root, self.listing.folder))}")
            used[slot] = tried[-1]
            # BGR -> RGB on the small square only
            rgb[slot] = fit(bgr, size, (float(crops[slot, 0]), float(crops[slot, 1])), bool(flips[slot]))[..., ::-1]
            del bgr
        lab = torch.from_numpy(rgb_to_lab(rgb, network_scale=True))
        return ('ok', used, lab, rgb if with_rgb else None, skipped)


class _Tasks:
    """The DataLoader's sampler: one task per batch, from batch `start` on, each process's share
    taken before anything is decoded."""

    def __init__(self, order, flips, crops, batch_size, start, share, with_rgb):
        self.order, self.flips, self.crops = order, flips, crops
        self.batch_size, self.start, self.share, self.with_rgb = batch_size, start, share, with_rgb

    def __len__(self):
        n = len(self.order)
        return max(0, (n + self.batch_size - 1) // self.batch_size - self.start)

    def __iter__(self):
        n, bs, share = len(self.order), self.batch_size, self.share
        for first in range(self.start * bs, n, bs):
            part = slice(first, first + bs)
            crops = torch.stack([share(self.crops[part, 0]), share(self.crops[part, 1])], 1)
            yield (share(self.order[part]).numpy(), share(self.flips[part]).numpy(), crops.numpy(), self.with_rgb)


def _printable(text):
    """A file name made safe for a one-line message."""
    return text.encode('unicode_escape', 'backslashreplace').decode('ascii') if not text.isprintable() else text


class _Paths:
    """The images' paths relative to the data folder, by index, decoded only when asked for."""

    def __init__(self, listing):
        self._listing = listing

    def __len__(self):
        return len(self._listing.labels)

    def __getitem__(self, i):
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"image {i} of {n}")
        return self._listing.path(i % n)


class FolderImages:
    """A split of a folder of photographs, for `train.py` and `test.py` as `dataset.LabImages` is:
    `batches()` yields (indices, lab) with lab (B, 3, S, S) float32 network-scale Lab,
    channels-last in memory, decoded by `num_workers` DataLoader workers, one batch per task."""

    def __init__(self, root, split, image_size, num_workers=0, pin_memory=False):
        if int(image_size) < 1:
            raise ValueError(f"image_size must be positive, not {image_size}")
        self.root, self.split = os.fspath(root), split
        self.image_size = int(image_size)
        self.num_workers, self.pin_memory = int(num_workers), bool(pin_memory)
        self.listing = list_images(self.root, split)
        self.class_names = self.listing.class_names
        self.labels = self.listing.labels
        self.paths = _Paths(self.listing)
        self._skipped = {}  # index -> reason, files skipped since the last report, in the order met

    def __len__(self):
        return len(self.labels)

    def num_batches(self, batch_size):
        return (len(self) + batch_size - 1) // batch_size

    def batches(self, batch_size, shuffle=False, flip=False, generator=None, device='cpu', start=0, share=None,
                with_rgb=False):
        """Yield (indices, lab) batches on `device` (with `with_rgb`, (indices, lab, rgb), rgb the
        uint8 (B, S, S, 3) squares the Lab was made from). Training (shuffle): a random order,
        a random square crop after resizing and, with `flip`, a random horizontal flip (p = 0.5);
        validation: the fixed order and the centre square. All draws are made here, for the whole
        split, from `generator` in this order: permutation, flips, crop positions; so `start`
        (batches skipped without decoding) and `share` (this process's part of each batch,
        taken before decoding) give exactly the batches a whole single pass would. `indices` are
        the images used: an image that cannot be used is replaced by another (see take_skip_report)."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        flips = torch.rand(n, generator=generator) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
        crops = torch.rand(n, 2, generator=generator) if shuffle else torch.full((n, 2), -1.0)
        tasks = _Tasks(order, flips, crops, batch_size, start, share or (lambda part: part), with_rgb)
        if self.num_workers:
            # OpenCV's thread pool does not survive fork: a worker that touches it can hang for
            # good (seen in the test suite). Each worker decodes on one thread, so the pool is
            # shut down here, in the parent, before the workers are forked.
            cv2.setNumThreads(1)
        # DataLoader's own seed drawing must not move the caller's or the global random state.
        loader = torch.utils.data.DataLoader(
            _BatchMaker(self.listing, self.image_size), batch_size=None, sampler=tasks, num_workers=self.num_workers,
            collate_fn=_as_is, pin_memory=self.pin_memory, generator=torch.Generator())
        iterator = iter(loader)
        try:
            for item in iterator:
                if item[0] == 'error':
                    raise UserError(item[1])
                _, used, lab, rgb, skipped = item
                for i, reason in skipped:
                    self._skipped.setdefault(i, reason)
                idx = torch.from_numpy(used)
                lab = lab.to(device, non_blocking=True).permute(0, 3, 1, 2)
                yield (idx, lab, rgb) if with_rgb else (idx, lab)
        finally:
            del iterator

    def subset(self, keep):
        """The same split with only the images at the indices `keep` (an int array), in that order."""
        part = copy.copy(self)
        part.listing = self.listing.subset(keep)
        part.labels = part.listing.labels
        part.paths = _Paths(part.listing)
        part._skipped = {}
        return part

    def take_skip_report(self, list_path=None):
        """One line about the files skipped since the last call (None where none), then forgets
        them: the unreadable ones named first, the grayscale ones counted apart. With `list_path`,
        every skipped file is also written there ('reason<TAB>path' lines, unreadable first) and
        the line names that file."""
        if not self._skipped:
            return None
        skipped, self._skipped = self._skipped, {}
        by_reason = {reason: [_printable(self.listing.path(i)) for i in sorted(skipped) if skipped[i] == reason]
                     for reason in SKIP_REASONS}
        room = NAMED_SKIPS
        parts = []
        for reason in SKIP_REASONS:
            names = by_reason[reason]
            if not names:
                continue
            shown = names[:max(room, NAMED_UNREADABLE if reason == UNREADABLE else 0)]
            room -= len(shown)
            more = f" and {len(names) - len(shown)} more" if len(names) > len(shown) else ''
            parts.append(f"{len(names)} {reason}" + (f" ({', '.join(shown)}{more})" if shown else ''))
        plural = 's' if len(skipped) != 1 else ''
        line = f"skipped {len(skipped)} file{plural} this epoch: {', '.join(parts)}"
        if list_path:
            text = ''.join(f"{reason}\t{name}\n" for reason in SKIP_REASONS for name in by_reason[reason])
            atomic_write(list_path, lambda f: f.write(text), mode='w')
            line += f"; all {len(skipped)} listed in {list_path}"
        return line
