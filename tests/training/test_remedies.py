"""The remedies for grey colorizations (remedies.py) do what each claims, on small data; off, they change nothing."""
import json
import os

import numpy as np
import pytest
import torch

from training import ab_bins, remedies
from metrics import scores
from conftest import lab_batch, run_train, smooth_images, train_command
from dataset import LabImages
from training.gan import ColorizationGAN
from training.options import configs_from_args, parse_training_args
from core.pictures import network_to_rgb


# ---------------------------------------------------------------- colour-enhanced targets

def test_enhanced_targets_scale_ab_clip_it_and_are_more_colourful():
    lab = lab_batch(8, seed=3).contiguous(memory_format=torch.channels_last)
    enhanced = remedies.enhance_colors(lab, 1.2)
    assert enhanced.is_contiguous(memory_format=torch.channels_last) and torch.equal(enhanced[:, :1], lab[:, :1])
    assert torch.equal(enhanced[:, 1:], (lab[:, 1:] * 1.2).clamp(-1, 1))
    assert torch.equal(remedies.enhance_colors(lab, 1.0), lab) and not torch.equal(enhanced, lab)
    before = scores.colorfulness(network_to_rgb(lab[:, :1], lab[:, 1:])).mean()
    after = scores.colorfulness(network_to_rgb(enhanced[:, :1], enhanced[:, 1:])).mean()
    # ab scaled by 1.2 scales a colour's distance from grey by about 1.2 (rounding, gamut clipping aside)
    assert 1.1 * before < after < 1.3 * before


# ---------------------------------------------------------------- rebalancing

class InMemory:
    """A training set as remedies reads one held in memory: `lab` (N, H, W, 3)."""

    def __init__(self, lab):
        self.lab = lab

    def __len__(self):
        return len(self.lab)


def two_colour_set(common=0.9):
    """100 images of 4x4 pixels: `common` of the pixels one colour, the rest a rare far one."""
    lab = torch.zeros(100, 4, 4, 3)
    lab[..., 1:] = torch.tensor([0.3, -0.2])
    rare = torch.rand(100, 4, 4, generator=torch.Generator().manual_seed(0)) > common
    lab[rare, 1:] = torch.tensor([-0.5, 0.6])
    return InMemory(lab), rare


def test_rebalancing_weights_average_one_under_the_smoothed_prior_and_favour_rare_colours():
    train_set, rare = two_colour_set()
    w = remedies.RebalanceWeights.from_training_set(train_set, 0.5)
    ab = train_set.lab[..., 1:].permute(0, 3, 1, 2)
    pixel_weights = w(ab)
    assert pixel_weights.shape == (100, 1, 4, 4)
    smoothed = ab_bins.smoothed_prior(w.ab_prior.prior, w.ab_prior.centres)
    assert float((smoothed * w.table[w.ab_prior.grid_cells()].double()).sum()) == pytest.approx(1.0, abs=1e-6)
    # two colours 100 Lab units apart, which the smoothing leaves apart: the pixels' mean weight is
    # 1 too, and with lambda = 1/2 the rare one weighs 1.8 times as much, both sides of 1
    assert pixel_weights.double().mean().item() == pytest.approx(1.0, abs=1e-6)
    assert pixel_weights[:, 0][rare].min() > 1.5 > 1 > pixel_weights[:, 0][~rare].max()


def test_rebalancing_with_lambda_one_weights_every_colour_alike():
    train_set, _ = two_colour_set()
    w = remedies.RebalanceWeights.from_training_set(train_set, 1.0)
    assert torch.allclose(w(train_set.lab[..., 1:].permute(0, 3, 1, 2)), torch.ones(100, 1, 4, 4))


def test_the_rebalanced_l1_weights_the_total_but_reports_the_plain_l1():
    lab = lab_batch(4)
    fake_ab = torch.zeros(4, 2, 32, 32)
    plain = ColorizationGAN(*configs_from_args(parse_training_args(['--channels_last', 'off'])))
    weighted = ColorizationGAN(*configs_from_args(parse_training_args(['--channels_last', 'off', '--rebalance',
                                                                       '0.5'])))
    weighted.pixel_weights = lambda ab: torch.full((len(ab), 1, 32, 32), 2.0)
    scores_ = torch.zeros(4, 1)
    p = plain.generator_loss(lab[:, 1:], fake_ab, scores_)
    w = weighted.generator_loss(lab[:, 1:], fake_ab, scores_)
    assert p.adversarial == w.adversarial and p.l1 == w.l1
    assert w.total.item() == pytest.approx((0.01 * p.adversarial + 0.99 * 2 * p.l1).item())


# ---------------------------------------------------------------- the colourfulness filter

def test_the_filter_drops_exactly_the_images_below_the_threshold():
    rgb = smooth_images(12, seed=4)
    rgb[:3] = rgb[:3].mean(axis=-1, keepdims=True).astype(np.uint8)  # three grey images: colourfulness 0
    rgb[3] = (0.6 * rgb[3] + 0.4 * rgb[3].mean(axis=-1, keepdims=True)).astype(np.uint8)
    images = LabImages(rgb, np.arange(12))
    values = scores.colorfulness(rgb)
    threshold = float(np.sort(values)[5]) + 1e-9  # six below
    kept, lines, total = remedies.drop_dull_images(images, threshold)
    below = np.flatnonzero(values < threshold)
    assert total == 12 and len(below) == 6 and len(kept) == 6
    assert kept.labels.tolist() == np.flatnonzero(values >= threshold).tolist()
    assert torch.equal(kept.lab, images.lab[torch.from_numpy(kept.labels)])
    assert np.array_equal(kept.rgb, rgb[kept.labels])
    assert [line.split('\t')[1].strip() for line in lines] == [f'training image {i}' for i in below]
    assert [float(line.split('\t')[0]) for line in lines] == pytest.approx(values[below], abs=0.005)


# ---------------------------------------------------------------- in a run

def test_a_run_with_every_remedy_trains_and_lists_what_the_filter_dropped(tiny_cifar, tmp_path):
    ck = str(tmp_path / 'ck')
    r = run_train(train_command(tiny_cifar, ck, '--max_steps', '2', '--val_batches', '1', '--tensorboard', 'off',
                                '--recipe', 'spectral', '--color_enhance', '1.2', '--rebalance', '0.5',
                                '--min_colorfulness', '40', '--adv_loss', 'hinge'))
    assert r.returncode == 0, r.stderr
    listed = open(os.path.join(ck, 'dropped_colorfulness.txt')).read().splitlines()
    assert f"dropped {len(listed)} of 80 training images; all {len(listed)} listed in " in r.stdout
    assert 0 < len(listed) < 80 and all(float(line.split('\t')[0]) < 40 for line in listed)
    assert f"data: {80 - len(listed)} training images" in r.stdout
    saved = json.load(open(os.path.join(ck, 'args.json')))
    assert (saved['recipe'], saved['disc_norm'], saved['color_enhance'], saved['rebalance'],
            saved['min_colorfulness'], saved['adv_loss']) == ('spectral', 'spectral', 1.2, 0.5, 40, 'hinge')


@pytest.mark.parametrize('name', ['spectral'])
def test_a_recipe_by_name_is_its_command_line_run(name, tiny_cifar, tmp_path):
    """The same args.json but for the recipe's name and the folders, and the same weights."""
    from training.options import RECIPES
    runs = {}
    for how, flags in (('named', ['--recipe', name]), ('typed', RECIPES[name])):
        ck = str(tmp_path / how)
        r = run_train(train_command(tiny_cifar, ck, '--max_steps', '2', '--val_batches', '1', '--tensorboard', 'off',
                                    *flags))
        assert r.returncode == 0, r.stderr
        saved = json.load(open(os.path.join(ck, 'args.json')))
        for key in ('recipe', 'save_path', 'samples_path', 'provenance'):
            saved.pop(key)
        runs[how] = saved, torch.load(os.path.join(ck, 'checkpoint_ep0.pt'), weights_only=True)
    assert runs['named'][0] == runs['typed'][0]
    for key in ('generator', 'generator_train', 'discriminator'):
        a, b = runs['named'][1][key], runs['typed'][1][key]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
