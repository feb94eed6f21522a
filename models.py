"""The two networks of SPEC.md: a U-Net generator (L -> ab) and a whole-image discriminator.

Blocks are named as in the reference (`down1.model.0.weight`, ...), so its published generator
weights load as they are.
"""
import torch
import torch.nn.functional as F
from torch import nn

from spectral import spectral_norm

GENERATOR_NORMS = ('batch', 'instance')
DISCRIMINATOR_NORMS = ('batch', 'instance', 'spectral')
IMAGE_SIZE = 32
# Both networks first resize 32x32 to 35x35, so that a 4x4 stride-1 unpadded conv returns to 32x32.
RESIZED = 35


def _autocast_operands(x, *tensors):
    if torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
        return [t.to(dtype) for t in (x, *tensors)]
    return [x, *tensors]


class MatmulConv2d(nn.Conv2d):
    """A Conv2d computed as unfold + one 2-D matrix product. On tiny maps (4x4 -> 2x2 at 512
    channels) the library's convolution runs far below the matmul peak on CPUs; same parameters,
    same result. The product is spelled out in 2-D: a broadcast matmul takes a slow path under
    no_grad with bf16."""

    def _conv_forward(self, x, weight, bias):
        n, _, h, w = x.shape
        k, s, p = self.kernel_size[0], self.stride[0], self.padding[0]
        out_h, out_w = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        x, weight, bias = _autocast_operands(x, weight, bias)
        cols = F.unfold(x, k, padding=p, stride=s)                      # (N, C*k*k, L)
        rows = cols.transpose(1, 2).reshape(n * out_h * out_w, -1)      # (N*L, C*k*k)
        out = torch.addmm(bias, rows, weight.reshape(weight.shape[0], -1).t())  # (N*L, O)
        return out.view(n, out_h, out_w, -1).permute(0, 3, 1, 2)        # channels-last view


class MatmulConvTranspose2d(nn.ConvTranspose2d):
    """A ConvTranspose2d computed as one 2-D matrix product + fold, for the same reasons."""

    def forward(self, x, output_size=None):
        n, c, h, w = x.shape
        k, s, p = self.kernel_size[0], self.stride[0], self.padding[0]
        out_h, out_w = (h - 1) * s - 2 * p + k, (w - 1) * s - 2 * p + k
        x, weight, bias = _autocast_operands(x, self.weight, self.bias)
        rows = x.permute(0, 2, 3, 1).reshape(n * h * w, c)               # (N*H*W, C)
        cols = rows @ weight.reshape(c, -1)                              # (N*H*W, O*k*k)
        cols = cols.view(n, h * w, -1).transpose(1, 2)                   # (N, O*k*k, H*W)
        return F.fold(cols, (out_h, out_w), k, padding=p, stride=s) + bias[None, :, None, None]


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


def _down(c_in, c_out, norm, stride=2, padding=1, conv=nn.Conv2d):
    layers = [conv(c_in, c_out, 4, stride, padding)]
    if norm == 'spectral':
        spectral_norm(layers[0])
    elif norm is not None:
        layers.append(_norm_layer(norm, c_out))
    layers.append(nn.LeakyReLU(0.2))
    return Block(*layers)


def _up(c_in, c_out, norm, dropout, conv=nn.ConvTranspose2d):
    layers = [conv(c_in, c_out, 4, 2, 1), _norm_layer(norm, c_out), nn.ReLU()]
    if dropout:
        layers.append(Dropout(0.5))
    return Block(*layers)


def _resize_input(x):
    return F.interpolate(x, size=(RESIZED, RESIZED), mode='bilinear', align_corners=True)


class Generator(nn.Module):
    """(N, 1, 32, 32) L in network scale -> (N, 2, 32, 32) ab in [-1, 1]."""

    def __init__(self, norm='batch'):
        super().__init__()
        if norm not in GENERATOR_NORMS:
            raise ValueError(f"generator norm must be one of {GENERATOR_NORMS}, got {norm!r}")
        self.down1 = _down(1, 64, norm, stride=1, padding=0)
        self.down2 = _down(64, 128, norm)
        self.down3 = _down(128, 256, norm)
        self.down4 = _down(256, 512, norm)
        # The two layers on 2x2 maps run as matrix products: measured faster (see README, Performance).
        self.down5 = _down(512, 512, norm, conv=MatmulConv2d)
        self.up1 = _up(512, 512, norm, dropout=True, conv=MatmulConvTranspose2d)
        self.up2 = _up(1024, 256, norm, dropout=True)
        self.up3 = _up(512, 128, norm, dropout=False)
        self.up4 = _up(256, 64, norm, dropout=False)
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
        self.down4 = _down(256, 512, norm)
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
