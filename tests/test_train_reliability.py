"""Checkpoints, resume, interrupts and bad input: nothing lost, nothing run that should not be."""
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

import test as test_cli
import train
import utils
from conftest import ROOT, run_in_process


def train_cmd(data, ck, *flags):
    """train.py on tiny data; the layer forms fixed (--autotune off) unless `flags` say otherwise."""
    return [sys.executable, os.path.join(ROOT, 'train.py'), '--data_path', data, '--save_path', ck,
            '--samples_path', os.path.join(ck, 'samples'), '--batch_size', '8', '--precision', 'fp32',
            '--autotune', 'off', *flags]


def run(cmd):
    """A train_cmd, run in this process (see conftest.run_in_process)."""
    return run_in_process(train.main, cmd[2:])


def load(path):
    return torch.load(path, weights_only=True)


def assert_same_state(a, b):
    for key in ['generator_train', 'discriminator']:
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f'{key}.{name} differs'
    for key in ['opt_gen', 'opt_disc']:
        for i, state in a[key]['state'].items():
            for name, value in state.items():
                assert torch.equal(value, b[key]['state'][i][name]), f'{key}[{i}].{name} differs'


def test_stopping_and_resuming_gives_the_same_weights_bit_for_bit(tiny_cifar, tmp_path):
    straight, split = str(tmp_path / 'straight'), str(tmp_path / 'split')
    # Two separate runs match bit for bit only with the same layer forms: --autotune off fixes them
    # (a resumed run reuses its checkpoint's forms: test_a_resumed_run_keeps_its_layer_forms).
    fixed = ['--autotune', 'off', '--batch_size', '16', '--val_batches', '1']  # 5 batches an epoch
    assert run(train_cmd(tiny_cifar, straight, '--max_epoch', '1', *fixed)).returncode == 0
    # stop inside epoch 0 (3 of its 5 batches), then resume the same epoch and finish
    assert run(train_cmd(tiny_cifar, split, '--max_epoch', '1', '--max_steps', '3', *fixed)).returncode == 0
    assert load(os.path.join(split, 'checkpoint_ep0.pt'))['batches_done'] == 3
    r = run(train_cmd(tiny_cifar, split, '--max_epoch', '1', '--resume', 'latest', *fixed))
    assert r.returncode == 0, r.stderr
    assert 'epoch 0, batch 3, step 3' in r.stdout
    a, b = load(os.path.join(straight, 'checkpoint_ep0.pt')), load(os.path.join(split, 'checkpoint_ep0.pt'))
    assert a['step'] == b['step'] == 5
    assert_same_state(a, b)


def test_a_resumed_run_keeps_its_layer_forms(tiny_cifar, tmp_path):
    ck = str(tmp_path / 'ck')
    r = run(train_cmd(tiny_cifar, ck, '--max_steps', '1', '--autotune', 'on', '--val_batches', '1'))
    assert r.returncode == 0, r.stderr
    assert 'layer forms (measured in' in r.stdout
    forms = load(os.path.join(ck, 'checkpoint_ep0.pt'))['layer_forms']
    assert set(forms['generator']) == {'down4.model.0', 'down5.model.0', 'up1.model.0', 'up2.model.0'}
    assert set(forms['discriminator']) == {'down4.model.0'} and forms['precision'] == 'fp32'
    r = run(train_cmd(tiny_cifar, ck, '--max_steps', '2', '--resume', 'latest', '--autotune', 'on', '--val_batches', '1'))
    assert r.returncode == 0, r.stderr
    assert 'layer forms (from the checkpoint, measured on this machine)' in r.stdout
    assert load(os.path.join(ck, 'checkpoint_ep0.pt'))['layer_forms'] == forms


def test_a_mid_epoch_checkpoint_scores_as_an_epoch_checkpoint_of_the_same_step(tiny_cifar, tmp_path):
    """Mid-epoch saves skip the batch-norm recalibration; test.py does it where they are used."""
    at_epoch_end, mid_epoch, out = str(tmp_path / 'a'), str(tmp_path / 'b'), tmp_path / 'out'
    assert run(train_cmd(tiny_cifar, at_epoch_end, '--max_steps', '2', '--val_batches', '1')).returncode == 0
    assert run(train_cmd(tiny_cifar, mid_epoch, '--max_steps', '3', '--save_steps', '2', '--val_batches', '1')).returncode == 0
    exact, running = load(os.path.join(at_epoch_end, 'checkpoint_ep0.pt')), load(os.path.join(mid_epoch, 'checkpoint_step2.pt'))
    assert exact['generator_exact_statistics'] and not running['generator_exact_statistics']
    assert exact['step'] == running['step'] == 2
    scores = []
    for path in (os.path.join(at_epoch_end, 'checkpoint_ep0.pt'), os.path.join(mid_epoch, 'checkpoint_step2.pt')):
        r = run_in_process(test_cli.main, ['--data_path', tiny_cifar, '--checkpoints', path, '--labels', 'g',
                                            '--save_path', str(out), '--precision', 'fp32', '--num_grids', '0'])
        assert r.returncode == 0, r.stderr
        scores.append(json.load(open(out / 'metrics.json'))['checkpoints']['g'])
    assert 'a mid-epoch checkpoint' in r.stdout
    for key in ('mean_ab_error', 'mae', 'psnr', 'nazeri_accuracy', 'colorfulness'):
        assert scores[1][key] == pytest.approx(scores[0][key], rel=1e-5), key


def wait_for(predicate, seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def listing(ck):
    return os.listdir(ck) if os.path.isdir(ck) else []


def step_checkpoints(ck):
    return [n for n in listing(ck) if n.startswith('checkpoint_step')]


@pytest.mark.parametrize('sig, code', [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupt_checkpoints_mid_epoch_and_resume_continues(tiny_cifar, tmp_path, sig, code):
    ck = str(tmp_path / 'ck')
    proc = subprocess.Popen(train_cmd(tiny_cifar, ck, '--max_epoch', '1000', '--batch_size', '16', '--log_steps', '1'),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: os.path.exists(os.path.join(ck, 'steps.csv')))  # a first step is done: training is under way
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    saved = step_checkpoints(ck)
    assert len(saved) == 1 and 'interrupted: saved' in err and '--resume' in err
    path = os.path.join(ck, saved[0])
    ckpt = load(path)
    assert not ckpt['generator_exact_statistics']  # no recalibration on the way out
    if sig != signal.SIGINT:
        return  # the same handler: resuming is checked once
    r = run(train_cmd(tiny_cifar, ck, '--max_epoch', str(ckpt['epoch'] + 1), '--batch_size', '16', '--resume', path))
    assert r.returncode == 0, r.stderr
    assert f"epoch {ckpt['epoch']}, batch {ckpt['batches_done']}" in r.stdout
    assert load(os.path.join(ck, f"checkpoint_ep{ckpt['epoch']}.pt"))['step'] > ckpt['step']


def test_sigkill_at_random_moments_always_leaves_an_intact_checkpoint(tiny_cifar, tmp_path):
    ck = str(tmp_path / 'ck')
    rng = random.Random(0)
    flags = ['--save_steps', '3', '--save_freq', '1', '--batch_size', '16']  # 5 steps an epoch
    # One kill while a checkpoint is being written or just after (saves happen every 3 steps), then
    # a resume that must complete: what the kill left must be whole or cleared away.
    proc = subprocess.Popen(train_cmd(tiny_cifar, ck, *flags, '--max_epoch', '100'), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: proc.poll() is not None or step_checkpoints(ck)
             or any(n.startswith('.checkpoint') for n in listing(ck)), 120)
    assert proc.poll() is None, proc.stderr.read()
    time.sleep(rng.uniform(0, 2.0))
    proc.kill()
    proc.communicate()
    for name in listing(ck):
        if name.endswith(('.pt', '.safetensors')):
            utils.load_checkpoint(os.path.join(ck, name))  # every file on disk is whole
    saved = [os.path.join(ck, n) for n in listing(ck) if n.endswith('.pt')]
    last_epoch = load(max(saved, key=os.path.getmtime))['epoch'] + 1 if saved else 0
    r = run(train_cmd(tiny_cifar, ck, *flags, '--max_epoch', str(last_epoch + 1), *(['--resume', 'latest'] if saved else [])))
    assert r.returncode == 0, r.stderr
    assert load(os.path.join(ck, f'checkpoint_ep{last_epoch}.pt'))['step'] == 5 * (last_epoch + 1)
    assert not [n for n in listing(ck) if n.endswith('.tmp')]  # torn writes' leftovers are cleared


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
    r = run(train_cmd(tiny_cifar, str(tmp_path / 'ck'), '--resume', str(evil)))
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and 'evil.pt' in r.stderr
    r = subprocess.run([sys.executable, 'test.py', '--data_path', tiny_cifar, '--checkpoints', str(evil),
                        '--save_path', str(tmp_path / 'out')], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and 'evil.pt' in r.stderr
    assert not marker.exists()


def test_bad_input_leaves_existing_checkpoints_byte_identical(tiny_cifar, tmp_path):
    ck = str(tmp_path / 'ck')
    assert run(train_cmd(tiny_cifar, ck, '--max_steps', '3')).returncode == 0
    path = os.path.join(ck, 'checkpoint_ep0.pt')
    before = open(path, 'rb').read()
    corrupt = tmp_path / 'corrupt'
    os.makedirs(corrupt / 'cifar-10-batches-py')
    for name in os.listdir(os.path.join(tiny_cifar, 'cifar-10-batches-py')):
        data = open(os.path.join(tiny_cifar, 'cifar-10-batches-py', name), 'rb').read()
        open(corrupt / 'cifar-10-batches-py' / name, 'wb').write(data[:len(data) // 3] if name == 'data_batch_2' else data)
    blocker = tmp_path / 'a_file'
    blocker.write_text('x')
    for flags, words in [
        (['--resume', 'latest', '--max_epoch', '0'], '--max_epoch'),
        (['--resume', 'latest', '--lr_decay_rate', '0'], '--lr_decay_rate'),
        (['--resume', 'latest', '--gen_norm', 'instance'], '--gen_norm batch'),
        (['--resume', 'latest', '--gen_dropout', '0'], '--gen_dropout 0.5'),
        (['--resume', 'latest', '--data_path', str(corrupt)], 'data_batch_2'),
        (['--resume', os.path.join(ck, 'nothing.pt')], 'nothing.pt'),
    ]:
        r = run(train_cmd(tiny_cifar, ck, *flags))
        assert r.returncode != 0 and 'Traceback' not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and words in r.stderr, r.stderr
        assert open(path, 'rb').read() == before
    r = run(train_cmd(tiny_cifar, str(blocker / 'ck')))
    assert r.returncode != 0 and '--save_path' in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = str(tmp_path / 'checkpoint_ep0.pt')
    utils.save_checkpoint(path, {'step': 1})
    before = open(path, 'rb').read()

    def full_disk(obj, f):
        f.write(b'\0' * 100)
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(torch, 'save', full_disk)
    with pytest.raises(utils.UserError, match='No space left.*intact'):
        utils.save_checkpoint(path, {'step': 2})
    assert open(path, 'rb').read() == before and os.listdir(tmp_path) == ['checkpoint_ep0.pt']


def test_a_nan_loss_stops_with_the_step_named_or_is_skipped(tiny_cifar, tmp_path):
    ck = str(tmp_path / 'ck')
    # a learning rate this large drives the weights to inf within a few steps
    r = run(train_cmd(tiny_cifar, ck, '--base_lr_gen', '1e30', '--max_epoch', '3'))
    assert r.returncode != 0 and 'Traceback' not in r.stderr
    assert 'loss is nan' in r.stderr or 'loss is inf' in r.stderr
    assert 'at step' in r.stderr
    r = run(train_cmd(tiny_cifar, str(tmp_path / 'ck2'), '--base_lr_gen', '1e30', '--max_epoch', '1', '--nan_policy', 'skip'))
    assert r.returncode == 0, r.stderr
    assert 'steps skipped' in r.stdout
