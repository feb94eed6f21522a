"""The colour-distribution head's targets and loss (`--ab_head classify|both`), after Zhang, Isola
and Efros (2016): the ab bins of 10 Lab units that the training images use, each pixel's true ab
soft-encoded over its nearest bins, and the cross-entropy against the predicted distribution,
rebalanced by the smoothed prior where `--rebalance` sets lambda.

A generator trained on L1 paints each pixel's median colour: where a car may be red or blue, the
median is grey-brown. A distribution over colours keeps both, and its annealed mean
(models.annealed_mean) decodes a vivid one.

Imports training/remedies (the ab histogram and its Gaussian smoothing) and torch.
"""
import torch
import torch.nn.functional as F

from training import remedies

NEIGHBOURS = 10  # the bins a true ab is spread over (Zhang et al.'s code)
SIGMA = 5.0  # Lab units: the Gaussian of the soft encoding and of the prior's smoothing


class AbClasses:
    """`centres`: (Q, 2) network-scale ab of the bins the training images use; `prior`: (Q,)
    their pixel shares; `weights`: (Q,) rebalancing weights (None: plain cross-entropy)."""

    def __init__(self, centres, prior, lam=None, device='cpu'):
        self.centres = centres.float().to(device)
        self.prior = prior.double()
        self.lam = lam
        self.weights = None if lam is None else rebalancing_weights(self.prior, self.centres, lam).float().to(device)
        self._centres_lab = self.centres * remedies.AB_SCALE

    @classmethod
    def from_training_set(cls, train_set, lam=None, device='cpu', seed=0, enhance=1.0):
        """The bins of remedies' 26 x 26 grid over [-130, 130) that the training targets' ab use."""
        counts = remedies.ab_histogram(remedies.training_ab(train_set, seed, enhance))
        used = torch.nonzero(counts > 0).flatten()
        ia, ib = used // remedies.BINS, used % remedies.BINS
        centres_lab = torch.stack([ia, ib], dim=1).double() * remedies.BIN_SIZE + remedies.AB_LOW + remedies.BIN_SIZE / 2
        return cls(centres_lab / remedies.AB_SCALE, counts[used] / counts.sum(), lam, device)

    @classmethod
    def from_state(cls, state, lam=None, device='cpu'):
        return cls(state['centres'], state['prior'], lam, device)

    def state(self):
        """What a checkpoint records: the bins' centres and the prior."""
        return {'centres': self.centres.cpu(), 'prior': self.prior.float()}

    def __len__(self):
        return len(self.centres)

    def soft_targets(self, ab):
        """(N, 2, H, W) network-scale ab -> (N, Q, H, W): each pixel's NEIGHBOURS nearest bins,
        weighted by a Gaussian of SIGMA Lab units of the distance and normalized to sum to 1."""
        n, _, h, w = ab.shape
        pixels = ab.float().permute(0, 2, 3, 1).reshape(-1, 2) * remedies.AB_SCALE
        distances = torch.cdist(pixels, self._centres_lab)
        nearest, index = distances.topk(min(NEIGHBOURS, len(self)), dim=1, largest=False)
        weights = torch.exp(-nearest ** 2 / (2 * SIGMA ** 2))
        weights = weights / weights.sum(dim=1, keepdim=True)
        targets = torch.zeros(len(pixels), len(self), device=ab.device).scatter_(1, index, weights)
        return targets.reshape(n, h, w, -1).permute(0, 3, 1, 2)

    def cross_entropy(self, logits, ab):
        """The mean over pixels of -sum_q target_q log softmax(logits)_q, each pixel weighted by
        its nearest bin's rebalancing weight where lambda is set."""
        targets = self.soft_targets(ab)
        per_pixel = -(targets * F.log_softmax(logits.float(), dim=1)).sum(dim=1)
        if self.weights is not None:
            per_pixel = per_pixel * self.weights[targets.argmax(dim=1)]
        return per_pixel.mean()


def smoothed_prior(prior, centres, sigma=SIGMA):
    """The prior convolved with a Gaussian of `sigma` Lab units over the bins, summing to 1."""
    lab = centres.double() * remedies.AB_SCALE
    kernel = torch.exp(-torch.cdist(lab, lab) ** 2 / (2 * sigma ** 2))
    smoothed = kernel @ prior.double()
    return smoothed / smoothed.sum()


def rebalancing_weights(prior, centres, lam):
    """Zhang et al.'s w ~ ((1 - lam) p~ + lam / Q)^-1 over the Q bins, p~ the smoothed prior,
    scaled so that the mean weight under p~ is 1: rare colours weigh more."""
    smoothed = smoothed_prior(prior, centres)
    weights = 1.0 / ((1.0 - lam) * smoothed + lam / len(prior))
    return weights / (smoothed * weights).sum()
