import io
import os

import cv2
import numpy as np
import pytest
import torch

from core import folders
from core.cli import UserError
from core.folders import FolderImages, list_images
from core.pictures import rgb_to_lab

H, W = 40, 48  # larger than the 32x32 squares, and not square: resizing and cropping matter


def colour_image(seed, h=H, w=W):
    """A colourful (h, w, 3) uint8 RGB picture, different for every seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = rng.uniform(0, 255, 3) + np.stack([x * rng.uniform(-3, 3), y * rng.uniform(-3, 3), (x + y) * 1.5], -1)
    noise = rng.integers(0, 40, (h, w, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def write_rgb(path, rgb, params=()):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), list(params))


def touch(path, data=b''):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
        f.write(data)


def make_folder(root, names, split='train', seed=0):
    """PNG images at root/split/<name> -> {name: rgb}."""
    images = {}
    for k, name in enumerate(names):
        images[name] = colour_image(seed + k)
        write_rgb(os.path.join(root, split, name), images[name])
    return images


def expected_square(rgb, size, crop=(-1.0, -1.0), flip=False):
    """An independent computation of what the loader must make of a picture."""
    h, w = rgb.shape[:2]
    if h <= w:
        nh, nw = size, max(size, round(w * size / h))
    else:
        nh, nw = max(size, round(h * size / w)), size
    if (nh, nw) != (h, w):
        rgb = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if min(h, w) > size else cv2.INTER_CUBIC)

    def offset(p, spare):
        return spare // 2 if p < 0 else min(int(p * (spare + 1)), spare)
    top, left = offset(crop[0], nh - size), offset(crop[1], nw - size)
    square = rgb[top:top + size, left:left + size]
    return np.ascontiguousarray(square[:, ::-1] if flip else square)


def collect(ds, batch_size, seed=None, **kw):
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    return list(ds.batches(batch_size, generator=gen, **kw))


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert len(x) == len(y)
        for u, v in zip(x, y):
            if isinstance(u, torch.Tensor):
                assert torch.equal(u, v)
            else:
                assert np.array_equal(u, v)


@pytest.fixture
def plain(tmp_path):
    """ROOT/train with 3 classes (one nested deeper) and 2 classless files, ROOT/val with 2 classes."""
    root = str(tmp_path / 'data')
    train = make_folder(root, ['cat/a.png', 'cat/b.png', 'dog/deep/c.png', 'dog/d.png', 'eel/e.PNG',
                               'f.png', 'g.png', 'cat/h.png', 'dog/i.png', 'eel/j.png', 'eel/k.png'], seed=0)
    val = make_folder(root, ['cat/v1.png', 'cat/v2.png', 'dog/v3.png', 'fox/v4.png', 'fox/v5.png'], 'val', seed=100)
    return root, train, val


# ---------------------------------------------------------------- listing

def test_plain_layout_lists_sorted_files_with_their_first_subfolder_as_class(plain, tmp_path):
    root, train_images, _ = plain
    touch(os.path.join(root, 'train', '.hidden.png'), b'x')
    touch(os.path.join(root, 'train', 'cat', 'notes.txt'), b'x')
    touch(os.path.join(root, 'train', '.cache', 'x.png'), b'x')
    listing = list_images(root, 'train')
    paths = [listing.path(i) for i in range(len(listing.labels))]
    # each folder's files first, then its subfolders, names sorted: the same order everywhere
    assert paths == ['train/f.png', 'train/g.png', 'train/cat/a.png', 'train/cat/b.png', 'train/cat/h.png',
                     'train/dog/d.png', 'train/dog/i.png', 'train/dog/deep/c.png',
                     'train/eel/e.PNG', 'train/eel/j.png', 'train/eel/k.png']
    # the classes of both splits, sorted, so that an index means the same class in train and val
    assert listing.class_names == ('cat', 'dog', 'eel', 'fox')
    assert listing.labels.tolist() == [-1, -1, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert listing.labels.dtype == np.int64
    val = FolderImages(root, 'val', 32)
    assert val.class_names == ('cat', 'dog', 'eel', 'fox') and val.labels.tolist() == [0, 0, 1, 3, 3]
    assert len(val) == 5 and val.paths[3] == 'val/fox/v4.png' and val.paths[-1] == 'val/fox/v5.png'


def test_flat_folders_have_no_classes(tmp_path):
    root = str(tmp_path)
    make_folder(root, ['a.jpg', 'b.png'])
    make_folder(root, ['c.png'], 'val')
    ds = FolderImages(root, 'train', 32)
    assert ds.class_names == () and ds.labels.tolist() == [-1, -1]


def test_file_list_is_stored_compactly(plain):
    root, _, _ = plain
    ds = FolderImages(root, 'train', 32)
    listing = ds.listing
    # one byte blob and one offset array: no Python object per file for forked workers to copy
    assert isinstance(listing.blob, np.ndarray) and listing.blob.dtype == np.uint8 and listing.blob.ndim == 1
    assert isinstance(listing.offsets, np.ndarray) and listing.offsets.dtype == np.int64
    assert listing.offsets.shape == (len(ds) + 1,) and listing.offsets[-1] == listing.blob.size
    assert not any(isinstance(v, (list, dict)) for v in vars(ds).values() if v is not ds._skipped)


def test_many_files_are_listed_in_order(tmp_path):
    """Listing only (no decoding): 3000 files in 30 folders; no timing asserted."""
    root = tmp_path / 'big'
    for c in range(30):
        folder = root / 'train' / f'class{c:02d}'
        folder.mkdir(parents=True)
        for i in range(100):
            (folder / f'{i:04d}.jpg').touch()
    listing = list_images(str(root), 'train')
    assert len(listing.labels) == 3000 and listing.class_names == tuple(f'class{c:02d}' for c in range(30))
    assert np.array_equal(listing.labels, np.repeat(np.arange(30), 100))
    assert listing.path(0) == 'train/class00/0000.jpg' and listing.path(2999) == 'train/class29/0099.jpg'
    assert listing.blob.size == 3000 * len('class00/0000.jpg')


def test_places365_easy_format(tmp_path):
    root = str(tmp_path)
    make_folder(os.path.join(root, 'places365_standard'), ['airfield/1.jpg', 'alley/2.jpg', 'alley/3.jpg'])
    make_folder(os.path.join(root, 'places365_standard'), ['airfield/4.jpg', 'bar/5.jpg'], 'val')
    train = FolderImages(root, 'train', 32)
    assert train.class_names == ('airfield', 'alley', 'bar') and train.labels.tolist() == [0, 1, 1]
    assert train.paths[0] == 'places365_standard/train/airfield/1.jpg'
    val = FolderImages(root, 'val', 32)
    assert val.labels.tolist() == [0, 2] and len(collect(val, 2)) == 1


def places_release(root, with_lists=True, in_filelist=True):
    make_folder(root, ['a/airfield/1.jpg', 'a/airfield/2.jpg', 'a/apartment_building/outdoor/3.jpg',
                       'b/bar/4.jpg'], 'data_256')
    make_folder(root, ['Places365_val_00000001.jpg', 'Places365_val_00000002.jpg', 'Places365_val_00000003.jpg'],
                'val_256')
    if with_lists:
        lists = os.path.join(root, 'filelist_places365-standard') if in_filelist else root
        touch(os.path.join(lists, 'categories_places365.txt'),
              b'/a/airfield 0\n/a/apartment_building/outdoor 1\n/b/bar 2\n/b/beach 3\n')
        touch(os.path.join(lists, 'places365_val.txt'),
              b'Places365_val_00000001.jpg 3\nPlaces365_val_00000002.jpg 0\n')


@pytest.mark.parametrize('in_filelist', [True, False])
def test_places365_256_release_with_its_lists(tmp_path, in_filelist):
    root = str(tmp_path)
    places_release(root, in_filelist=in_filelist)
    train = FolderImages(root, 'train', 32)
    names = ('airfield', 'apartment_building/outdoor', 'bar', 'beach')
    assert train.class_names == names and train.labels.tolist() == [0, 0, 1, 2]
    assert train.paths[2] == 'data_256/a/apartment_building/outdoor/3.jpg'
    val = FolderImages(root, 'val', 32)
    assert val.class_names == names and val.labels.tolist() == [3, 0, -1]
    assert val.paths[0] == 'val_256/Places365_val_00000001.jpg'


def test_places365_256_release_without_lists(tmp_path):
    root = str(tmp_path)
    places_release(root, with_lists=False)
    train = FolderImages(root, 'train', 32)
    assert train.class_names == ('airfield', 'apartment_building/outdoor', 'bar')
    assert train.labels.tolist() == [0, 0, 1, 2]
    val = FolderImages(root, 'val', 32)
    assert val.class_names == () and val.labels.tolist() == [-1, -1, -1]


def one_line_error(fn):
    with pytest.raises(UserError) as e:
        fn()
    message = str(e.value)
    assert '\n' not in message
    return message


def test_errors_are_one_line(tmp_path):
    root = str(tmp_path)
    message = one_line_error(lambda: FolderImages(root, 'train', 32))
    assert root in message and 'train/' in message and 'places365_standard/train/' in message and 'data_256/' in message
    message = one_line_error(lambda: FolderImages(os.path.join(root, 'nowhere'), 'val', 32))
    assert 'nowhere' in message and 'does not exist' in message
    touch(os.path.join(root, 'val', 'sub', 'readme.txt'), b'no pictures here')
    message = one_line_error(lambda: FolderImages(root, 'val', 32))
    assert os.path.join(root, 'val') in message and 'no image files' in message and '.jpg' in message
    touch(os.path.join(root, 'categories_places365.txt'), b'/a/airfield zero\n')
    make_folder(root, ['a/airfield/1.jpg'], 'data_256')
    message = one_line_error(lambda: FolderImages(root, 'train', 32))
    assert 'categories_places365.txt' in message and 'line 1' in message


# ---------------------------------------------------------------- pixels

@pytest.mark.parametrize('size', [32, 44])  # shrinking (INTER_AREA) and growing (INTER_CUBIC)
def test_validation_is_the_centre_square_in_fixed_order(plain, size):
    root, _, val_images = plain
    ds = FolderImages(root, 'val', size)
    batches = collect(ds, 2, with_rgb=True)
    assert [len(b[0]) for b in batches] == [2, 2, 1]
    names = ['cat/v1.png', 'cat/v2.png', 'dog/v3.png', 'fox/v4.png', 'fox/v5.png']
    expected = np.stack([expected_square(val_images[n], size) for n in names])
    idx = torch.cat([b[0] for b in batches])
    lab = torch.cat([b[1] for b in batches])
    rgb = np.concatenate([b[2] for b in batches])
    assert idx.tolist() == [0, 1, 2, 3, 4] and idx.dtype == torch.int64
    assert rgb.dtype == np.uint8 and np.array_equal(rgb, expected)
    want = torch.from_numpy(rgb_to_lab(expected, network_scale=True)).permute(0, 3, 1, 2)
    assert lab.dtype == torch.float32 and lab.shape == (5, 3, size, size) and torch.equal(lab, want)
    # laid out as LabImages' batches: a pixels-last tensor seen as (B, 3, S, S)
    assert batches[0][1].is_contiguous(memory_format=torch.channels_last)
    # without with_rgb: the same Lab, pairs only
    plain_batches = collect(ds, 2)
    assert all(len(b) == 2 for b in plain_batches)
    assert torch.equal(torch.cat([b[1] for b in plain_batches]), lab)


def test_training_crops_and_flips_follow_the_generator_draws(plain):
    root, train_images, _ = plain
    ds = FolderImages(root, 'train', 32)
    n = len(ds)
    batches = collect(ds, 4, seed=7, shuffle=True, flip=True, with_rgb=True)
    # the draws, in the documented order, from the same seed
    g = torch.Generator().manual_seed(7)
    order = torch.randperm(n, generator=g)
    flips = torch.rand(n, generator=g) < 0.5
    crops = torch.rand(n, 2, generator=g)
    assert torch.equal(torch.cat([b[0] for b in batches]), order)
    assert 0 < int(flips.sum()) < n
    rgb = np.concatenate([b[2] for b in batches])
    for k, i in enumerate(order.tolist()):
        picture = train_images[ds.paths[i][len('train/'):]]
        square = expected_square(picture, 32, (float(crops[k, 0]), float(crops[k, 1])), bool(flips[k]))
        assert np.array_equal(rgb[k], square), ds.paths[i]
    lab = torch.cat([b[1] for b in batches])
    assert torch.equal(lab, torch.from_numpy(rgb_to_lab(rgb, network_scale=True)).permute(0, 3, 1, 2))
    # the crops really move: not every square is the centre one
    centre = [expected_square(train_images[ds.paths[i][len('train/'):]], 32) for i in order.tolist()]
    assert not all(np.array_equal(a, b) or np.array_equal(a[:, ::-1], b) for a, b in zip(rgb, centre))


def test_training_batches_repeat_with_the_seed_and_resume_at_start(plain):
    root, _, _ = plain
    ds = FolderImages(root, 'train', 32)
    full = collect(ds, 3, seed=5, shuffle=True, flip=True)
    assert [len(b[0]) for b in full] == [3, 3, 3, 2] and ds.num_batches(3) == 4
    assert_same_batches(full, collect(ds, 3, seed=5, shuffle=True, flip=True))
    other = collect(ds, 3, seed=6, shuffle=True, flip=True)
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(full, other))
    for k in (1, 3, 4):
        assert_same_batches(collect(ds, 3, seed=5, shuffle=True, flip=True, start=k), full[k:])


def test_start_decodes_nothing_before_it(plain, monkeypatch):
    root, _, _ = plain
    ds = FolderImages(root, 'train', 32)
    decoded = []
    real = folders._decode
    monkeypatch.setattr(folders, '_decode', lambda path: decoded.append(path) or real(path))
    assert len(collect(ds, 4, seed=1, shuffle=True, start=2)) == 1
    assert len(decoded) == 3  # the last batch only: 11 images, batches of 4


def test_batches_leave_the_global_random_state_alone(plain):
    root, _, _ = plain
    ds = FolderImages(root, 'train', 32)
    state = torch.get_rng_state()
    collect(ds, 4, seed=1, shuffle=True, flip=True)
    assert torch.equal(state, torch.get_rng_state())


def test_two_shares_make_the_whole_batch(plain):
    root, _, _ = plain
    ds = FolderImages(root, 'train', 32)
    full = collect(ds, 5, seed=3, shuffle=True, flip=True, with_rgb=True)
    halves = [collect(ds, 5, seed=3, shuffle=True, flip=True, with_rgb=True,
                      share=lambda t, r=r: torch.tensor_split(t, 2)[r]) for r in (0, 1)]
    for whole, first, second in zip(full, *halves):
        assert len(first[0]) == (len(whole[0]) + 1) // 2
        assert torch.equal(torch.cat([first[0], second[0]]), whole[0])
        assert torch.equal(torch.cat([first[1], second[1]]), whole[1])
        assert np.array_equal(np.concatenate([first[2], second[2]]), whole[2])


def test_workers_give_the_same_batches(plain):
    root, _, _ = plain
    in_process = FolderImages(root, 'train', 32)
    with_workers = FolderImages(root, 'train', 32, num_workers=2)
    kw = dict(shuffle=True, flip=True, with_rgb=True)
    assert_same_batches(collect(with_workers, 3, seed=9, **kw), collect(in_process, 3, seed=9, **kw))
    assert_same_batches(collect(with_workers, 3, seed=9, start=2, **kw), collect(in_process, 3, seed=9, start=2, **kw))
    # stopping early ends the workers' pass cleanly
    batches = with_workers.batches(2, generator=torch.Generator().manual_seed(0), shuffle=True)
    next(batches)
    batches.close()


# ---------------------------------------------------------------- bad and odd files

def jpeg_bytes(rgb, quality=95):
    ok, data = cv2.imencode('.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return data.tobytes()


def test_bad_files_are_replaced_and_reported_and_odd_ones_decoded(tmp_path):
    from PIL import Image
    root = str(tmp_path)
    train = os.path.join(root, 'train')
    good = make_folder(root, ['good1.png', 'good2.png', 'good3.png'], seed=50)
    # bad: skipped
    touch(os.path.join(train, 'b_empty.jpg'))
    touch(os.path.join(train, 'b_text.png'), b'this is not a picture\n')
    cut = jpeg_bytes(colour_image(3, 200, 240))
    touch(os.path.join(train, 'b_truncated.jpg'), cut[:len(cut) * 2 // 3])
    grey = colour_image(4)[..., :1].repeat(3, -1)
    write_rgb(os.path.join(train, 'b_grey_rgb.png'), grey)
    assert cv2.imwrite(os.path.join(train, 'b_grey_stored.jpg'), grey[..., 0])
    # odd: decoded
    odd = {}
    buffer = io.BytesIO()
    Image.new('CMYK', (W, H), (10, 200, 30, 5)).save(buffer, 'JPEG')
    touch(os.path.join(train, 'o_cmyk.jpg'), buffer.getvalue())
    odd['o_sixteen.png'] = colour_image(5)
    assert cv2.imwrite(os.path.join(train, 'o_sixteen.png'),
                       cv2.cvtColor(odd['o_sixteen.png'], cv2.COLOR_RGB2BGR).astype(np.uint16) * 257)
    odd['o_alpha.png'] = colour_image(6)
    bgra = np.dstack([cv2.cvtColor(odd['o_alpha.png'], cv2.COLOR_RGB2BGR), np.full((H, W), 128, np.uint8)])
    assert cv2.imwrite(os.path.join(train, 'o_alpha.png'), bgra)
    palette = Image.fromarray(colour_image(7)).convert('P', palette=Image.Palette.ADAPTIVE, colors=16)
    palette.save(os.path.join(train, 'o_palette.png'))
    odd['o_palette.png'] = np.array(palette.convert('RGB'))
    odd['o_tiny.png'] = colour_image(8, 5, 7)
    write_rgb(os.path.join(train, 'o_tiny.png'), odd['o_tiny.png'])
    odd['o_strip.png'] = colour_image(9, 4, 100)
    write_rgb(os.path.join(train, 'o_strip.png'), odd['o_strip.png'])
    # a strip longer than MAX_ASPECT times its height is first cut around the crop (here the centre)
    odd['o_strip.png'] = odd['o_strip.png'][:, 42:58]

    for workers in (0, 2):
        ds = FolderImages(root, 'train', 32, num_workers=workers)
        assert len(ds) == 14
        batches = collect(ds, 4, with_rgb=True)
        assert [len(b[0]) for b in batches] == [4, 4, 4, 2]  # every batch keeps its size
        idx = torch.cat([b[0] for b in batches]).tolist()
        rgb = np.concatenate([b[2] for b in batches])
        used = [ds.paths[i][len('train/'):] for i in idx]
        # each bad file is replaced by the next usable one (the list is sorted by name)
        assert used == ['good1.png'] * 6 + ['good2.png', 'good3.png', 'o_alpha.png', 'o_cmyk.jpg', 'o_palette.png',
                                            'o_sixteen.png', 'o_strip.png', 'o_tiny.png']
        for k, name in enumerate(used):
            if name in odd:
                assert np.array_equal(rgb[k], expected_square(odd[name], 32)), name
            elif name in good:
                assert np.array_equal(rgb[k], expected_square(good[name], 32)), name
        cmyk = rgb[used.index('o_cmyk.jpg')]
        assert cmyk.shape == (32, 32, 3) and cmyk.std(axis=(0, 1)).max() < 3 and np.ptp(cmyk.mean((0, 1))) > 50
        report = ds.take_skip_report()
        assert report == ("skipped 5 files this epoch: 3 unreadable (train/b_empty.jpg, train/b_text.png, "
                          "train/b_truncated.jpg), 2 grayscale (train/b_grey_rgb.png, train/b_grey_stored.jpg)")
        assert ds.take_skip_report() is None


def test_skip_report_names_the_unreadable_up_to_a_limit(tmp_path):
    root = str(tmp_path)
    make_folder(root, ['z_good.png'])
    n = folders.NAMED_UNREADABLE + 3
    for k in range(n):
        touch(os.path.join(root, 'train', f'bad{k:02d}.png'))
    ds = FolderImages(root, 'train', 32)
    batches = collect(ds, 3, seed=0, shuffle=True, flip=True)
    assert sum(len(b[0]) for b in batches) == n + 1 and set(torch.cat([b[0] for b in batches]).tolist()) == {n}
    report = ds.take_skip_report()
    assert report.startswith(f'skipped {n} files this epoch: {n} unreadable (train/bad00.png, train/bad01.png')
    assert report.endswith(' and 3 more)') and report.count('train/bad') == folders.NAMED_UNREADABLE


def test_skip_report_names_every_unreadable_file_first_and_lists_all_in_a_file(tmp_path):
    """26 grayscale photographs sort before 3 unreadable files; the line still names the 3, and
    the file it names lists all 29, unreadable first."""
    root = str(tmp_path)
    make_folder(root, ['z_good.png'])
    train = os.path.join(root, 'train')
    for k in range(26):
        write_rgb(os.path.join(train, f'a_grey{k:02d}.png'), colour_image(k)[..., :1].repeat(3, -1))
    cut = jpeg_bytes(colour_image(3, 200, 240))
    touch(os.path.join(train, 'b_truncated.jpg'), cut[:len(cut) // 2])
    touch(os.path.join(train, 'b_empty.png'))
    touch(os.path.join(train, 'b_text.png'), b'not a picture\n')
    ds = FolderImages(root, 'train', 32)
    collect(ds, 8)
    list_path = str(tmp_path / 'skipped_training.txt')
    report = ds.take_skip_report(list_path)
    assert report.startswith('skipped 29 files this epoch: 3 unreadable (train/b_empty.png, train/b_text.png, '
                             'train/b_truncated.jpg), 26 grayscale (train/a_grey00.png, train/a_grey01.png '
                             'and 24 more)')
    assert report.endswith(f'; all 29 listed in {list_path}')
    lines = open(list_path).read().splitlines()
    assert lines[:3] == ['unreadable\ttrain/b_empty.png', 'unreadable\ttrain/b_text.png',
                         'unreadable\ttrain/b_truncated.jpg']
    assert lines[3:] == [f'grayscale\ttrain/a_grey{k:02d}.png' for k in range(26)]


def test_a_subset_keeps_the_chosen_images_with_their_paths_and_labels(plain):
    ds = FolderImages(plain[0], 'train', 32)
    keep = np.array([len(ds) - 1, 0, 2])
    part = ds.subset(keep)
    assert len(part) == 3 and [part.paths[i] for i in range(3)] == [ds.paths[int(i)] for i in keep]
    assert part.labels.tolist() == ds.labels[keep].tolist() and len(ds) > 3
    whole = {ds.paths[i]: lab for idx, batch in collect(ds, 4) for i, lab in zip(idx.tolist(), batch)}
    seen = [(part.paths[i], lab) for idx, batch in collect(part, 2) for i, lab in zip(idx.tolist(), batch)]
    assert [path for path, _ in seen] == [ds.paths[int(i)] for i in keep]
    assert all(torch.equal(lab, whole[path]) for path, lab in seen)


def test_a_data_set_of_unusable_images_is_a_one_line_error(tmp_path):
    root = str(tmp_path)
    touch(os.path.join(root, 'val', 'a.jpg'))
    write_rgb(os.path.join(root, 'val', 'b.png'), np.full((H, W, 3), 90, np.uint8))
    touch(os.path.join(root, 'val', 'c.png'), b'text')
    for workers in (0, 2):
        ds = FolderImages(root, 'val', 32, num_workers=workers)
        message = one_line_error(lambda: collect(ds, 2))
        assert 'val/a.jpg' in message and 'unreadable or grayscale' in message


def test_long_runs_of_bad_files_are_left_quickly():
    """Replacement candidates: all others for a small data set, spreading steps for a large one."""
    assert list(folders._candidates(3, 5)) == [4, 0, 1, 2]
    far = list(folders._candidates(10, 10 ** 6))
    assert far[:4] == [11, 13, 16, 20] and len(far) == len(set(far)) == folders.MAX_TRIES
    assert max(far) > 10000
