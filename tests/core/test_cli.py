import argparse
import importlib
import os

import pytest
import torch

from core import cli
from core.cli import UserError
from conftest import command_line, run_in_process


def test_number_in_bounds():
    unit = cli.number_in(float, 0, 1)
    assert unit('0') == 0 and unit('1') == 1
    for bad in ['1.5', '-0.1', 'x', 'nan']:
        with pytest.raises(argparse.ArgumentTypeError):
            unit(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        cli.number_in(float, 0, 1, low_open=True)('0')
    assert cli.number_in(int, 1)('6e4') == 60000


def test_bf16_on_a_cpu_without_native_bf16_is_refused_at_once(monkeypatch):
    cpu = torch.device('cpu')
    monkeypatch.setattr(cli, 'cpu_has_native_bf16', lambda: False)
    with pytest.raises(UserError, match=r'no native bf16.*65x slower.*--precision fp32 or auto'):
        cli.resolve_precision('bf16', cpu)
    assert cli.resolve_precision('auto', cpu) == 'fp32' and cli.resolve_precision('fp32', cpu) == 'fp32'
    monkeypatch.setattr(cli, 'cpu_has_native_bf16', lambda: True)
    assert cli.resolve_precision('bf16', cpu) == 'bf16' and cli.resolve_precision('auto', cpu) == 'bf16'


@pytest.mark.parametrize('tool', ['train.py', 'test.py', 'colorize.py', 'bench.py'])
def test_every_tool_names_missing_bf16_in_one_line(tool, tmp_path, monkeypatch):
    """On every CPU: the capability check answers 'no native bf16' here, whatever this CPU has,
    and each tool runs in this process (conftest.run_in_process), as its script runs it."""
    monkeypatch.setattr(cli, 'cpu_has_native_bf16', lambda: False)
    extra = {'test.py': ['--checkpoints', 'x.pt'],
             'colorize.py': ['x.png', '--checkpoint', 'x.pt', '--output', str(tmp_path / 'o')],
             'train.py': ['--save_path', str(tmp_path / 'ck'), '--samples_path', str(tmp_path / 's'),
                          '--data_path', str(tmp_path / 'data')],
             'bench.py': ['--synthetic']}[tool]
    script = command_line('test') if tool == 'test.py' else importlib.import_module(tool[:-3])
    r = run_in_process(script.main, ['--device', 'cpu', '--precision', 'bf16', *extra])
    assert r.returncode == 2 and 'Traceback' not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and 'no native bf16' in r.stderr and '--precision fp32' in r.stderr
    assert cli.cpu_description() in r.stderr  # the CPU it names
    assert not os.path.exists(tmp_path / 'ck') and not os.path.exists(tmp_path / 'o')  # refused before any work


@pytest.fixture
def fake_gpu(monkeypatch):
    """A CUDA device of a chosen compute capability, for the precision rules (no GPU needed)."""
    def make(capability, name='Tesla V100-SXM2-16GB'):
        monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, 'get_device_name', lambda device=None: name)
        monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda *a, **k: True)  # counts emulation
        return torch.device('cuda')
    return make


@pytest.mark.parametrize('capability, auto', [((7, 0), 'fp32'), ((7, 5), 'fp32'), ((8, 0), 'bf16'), ((9, 0), 'bf16')])
def test_auto_precision_on_a_gpu_is_bf16_only_from_compute_capability_8(fake_gpu, capability, auto):
    assert cli.resolve_precision('auto', fake_gpu(capability)) == auto


def test_an_explicit_bf16_on_a_pre_ampere_gpu_is_refused_in_one_line(fake_gpu):
    device = fake_gpu((7, 0))
    with pytest.raises(UserError) as e:
        cli.resolve_precision('bf16', device)
    assert 'Tesla V100' in str(e.value) and 'compute capability 7.0' in str(e.value) and '\n' not in str(e.value)
    assert cli.resolve_precision('fp16', device) == 'fp16' and cli.resolve_precision('fp32', device) == 'fp32'
    assert cli.resolve_precision('bf16', fake_gpu((8, 6), 'NVIDIA A10')) == 'bf16'


def test_tf32_is_set_explicitly_on_cuda_and_left_alone_elsewhere():
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    saved = matmul.fp32_precision, conv.fp32_precision
    try:
        cli.set_tf32(torch.device('cuda'), 'off')
        assert (matmul.fp32_precision, conv.fp32_precision) == ('ieee', 'ieee')
        cli.set_tf32(torch.device('cuda'), 'on')
        assert (matmul.fp32_precision, conv.fp32_precision) == ('tf32', 'tf32')
        cli.set_tf32(torch.device('cpu'), 'off')  # a CPU run's numbers do not depend on it
        assert (matmul.fp32_precision, conv.fp32_precision) == ('tf32', 'tf32')
    finally:
        matmul.fp32_precision, conv.fp32_precision = saved
