"""The scoring classifier: a small CIFAR-10 network trained on the colour images, which judges a
colorization by what it still recognizes (semantic accuracy, Zhang et al. 2016) and by how far
its features of the colorized images lie from those of the true colours (classifier FD).

The architecture follows the fastest public CIFAR-10 trainers (Keller Jordan's airbench, David
Page's ResNet-9 line): a stem, three groups of convolution, max-pool, batch norm and GELU, and a
global max-pool into a linear layer. Its penultimate features (the pooled `WIDTHS[-1]` values) are
what the Fréchet distance compares. The shipped file is `weights/cifar10_classifier.safetensors`,
made by `tools/train_classifier.py`; it loads through safetensors (no pickle).
"""
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.cli import UserError, first_line

WIDTHS = (64, 128, 256)
STEM_WIDTH = 32
# CIFAR-10's training images, per channel on 0..255 (shared/data/README.md)
RGB_MEAN = (125.31, 122.95, 113.87)
RGB_STD = (62.99, 62.09, 66.70)
DEFAULT_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'weights', 'cifar10_classifier.safetensors')


def conv_bn_gelu(c_in, c_out, pool=False):
    layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)]
    if pool:  # pooling before the norm halves the norm's and activation's work (airbench's order)
        layers.append(nn.MaxPool2d(2))
    return layers + [nn.BatchNorm2d(c_out), nn.GELU()]


class CifarClassifier(nn.Module):
    """uint8-range RGB (N, 3, 32, 32) floats in, ten logits out; `features` gives the penultimate layer."""

    def __init__(self, widths=WIDTHS, stem_width=STEM_WIDTH):
        super().__init__()
        self.widths = tuple(widths)
        self.stem_width = stem_width
        self.register_buffer('mean', torch.tensor(RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(RGB_STD).view(1, 3, 1, 1), persistent=False)
        layers = conv_bn_gelu(3, stem_width)
        c_in = stem_width
        for width in widths:
            layers += conv_bn_gelu(c_in, width, pool=True) + conv_bn_gelu(width, width)
            c_in = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, 10, bias=False)

    def features(self, rgb):
        x = (rgb - self.mean) / self.std
        return self.body(x).amax(dim=(2, 3))

    def forward(self, rgb):
        return self.head(self.features(rgb))


def rgb_batch(rgb_uint8, device):
    """(N, H, W, 3) uint8 numpy images -> (N, 3, H, W) float32 on `device`, channels-last."""
    x = torch.from_numpy(np.ascontiguousarray(rgb_uint8)).to(device)
    return x.permute(0, 3, 1, 2).float().contiguous(memory_format=torch.channels_last)


def save_classifier(path, model, metadata):
    """The weights and how they were made (command, seed, time, CPU, accuracy) in one safetensors file."""
    from safetensors.torch import save_file
    state = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + '.tmp'
    save_file(state, tmp, metadata={'widths': ','.join(map(str, model.widths)), 'stem_width': str(model.stem_width),
                                    **{k: str(v) for k, v in metadata.items()}})
    os.replace(tmp, path)


def load_classifier(path=None, device='cpu'):
    """(classifier in eval mode on `device`, its metadata) from a safetensors file; a missing or
    corrupt file is a one-line error that says how to make it again."""
    from safetensors import safe_open
    path = path or DEFAULT_PATH
    remake = ("it ships with the repository as weights/cifar10_classifier.safetensors; restore it with "
              "`git checkout -- weights/` or train it again with `python tools/train_classifier.py`")
    if not os.path.isfile(path):
        raise UserError(f"the scoring classifier {path} is missing: {remake}")
    try:
        with safe_open(path, framework='pt') as f:
            metadata = f.metadata() or {}
            state = {name: f.get_tensor(name) for name in f.keys()}
        widths = tuple(int(w) for w in metadata['widths'].split(','))
        # Building the layers draws their initial weights from torch's generator; a training run
        # loads this before its first step, which must draw what it drew without the classifier.
        with torch.random.fork_rng(devices=[]):
            model = CifarClassifier(widths, int(metadata.get('stem_width', STEM_WIDTH)))
        model.load_state_dict(state)
    except Exception as e:
        raise UserError(f"the scoring classifier {path} cannot be read ({first_line(e)}): it is corrupt or "
                        f"not a classifier of this project; {remake}")
    return model.to(device).eval(), metadata


def judge_for(path, class_names, image_size, device, truth='truth'):
    """(ClassifierScores for a set of images, or None; why there is none) from --classifier's
    value: 'off', or the file, which knows CIFAR-10's ten classes at 32 px only."""
    from dataset import CLASS_NAMES
    if path == 'off':
        return None, 'semantic accuracy and classifier FD: off (--classifier off)'
    if tuple(class_names) != CLASS_NAMES or image_size != 32:
        return None, ("semantic accuracy and classifier FD: not scored, the scoring classifier knows CIFAR-10's "
                      "ten classes at 32 px only")
    model, metadata = load_classifier(path, device)
    return ClassifierScores(model, truth=truth, model_metadata=metadata), None


def frechet_distance(features_a, features_b):
    """The Fréchet distance between Gaussians fitted to two (N, D) feature sets:
    |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^1/2), in float64. The trace of the
    square root is taken from the eigenvalues of S_a^1/2 S_b S_a^1/2, which is symmetric and
    has the same eigenvalues as S_a S_b, so no general matrix square root is needed."""
    a = np.asarray(features_a, dtype=np.float64)
    b = np.asarray(features_b, dtype=np.float64)
    if min(len(a), len(b)) < 2:
        raise ValueError(f"a Fréchet distance needs two or more features a side ({len(a)} and {len(b)})")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    middle = root_a @ cov_b @ root_a
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    distance = ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root
    return max(0.0, float(distance))  # a set against itself comes out at -1e-12 by rounding


class ClassifierScores:
    """What the classifier makes of several sets of the same images (the true colours, the grey
    ones, each colorization), gathered batch by batch: `add(name, rgb, classes)`; `result(name)`
    gives top-1 accuracy and the FD of its features to the truth's, overall and per class."""

    def __init__(self, model, truth='truth', model_metadata=None):
        self.model = model
        self.model_metadata = model_metadata or {}
        self.truth = truth
        self.device = next(model.parameters()).device
        self.features = {}
        self.correct = {}
        self.classes = {}

    @torch.no_grad()
    def add(self, name, rgb_uint8, classes):
        x = rgb_batch(rgb_uint8, self.device)
        feats = self.model.features(x)
        predicted = self.model.head(feats).argmax(dim=1).cpu().numpy()
        self.features.setdefault(name, []).append(feats.float().cpu().numpy())
        self.correct.setdefault(name, []).append(predicted == np.asarray(classes))
        self.classes.setdefault(name, []).append(np.asarray(classes))

    def forget(self, name):
        """Drop a set, so that the next validation's colorizations take its name afresh."""
        for kept in (self.features, self.correct, self.classes):
            kept.pop(name, None)

    def _gathered(self, name):
        return (np.concatenate(self.features[name]), np.concatenate(self.correct[name]),
                np.concatenate(self.classes[name]))

    def result(self, name):
        """{'semantic_accuracy', 'classifier_fd'} for the whole set and {class index: the same};
        a set (or class) of a single image has no FD, and its key is left out."""
        feats, correct, classes = self._gathered(name)
        truth_feats = self._gathered(self.truth)[0]

        def scores(members):
            found = {'semantic_accuracy': float(correct[members].mean())}
            if members.sum() >= 2:
                found['classifier_fd'] = frechet_distance(feats[members], truth_feats[members])
            return found
        return scores(np.ones(len(classes), bool)), {int(c): scores(classes == c) for c in np.unique(classes)}


def top1(model, rgb_uint8, labels, batch_size=500):
    """Accuracy of `model` on (N, H, W, 3) uint8 images."""
    device = next(model.parameters()).device
    correct = 0
    with torch.no_grad():
        for first in range(0, len(rgb_uint8), batch_size):
            logits = model(rgb_batch(rgb_uint8[first:first + batch_size], device))
            correct += int((logits.argmax(1).cpu().numpy() == labels[first:first + batch_size]).sum())
    return correct / len(rgb_uint8)


def translate_and_flip(x, generator, max_shift=2):
    """Each image of (N, C, H, W) shifted by up to `max_shift` pixels each way (reflect padding)
    and flipped left-right with p = 0.5: the standard CIFAR-10 augmentation, done per batch."""
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, mode='reflect')
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator).to(x.device)
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    rows = dy[:, None] + torch.arange(h, device=x.device)
    cols = dx[:, None] + torch.arange(w, device=x.device)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    out = padded[torch.arange(n, device=x.device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
