"""The two networks of SPEC.md: a U-Net generator (L -> ab) and a whole-image discriminator.

Blocks are named as in the reference (`down1.model.0.weight`, ...), so its published generator
weights load as they are.
"""
import torch
import torch.nn.functional as F
from torch import nn

from convolutions import MatmulConv2d, MatmulConvTranspose2d
from spectral import spectral_norm

GENERATOR_NORMS = ('batch', 'instance')
DISCRIMINATOR_NORMS = ('batch', 'instance', 'spectral')
IMAGE_SIZE = 32
# Both networks first resize 32x32 to 35x35, so that a 4x4 stride-1 unpadded conv returns to 32x32.
RESIZED = 35


class Dropout(nn.Dropout):
    """nn.Dropout with its mask drawn by comparing uniform numbers: the same Bernoulli(1 - p) mask
    and 1 / (1 - p) scaling, about 5x faster to draw on CPUs than bernoulli_."""

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        keep = torch.rand_like(x, dtype=torch.float32) >= self.p  # rand_like keeps channels-last
        return x * keep.to(x.dtype) * (1.0 / (1.0 - self.p))


def _norm_layer(norm, channels):
    if norm == 'batch':
        return nn.BatchNorm2d(channels)
    if norm == 'instance':
        return nn.InstanceNorm2d(channels)
    raise ValueError(f"unknown norm {norm!r}")


class Block(nn.Module):
    def __init__(self, *layers):
        super().__init__()
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


def _down(c_in, c_out, norm, stride=2, padding=1, bf16_form=None):
    """A conv block; with `bf16_form`, its convolution can also run as matrix products
    (convolutions.py), and `bf16_form` is the form it takes in bf16 when nothing was measured."""
    conv = nn.Conv2d(c_in, c_out, 4, stride, padding) if bf16_form is None else \
        MatmulConv2d(c_in, c_out, 4, stride, padding, bf16_form=bf16_form)
    layers = [conv]
    if norm == 'spectral':
        spectral_norm(layers[0])
    elif norm is not None:
        layers.append(_norm_layer(norm, c_out))
    layers.append(nn.LeakyReLU(0.2))
    return Block(*layers)


def _up(c_in, c_out, norm, dropout=None, bf16_form=None):
    conv = nn.ConvTranspose2d(c_in, c_out, 4, 2, 1) if bf16_form is None else \
        MatmulConvTranspose2d(c_in, c_out, 4, 2, 1, bf16_form=bf16_form)
    layers = [conv, _norm_layer(norm, c_out), nn.ReLU()]
    if dropout is not None:  # kept at p = 0 too, so that every generator has the same layers
        layers.append(Dropout(dropout))
    return Block(*layers)


def _resize_input(x):
    return F.interpolate(x, size=(RESIZED, RESIZED), mode='bilinear', align_corners=True)


class Generator(nn.Module):
    """(N, 1, 32, 32) L in network scale -> (N, 2, 32, 32) ab in [-1, 1]. `dropout`: the
    probability of the dropout after up1 and up2 (the reference's 0.5; 0 turns it off)."""

    def __init__(self, norm='batch', dropout=0.5):
        super().__init__()
        if norm not in GENERATOR_NORMS:
            raise ValueError(f"generator norm must be one of {GENERATOR_NORMS}, got {norm!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"generator dropout must be in [0, 1), got {dropout!r}")
        self.down1 = _down(1, 64, norm, stride=1, padding=0)
        self.down2 = _down(64, 128, norm)
        # The layers on 4x4 and 2x2 maps can run as matrix products: the default forms in bf16 are
        # those measured fastest on AVX-512 BF16, and train.py measures them again on the machine
        # at hand (docs/performance.md). down3 lost and up3 tied on every CPU measured: not candidates.
        self.down3 = _down(128, 256, norm)
        self.down4 = _down(256, 512, norm, bf16_form='matmul')
        self.down5 = _down(512, 512, norm, bf16_form='matmul')
        self.up1 = _up(512, 512, norm, dropout=dropout, bf16_form='matmul')
        self.up2 = _up(1024, 256, norm, dropout=dropout, bf16_form='matmul')
        self.up3 = _up(512, 128, norm)
        self.up4 = _up(256, 64, norm)
        self.final = Block(nn.Conv2d(128, 2, 1, 1, 0), nn.Tanh())

    def forward(self, L):
        d1 = self.down1(_resize_input(L))
        d2 = self.down2(d1)
        d3 = self.down3(d2)
        d4 = self.down4(d3)
        d5 = self.down5(d4)
        u1 = torch.cat([self.up1(d5), d4], dim=1)
        u2 = torch.cat([self.up2(u1), d3], dim=1)
        u3 = torch.cat([self.up3(u2), d2], dim=1)
        u4 = torch.cat([self.up4(u3), d1], dim=1)
        return self.final(u4)


class Discriminator(nn.Module):
    """(N, 3, 32, 32) Lab in network scale -> (N,) raw real/fake scores (logits), one per image."""

    def __init__(self, norm='batch'):
        super().__init__()
        if norm not in DISCRIMINATOR_NORMS:
            raise ValueError(f"discriminator norm must be one of {DISCRIMINATOR_NORMS}, got {norm!r}")
        self.down1 = _down(3, 64, None, stride=1, padding=0)
        self.down2 = _down(64, 128, norm)
        self.down3 = _down(128, 256, norm)
        self.down4 = _down(256, 512, norm, bf16_form='matmul')  # as in the generator
        self.final = Block(nn.Conv2d(512, 1, 4, 1, 0))

    def forward(self, lab):
        x = self.down4(self.down3(self.down2(self.down1(_resize_input(lab)))))
        return self.final(x).flatten()


def init_weights(model):
    """`--apply_weight_init 1`: conv weights ~ N(0, 0.02), batch-norm weights ~ N(1, 0.02) and
    biases 0. Conv biases keep their defaults, and so do spectrally normalized layers, whose scale
    the normalization removes anyway (as in the reference, where the init never reached them)."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            if 'weight' in getattr(module, 'parametrizations', {}):
                continue
            nn.init.normal_(module.weight, 0.0, 0.02)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.weight, 1.0, 0.02)
            nn.init.zeros_(module.bias)
    return model
