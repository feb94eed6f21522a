"""The training images' ab bins, their prior and Zhang et al.'s rebalancing (training/ab_bins.py):
the weights against a hand computation of the formula, the same weights for the L1 and the
cross-entropy, the checkpoint's record of the prior, and a resumed run keeping it."""
import math
import os

import numpy as np
import pytest
import torch

from conftest import make_tiny_cifar, run_train, train_command, write_cifar_batch
from dataset import LabImages
from training import ab_bins, remedies
from training.ab_bins import AbPrior
from training.ab_classes import AbClasses


def random_images(n=48, seed=3):
    rng = np.random.default_rng(seed)
    return LabImages(rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8), np.zeros(n, dtype=np.int64))


def zhang_by_hand(centres_lab, counts, lam, sigma=5.0):
    """Zhang et al.'s eq. 4 in plain Python: the prior smoothed by a Gaussian over the bins'
    centres, mixed with the uniform over the Q bins, inverted, and scaled so that the weights'
    mean under the smoothed prior is 1."""
    q = len(counts)
    prior = [c / sum(counts) for c in counts]
    smoothed = []
    for i in range(q):
        total = 0.0
        for j in range(q):
            d2 = sum((centres_lab[i][k] - centres_lab[j][k]) ** 2 for k in range(2))
            total += math.exp(-d2 / (2 * sigma ** 2)) * prior[j]
        smoothed.append(total)
    smoothed = [s / sum(smoothed) for s in smoothed]
    raw = [1.0 / ((1 - lam) * s + lam / q) for s in smoothed]
    mean = sum(s * w for s, w in zip(smoothed, raw))
    return [w / mean for w in raw]


def test_the_weights_are_zhang_et_al_s_formula_computed_by_hand():
    # three bins: two neighbours 10 Lab units apart, which the smoothing mixes, and a far one
    centres_lab = [(5.0, 5.0), (15.0, 5.0), (-55.0, 45.0)]
    counts = [700.0, 250.0, 50.0]
    prior = AbPrior(torch.tensor(centres_lab) / 127.0, torch.tensor(counts))
    for lam in (0.5, 0.1, 1.0):
        expected = zhang_by_hand([tuple(c) for c in (prior.centres.double() * 127.0).tolist()], counts, lam)
        assert prior.weights(lam).tolist() == pytest.approx(expected, rel=1e-9)
    weights = prior.weights(0.5)
    assert weights[2] > weights[1] > weights[0]  # rarer, heavier
    assert torch.allclose(prior.weights(1.0), torch.ones(3, dtype=torch.float64))


def test_the_rebalancing_weights_average_one_under_the_smoothed_prior_and_favour_rare_colours():
    classes = AbClasses.from_training_set(random_images())
    smoothed = ab_bins.smoothed_prior(classes.prior, classes.centres)
    weights = ab_bins.rebalancing_weights(classes.prior, classes.centres, 0.5)
    assert float((smoothed * weights).sum()) == pytest.approx(1.0)
    assert weights[smoothed.argmin()] == weights.max() and weights[smoothed.argmax()] == weights.min()
    flat = ab_bins.rebalancing_weights(classes.prior, classes.centres, 1.0)
    assert torch.allclose(flat, torch.ones_like(flat), atol=1e-9)  # lambda 1: every colour alike


def test_the_l1_and_the_cross_entropy_weigh_every_training_pixel_alike():
    images = random_images()
    prior = AbPrior.from_training_set(images)
    l1 = remedies.RebalanceWeights(prior, 0.5)
    head = AbClasses(prior, 0.5)
    ab = images.lab[..., 1:].permute(0, 3, 1, 2)
    per_pixel_l1 = l1(ab).reshape(-1)
    nearest = head.nearest_bins(ab)[0][:, 0]
    # a training pixel's nearest bin is its own cell's, but for a tie on a cell's edge: the same weight
    own = ab_bins.cells(ab.permute(0, 2, 3, 1).reshape(-1, 2)) == prior.grid_cells()[nearest]
    on_edge = ((ab.permute(0, 2, 3, 1).reshape(-1, 2) * 127.0) % 10 == 0).any(dim=1)
    assert own.float().mean() > 0.99 and (own | on_edge).all()
    assert torch.equal(per_pixel_l1[own], head.weights[nearest[own]])
    assert torch.equal(l1.table[prior.grid_cells()], prior.weights(0.5).float())
    # a cell no training pixel used: the formula's weight at a smoothed prior of 0, the largest
    unused = torch.ones(ab_bins.BINS ** 2, dtype=torch.bool)
    unused[prior.grid_cells()] = False
    assert l1.table[unused].min() == l1.table[unused].max() >= l1.table.max()


def test_the_cells_are_bins_of_ten_lab_units():
    ab = torch.tensor([[0.0, 0.0], [9.9 / 127, 0.0], [10.1 / 127, 0.0], [-1.0, 1.0]])
    cells = ab_bins.cells(ab).tolist()
    assert cells[0] == cells[1] and cells[2] == cells[0] + ab_bins.BINS  # a in the next bin of 10
    assert cells[3] == ab_bins.BINS - 1  # a = -127, b = 127: the corner bins


def test_the_prior_comes_back_from_its_state_bit_for_bit_and_from_an_earlier_release_s():
    prior = AbPrior.from_training_set(random_images())
    again = AbPrior.from_state(prior.state())
    assert torch.equal(again.prior, prior.prior) and torch.equal(again.centres, prior.centres)
    assert torch.equal(again.weights(0.5), prior.weights(0.5))
    earlier = AbPrior.from_state({'centres': prior.centres, 'prior': prior.prior.float()})  # no counts
    assert torch.allclose(earlier.prior, prior.prior, rtol=1e-6)


def test_a_resumed_run_keeps_the_checkpoint_s_bins_and_prior_whatever_data_it_resumes_on(tmp_path):
    data, other = str(tmp_path / 'data'), str(tmp_path / 'other')
    make_tiny_cifar(data)
    make_tiny_cifar(other)
    # the data it resumes on: images of one saturated colour, whose bins are not the first data's
    red = np.zeros((16, 32, 32, 3), dtype=np.uint8)
    red[..., 0] = 230
    for i in range(1, 6):
        write_cifar_batch(os.path.join(other, 'cifar-10-batches-py', f'data_batch_{i}'), red)
    for head in (['--ab_head', 'classify'], []):
        ck = str(tmp_path / f'ck{len(head)}')
        flags = [*head, '--rebalance', '0.5', '--val_batches', '1', '--classifier', 'off']
        r = run_train(train_command(data, ck, *flags, '--max_steps', '2', '--save_steps', '1'))
        assert r.returncode == 0, r.stderr
        key = 'ab_classes' if head else 'rebalance_prior'
        first = torch.load(os.path.join(ck, 'checkpoint_ep0.pt'), weights_only=True)[key]
        os.remove(os.path.join(ck, 'checkpoint_ep0.pt'))
        r = run_train(train_command(other, ck, *flags, '--max_steps', '3', '--resume', 'latest'))
        assert r.returncode == 0, r.stderr
        resumed = torch.load(os.path.join(ck, 'checkpoint_ep0.pt'), weights_only=True)[key]
        recounted = AbPrior.from_training_set(LabImages(red, np.zeros(16, dtype=np.int64)))
        assert len(recounted) != len(first['centres'])  # the data differ, and would give other bins
        for name in ('centres', 'counts', 'prior'):
            assert torch.equal(resumed[name], first[name]), (head, name)
        if head:
            assert 'as the checkpoint recorded them' in r.stdout
