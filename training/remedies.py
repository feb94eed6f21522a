"""Remedies for grey colorizations, each off by default (train.py's --color_enhance, --rebalance, --min_colorfulness, --adv_loss).

Chosen from the field's cheap remedies because each is one local change
(the training targets, the weights of the L1 loss, the list of training images, the adversarial
loss), needs no pretrained network and no extra pass of either network:
- `enhance_colors`: DDColor's colour-enhanced targets (`color_enhance_factor: 1.2`);
- `RebalanceWeights`: Zhang, Isola and Efros (2016), per-pixel weights from the inverse of the
  training set's smoothed ab frequency, mixed with uniform by lambda (their 1/2), as
  training/ab_bins.py computes them for the distribution head too;
- `colorfulness_of_images` with a threshold: BigColor drops training images whose colourfulness
  is below 15 (about 10% of its data);
- BigColor's hinge adversarial loss is in training/loss.py, with the other losses.
"""
import numpy as np
import torch

from metrics import scores
from training import ab_bins

CHUNK = 2_000  # images per vectorized pass: bounds the temporary memory on CIFAR-10's 50,000


def enhance_colors(lab, factor):
    """DDColor's colour-enhanced targets: a Lab batch (N, 3, H, W, network scale) with its ab
    scaled by `factor` and clipped to [-1, 1]; L untouched. A new tensor in the batch's layout."""
    out = lab.clone(memory_format=torch.preserve_format)
    out[:, 1:].mul_(factor).clamp_(-1.0, 1.0)
    return out


# ---------------------------------------------------------------- rebalancing

class RebalanceWeights:
    """Per-pixel L1 weights: `weights(ab)` of an (N, 2, H, W) network-scale ab target is
    (N, 1, H, W), Zhang et al.'s weight (training/ab_bins.py) of each true pixel's bin."""

    def __init__(self, prior, lam, device='cpu'):
        self.ab_prior = prior
        self.table = prior.grid_weights(lam).float().to(device)

    @classmethod
    def from_training_set(cls, train_set, lam, device='cpu', seed=0, enhance=1.0):
        return cls(ab_bins.AbPrior.from_training_set(train_set, seed, enhance), lam, device)

    def __call__(self, ab):
        return self.table[ab_bins.cell_of(ab[:, 0:1].float(), ab[:, 1:2].float())]


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
