"""The colour-distribution head's bins and targets (`--ab_head classify|both`), after Zhang, Isola
and Efros (2016): the ab bins of 10 Lab units that the training images use, each pixel's true ab
soft-encoded over its nearest bins, and the bins' rebalancing weights from the smoothed prior
where `--rebalance` sets lambda. The cross-entropy against the predicted distribution is
training/loss.py's ab_cross_entropy.

A generator trained on L1 paints each pixel's median colour: where a car may be red or blue, the
median is grey-brown. A distribution over colours keeps both, and its annealed mean
(models.annealed_mean) decodes a vivid one.

The bins, their prior and the rebalancing weights are training/ab_bins.py's, which the L1's
rebalancing shares.
"""
import torch

from core.pictures import AB_RANGE
from training import ab_bins
from training.ab_bins import AB_LOW, BIN_SIZE, BINS, SIGMA

NEIGHBOURS = 10  # the bins a true ab is spread over (Zhang et al.'s code)
# The nearest bins are looked for among the 7 x 7 grid cells around a pixel's own: every bin
# outside lies 25 Lab units away or more, farther than the tenth nearest wherever the bins around
# are used, and weighs exp(-25^2 / (2 * 5^2)) < 4e-6 of the nearest. Measured 1.6x faster a step
# than the distances to all bins (docs/notes/2026-12-06-colour-distribution.md).
WINDOW = 7


class AbClasses:
    """`prior`: the ab bins the training images use (ab_bins.AbPrior); `centres`: (Q, 2) their
    network-scale ab; `weights`: (Q,) rebalancing weights (None: plain cross-entropy)."""

    def __init__(self, prior, lam=None, device='cpu'):
        self.ab_prior = prior
        self.centres = prior.centres.to(device)
        self.prior = prior.prior
        self.weights = None if lam is None else prior.weights(lam).float().to(device)
        self._centres_lab = self.centres * AB_RANGE
        # For each grid cell, the bins of the WINDOW x WINDOW cells around it (row-major offsets),
        # and an infinite distance added where a cell holds no bin: a pixel's candidates are one lookup.
        reach, side = WINDOW // 2, BINS
        cell_bins = torch.full((side + 2 * reach,) * 2, -1, dtype=torch.long)
        cells = ((self._centres_lab.cpu() - AB_LOW) / BIN_SIZE).floor().long() + reach
        cell_bins[cells[:, 0], cells[:, 1]] = torch.arange(len(self.centres))
        windows = cell_bins.unfold(0, WINDOW, 1).unfold(1, WINDOW, 1).reshape(side * side, WINDOW * WINDOW)
        self._window_bins = windows.clamp(min=0).to(device)
        self._window_empty = torch.where(windows < 0, float('inf'), 0.0).to(device)
        self._offsets = (torch.arange(-reach, reach + 1, dtype=torch.float32) * BIN_SIZE
                         + BIN_SIZE / 2).to(device)  # a window cell's centre from its cell's corner

    @classmethod
    def from_training_set(cls, train_set, lam=None, device='cpu', seed=0, enhance=1.0):
        """The bins of ab_bins' 26 x 26 grid over [-130, 130) that the training targets' ab use."""
        return cls(ab_bins.AbPrior.from_training_set(train_set, seed, enhance), lam, device)

    def state(self):
        """What a checkpoint records: the bins' centres and the prior (ab_bins.AbPrior.state)."""
        return self.ab_prior.state()

    def __len__(self):
        return len(self.centres)

    def nearest_bins(self, ab):
        """(N, 2, H, W) network-scale ab -> (bins, weights), each (N*H*W, NEIGHBOURS): each
        pixel's nearest bins, nearest first, weighted by a Gaussian of SIGMA Lab units of the
        distance and normalized to sum to 1 (zero weight where fewer bins are near)."""
        pixels = ab.float().permute(0, 2, 3, 1).reshape(-1, 2) * AB_RANGE - AB_LOW
        cells = (pixels / BIN_SIZE).floor().clamp_(0, BINS - 1)
        within = pixels - cells * BIN_SIZE  # the pixel from its cell's corner
        cell = (cells[:, 0] * BINS + cells[:, 1]).long()
        # squared distances to the window's cell centres: separable in a and b
        da, db = (self._offsets - within[:, :1]) ** 2, (self._offsets - within[:, 1:]) ** 2
        squared = (da[:, :, None] + db[:, None, :]).reshape(len(pixels), -1) + self._window_empty[cell]
        nearest, which = squared.topk(min(NEIGHBOURS, WINDOW ** 2), dim=1, largest=False)
        weights = torch.exp(-nearest / (2 * SIGMA ** 2))
        return self._window_bins[cell].gather(1, which), weights / weights.sum(dim=1, keepdim=True)

    def soft_targets(self, ab):
        """(N, 2, H, W) network-scale ab -> (N, Q, H, W): nearest_bins as dense distributions."""
        n, _, h, w = ab.shape
        bins, weights = self.nearest_bins(ab)
        targets = torch.zeros(len(bins), len(self), device=ab.device).scatter_add_(1, bins, weights)
        return targets.reshape(n, h, w, -1).permute(0, 3, 1, 2)

