"""The colour-distribution head (training/ab_classes.py, models.ColourDistributionHead): the bins
the training images use, soft-encoded targets, the annealed mean, rebalancing, and a generator
with each head through train.py, its files, test.py, colorize.py and export.py (its cross-entropy:
tests/training/test_loss.py)."""
import json
import os

import cv2
import numpy as np
import pytest
import torch

import models
from conftest import command_line, run_in_process, run_train, train_command
from dataset import LabImages
from storage import checkpoints
from training import ab_bins, ab_classes
from training.ab_classes import AbClasses

test_cli, colorize_cli, export_cli = command_line('test'), command_line('colorize'), command_line('export')


def classes_of(n=64, seed=5):
    images = LabImages(np.random.default_rng(seed).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8), np.zeros(n))
    return AbClasses.from_training_set(images), images


def test_the_bins_are_those_the_training_images_use_and_the_prior_is_their_share():
    classes, images = classes_of()
    ab_lab = images.lab[..., 1:].reshape(-1, 2) * 127.0
    cells = {tuple(c) for c in ((ab_lab - ab_bins.AB_LOW) // ab_bins.BIN_SIZE).long().tolist()}
    centres_lab = classes.centres.double() * 127.0
    assert len(classes) == len(cells)
    assert {tuple(c) for c in ((centres_lab - ab_bins.AB_LOW) // ab_bins.BIN_SIZE).long().tolist()} == cells
    assert torch.allclose(centres_lab % 10, torch.full_like(centres_lab, 5.0))  # centres of bins of 10
    assert float(classes.prior.sum()) == pytest.approx(1.0) and (classes.prior > 0).all()


def test_the_soft_encoding_sums_to_one_and_puts_its_mass_on_the_nearest_bins():
    classes, images = classes_of()
    ab = images.lab[:4].permute(0, 3, 1, 2)[:, 1:]
    targets = classes.soft_targets(ab)
    assert targets.shape == (4, len(classes), 8, 8)
    assert torch.allclose(targets.sum(dim=1), torch.ones(4, 8, 8))
    assert ((targets > 0).sum(dim=1) == ab_classes.NEIGHBOURS).all()
    pixel = ab[0, :, 3, 5] * 127.0
    distances = (classes.centres * 127.0 - pixel).norm(dim=1)
    weights = targets[0, :, 3, 5]
    nearest = distances.argsort()[:ab_classes.NEIGHBOURS]
    assert set(torch.nonzero(weights).flatten().tolist()) == set(nearest.tolist())
    expected = torch.exp(-distances[nearest] ** 2 / (2 * ab_bins.SIGMA ** 2))
    assert torch.allclose(weights[nearest], expected / expected.sum(), atol=1e-6)
    assert weights.argmax() == distances.argmin()


def test_the_annealed_mean_is_the_expectation_at_one_and_the_likeliest_bin_as_the_temperature_falls():
    torch.manual_seed(0)
    logits, centres = torch.randn(2, 7, 3, 3), torch.rand(7, 2) * 2 - 1
    p = torch.softmax(logits, dim=1)
    expectation = (p[:, :, None] * centres[None, :, :, None, None]).sum(dim=1)
    assert torch.allclose(models.annealed_mean(logits, centres, 1.0), expectation, atol=1e-6)
    likeliest = centres[logits.argmax(dim=1)].permute(0, 3, 1, 2)
    gaps = [(models.annealed_mean(logits, centres, t) - likeliest).abs().max().item() for t in (1.0, 0.38, 0.1, 0.01)]
    assert gaps == sorted(gaps, reverse=True) and gaps[-1] < 1e-3


@pytest.mark.parametrize('head', ['classify', 'both'])
def test_a_generator_with_a_distribution_head_trains_and_goes_through_its_files_test_colorize_and_export(
        head, tiny_cifar, tmp_path):
    ck = str(tmp_path / 'ck')
    r = run_train(train_command(tiny_cifar, ck, '--ab_head', head, '--max_steps', '3', '--val_batches', '1',
                                '--rebalance', '0.5', '--temperature', '0.5'))
    assert r.returncode == 0, r.stderr
    assert f'--ab_head {head}:' in r.stdout and 'ab bins of 10' in r.stdout
    ckpt = torch.load(os.path.join(ck, 'checkpoint_ep0.pt'), weights_only=True)
    n_bins = len(ckpt['ab_classes']['centres'])
    assert ckpt['generator']['final.logits.weight'].shape[0] == n_bins and ckpt['args']['ab_head'] == head
    assert torch.equal(ckpt['generator']['final.centres'], ckpt['ab_classes']['centres'])
    assert float(ckpt['generator']['final.temperature']) == 0.5
    G, _, config = checkpoints.load_generator(os.path.join(ck, 'generator_ep0.safetensors'), torch.device('cpu'))
    assert config['ab_head'] == head and isinstance(G.final, models.ColourDistributionHead)
    assert (G.final.regression is not None) == (head == 'both')
    # test.py scores the checkpoint and the generator file alike; another temperature, other colours
    scores = {}
    for name, extra in (('warm', []), ('cold', ['--temperature', '0.05']), ('each', ['--temperature', '0.05', '0.5'])):
        out = str(tmp_path / name)
        r = run_in_process(test_cli.main, ['--data_path', tiny_cifar, '--checkpoints', os.path.join(ck, 'checkpoint_ep0.pt'),
                                           os.path.join(ck, 'generator_ep0.safetensors'), '--labels', 'ckpt', 'file',
                                           '--save_path', out, '--num_grids', '0', '--precision', 'fp32',
                                           '--classifier', 'off', *extra])
        assert r.returncode == 0, r.stderr
        scores[name] = json.load(open(os.path.join(out, 'metrics.json')))['checkpoints']
    assert scores['warm']['ckpt']['mean_ab_error'] == pytest.approx(scores['warm']['file']['mean_ab_error'], abs=1e-7)
    assert scores['cold']['file']['colorfulness'] != scores['warm']['file']['colorfulness']
    # one temperature per checkpoint: the first at 0.05, the second at the 0.5 it trained with
    assert scores['each']['ckpt'] == scores['cold']['ckpt'] and scores['each']['file'] == scores['warm']['file']
    r = run_in_process(test_cli.main, ['--data_path', tiny_cifar, '--checkpoints', 'a.pt', 'b.pt', '--temperature',
                                       '1', '2', '3'])
    assert r.returncode == 2 and '--temperature has 3 values for 2 checkpoints' in r.stderr
    # export.py writes it alone and as a model folder; colorize.py rebuilds it from the folder
    single, folder = str(tmp_path / 'g.safetensors'), str(tmp_path / 'model')
    assert run_in_process(export_cli.main, [os.path.join(ck, 'checkpoint_ep0.pt'), '--out', single]).returncode == 0
    assert checkpoints.load_generator(single, torch.device('cpu'))[2]['ab_head'] == head
    assert run_in_process(export_cli.main, [single, '--folder', folder]).returncode == 0
    assert json.load(open(os.path.join(folder, 'config.json')))['architecture']['ab_head'] == head
    picture = str(tmp_path / 'p.png')
    cv2.imwrite(picture, np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8))
    out = str(tmp_path / 'colorized')
    r = run_in_process(colorize_cli.main, [picture, '--checkpoint', folder, '--output', out, '--precision', 'fp32'])
    assert r.returncode == 0, r.stderr
    assert cv2.imread(os.path.join(out, 'p.png')).shape == (40, 48, 3)
