"""Checkpoints and generator files: written whole or not at all, read back as tensors and plain data only."""
import errno
import io
import json
import os
import pickle
import re
import shutil
import subprocess
import sys

import cv2
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from storage import checkpoints
import colorize
import export
import utils
from core.cli import UserError
from conftest import ROOT, command_line, make_tiny_cifar, run_in_process, run_train, smooth_images, train_command


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
    """A checkpoint and a generator file of the previous release resume a run, and score and
    colorize exactly as the same files in this release's format and as export.py's conversion."""
    ck = str(tmp_path / 'ck')
    assert run_train(train_command(tiny_cifar, ck, '--max_steps', '2', '--val_batches', '1')).returncode == 0
    path, weights = as_previous_release(ck)
    r = run_train(train_command(tiny_cifar, ck, '--max_steps', '3', '--val_batches', '1', '--resume', path))
    assert r.returncode == 0, r.stderr
    assert 'resuming from' in r.stdout and 'step 2' in r.stdout
    current = tmp_path / 'current'  # the resumed run's files as this release wrote them
    current.mkdir()
    for name in ('checkpoint_ep0.pt', 'generator_ep0.safetensors'):
        shutil.copy(os.path.join(ck, name), current / name)
    path, weights = as_previous_release(ck)
    converted = str(tmp_path / 'g.safetensors')
    r = run_in_process(export.main, [path, '--out', converted])
    assert r.returncode == 0 and '--image_size 32' in r.stdout
    G, exact, run_args = checkpoints.load_generator(converted, 'cpu')
    assert run_args['image_size'] == 32 and run_args['network'] == 'reference'

    scored = {'old checkpoint': path, 'old generator file': weights, 'converted': converted,
              'checkpoint': str(current / 'checkpoint_ep0.pt'),
              'generator file': str(current / 'generator_ep0.safetensors')}
    r = run_in_process(command_line('test').main, ['--checkpoints', *scored.values(), '--labels', *scored,
                                                   '--data_path', tiny_cifar, '--num_grids', '0', '--precision', 'fp32',
                                                   '--save_path', str(tmp_path / 'out')])
    assert r.returncode == 0, r.stderr
    metrics = json.load(open(tmp_path / 'out' / 'metrics.json'))
    rows = {label: {k: v for k, v in metrics['checkpoints'][label].items() if k != 'path'} for label in scored}
    assert rows['checkpoint'] != {k: v for k, v in metrics['baseline'].items() if k in rows['checkpoint']}
    for label in scored:
        assert rows[label] == rows['checkpoint'], label

    photos = tmp_path / 'photos'
    photos.mkdir()
    cv2.imwrite(str(photos / 'a.png'), cv2.resize(smooth_images(1, seed=4)[0], (30, 40)))
    for generator, out in ((weights, 'old'), (path, 'old_checkpoint'), (converted, 'converted')):
        r = run_in_process(colorize.main, ['--checkpoint', generator, str(photos), '--output', str(tmp_path / out),
                                           '--precision', 'fp32'])
        assert r.returncode == 0, r.stderr
    colorized = {out: (tmp_path / out / 'a.png').read_bytes() for out in ('old', 'old_checkpoint', 'converted')}
    assert colorized['old'] == colorized['old_checkpoint'] == colorized['converted']


def test_a_checkpoint_records_the_configs_and_a_previous_releases_gives_them_from_its_flags(tmp_path):
    """The configs go into the checkpoint as plain dicts and come back equal; without them (the
    previous release wrote only `args`), they are derived from the saved flags, the flags added
    since taking their defaults."""
    from models import ModelConfig
    from training.config import TrainConfig
    from training.gan import ColorizationGAN
    model = ModelConfig(disc_norm='spectral', gen_dropout=0.25, class_context=True)
    training = TrainConfig(class_loss=0.5, smoothing=1.0, seed=3)
    gan = ColorizationGAN(model, training, n_classes=10)
    flags = {'gen_norm': 'batch', 'disc_norm': 'spectral', 'gen_dropout': 0.25, 'class_loss': 0.5,
             'smoothing': 1.0, 'seed': 3, 'save_path': str(tmp_path)}
    path = str(tmp_path / 'c.pt')
    checkpoints.save_checkpoint(path, checkpoints.training_checkpoint(gan, 0, 0, 1, flags, [torch.get_rng_state()],
                                                                      None))
    ckpt = checkpoints.load_checkpoint(path)
    assert ckpt['model_config'] == model.to_dict() and ckpt['train_config'] == training.to_dict()
    assert checkpoints.model_config_of(ckpt) == model and TrainConfig.from_dict(ckpt['train_config']) == training
    previous = {key: value for key, value in ckpt.items() if key not in ('model_config', 'train_config')}
    assert checkpoints.model_config_of(previous) == model
    assert TrainConfig.from_flags(previous['args']) == training
    assert checkpoints.model_config_of({'args': {'gen_norm': 'instance'}}) == ModelConfig(gen_norm='instance')
    # and the GAN resumes from it, the same weights back
    again = ColorizationGAN(model, training, n_classes=10)
    torch.nn.init.zeros_(next(again.G.parameters()))
    assert checkpoints.restore_training(previous, path, again) == (1, 0, 1)
    assert all(torch.equal(a, b) for a, b in zip(again.G.parameters(), gan.G.parameters()))


@pytest.mark.parametrize('first, then', [(['--class_loss', '0.5'], []), ([], ['--class_loss', '0.5'])],
                         ids=['with-then-without', 'without-then-with'])
def test_resuming_with_or_without_the_class_context_is_one_line_naming_class_loss(tiny_cifar, tmp_path, first, then):
    """--class_loss adds the class context's layers to the generator: a checkpoint resumes only
    under the same choice, and the error says which flag differs and what to do."""
    ck = str(tmp_path / 'ck')
    r = run_train(train_command(tiny_cifar, ck, '--max_steps', '1', '--val_batches', '1', *first))
    assert r.returncode == 0, r.stderr
    r = run_train(train_command(tiny_cifar, ck, '--max_steps', '2', '--val_batches', '1', '--resume', 'latest', *then))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert '--class_loss' in r.stderr and 'start a new --save_path' in r.stderr and 'state_dict' not in r.stderr


def test_a_run_resumes_under_another_dropout_which_changes_no_shape(tiny_cifar, tmp_path):
    ck = str(tmp_path / 'ck')
    assert run_train(train_command(tiny_cifar, ck, '--max_steps', '1', '--val_batches', '1')).returncode == 0
    r = run_train(train_command(tiny_cifar, ck, '--max_steps', '2', '--val_batches', '1', '--resume', 'latest',
                                '--gen_dropout', '0'))
    assert r.returncode == 0, r.stderr
    assert 'resuming from' in r.stdout and 'step 1' in r.stdout


def test_a_mid_epoch_generator_file_of_a_folder_run_keeps_its_data_and_colorizes_as_its_checkpoint(tiny_folder,
                                                                                                   tmp_path):
    """A generator file records its run's data set and path (train.py's and export.py's), so that
    colorize.py computes a mid-epoch generator's batch-norm statistics on the run's own training
    images: the same pictures as from the checkpoint it was exported from."""
    ck = str(tmp_path / 'ck')
    r = run_train(train_command(tiny_folder, ck, '--dataset', 'folder', '--image_size', '64', '--num_workers', '0',
                                '--max_steps', '2', '--save_steps', '1', '--val_batches', '1'))
    assert r.returncode == 0, r.stderr
    for_use = checkpoints.load_checkpoint(os.path.join(ck, 'generator_ep0.safetensors'))
    assert for_use['args']['dataset'] == 'folder' and for_use['args']['data_path'] == tiny_folder
    step_checkpoint = os.path.join(ck, 'checkpoint_step1.pt')
    exported = str(tmp_path / 'g.safetensors')
    r = run_in_process(export.main, [step_checkpoint, '--out', exported])
    assert r.returncode == 0 and 'mid-epoch' in r.stdout, r.stderr
    run_args = checkpoints.load_checkpoint(exported)['args']
    assert run_args['dataset'] == 'folder' and run_args['data_path'] == tiny_folder

    photos = tmp_path / 'pictures'
    photos.mkdir()
    cv2.imwrite(str(photos / 'a.png'), cv2.resize(smooth_images(1, seed=4)[0], (90, 70)))
    for generator, out in ((step_checkpoint, 'from_checkpoint'), (exported, 'from_file')):
        r = run_in_process(colorize.main, ['--checkpoint', generator, str(photos), '--output', str(tmp_path / out),
                                           '--data_path', tiny_folder, '--precision', 'fp32'])
        assert r.returncode == 0, r.stderr
        assert 'computing its exact batch-norm statistics' in r.stdout
    assert (tmp_path / 'from_checkpoint' / 'a.png').read_bytes() == (tmp_path / 'from_file' / 'a.png').read_bytes()


# The space a full-disk message names: "... the <what> <file> needs N MB in <folder> (F MB free)" or
# "(the disk filled up while writing)".
DISK_FULL = re.compile(r'the disk is full: the (?:checkpoint|generator file) (\S+) needs ([\d,]+) MB in (.+?) '
                       r'\((?:([\d,]+) MB free|the disk filled up while writing)\)')


def megabytes(text):
    return int(text.replace(',', ''))


def test_a_disk_that_cannot_hold_the_checkpoint_is_one_line_and_keeps_the_last(tmp_path, monkeypatch):
    path = str(tmp_path / 'checkpoint_ep1.pt')
    with open(path, 'wb') as f:
        f.write(b'the previous checkpoint')
    state = {'x': torch.zeros(3_000_000)}  # 12 MB of float32
    written = io.BytesIO()
    torch.save(state, written)  # the bytes the checkpoint would take
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(checkpoints.shutil, 'disk_usage', lambda folder: usage._replace(free=5_000_000))
    with pytest.raises(UserError) as e:
        checkpoints.save_checkpoint(path, state)
    message = str(e.value)
    assert '\n' not in message and 'intact' in message
    name, needed, folder, free = DISK_FULL.search(message).groups()
    assert (name, folder) == ('checkpoint_ep1.pt', str(tmp_path))
    assert megabytes(needed) == round(len(written.getvalue()) / 1e6) == 12 and megabytes(free) == 5
    assert open(path, 'rb').read() == b'the previous checkpoint'
    assert os.listdir(tmp_path) == ['checkpoint_ep1.pt']


DISK_BYTES = 450_000_000  # room for one epoch's checkpoint and generator file, not for two


def mounted_small_disk(folder):
    """A tmpfs of DISK_BYTES at `folder`, or skip where this machine refuses the mount."""
    mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={DISK_BYTES}', 'tmpfs', str(folder)],
                             capture_output=True)
    if mounted.returncode:
        pytest.skip(f'cannot mount a small file system here ({mounted.stderr.decode().strip()}); '
                    f'the simulated one runs instead')


def simulate_small_disk(folder, monkeypatch):
    """A disk of DISK_BYTES at `folder`, without a mount, for train.py run in this process: the
    free space it reports is DISK_BYTES less what the folder holds, and a write into the folder
    that goes past it stores what fits and fails with ENOSPC, as a real file system's does."""
    folder = os.path.abspath(folder)

    def inside(path):
        return os.path.abspath(path).startswith(folder + os.sep) or os.path.abspath(path) == folder

    def used():
        return sum(os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(folder) for n in names)
    disk_usage = shutil.disk_usage

    def small_disk_usage(path):
        if not inside(path):
            return disk_usage(path)
        return disk_usage(path)._replace(total=DISK_BYTES, used=used(), free=max(0, DISK_BYTES - used()))

    class FillingFile:
        def __init__(self, f):
            self.f, self.room = f, DISK_BYTES - used()

        def write(self, data):
            data = memoryview(data).cast('B')
            if len(data) > self.room:
                self.f.write(data[:max(0, self.room)])
                self.f.flush()
                self.room = 0
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.room -= len(data)
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)
    atomic_write = checkpoints.atomic_write

    def filling_atomic_write(path, write_fn, mode='wb'):
        if not inside(path) or 'b' not in mode:
            return atomic_write(path, write_fn, mode)
        return atomic_write(path, lambda f: write_fn(FillingFile(f)), mode)
    monkeypatch.setattr(shutil, 'disk_usage', small_disk_usage)
    monkeypatch.setattr(checkpoints, 'atomic_write', filling_atomic_write)


@pytest.fixture(params=['tmpfs', 'simulated'])
def small_disk(request, tmp_path, monkeypatch):
    """(folder on a DISK_BYTES disk, how to run train.py there): a mounted tmpfs and train.py as
    a process, where this machine allows the mount; everywhere, the same disk simulated for
    train.py in this process (simulate_small_disk)."""
    folder = tmp_path / 'disk'
    folder.mkdir()
    if request.param == 'simulated':
        simulate_small_disk(folder, monkeypatch)
        yield str(folder), run_train
        return
    mounted_small_disk(folder)
    try:
        yield str(folder), lambda command: subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    finally:
        subprocess.run(['umount', str(folder)])


def test_a_full_disk_during_training_ends_in_one_line_and_keeps_the_previous_checkpoint(tmp_path, small_disk):
    folder, run = small_disk
    data = str(tmp_path / 'data')
    make_tiny_cifar(data, per_batch=1, test_images=8)  # 5 training images: one step an epoch
    ck = os.path.join(folder, 'ck')
    r = run(train_command(data, ck, '--max_epoch', '2', '--save_freq', '1', '--val_batches', '1',
                          '--tensorboard', 'off'))
    assert r.returncode in (1, 2), r.stderr[-2000:]
    lines = [line for line in r.stderr.splitlines() if 'error' in line]
    assert len(lines) == 1 and 'Traceback' not in r.stderr and 'terminate called' not in r.stderr, r.stderr[-2000:]
    # It names the folder and the space: the file it could not write needs as much as its
    # epoch-0 twin took, more than was free.
    name, needed, named_folder, free = DISK_FULL.search(lines[0]).groups()
    assert named_folder == ck and name in ('checkpoint_ep1.pt', 'generator_ep1.safetensors'), lines[0]
    twin = os.path.getsize(os.path.join(ck, name.replace('ep1', 'ep0')))
    assert abs(megabytes(needed) - twin / 1e6) <= 1, (lines[0], twin)
    assert free is None or megabytes(free) < megabytes(needed), lines[0]
    # The last checkpoint and generator file are whole; of the file that did not fit, nothing is left.
    files = set(os.listdir(ck))
    assert {'checkpoint_ep0.pt', 'generator_ep0.safetensors'} <= files and name not in files
    assert 'checkpoint_ep1.pt' not in files and not [n for n in files if n.endswith('.tmp')], files
    previous = torch.load(os.path.join(ck, 'checkpoint_ep0.pt'), weights_only=True)
    assert previous['epoch'] == 0
    G, _, _ = checkpoints.load_generator(os.path.join(ck, 'generator_ep0.safetensors'), 'cpu')
    assert all(torch.equal(t, previous['generator'][k]) for k, t in G.state_dict().items())


def test_a_loaded_generator_has_the_two_form_layers_a_run_trained_with(tmp_path):
    """Built of the library's layers (models.py), then swapped: in bf16 on a CPU it computes as
    in training; its state dict, that of a plain generator, loads into it."""
    from models import Generator
    from core.convolutions import two_form_layers
    path = str(tmp_path / 'g.pt')
    torch.save(Generator().state_dict(), path)
    G, _, _ = checkpoints.load_generator(path, torch.device('cpu'))
    assert sorted(two_form_layers(G)) == ['down4.model.0', 'down5.model.0', 'up1.model.0', 'up2.model.0']
