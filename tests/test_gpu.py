"""The GPU checks: short runs, exact resume, the NaN policy, scoring and colorizing, and torchrun
with NCCL, on a CUDA device. Skipped (saying so) where there is none; where there is one:
`python -m pytest -m gpu tests/test_gpu.py`."""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

import colorize
import train
from conftest import ROOT, command_line, run_in_process
from dataset import LabImages
from training.gan import ColorizationGAN
from training.options import configs_from_args, parse_training_args

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device on this machine')]


def train_args(data, ck, *flags):
    return ['--data_path', data, '--save_path', ck, '--samples_path', os.path.join(ck, 'samples'),
            '--batch_size', '8', '--device', 'cuda', '--val_batches', '1', '--tensorboard', 'off', *flags]


@pytest.mark.parametrize('precision', ['fp32', 'bf16', 'fp16'])
def test_a_short_run_trains_on_the_gpu(precision, tiny_cifar, tmp_path):
    if precision == 'bf16' and torch.cuda.get_device_capability() < (8, 0):
        pytest.skip('this GPU has no native bf16')
    ck = str(tmp_path / 'ck')
    r = run_in_process(train.main, train_args(tiny_cifar, ck, '--precision', precision, '--max_steps', '6'))
    assert r.returncode == 0, r.stderr
    assert 'device cuda' in r.stdout and f'precision {precision}' in r.stdout
    ckpt = torch.load(os.path.join(ck, 'checkpoint_ep0.pt'), weights_only=True)
    assert ckpt['step'] == 6 and all(torch.isfinite(t).all() for t in ckpt['generator'].values() if t.is_floating_point())


def test_resuming_on_the_gpu_is_exact(tiny_cifar, tmp_path):
    straight, split = str(tmp_path / 'a'), str(tmp_path / 'b')
    fixed = ['--precision', 'fp32', '--max_epoch', '1', '--batch_size', '16']
    assert run_in_process(train.main, train_args(tiny_cifar, straight, *fixed)).returncode == 0
    assert run_in_process(train.main, train_args(tiny_cifar, split, *fixed, '--max_steps', '2')).returncode == 0
    assert run_in_process(train.main, train_args(tiny_cifar, split, *fixed, '--resume', 'latest')).returncode == 0
    a, b = (torch.load(os.path.join(p, 'checkpoint_ep0.pt'), weights_only=True) for p in (straight, split))
    # cuDNN may pick other algorithms between processes: equal to rounding. The biases of the
    # convolutions batch norm follows are left out: their gradient is rounding noise, which Adam
    # scales up to steps of the learning rate's size (SPEC.md, "Comparing two runs step for step";
    # seen on an H200: down1's bias 2e-4 apart), nor the running means of those norms, which take
    # the biases in (the second run on the H200 found down1's 2e-4 apart too)
    state = a['generator_train']
    biases = {name for name in state if name.endswith('.0.bias') and name[:-len('0.bias')] + '1.running_mean' in state}
    noise_only = biases | {name[:-len('0.bias')] + '1.running_mean' for name in biases}
    assert {'down1.model.0.bias', 'down1.model.1.running_mean'} <= noise_only
    for name, t in state.items():
        if name not in noise_only:
            assert torch.allclose(t.float(), b['generator_train'][name].float(), atol=1e-4), name
    # the GPU's random state is saved and restored: the resumed run ends where the straight one does
    assert len(a['rng_cuda']) == 1 and torch.equal(a['rng_cuda'][0], b['rng_cuda'][0])


def test_the_gpu_random_state_is_saved_and_restored(tiny_cifar, tmp_path):
    ck = str(tmp_path / 'ck')
    assert run_in_process(train.main, train_args(tiny_cifar, ck, '--max_steps', '2')).returncode == 0
    ckpt = torch.load(os.path.join(ck, 'checkpoint_ep0.pt'), weights_only=True)
    from training import distributed
    torch.cuda.manual_seed(12345)
    distributed.restore_random_state(ckpt, distributed.Processes(), 0, torch.device('cuda'))
    assert torch.equal(torch.cuda.get_rng_state(), ckpt['rng_cuda'][0])


def test_a_checkpoint_made_on_the_cpu_resumes_on_the_gpu(tiny_cifar, tmp_path):
    """CPU weights and moments are channels-last; on CUDA they are not, and the fused kernel
    needs the moments laid out as the weights."""
    ck = str(tmp_path / 'ck')
    cpu = ['--precision', 'fp32', '--autotune', 'off', '--max_epoch', '2']
    r = run_in_process(train.main, train_args(tiny_cifar, ck, *cpu, '--device', 'cpu', '--max_steps', '2'))
    assert r.returncode == 0, r.stderr
    assert 'rng_cuda' not in torch.load(os.path.join(ck, 'checkpoint_ep0.pt'), weights_only=True)
    r = run_in_process(train.main, train_args(tiny_cifar, ck, *cpu, '--resume', 'latest', '--channels_last', 'off'))
    assert r.returncode == 0, r.stderr
    back = ['--precision', 'fp32', '--autotune', 'off', '--max_epoch', '3', '--resume', 'latest']
    r = run_in_process(train.main, train_args(tiny_cifar, ck, *back, '--device', 'cpu'))  # and back to the CPU
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize('disc_norm', ['batch', 'spectral'])
@pytest.mark.parametrize('nan_policy', ['stop', 'skip'])
def test_a_training_step_makes_no_host_device_sync(disc_norm, nan_policy):
    args = parse_training_args(['--disc_norm', disc_norm, '--nan_policy', nan_policy, '--device', 'cuda'])
    from core.cli import Compute
    gan = ColorizationGAN(*configs_from_args(args), Compute.from_flags(args))
    images = LabImages(np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8), np.zeros(64))
    batches = images.batches(16, shuffle=True, flip=True, generator=torch.Generator().manual_seed(0), device='cuda')
    gan.step(next(batches)[1], 1)  # the first step creates the optimizers' states
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('error')
    try:
        for step, (_, lab) in enumerate(batches, start=2):  # the data path's gathers and flips included
            gan.step(lab.contiguous(memory_format=gan.memory_format), step)
    finally:
        torch.cuda.set_sync_debug_mode('default')
    assert gan.nan_watch.take_report() == (0, None)


def test_batches_gathered_on_the_gpu_equal_the_cpus_bit_for_bit():
    images = LabImages(np.random.default_rng(1).integers(0, 256, (50, 32, 32, 3), dtype=np.uint8), np.zeros(50))
    for device in ('cpu', 'cuda'):
        drawn = images.batches(8, shuffle=True, flip=True, generator=torch.Generator().manual_seed(3), device=device)
        if device == 'cpu':
            on_cpu = [lab for _, lab in drawn]
        else:
            on_gpu = [lab for _, lab in drawn]
    assert all(lab.device.type == 'cuda' for lab in on_gpu) and len(on_gpu) == len(on_cpu) == 7
    assert all(torch.equal(a, b.cpu()) for a, b in zip(on_cpu, on_gpu))


def test_auto_precision_names_what_this_gpu_runs_natively():
    from core.cli import resolve_precision
    native = torch.cuda.get_device_capability() >= (8, 0)
    assert resolve_precision('auto', torch.device('cuda')) == ('bf16' if native else 'fp32')


def test_the_nan_policy_works_on_the_gpu(tiny_cifar, tmp_path):
    ck = str(tmp_path / 'ck')
    r = run_in_process(train.main, train_args(tiny_cifar, ck, '--precision', 'fp32', '--max_steps', '3',
                                              '--base_lr_gen', '1e30', '--base_lr_disc', '1e30'))
    assert r.returncode == 2 and 'loss is' in r.stderr


def test_scoring_and_colorizing_on_the_gpu(tiny_cifar, tmp_path):
    ck, out, photos = str(tmp_path / 'ck'), str(tmp_path / 'out'), tmp_path / 'photos'
    assert run_in_process(train.main, train_args(tiny_cifar, ck, '--max_steps', '2')).returncode == 0
    test_cli = command_line('test')
    r = run_in_process(test_cli.main, ['--checkpoints', os.path.join(ck, 'checkpoint_ep0.pt'), '--data_path', tiny_cifar,
                                       '--save_path', out, '--device', 'cuda', '--num_grids', '1'])
    assert r.returncode == 0, r.stderr
    photos.mkdir()
    cv2.imwrite(str(photos / 'a.png'), np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8))
    r = run_in_process(colorize.main, ['--checkpoint', os.path.join(ck, 'generator_ep0.safetensors'), str(photos),
                                       '--output', str(tmp_path / 'col'), '--device', 'cuda'])
    assert r.returncode == 0, r.stderr
    assert cv2.imread(str(tmp_path / 'col' / 'a.png')).shape == (50, 70, 3)


def test_torchrun_with_nccl_trains_one_process(tiny_cifar, tmp_path):
    ck = str(tmp_path / 'ck')
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '1',
           os.path.join(ROOT, 'train.py'), *train_args(tiny_cifar, ck, '--max_steps', '2')]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert os.path.isfile(os.path.join(ck, 'checkpoint_ep0.pt'))
