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
from options import RECIPES, parse_training_args

TOOL = os.path.join(ROOT, 'tools', 'graph_step.py')


def load_tool():
    spec = importlib.util.spec_from_file_location('graph_step_tool', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('recipe, flags', [
    ('spectral', []),
    # batch-norm D (one fake pass, replayed statistics) and the skip policy's device-side keep/restore
    ('batchnorm', ['--nan_policy', 'skip']),
])
def test_the_graph_ready_step_is_train_pys_step_bit_for_bit(recipe, flags):
    graph_step = load_tool()
    from cli import Compute
    from gan import ColorizationGAN
    # A fast learning-rate decay and the averaging rate's warm-up: the per-step numbers change every step.
    args = parse_training_args(RECIPES[recipe] + flags + ['--batch_size', '4', '--autotune', 'off',
                                                          '--lr_decay_steps', '3', '--ema_decay', '0.999'])
    compute = Compute(torch.device('cpu'), 'fp32')
    eager, ready = ColorizationGAN(args, compute), graph_step.GraphReadyGAN(args, compute)
    batches = graph_step.batch_pool(4, 'cpu', eager.memory_format)[:3]
    assert graph_step.compare(graph_step.state_tensors(eager), graph_step.state_tensors(ready)) == (True, 0.0)
    for step, lab in enumerate(batches, start=1):
        torch.manual_seed(step)  # the same dropout masks for both
        eager_sums = eager.step(lab, step)
        torch.manual_seed(step)
        ready.prepare(step)
        ready_sums = ready.graph_step(lab)
        assert torch.equal(eager_sums, ready_sums)
        assert ready.opt_g.param_groups[0]['lr'].item() == eager.opt_g.param_groups[0]['lr']
    before, after = graph_step.state_tensors(eager), graph_step.state_tensors(ready)
    # weights, buffers and averages of three networks, and two Adam moments and a step count per weight
    n_weights = sum(1 for model in (eager.G, eager.D) for _ in model.parameters())
    assert len(before) > 3 * n_weights
    assert graph_step.compare(before, after) == (True, 0.0)
    assert eager.take_finite_report() == ready.take_finite_report() == (0, None)


def test_a_differing_state_is_found_and_measured():
    graph_step = load_tool()
    a = [torch.zeros(3), torch.ones(2)]
    b = [torch.zeros(3), torch.tensor([1.0, 1.25])]
    assert graph_step.compare(a, [t.clone() for t in a]) == (True, 0.0)
    assert graph_step.compare(a, b) == (False, 0.25)
    assert graph_step.compare(a, a[:1])[0] is False


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
    # The graph-ready step taken eagerly is the step, but for the learning rate's rounding at most
    # (float on CUDA); whether the replays equal it is the finding, printed and kept in the JSON.
    assert row['eager_ready_identical'] or row['eager_ready_max_abs_diff'] < 1e-6, row
