"""tools/graph_step.py: the graph-ready step computes train.py's step bit for bit (on the CPU,
eagerly); the capture itself runs where CUDA is (the gpu test)."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, run_in_process
from training.gan import ema_decay, learning_rate
from training.options import RECIPES, parse_training_args

TOOL = os.path.join(ROOT, 'tools', 'graph_step.py')


def load_tool():
    spec = importlib.util.spec_from_file_location('graph_step_tool', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def graph_step(monkeypatch):
    """The tool, told that a GPU is there (main's bookkeeping runs on the CPU; the measurements are
    replaced by each test)."""
    from core.cli import Compute
    tool = load_tool()
    monkeypatch.setattr(tool.torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(tool, 'gpu_description', lambda device: 'a test GPU')
    monkeypatch.setattr(tool.Compute, 'from_flags', classmethod(lambda cls, flags, device: Compute(device, 'bf16')))
    return tool


@pytest.mark.parametrize('recipe, flags', [
    ('spectral', []),
    # batch-norm D (one fake pass, replayed statistics) and the skip policy's device-side keep/restore
    ('batchnorm', ['--nan_policy', 'skip']),
])
def test_the_graph_ready_step_is_train_pys_step_bit_for_bit(recipe, flags, monkeypatch):
    graph_step = load_tool()
    from core.cli import Compute
    # A fast learning-rate decay and the averaging rate's warm-up: the per-step numbers change every step.
    args = parse_training_args(RECIPES[recipe] + flags + ['--batch_size', '4', '--autotune', 'off',
                                                          '--lr_decay_steps', '3', '--ema_decay', '0.999'])
    monkeypatch.setattr(graph_step, 'parse_training_args', lambda argv: args)
    compute = Compute(torch.device('cpu'), 'fp32')
    # As the tool's check does on a GPU, one after the other: each build reseeds, so the dropout draws agree.
    ready_warm, ready_end = graph_step.eager_states(*graph_step.built(recipe, 4, compute, True), 2, 1, True)
    plain_warm, plain_end = graph_step.eager_states(*graph_step.built(recipe, 4, compute, False), 2, 1, False)
    # weights, buffers and averages of three networks, two Adam moments and a step count per weight,
    # the NaN watch and the sums
    gan = graph_step.build(recipe, 4, compute, True)
    n_weights = sum(1 for model in (gan.G, gan.D) for _ in model.parameters())
    assert len(ready_end) == len(list(gan.G.state_dict())) * 2 + len(list(gan.D.state_dict())) + 3 * n_weights + 2
    assert graph_step.compare(ready_warm, plain_warm) == (True, 0.0, None)
    assert graph_step.compare(ready_end, plain_end) == (True, 0.0, None)
    assert not graph_step.compare(ready_warm, ready_end)[0]  # the steps did change the state
    assert ready_end['sums'][-1].item() == 3 * 4  # images seen
    gan.prepare(7)
    assert gan.opt_g.param_groups[0]['lr'].item() == learning_rate(args.base_lr_gen, 7, args.lr_decay_rate, 3)
    assert gan.average_rate.item() == pytest.approx(1 - ema_decay(0.999, 7))


def test_a_differing_state_is_found_measured_and_named():
    graph_step = load_tool()
    a = {'w': torch.zeros(3), 'b': torch.ones(2), 'n': torch.tensor(5)}
    b = {'w': torch.zeros(3), 'b': torch.tensor([1.0, 1.25]), 'n': torch.tensor(5)}
    assert graph_step.compare(a, {k: t.clone() for k, t in a.items()}) == (True, 0.0, None)
    assert graph_step.compare(a, b) == (False, 0.25, 'b')
    assert graph_step.compare(a, {'w': a['w']})[0] is False
    nan = {'w': torch.tensor([float('nan'), 1.0])}
    assert graph_step.compare(nan, {'w': nan['w'].clone()})[0]  # bit for bit, NaN included
    assert graph_step.compare({'w': torch.tensor(0.0)}, {'w': torch.tensor(-0.0)})[0] is False


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the refusal where there is no GPU')
def test_without_a_gpu_it_says_so_in_one_line():
    r = subprocess.run([sys.executable, TOOL, '--batch_sizes', '8'], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.count('\n') == 1 and 'needs a CUDA GPU' in r.stderr, r.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device on this machine')
def test_the_captured_step_runs_and_reports_on_the_gpu(tmp_path):
    graph_step = load_tool()
    out = tmp_path / 'graph.json'
    r = run_in_process(graph_step.main, ['--recipes', 'spectral', '--batch_sizes', '8', '--windows', '1',
                                         '--seconds', '0.5', '--json', str(out)])
    row = json.loads(out.read_text())['rows'][0]
    assert 'error' not in row, row
    assert r.returncode == 0, r.stderr
    assert row['eager_images_per_s'] > 0 and row['graph_images_per_s'] > 0
    # Whether the graph equals the eager step bit for bit is the finding, printed and kept in the JSON.
    assert 'check_error' not in row, row
    assert {'ready_repeatable', 'ready_is_train_step', 'graph_warmup_identical', 'graph_identical'} <= row.keys()


def test_a_failed_capture_is_reported_with_its_cause_and_ends_the_measurements(tmp_path, monkeypatch, graph_step):
    """main's bookkeeping without a GPU: the rows, the JSON, the exit code, the first error kept."""
    measured = []

    def rates(recipe, batch_size, *args):
        measured.append((recipe, batch_size))
        if batch_size == 128:
            try:
                raise RuntimeError('operation not permitted when stream is capturing')
            except RuntimeError:
                raise RuntimeError('CUDA error: operation failed due to a previous error during capture')
        return 100.0 * batch_size, 300.0 * batch_size
    monkeypatch.setattr(graph_step, 'rates', rates)
    monkeypatch.setattr(graph_step, 'check', lambda *args: pytest.fail('no comparison after a failed capture'))
    out = tmp_path / 'graph.json'
    r = run_in_process(graph_step.main, ['--recipes', 'spectral', 'batchnorm', '--json', str(out)])
    assert r.returncode == 1
    assert measured == [('spectral', 32), ('spectral', 128)]  # nothing after the failure
    rows = json.loads(out.read_text())['rows']
    assert rows[0]['ratio'] == 3.0 and rows[0]['graph_images_per_s'] == 9600.0
    assert rows[1]['error'] == ('RuntimeError: CUDA error: operation failed due to a previous error during capture '
                                '(from RuntimeError: operation not permitted when stream is capturing)')
    assert 'error' not in rows[2] and 'ratio' not in rows[2]
    assert 'failed: RuntimeError' in r.stdout and 'Traceback' in r.stderr


def test_the_comparisons_are_printed_with_the_worst_tensor_named(tmp_path, monkeypatch, graph_step):
    monkeypatch.setattr(graph_step, 'rates', lambda *args: (1000.0, 5000.0))
    a = {'G.w': torch.zeros(2), 'sums': torch.ones(7)}
    differing = {'G.w': torch.tensor([0.0, 3e-7]), 'sums': torch.ones(7)}

    def check(recipe, batch_size, *args):
        outcome = {}
        for key, other in (('ready_repeatable', a), ('ready_is_train_step', differing),
                           ('graph_warmup_identical', a), ('graph_identical', a)):
            same, gap, where = graph_step.compare(a, other)
            outcome.update({key: same, f'{key}_max_abs_diff': gap, f'{key}_worst': where})
        return dict(outcome, nondeterministic_ops=[])
    monkeypatch.setattr(graph_step, 'check', check)
    out = tmp_path / 'graph.json'
    r = run_in_process(graph_step.main, ['--recipes', 'spectral', '--batch_sizes', '32', '--json', str(out)])
    assert r.returncode == 0, r.stderr
    assert 'spectral     32  yes | no: 3e-07 in G.w | yes | yes' in r.stdout
    row = json.loads(out.read_text())['rows'][0]
    assert row['ratio'] == 5.0 and row['graph_identical'] and row['ready_is_train_step_worst'] == 'G.w'
