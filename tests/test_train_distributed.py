"""train.py under torchrun (2 CPU processes, Gloo) against train.py in one process, on tiny data."""
import csv
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import distributed
import test as test_cli
import train
from conftest import ROOT, run_in_process, smooth_images
from models import Discriminator, Generator
from utils import UserError, rgb_to_lab

TORCHRUN = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2']
# Runs that must compare step for step: no dropout, no averaging, fp32, fixed layer forms.
COMPARABLE = ['--gen_dropout', '0', '--precision', 'fp32', '--ema_decay', '0', '--autotune', 'off', '--seed', '3']


def flags(data, out, *extra):
    return ['--data_path', data, '--save_path', str(out / 'ck'), '--samples_path', str(out / 'samples'),
            '--batch_size', '32', '--val_batches', '1', *COMPARABLE, *extra]


def torchrun(args, **kwargs):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    return subprocess.run(TORCHRUN + [os.path.join(ROOT, 'train.py')] + args, cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240, **kwargs)


def log_rows(run_dir):
    with open(run_dir / 'ck' / 'log.csv') as f:
        return list(csv.DictReader(f))


def outputs_on_a_fixed_batch(checkpoint):
    """The trained generator's and the discriminator's outputs in train mode (batch statistics)."""
    ckpt = torch.load(checkpoint, weights_only=True)
    G, D = Generator('batch', 0.0), Discriminator('batch')
    G.load_state_dict(ckpt['generator_train']), D.load_state_dict(ckpt['discriminator'])
    lab = torch.from_numpy(rgb_to_lab(smooth_images(8, seed=42), network_scale=True)).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        return G.train()(lab[:, :1]), D.train()(lab)


def assert_same_run(rows_a, rows_b, rel=0.01):
    """fp32 runs whose sums are ordered differently (other process counts, thread counts or
    memory layouts) drift apart by about 1e-3 in five steps: Adam turns the rounding noise of
    gradients near zero into learning-rate-sized steps (docs/distributed.md). That the two
    processes compute the same gradients is proven in fp64 by tests/test_distributed.py."""
    assert [(r['epoch'], r['step'], r['phase'], r['images']) for r in rows_a] == \
           [(r['epoch'], r['step'], r['phase'], r['images']) for r in rows_b]
    for a, b in zip(rows_a, rows_b):
        for key in ('g_adv', 'g_l1', 'd_loss'):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=rel), (a['epoch'], a['phase'], key)


def test_two_processes_train_what_one_process_trains_and_one_process_resumes_them(tiny_cifar, tmp_path):
    two, one, two_then_one = (tmp_path / name for name in ('two', 'one', 'two_then_one'))
    r = torchrun(flags(tiny_cifar, two, '--max_steps', '3', '--save_steps', '2'))
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count('options: ') == 1  # only the first process prints
    assert '2 processes, 16 images each per step' in r.stdout
    r1 = run_in_process(train.main, flags(tiny_cifar, one, '--max_steps', '3', '--save_steps', '2'))
    assert r1.returncode == 0, r1.stderr[-2000:]

    # One writer: each epoch logged once; the same files as one process writes.
    assert len(log_rows(two)) == 2
    assert sorted(os.listdir(two / 'ck')) == sorted(os.listdir(one / 'ck'))
    assert_same_run(log_rows(two), log_rows(one))
    g1, d1 = outputs_on_a_fixed_batch(one / 'ck' / 'checkpoint_ep0.pt')

    def assert_as_close_as_rounding_allows(checkpoint):
        # Two 1-process runs that round differently (1 or 2 threads, either memory layout) differ
        # by up to 0.18 in G's and 0.01 in D's outputs after 5 steps (docs/distributed.md); these
        # run 3. Networks that had not trained alike would differ by the outputs' whole range.
        g, d = outputs_on_a_fixed_batch(checkpoint)
        assert (g - g1).abs().max().item() < 0.3 and (d - d1).abs().max().item() < 0.1

    assert_as_close_as_rounding_allows(two / 'ck' / 'checkpoint_ep0.pt')

    # A 2-process checkpoint resumed by one process finishes as the straight runs do (the reverse:
    # test_distributed.py's resume test, and docs/distributed.md).
    r = run_in_process(train.main, flags(tiny_cifar, two_then_one, '--max_steps', '3',
                                         '--resume', str(two / 'ck' / 'checkpoint_step2.pt')))
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'resuming from' in r.stdout and 'epoch 0, batch 2, step 2' in r.stdout
    for resumed in (two_then_one,):
        assert_same_run(log_rows(resumed)[-1:], log_rows(one)[-1:])  # the validation of the final networks
        assert_as_close_as_rounding_allows(resumed / 'ck' / 'checkpoint_ep0.pt')

    # test.py scores a 2-process checkpoint as any other.
    r = run_in_process(test_cli.main, ['--data_path', tiny_cifar, '--checkpoints', str(two / 'ck' / 'checkpoint_ep0.pt'),
                                       '--save_path', str(tmp_path / 'scores')])
    assert r.returncode == 0, r.stderr[-2000:]


def test_a_global_batch_the_processes_cannot_share_equally_is_a_one_line_error(tiny_cifar, tmp_path):
    # Refused before any collective, so a process that thinks it is one of two shows it alone.
    args = train.parse_args(flags(tiny_cifar, tmp_path, '--batch_size', '31'))
    with pytest.raises(UserError, match='--batch_size 31 is the global batch.*multiple of 2'):
        train.train(args, torch.device('cpu'), distributed.Processes(rank=0, world_size=2))
    assert not os.path.exists(tmp_path / 'ck')  # nothing written


def test_ctrl_c_to_the_launcher_leaves_one_whole_checkpoint_and_no_process(tiny_cifar, tmp_path):
    args = TORCHRUN + [os.path.join(ROOT, 'train.py')] + flags(tiny_cifar, tmp_path, '--max_epoch', '100',
                                                              '--log_steps', '1')
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    launcher = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
    first = tmp_path / 'ck' / 'steps.csv'  # written after the first step
    deadline = time.time() + 120
    while not first.exists() and time.time() < deadline:  # wait until training is under way
        time.sleep(0.5)
    assert first.exists(), 'training did not start'
    launcher.send_signal(signal.SIGINT)
    out, err = launcher.communicate(timeout=90)
    assert launcher.returncode != 0
    assert err.count('interrupted: saved') == 1  # written once, by the first process
    path = err.split('interrupted: saved ')[1].split(' (epoch')[0]
    ckpt = torch.load(path, weights_only=True)
    assert ckpt['step'] >= 1 and len(ckpt['rng_per_process']) == 2
    assert not [n for n in os.listdir(tmp_path / 'ck') if n.endswith('.tmp')]
    leftover = subprocess.run(['pgrep', '-f', str(tmp_path)], capture_output=True, text=True).stdout.split()
    assert leftover == []
