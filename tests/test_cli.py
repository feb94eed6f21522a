import argparse
import importlib
import subprocess
import sys

import pytest
import torch

import cli
from cli import UserError
from conftest import ROOT, command_line, run_in_process


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


@pytest.mark.skipif(cli.cpu_has_native_bf16(), reason='this CPU runs bf16 natively')
@pytest.mark.parametrize('tool', ['train.py', 'test.py', 'colorize.py', 'bench.py'])
def test_every_tool_names_missing_bf16_in_one_line(tool, tmp_path):
    extra = {'test.py': ['--checkpoints', 'x.pt'], 'colorize.py': ['x.png', '--checkpoint', 'x.pt', '--output', 'o'],
             'train.py': ['--save_path', str(tmp_path / 'ck'), '--samples_path', str(tmp_path / 's')],
             'bench.py': ['--synthetic']}[tool]
    if tool == 'bench.py':
        r = subprocess.run([sys.executable, tool, '--precision', 'bf16', *extra], cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
    else:  # in this process, as the script runs it (conftest.run_in_process)
        script = command_line('test') if tool == 'test.py' else importlib.import_module(tool[:-3])
        r = run_in_process(script.main, ['--precision', 'bf16', *extra])
    assert r.returncode == 2 and 'Traceback' not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and 'no native bf16' in r.stderr and '--precision fp32' in r.stderr
