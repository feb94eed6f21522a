"""tools/ablation.py: named runs trained and scored as subprocesses, a distribution head's
temperature chosen on held-out training images, one table of their scores, and a second call that
skips what is done, on tiny data with 2 steps a run."""
import json
import os
import subprocess
import sys

from conftest import ROOT, command_line


def ablation(data, out, *flags):
    return subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'ablation.py'), '--data_path', data,
                           '--out', out, '--steps', '2', '--device', 'cpu', *flags, '--train_flags', '--batch_size',
                           '8', '--autotune', 'off', '--precision', 'fp32', '--tensorboard', 'off',
                           '--val_batches', '1'], capture_output=True, text=True, cwd=ROOT)


def test_the_ablation_trains_scores_tabulates_and_skips_what_is_done(tiny_cifar, tmp_path):
    out = str(tmp_path / 'ablation')
    r = ablation(tiny_cifar, out, '--only', 'spectral', 'classify', '--parallel', '2', '--holdout', '16',
                 '--temperatures', '0.05')
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'spectral, seed 0: trained and scored' in r.stdout and 'classify, seed 0: trained and scored' in r.stdout
    saved = json.load(open(os.path.join(out, 'classify', 'seed0', 'args.json')))
    assert (saved['recipe'], saved['ab_head'], saved['max_steps'], saved['seed'], saved['holdout']) == \
        ('spectral', 'classify', 2, 0, 16)
    # the temperature chosen on the 16 held-out images is the one the test set was scored at
    decoding = json.load(open(os.path.join(out, 'classify', 'seed0', 'decoding', 'decoding.json')))
    assert [s['temperature'] for s in decoding['settings']] == [0.05] and decoding['images'] == 16
    table = open(os.path.join(out, 'ablation.md')).read()
    header = next(line for line in table.splitlines() if line.startswith('| run |'))
    assert 'mean_ab_error' in header and 'colorfulness_gap' in header and 'semantic_accuracy' in header
    overall = table.split('Per class')[0]
    rows = {line.split(' | ')[0][2:]: line for line in overall.splitlines() if line.startswith('| ')}
    assert {'spectral', 'classify', 'ground truth'} <= set(rows)
    results = json.load(open(os.path.join(out, 'ablation.json')))
    metrics = json.load(open(os.path.join(out, 'spectral', 'seed0', 'test', 'metrics.json')))
    mean = results['runs']['spectral']['mean']
    assert mean['mean_ab_error'] == metrics['checkpoints']['spectral']['mean_ab_error']
    assert f"{mean['mean_ab_error']:.4f}" in rows['spectral']
    assert results['runs']['classify']['flags'] == ['--ab_head', 'classify']
    assert results['runs']['classify']['per_seed']['0']['decoding'] == [
        '--temperature', str(decoding['chosen']['temperature'])]
    assert 'decoding' not in results['runs']['spectral']['per_seed']['0']
    assert 'airplane' in table  # per class

    again = ablation(tiny_cifar, out, '--only', 'spectral', 'classify', '--holdout', '16')
    assert again.returncode == 0 and again.stdout.count('done before') == 2, again.stdout + again.stderr


def test_the_table_writes_each_measure_as_test_pys_results_page_does():
    tool = command_line('tools/ablation')
    assert 'fid' not in tool.MEASURES and tool.MEASURES[:2] == ('mean_ab_error', 'mae')
    cells = [tool.cell(v, m) for v, m in ((0.07312, 'mean_ab_error'), (12.7671, 'mae'), (0.2654, 'nazeri_accuracy'),
                                          (3.456, 'colorfulness_gap'), (None, 'psnr'))]
    assert cells == ['0.0731', '12.767', '26.5%', '3.46', '']


def test_an_unknown_run_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'ablation.py'), '--only', 'magic'],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and 'magic' in r.stderr.splitlines()[-1]


def test_a_head_given_by_its_recipe_has_its_decoding_chosen_as_one_given_by_flags():
    tool = command_line('tools/ablation')
    heads = {name for name in tool.RUNS if tool.has_distribution_head(name)}
    assert {'vivid', 'classify', 'classify+rebalance (batch norm)'} <= heads
    assert not heads & {'spectral', 'batchnorm', 'enhance+filter', 'rebalance'}
