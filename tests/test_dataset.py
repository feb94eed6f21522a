import functools
import hashlib
import http.server
import os
import pickle
import tarfile
import threading

import numpy as np
import pytest
import torch

import dataset
from core.cli import UserError
from conftest import SHARED_DATA, QuietFileHandler, make_tiny_cifar, smooth_images
from core.pictures import rgb_to_lab


def test_split_is_decoded_to_lab_in_memory(tiny_cifar):
    train = dataset.load_split(tiny_cifar, train=True)
    test = dataset.load_split(tiny_cifar, train=False)
    assert train.lab.shape == (80, 32, 32, 3) and train.rgb.shape == (80, 32, 32, 3) and len(test) == 24
    # the pixels are the ones written, in the batch order, converted like pictures.py does
    assert np.array_equal(test.rgb, smooth_images(24, seed=99))
    assert np.array_equal(train.rgb[16:32], smooth_images(16, seed=2))
    assert torch.equal(test.lab, torch.from_numpy(rgb_to_lab(test.rgb, network_scale=True)))


def test_validation_batches_keep_the_fixed_order(tiny_cifar):
    test = dataset.load_split(tiny_cifar, train=False)
    batches = list(test.batches(10))
    assert [len(idx) for idx, _ in batches] == [10, 10, 4]
    assert torch.equal(torch.cat([idx for idx, _ in batches]), torch.arange(24))
    idx, lab = batches[1]
    assert lab.shape == (10, 3, 32, 32)
    assert torch.equal(lab, test.lab[10:20].permute(0, 3, 1, 2))


def test_training_batches_shuffle_and_flip_half(tiny_cifar):
    train = dataset.load_split(tiny_cifar, train=True)
    g = torch.Generator().manual_seed(0)
    seen, flipped = [], 0
    for idx, lab in train.batches(16, shuffle=True, flip=True, generator=g):
        original = train.lab[idx].permute(0, 3, 1, 2)
        mirror = original.flip(3)
        for k in range(len(idx)):
            is_orig, is_flip = torch.equal(lab[k], original[k]), torch.equal(lab[k], mirror[k])
            assert is_orig or is_flip
            flipped += is_flip and not is_orig
        seen.append(idx)
    order = torch.cat(seen)
    assert sorted(order.tolist()) == list(range(80)) and order.tolist() != list(range(80))
    assert 20 <= flipped <= 60


def test_same_generator_seed_gives_the_same_batches(tiny_cifar):
    train = dataset.load_split(tiny_cifar, train=True)
    a = [lab for _, lab in train.batches(16, shuffle=True, flip=True, generator=torch.Generator().manual_seed(3))]
    b = [lab for _, lab in train.batches(16, shuffle=True, flip=True, generator=torch.Generator().manual_seed(3), start=2)]
    assert all(torch.equal(x, y) for x, y in zip(a[2:], b)) and len(b) == 3


class _MakesAFile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, 'w'))


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / 'pwned'
    folder = make_tiny_cifar(str(tmp_path / 'data'))
    with open(os.path.join(folder, 'data_batch_3'), 'wb') as f:
        pickle.dump({b'data': _MakesAFile(str(marker)), b'labels': []}, f)
    with pytest.raises(UserError, match='data_batch_3.*(unsafe|refus)'):
        dataset.load_split(str(tmp_path / 'data'), train=True)
    assert not marker.exists()


@pytest.mark.parametrize('damage', ['truncate', 'garbage', 'wrong_shape'])
def test_a_damaged_batch_is_named(tmp_path, damage):
    folder = make_tiny_cifar(str(tmp_path / 'data'))
    path = os.path.join(folder, 'test_batch')
    if damage == 'truncate':
        data = open(path, 'rb').read()
        open(path, 'wb').write(data[:len(data) // 2])
    elif damage == 'garbage':
        open(path, 'wb').write(os.urandom(1000))
    else:
        with open(path, 'wb') as f:
            pickle.dump({b'data': np.zeros((4, 100), np.uint8), b'labels': [0] * 4}, f)
    with pytest.raises(UserError, match='test_batch'):
        dataset.load_split(str(tmp_path / 'data'), train=False)


def test_a_missing_batch_is_named(tmp_path):
    folder = make_tiny_cifar(str(tmp_path / 'data'))
    os.remove(os.path.join(folder, 'data_batch_4'))
    with pytest.raises(UserError, match='data_batch_4.*missing'):
        dataset.load_split(str(tmp_path / 'data'), train=True)


def test_download_fetches_and_checks_the_archive(tmp_path, monkeypatch):
    # The real download code, against a local archive laid out like the official one.
    make_tiny_cifar(str(tmp_path / 'src'))
    archive = tmp_path / 'cifar-10-python.tar.gz'
    with tarfile.open(archive, 'w:gz') as tar:
        tar.add(str(tmp_path / 'src' / 'cifar-10-batches-py'), arcname='cifar-10-batches-py')
    handler = functools.partial(QuietFileHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(dataset, 'CIFAR_URL', f'http://127.0.0.1:{server.server_port}/{archive.name}')
        monkeypatch.setattr(dataset, 'CIFAR_MD5', hashlib.md5(archive.read_bytes()).hexdigest())
        split = dataset.load_split(str(tmp_path / 'fresh'), train=False)
        assert len(split) == 24
        assert os.path.isfile(tmp_path / 'fresh' / 'cifar-10-batches-py' / 'test_batch')
        # an archive that fails its md5 check is refused
        monkeypatch.setattr(dataset, 'CIFAR_MD5', '0' * 32)
        with pytest.raises(UserError, match='download failed'):
            dataset.load_split(str(tmp_path / 'other'), train=False)
    finally:
        server.shutdown()


def test_a_failed_download_says_what_to_put_where(tmp_path, monkeypatch):
    monkeypatch.setattr(dataset, 'CIFAR_URL', (tmp_path / 'nowhere.tar.gz').as_uri())
    with pytest.raises(UserError, match='cifar-10-batches-py.*under') as e:
        dataset.load_split(str(tmp_path / 'empty'), train=False)
    assert 'download failed' in str(e.value)


@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED_DATA, 'cifar-10-batches-py')), reason='../shared/data absent')
def test_real_cifar10_matches_its_published_statistics():
    train = dataset.load_split(SHARED_DATA, train=True, download=False)
    test = dataset.load_split(SHARED_DATA, train=False, download=False)
    assert len(train) == 50_000 and len(test) == 10_000
    assert np.bincount(test.labels).tolist() == [1000] * 10
    assert np.allclose(train.rgb.reshape(-1, 3).mean(0), [125.31, 122.95, 113.87], atol=0.01)


def test_the_holdout_is_the_last_n_training_images_and_cannot_take_them_all(tiny_cifar, tiny_folder):
    train = dataset.load_split(tiny_cifar, train=True)
    kept, held = dataset.split_holdout(train, 16)
    assert len(kept) == 64 and len(held) == 16
    # the last batch file's images, with their labels and Lab; the rest untouched and in order
    assert np.array_equal(held.rgb, smooth_images(16, seed=5)) and np.array_equal(held.labels, train.labels[64:])
    assert torch.equal(held.lab, train.lab[64:]) and torch.equal(kept.lab, train.lab[:64])
    assert dataset.split_holdout(train, 0) == (train, None)
    with pytest.raises(UserError, match='--holdout 80 keeps out all 80 training images'):
        dataset.split_holdout(train, 80)
    photos = dataset.open_split('folder', tiny_folder, True, 64)
    kept, held = dataset.split_holdout(photos, 4)
    assert len(kept) == 20 and len(held) == 4
    assert [held.listing.path(i) for i in range(4)] == [photos.listing.path(i) for i in range(20, 24)]
