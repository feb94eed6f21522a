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


def _compute_dtype(x):
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def _matmul_pays_off(x):
    """Where the matrix-product layers were measured faster (README, Performance): bf16 on CPUs.
    In fp32 on CPUs the library's convolutions won; GPUs keep their own kernels."""
    return x.device.type == 'cpu' and _compute_dtype(x) == torch.bfloat16


def _bf16(*tensors):
    return [None if t is None else t.to(torch.bfloat16) for t in tensors]


def _patches(x, k, s, p, out_h, out_w):
    """(N, C, H, W) -> (N*out_h*out_w, k*k*C): the k x k window of x under each output position
    of a (k, s, p) convolution, ordered (row, column, channel) like a channels-last weight."""
    n, c = x.shape[:2]
    padded = F.pad(x.permute(0, 2, 3, 1), (0, 0, p, p, p, p))
    sn, sh, sw, sc = padded.stride()
    windows = padded.as_strided((n, out_h, out_w, k, k, c), (sn, s * sh, s * sw, sh, sw, sc))
    return windows.reshape(n * out_h * out_w, k * k * c)


def _unpatch(rows, n, c, h, w, k, s, p, out_h, out_w):
    """The adjoint of _patches: adds every window entry back onto its position of an (N, H, W, C)
    map, in fp32 (or wider) so that overlapping windows sum without bf16 rounding."""
    padded = rows.new_zeros((n, h + 2 * p, w + 2 * p, c), dtype=torch.promote_types(rows.dtype, torch.float32))
    windows = rows.view(n, out_h, out_w, k, k, c)
    for i in range(k):
        for j in range(k):
            padded[:, i:i + s * out_h:s, j:j + s * out_w:s] += windows[:, :, :, i, j]
    return padded[:, p:p + h, p:p + w]


def _channels_last_view(nhwc):
    return nhwc.permute(0, 3, 1, 2)


class _ConvByMatmul(torch.autograd.Function):
    """Conv2d (square kernel, no groups or dilation) as window extraction and 2-D matrix products,
    forward and backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, s, p):
        n, c, h, w = x.shape
        o, k = weight.shape[0], weight.shape[2]
        out_h, out_w = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        rows = _patches(x, k, s, p, out_h, out_w)
        w_rows = weight.permute(0, 2, 3, 1).reshape(o, k * k * c)
        out = rows @ w_rows.t() if bias is None else torch.addmm(bias, rows, w_rows.t())
        ctx.save_for_backward(rows if ctx.needs_input_grad[1] else None, w_rows if ctx.needs_input_grad[0] else None)
        ctx.geometry = (n, c, h, w, k, s, p, out_h, out_w)
        return _channels_last_view(out.view(n, out_h, out_w, o))

    @staticmethod
    def backward(ctx, grad):
        rows, w_rows = ctx.saved_tensors
        n, c, h, w, k, s, p, out_h, out_w = ctx.geometry
        g = grad.permute(0, 2, 3, 1).reshape(n * out_h * out_w, -1)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _unpatch(g @ w_rows, n, c, h, w, k, s, p, out_h, out_w).to(g.dtype).contiguous()
            grad_x = _channels_last_view(grad_x)
        if ctx.needs_input_grad[1]:
            grad_w = _channels_last_view((g.t() @ rows).view(-1, k, k, c))
        if ctx.needs_input_grad[2]:
            grad_b = g.sum(0, dtype=torch.float32).to(g.dtype)
        return grad_x, grad_w, grad_b, None, None


class _ConvTransposeByMatmul(torch.autograd.Function):
    """ConvTranspose2d (square kernel, no groups, dilation or output padding) as 2-D matrix
    products and window scatter: the adjoint of _ConvByMatmul."""

    @staticmethod
    def forward(ctx, x, weight, bias, s, p):
        n, c, h, w = x.shape
        o, k = weight.shape[1], weight.shape[2]
        out_h, out_w = (h - 1) * s - 2 * p + k, (w - 1) * s - 2 * p + k
        x_rows = x.permute(0, 2, 3, 1).reshape(n * h * w, c)
        w_rows = weight.permute(0, 2, 3, 1).reshape(c, k * k * o)
        out = _unpatch(x_rows @ w_rows, n, o, out_h, out_w, k, s, p, h, w)
        if bias is not None:
            out = out + bias.to(out.dtype)
        ctx.save_for_backward(x_rows if ctx.needs_input_grad[1] else None, w_rows if ctx.needs_input_grad[0] else None)
        ctx.geometry = (n, c, h, w, k, s, p)
        return _channels_last_view(out.to(x.dtype).contiguous())

    @staticmethod
    def backward(ctx, grad):
        x_rows, w_rows = ctx.saved_tensors
        n, c, h, w, k, s, p = ctx.geometry
        g_rows = _patches(grad, k, s, p, h, w)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _channels_last_view((g_rows @ w_rows.t()).view(n, h, w, c))
        if ctx.needs_input_grad[1]:
            grad_w = _channels_last_view((x_rows.t() @ g_rows).view(c, k, k, -1))
        if ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3), dtype=torch.float32).to(grad.dtype)
        return grad_x, grad_w, grad_b, None, None


def _check_plain(layer):
    if (layer.kernel_size[0] != layer.kernel_size[1] or layer.stride[0] != layer.stride[1]
            or layer.padding[0] != layer.padding[1] or layer.groups != 1 or layer.dilation != (1, 1)
            or layer.padding_mode != 'zeros' or any(getattr(layer, 'output_padding', (0, 0)))):
        raise ValueError("matrix-product layers take square kernels, strides and zero padding only")


class MatmulConv2d(nn.Conv2d):
    """A Conv2d computed, in bf16 on CPUs, as window extraction and 2-D matrix products, forward
    and backward; elsewhere the library's. Same parameters, same result. On small maps with many
    channels oneDNN's bf16 convolution runs well below the matmul peak, most of all in its weight
    gradient (README, Performance)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _check_plain(self)

    def _conv_forward(self, x, weight, bias):
        if not _matmul_pays_off(x):
            return super()._conv_forward(x, weight, bias)
        x, weight, bias = _bf16(x, weight, bias)
        return _ConvByMatmul.apply(x, weight, bias, self.stride[0], self.padding[0])


class MatmulConvTranspose2d(nn.ConvTranspose2d):
    """A ConvTranspose2d computed, in bf16 on CPUs, as 2-D matrix products and window scatter,
    for the same reasons; elsewhere the library's."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _check_plain(self)

    def forward(self, x, output_size=None):
        if not _matmul_pays_off(x):
            return super().forward(x, output_size)
        x, weight, bias = _bf16(x, self.weight, self.bias)
        return _ConvTransposeByMatmul.apply(x, weight, bias, self.stride[0], self.padding[0])


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
        # Which layers run as matrix products was chosen per layer by measurement (README,
        # Performance): those between 8x8, 4x4 and 2x2 maps.
        self.down4 = _down(256, 512, norm, conv=MatmulConv2d)
        self.down5 = _down(512, 512, norm, conv=MatmulConv2d)
        self.up1 = _up(512, 512, norm, dropout=True, conv=MatmulConvTranspose2d)
        self.up2 = _up(1024, 256, norm, dropout=True, conv=MatmulConvTranspose2d)
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
        self.down4 = _down(256, 512, norm, conv=MatmulConv2d)  # as in the generator
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
