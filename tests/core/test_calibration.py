"""Exact batch-norm statistics (calibration.py): computed at an epoch's end by train.py, and
where a generator without them is used."""
import json
import os

import pytest
import torch

from core import calibration
from conftest import command_line, run_in_process, run_train, train_command


def load(path):
    return torch.load(path, weights_only=True)


def test_a_mid_epoch_checkpoint_scores_as_an_epoch_checkpoint_of_the_same_step(tiny_cifar, tmp_path):
    """Mid-epoch saves skip the batch-norm recalibration; test.py does it where they are used."""
    test_cli = command_line('test')
    at_epoch_end, mid_epoch, out = str(tmp_path / 'a'), str(tmp_path / 'b'), tmp_path / 'out'
    assert run_train(train_command(tiny_cifar, at_epoch_end, '--max_steps', '2', '--val_batches', '1')).returncode == 0
    assert run_train(train_command(tiny_cifar, mid_epoch, '--max_steps', '3', '--save_steps', '2',
                                   '--val_batches', '1')).returncode == 0
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


def test_recalibrated_statistics_are_the_averages_over_the_batches_with_dropout_off():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Dropout(0.5), torch.nn.BatchNorm2d(4, momentum=0.1))
    model.train()
    batches = [torch.randn(8, 1, 6, 6) for _ in range(3)]
    assert calibration.recalibrate_batchnorm(model, batches) is model
    with torch.no_grad():
        features = [model[0](x) for x in batches]  # what the batch norm sees with dropout off
    bn = model[2]
    torch.testing.assert_close(bn.running_mean, torch.stack([f.mean((0, 2, 3)) for f in features]).mean(0))
    torch.testing.assert_close(bn.running_var, torch.stack([f.var((0, 2, 3)) for f in features]).mean(0))
    assert bn.momentum == 0.1 and not model.training and not any(m.training for m in model.modules())
