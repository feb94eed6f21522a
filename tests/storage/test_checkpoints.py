"""Checkpoints and generator files: written whole or not at all, read back as tensors and plain data only."""
import os
import pickle
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from storage import checkpoints
import colorize
import export
import utils
from core.cli import UserError
from conftest import ROOT, command_line, run_in_process, run_train, train_command


def test_checkpoint_save_is_atomic_and_loads_with_weights_only(tmp_path):
    path = str(tmp_path / 'ck.pt')
    checkpoints.save_checkpoint(path, {'w': torch.arange(3), 'step': 4, 'args': {'a': 'b'}})
    assert torch.load(path, weights_only=True)['step'] == 4
    assert os.listdir(tmp_path) == ['ck.pt']  # no temporary file left beside it
    # (a write that fails half-way leaves the previous file: tests/test_utils.py, and the full disk below)


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = str(tmp_path / 'checkpoint_ep0.pt')
    checkpoints.save_checkpoint(path, {'step': 1})
    before = open(path, 'rb').read()
    # The checkpoint is serialized in memory, then written: the disk fills up during that write.
    atomic_write = utils.atomic_write

    def full_disk(target, write_fn, mode='wb'):
        def partial_write(f):
            f.write(b'\0' * 100)
            raise OSError(28, 'No space left on device')
        atomic_write(target, partial_write, mode)
    monkeypatch.setattr(checkpoints, 'atomic_write', full_disk)
    with pytest.raises(UserError, match='disk is full.*checkpoint_ep0.pt.*intact'):
        checkpoints.save_checkpoint(path, {'step': 2})
    assert open(path, 'rb').read() == before and os.listdir(tmp_path) == ['checkpoint_ep0.pt']


class _MakesAFile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, 'w'))


def test_a_checkpoint_that_would_run_code_is_refused(tiny_cifar, tmp_path):
    marker = tmp_path / 'pwned'
    evil = tmp_path / 'evil.pt'
    with open(evil, 'wb') as f:
        pickle.dump({'generator': _MakesAFile(str(marker))}, f)
    r = run_train(train_command(tiny_cifar, str(tmp_path / 'ck'), '--resume', str(evil)))
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and 'evil.pt' in r.stderr
    r = subprocess.run([sys.executable, 'test.py', '--data_path', tiny_cifar, '--checkpoints', str(evil),
                        '--save_path', str(tmp_path / 'out')], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and 'evil.pt' in r.stderr
    assert not marker.exists()


# What the previous release wrote: these checkpoint keys, these flags, this safetensors metadata.
PREVIOUS_KEYS = {'generator', 'generator_exact_statistics', 'generator_train', 'discriminator', 'opt_gen', 'opt_disc',
                 'scaler', 'epoch', 'batches_done', 'step', 'args', 'rng', 'rng_per_process', 'layer_forms'}
PREVIOUS_FLAGS_ADDED_SINCE = ('dataset', 'image_size', 'tensorboard')
PREVIOUS_METADATA = ('format', 'model', 'gen_norm', 'gen_dropout', 'epoch', 'step', 'seed', 'exact_statistics')


def as_previous_release(ck):
    """Rewrite a run's checkpoint and generator file in the previous release's format."""
    path = os.path.join(ck, 'checkpoint_ep0.pt')
    ckpt = torch.load(path, weights_only=True)
    old = {k: v for k, v in ckpt.items() if k in PREVIOUS_KEYS}
    old['args'] = {k: v for k, v in ckpt['args'].items() if k not in PREVIOUS_FLAGS_ADDED_SINCE}
    torch.save(old, path)
    weights = os.path.join(ck, 'generator_ep0.safetensors')
    with safe_open(weights, framework='pt') as f:
        metadata = {k: v for k, v in f.metadata().items() if k in PREVIOUS_METADATA}
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    save_file(tensors, weights, metadata=metadata)
    return path, weights


def test_the_previous_releases_checkpoints_resume_score_colorize_and_export(tiny_cifar, tmp_path):
    ck = str(tmp_path / 'ck')
    assert run_train(train_command(tiny_cifar, ck, '--max_steps', '2', '--val_batches', '1')).returncode == 0
    path, weights = as_previous_release(ck)
    r = run_train(train_command(tiny_cifar, ck, '--max_steps', '3', '--val_batches', '1', '--resume', path))
    assert r.returncode == 0, r.stderr
    assert 'resuming from' in r.stdout and 'step 2' in r.stdout
    path, weights = as_previous_release(ck)
    test_cli = command_line('test')
    for checkpoint in (path, weights):
        r = run_in_process(test_cli.main, ['--checkpoints', checkpoint, '--data_path', tiny_cifar, '--num_grids', '0',
                                           '--save_path', str(tmp_path / 'out'), '--precision', 'fp32'])
        assert r.returncode == 0, r.stderr
    photos = tmp_path / 'photos'
    photos.mkdir()
    cv2.imwrite(str(photos / 'a.png'), np.full((40, 30, 3), 128, np.uint8))
    r = run_in_process(colorize.main, ['--checkpoint', weights, str(photos), '--output', str(tmp_path / 'col'),
                                       '--precision', 'fp32'])
    assert r.returncode == 0, r.stderr
    r = run_in_process(export.main, [path, '--out', str(tmp_path / 'g.safetensors')])
    assert r.returncode == 0 and '--image_size 32' in r.stdout
    G, exact, run_args = checkpoints.load_generator(str(tmp_path / 'g.safetensors'), 'cpu')
    assert run_args['image_size'] == 32 and run_args['network'] == 'reference'


def test_a_disk_that_cannot_hold_the_checkpoint_is_one_line_and_keeps_the_last(tmp_path, monkeypatch):
    path = str(tmp_path / 'checkpoint_ep1.pt')
    with open(path, 'wb') as f:
        f.write(b'the previous checkpoint')
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(checkpoints.shutil, 'disk_usage', lambda folder: usage._replace(free=200_000))
    with pytest.raises(UserError, match=r'the disk is full: the checkpoint checkpoint_ep1.pt needs 0 MB in .* \(0 MB free\)'):
        checkpoints.save_checkpoint(path, {'x': torch.zeros(100_000)})
    assert open(path, 'rb').read() == b'the previous checkpoint'
    assert os.listdir(tmp_path) == ['checkpoint_ep1.pt']


@pytest.fixture
def small_disk(tmp_path):
    """A 450 MB file system: room for one epoch's checkpoint and generator file, not for two."""
    folder = tmp_path / 'disk'
    folder.mkdir()
    mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=450m', 'tmpfs', str(folder)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f'cannot mount a small file system here ({mounted.stderr.decode().strip()})')
    yield str(folder)
    subprocess.run(['umount', str(folder)])


def test_a_full_disk_during_training_ends_in_one_line_and_keeps_the_previous_checkpoint(tiny_cifar, small_disk):
    ck = os.path.join(small_disk, 'ck')
    cmd = train_command(tiny_cifar, ck, '--max_epoch', '2', '--save_freq', '1', '--val_batches', '1',
                        '--batch_size', '16', '--tensorboard', 'off')
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert r.returncode in (1, 2), r.stderr[-2000:]
    lines = [line for line in r.stderr.splitlines() if 'error' in line]
    assert len(lines) == 1 and 'the disk is full' in lines[0] and ck in lines[0] and 'MB' in lines[0], r.stderr[-2000:]
    assert 'Traceback' not in r.stderr and 'terminate called' not in r.stderr
    assert not [n for n in os.listdir(ck) if n.endswith('.tmp')]
    previous = torch.load(os.path.join(ck, 'checkpoint_ep0.pt'), weights_only=True)
    assert previous['epoch'] == 0 and not os.path.exists(os.path.join(ck, 'checkpoint_ep1.pt'))
