"""The training images' colours as Zhang, Isola and Efros (2016) count them: ab bins of 10 Lab
units, the prior over the bins they use, and the rebalancing weights both the L1 (`--rebalance`)
and a colour-distribution head's cross-entropy (`--ab_head classify|both --rebalance`) take.

One implementation of Zhang et al.'s rebalancing (their eq. 4), for both losses:
    w ~ ((1 - lambda) p~ + lambda / Q)^-1,   normalized so that sum_q p~_q w_q = 1,
where p~ is the prior smoothed by a Gaussian of sigma 5 Lab units over the bins' centres and Q
the number of bins the training images use. Rare colours weigh more; lambda = 1 weighs all alike.

The prior is counted once, when a run starts; a training checkpoint keeps it (`AbPrior.state`),
and a resumed run takes it from there, never from the data it resumes on.
"""
import torch

from core.pictures import AB_RANGE

# The grid: bins of 10 over [-130, 130) in a and b, so that OpenCV's whole float range (about
# +-127) falls inside; values outside go to the edge bins.
BIN_SIZE = 10.0
AB_LOW = -130.0
BINS = 26
SIGMA = 5.0  # Lab units: Zhang et al.'s smoothing of the prior (and of their soft encoding)
# Images whose ab a folder's prior counts (a data set held in memory is counted whole).
FOLDER_SAMPLE = 10_000
CHUNK = 2_000  # images per vectorized pass: bounds the temporary memory on CIFAR-10's 50,000


def cell_of(a, b):
    """The flat grid cell (0 .. BINS**2 - 1) of network-scale ab given as two tensors."""
    ia = ((a * AB_RANGE - AB_LOW) / BIN_SIZE).floor().clamp_(0, BINS - 1).long()
    ib = ((b * AB_RANGE - AB_LOW) / BIN_SIZE).floor().clamp_(0, BINS - 1).long()
    return ia * BINS + ib


def cells(ab):
    """cell_of for network-scale ab of any shape with a and b in its last axis."""
    return cell_of(ab[..., 0], ab[..., 1])


def cell_counts(ab_chunks):
    """Pixel counts per grid cell (BINS * BINS,), float64, over an iterable of (..., 2) network-scale ab."""
    counts = torch.zeros(BINS * BINS, dtype=torch.float64)
    for ab in ab_chunks:
        counts += torch.bincount(cells(ab.float()).reshape(-1).cpu(), minlength=BINS * BINS).double()
    return counts


def training_ab(train_set, seed=0, enhance=1.0):
    """The training targets' ab in chunks of (..., 2) tensors, colour-enhanced as the step sees
    them: every image of a data set held in memory (CIFAR-10), else up to FOLDER_SAMPLE images of
    a folder in a fixed random order."""
    if hasattr(train_set, 'lab'):
        for first in range(0, len(train_set), CHUNK):
            ab = train_set.lab[first:first + CHUNK, ..., 1:]
            yield (ab * enhance).clamp(-1, 1) if enhance != 1 else ab
        return
    seen = 0
    order = torch.Generator().manual_seed(seed)
    for _, lab in train_set.batches(256, shuffle=True, generator=order):
        ab = lab[:, 1:]
        if enhance != 1:
            ab = (ab * enhance).clamp(-1, 1)
        yield ab.permute(0, 2, 3, 1)
        seen += len(lab)
        if seen >= FOLDER_SAMPLE:
            break


def smoothed_prior(prior, centres, sigma=SIGMA):
    """The prior convolved with a Gaussian of `sigma` Lab units over the bins' centres (network-
    scale (Q, 2)), summing to 1."""
    lab = centres.double() * AB_RANGE
    kernel = torch.exp(-torch.cdist(lab, lab) ** 2 / (2 * sigma ** 2))
    smoothed = kernel @ prior.double()
    return smoothed / smoothed.sum()


def rebalancing_weights(prior, centres, lam):
    """Zhang et al.'s weights over the Q bins (see the module's docstring), float64 (Q,)."""
    smoothed = smoothed_prior(prior, centres)
    weights = 1.0 / ((1.0 - lam) * smoothed + lam / len(prior))
    return weights / (smoothed * weights).sum()


class AbPrior:
    """The ab bins the training images use and their pixel shares. `centres`: (Q, 2) float32
    network-scale ab of the bins' centres; `counts`: (Q,) float64 pixels per bin; `prior`: the
    shares, counts / their sum."""

    def __init__(self, centres, counts):
        self.centres = centres.float()
        self.counts = counts.double()
        self.prior = self.counts / self.counts.sum()

    @classmethod
    def from_training_set(cls, train_set, seed=0, enhance=1.0):
        counts = cell_counts(training_ab(train_set, seed, enhance))
        used = torch.nonzero(counts > 0).flatten()
        ia, ib = used // BINS, used % BINS
        centres_lab = torch.stack([ia, ib], dim=1).double() * BIN_SIZE + AB_LOW + BIN_SIZE / 2
        return cls(centres_lab / AB_RANGE, counts[used])

    @classmethod
    def from_state(cls, state):
        """From what `state` wrote; a checkpoint of an earlier release kept the shares alone, in
        float32, which stand in for the counts."""
        return cls(state['centres'], state['counts'] if 'counts' in state else state['prior'])

    @classmethod
    def saved_in(cls, ckpt):
        """The bins a training checkpoint recorded for a distribution head (`ab_classes`) or for
        the L1's rebalancing (`rebalance_prior`), or None (no checkpoint, or neither)."""
        state = (ckpt or {}).get('ab_classes') or (ckpt or {}).get('rebalance_prior')
        return cls.from_state(state) if state else None

    def state(self):
        """What a checkpoint records: the centres, the counts, and the shares (float32, which
        earlier releases read)."""
        return {'centres': self.centres.cpu(), 'prior': self.prior.float(), 'counts': self.counts}

    def __len__(self):
        return len(self.centres)

    def grid_cells(self):
        """(Q,) the flat grid cell of each bin."""
        return cell_of(self.centres[:, 0], self.centres[:, 1])

    def weights(self, lam):
        """rebalancing_weights of these bins, float64 (Q,)."""
        return rebalancing_weights(self.prior, self.centres, lam)

    def grid_weights(self, lam):
        """The weights over the whole grid (BINS * BINS,), float64, for a lookup by a pixel's cell:
        a cell no training pixel used has a smoothed prior of 0 there and gets the formula's
        value for it, the largest weight, lambda^-1 Q before normalization."""
        smoothed = smoothed_prior(self.prior, self.centres)
        lam = float(lam)
        scale = 1.0 / (smoothed * (1.0 / ((1.0 - lam) * smoothed + lam / len(self)))).sum()
        table = torch.full((BINS * BINS,), len(self) / lam, dtype=torch.float64) * scale
        table[self.grid_cells()] = self.weights(lam)
        return table
