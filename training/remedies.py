"""Remedies for grey colorizations, each off by default (train.py's --color_enhance, --rebalance, --min_colorfulness, --adv_loss).

Chosen from the field's cheap remedies because each is one local change
(the training targets, the weights of the L1 loss, the list of training images, the adversarial
loss), needs no pretrained network and no extra pass of either network:
- `enhance_colors`: DDColor's colour-enhanced targets (`color_enhance_factor: 1.2`);
- `RebalanceWeights`: Zhang, Isola and Efros (2016), per-pixel weights from the inverse of the
  training set's smoothed ab frequency, mixed with uniform by lambda (their 1/2);
- `colorfulness_of_images` with a threshold: BigColor drops training images whose colourfulness
  is below 15 (about 10% of its data);
- BigColor's hinge adversarial loss is in training/loss.py, with the other losses.
"""
import numpy as np
import torch
import torch.nn.functional as F

from metrics import scores

# ab histogram (Lab units, network scale x 127): bins of 10 as Zhang et al.'s, over [-130, 130)
# so that OpenCV's whole float range (about +-127) falls inside; values outside go to the edge bins.
AB_SCALE = 127.0
BIN_SIZE = 10.0
AB_LOW = -130.0
BINS = 26
SMOOTHING_SIGMA = 5.0  # Lab units, Zhang et al.'s
# Images whose ab the rebalancing histogram counts on a data set that is not in memory (a folder).
REBALANCE_SAMPLE = 10_000
CHUNK = 2_000  # images per vectorized pass: bounds the temporary memory on CIFAR-10's 50,000


def enhance_colors(lab, factor):
    """DDColor's colour-enhanced targets: a Lab batch (N, 3, H, W, network scale) with its ab
    scaled by `factor` and clipped to [-1, 1]; L untouched. A new tensor in the batch's layout."""
    out = lab.clone(memory_format=torch.preserve_format)
    out[:, 1:].mul_(factor).clamp_(-1.0, 1.0)
    return out


# ---------------------------------------------------------------- rebalancing

def ab_bins(ab):
    """The flat histogram bin (0 .. BINS**2 - 1) of each pixel of network-scale ab, any shape
    with a and b in its last axis or given as two tensors (see ab_bins_of)."""
    a, b = ab[..., 0], ab[..., 1]
    return ab_bins_of(a, b)


def ab_bins_of(a, b):
    ia = ((a * AB_SCALE - AB_LOW) / BIN_SIZE).floor().clamp_(0, BINS - 1).long()
    ib = ((b * AB_SCALE - AB_LOW) / BIN_SIZE).floor().clamp_(0, BINS - 1).long()
    return ia * BINS + ib


def ab_histogram(ab_chunks):
    """Pixel counts per ab bin (BINS * BINS,) over an iterable of (..., 2) network-scale ab tensors."""
    counts = torch.zeros(BINS * BINS, dtype=torch.float64)
    for ab in ab_chunks:
        counts += torch.bincount(ab_bins(ab.float()).reshape(-1).cpu(), minlength=BINS * BINS).double()
    return counts


def gaussian_smooth(grid, sigma_bins):
    """A (BINS, BINS) grid convolved with a normalized 2-D Gaussian (zero beyond the edges)."""
    radius = max(1, int(np.ceil(4 * sigma_bins)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / sigma_bins) ** 2)
    kernel = kernel / kernel.sum()
    g = grid[None, None]
    g = F.conv2d(g, kernel.view(1, 1, 1, -1), padding=(0, radius))
    g = F.conv2d(g, kernel.view(1, 1, -1, 1), padding=(radius, 0))
    return g[0, 0]


def rebalance_table(counts, lam, sigma=SMOOTHING_SIGMA):
    """Zhang et al.'s weights per ab bin: w ~ ((1 - lam) p~ + lam / Q)^-1, p~ the pixel share of
    each bin smoothed by a Gaussian of `sigma` Lab units, Q the number of occupied bins; scaled
    so that the mean weight over the counted pixels is 1 (sum over bins of p w = 1)."""
    counts = counts.double()
    p = counts / counts.sum()
    smoothed = gaussian_smooth(p.view(BINS, BINS), sigma / BIN_SIZE).reshape(-1)
    occupied = int((counts > 0).sum())
    weights = 1.0 / ((1.0 - lam) * smoothed + lam / occupied)
    return weights / (p * weights).sum()


def training_ab(train_set, seed=0, enhance=1.0):
    """The training targets' ab, in chunks of (..., 2) tensors: every image of a data set held in
    memory (CIFAR-10), else up to REBALANCE_SAMPLE images of a folder in a fixed random order;
    colour-enhanced as the step will see them."""
    if hasattr(train_set, 'lab'):
        for first in range(0, len(train_set), CHUNK):
            ab = train_set.lab[first:first + CHUNK, ..., 1:]
            yield (ab * enhance).clamp(-1, 1) if enhance != 1 else ab
        return
    seen = 0
    order = torch.Generator().manual_seed(seed)
    for _, lab in train_set.batches(256, shuffle=True, generator=order):
        if enhance != 1:
            lab = enhance_colors(lab, enhance)
        yield lab[:, 1:].permute(0, 2, 3, 1)
        seen += len(lab)
        if seen >= REBALANCE_SAMPLE:
            break


class RebalanceWeights:
    """Per-pixel L1 weights from a table over ab bins: `weights(ab)` of an (N, 2, H, W) network-
    scale ab target is (N, 1, H, W), looked up by each true pixel's bin."""

    def __init__(self, table, device='cpu'):
        self.table = table.float().to(device)

    @classmethod
    def from_training_set(cls, train_set, lam, device='cpu', seed=0, enhance=1.0):
        return cls(rebalance_table(ab_histogram(training_ab(train_set, seed, enhance)), lam), device)

    def __call__(self, ab):
        return self.table[ab_bins_of(ab[:, 0:1].float(), ab[:, 1:2].float())]


# ---------------------------------------------------------------- the colourfulness filter

def colorfulness_of_images(train_set, batch_size=256):
    """Each training image's colourfulness (Hasler and Suesstrunk, scores.colorfulness) as the
    network sees it (a folder's: the centre square at the run's size), float64 (N,); NaN for an
    image that could not be read (a folder's skip report names those)."""
    n = len(train_set)
    values = np.full(n, np.nan)
    if hasattr(train_set, 'rgb'):
        for first in range(0, n, CHUNK):
            values[first:first + CHUNK] = scores.colorfulness(train_set.rgb[first:first + CHUNK])
        return values
    for idx, _, rgb in train_set.batches(batch_size, with_rgb=True):
        values[idx.numpy()] = scores.colorfulness(rgb)
    return values


def image_name(train_set, i):
    """A training image's name for the lists a run writes: its path, or its place in CIFAR-10's
    training batches (data_batch_1 .. 5 in order, counted from 0)."""
    paths = getattr(train_set, 'paths', None)
    return paths[i] if paths is not None else f"training image {i}"


def drop_dull_images(train_set, threshold):
    """BigColor's filter: (the training set without the images whose colourfulness is below
    `threshold`, one line 'colourfulness<TAB>name' per dropped image, the number of images
    before). An image that could not be read is kept: the data set's skip report names it."""
    values = colorfulness_of_images(train_set)
    below = values < threshold  # False for NaN
    lines = [f"{values[i]:.2f}\t{image_name(train_set, i)}\n" for i in np.flatnonzero(below)]
    return train_set.subset(np.flatnonzero(~below)), lines, len(values)

