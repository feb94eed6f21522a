"""The saturation dial's frontier (metrics/frontier.py) and test.py's --chroma_gain: the curves read
at a colourfulness by interpolation, the table and picture, and the gains applied before scoring."""
import json
import os

import pytest
import torch

from conftest import command_line, run_in_process
from dataset import load_split
from logfiles import check_picture
from metrics import frontier
from models import Generator

test_cli = command_line('test')


def scores(colourfulness, error, accuracy, fd, truth=30.0):
    return {'colorfulness': colourfulness, 'colorfulness_gap': abs(colourfulness - truth), 'mean_ab_error': error,
            'semantic_accuracy': accuracy, 'classifier_fd': fd}


CURVES = {
    'spectral': [(1.0, scores(20.0, 0.070, 0.85, 1.1)), (1.5, scores(28.0, 0.076, 0.83, 1.2)),
                 (2.0, scores(34.0, 0.082, 0.82, 1.4))],
    'vivid': [(1.0, scores(27.0, 0.074, 0.84, 1.0)), (1.5, scores(35.0, 0.080, 0.82, 1.2))],
}


def test_a_curve_is_read_at_a_colourfulness_by_linear_interpolation():
    points = CURVES['spectral']
    assert frontier.at_colourfulness(points, 27.0, 'mean_ab_error') == pytest.approx(0.070 + 0.006 * 7 / 8)
    assert frontier.at_colourfulness(points, 34.0, 'classifier_fd') == pytest.approx(1.4)
    assert frontier.at_colourfulness(points, 19.0, 'mean_ab_error') is None  # the dial does not go below gain 1's
    assert frontier.at_colourfulness(points, 40.0, 'mean_ab_error') is None


def test_the_table_sets_each_generator_against_the_others_dials_at_its_colourfulness():
    table = frontier.frontier_table(CURVES, 30.0)
    assert '| spectral | 1.5 | 28.00 | 2.00 | 0.0760 | 83.0% | 1.20 |' in table
    # vivid at 27.0 against spectral's dial there: error 0.0740 vs 0.07525 (better), accuracy 84.0%
    # vs 83.25% (better), FD 1.00 vs 1.1875 (better)
    row = next(line for line in table.splitlines() if line.startswith('| vivid | 27.00 | spectral |'))
    assert row.count('✓') == 3 and '0.0740 / 0.0752' in row
    # spectral at 20.0 lies below vivid's curve: nothing to compare
    row = next(line for line in table.splitlines() if line.startswith('| spectral | 20.00 | vivid |'))
    assert '✓' not in row and '0.0700 /  |' in row


def test_the_picture_is_drawn(tmp_path):
    path = frontier.draw_frontier(CURVES, 30.0, str(tmp_path / 'frontier.png'))
    check_picture(path)


def test_test_py_scores_every_generator_at_every_gain_and_a_gain_of_one_changes_nothing(tiny_cifar, tmp_path):
    torch.manual_seed(0)
    ckpt = str(tmp_path / 'g.pt')
    G = Generator('batch')
    torch.save({'generator': G.state_dict(), 'args': {'gen_norm': 'batch'}}, ckpt)
    common = ['--data_path', tiny_cifar, '--checkpoints', ckpt, '--labels', 'g', '--num_grids', '0',
              '--precision', 'fp32', '--classifier', 'off']
    plain, dialled = str(tmp_path / 'plain'), str(tmp_path / 'dialled')
    assert run_in_process(test_cli.main, common + ['--save_path', plain]).returncode == 0
    r = run_in_process(test_cli.main, common + ['--save_path', dialled, '--chroma_gain', '1', '1.5'])
    assert r.returncode == 0, r.stderr
    one = json.load(open(os.path.join(plain, 'metrics.json')))['checkpoints']['g']
    metrics = json.load(open(os.path.join(dialled, 'metrics.json')))
    assert set(metrics['checkpoints']) == {'g x1', 'g x1.5'} and metrics['chroma_gain'] == [1.0, 1.5]
    assert metrics['checkpoints']['g x1'] == one  # gain 1: the same scores, value for value
    # gain 1.5: the mean |ab error| of the prediction times 1.5, kept in [-1, 1], computed here
    test_set = load_split(tiny_cifar, train=False)
    lab = test_set.lab.permute(0, 3, 1, 2)  # (N, H, W, 3) -> (N, 3, H, W)
    with torch.no_grad():
        predicted = G.eval()(lab[:, :1])
    truth_ab = lab[:, 1:]
    error = (torch.clamp(predicted * 1.5, -1, 1) - truth_ab).abs().mean().item()
    assert metrics['checkpoints']['g x1.5']['mean_ab_error'] == pytest.approx(error, rel=1e-5)
    assert metrics['checkpoints']['g x1.5']['colorfulness'] > one['colorfulness']
    assert os.path.isfile(os.path.join(dialled, 'frontier.md'))
    check_picture(os.path.join(dialled, 'frontier.png'))
    assert '| g | 1.5 |' in open(os.path.join(dialled, 'frontier.md')).read()


def test_a_gain_given_twice_or_below_zero_is_one_line(tmp_path):
    for gains in (['1', '1'], ['-0.5']):
        r = run_in_process(test_cli.main, ['--checkpoints', 'x.pt', '--chroma_gain', *gains])
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and '--chroma_gain' in r.stderr
