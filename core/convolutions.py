"""Two ways to compute the same convolution, and a start-up measurement that picks one per layer.

On small maps with many channels, oneDNN's convolutions can run far below a CPU's matrix-product
peak (most of all their weight gradients), while extracting the windows and calling 2-D matrix
products gets close to it. Which form wins depends on the layer, the precision and the CPU: on
AVX-512 BF16 the products won in bf16 and lost in fp32; on AVX2 they win in fp32 too (README,
docs/performance.md). So `choose_forms` times both forms of every such layer on the run's own
shapes, once per process, and each layer keeps the faster one.

The networks (models.py) are built of the library's layers, as the paper draws them;
`swap_in_two_form_layers` makes the candidate layers two-form after construction, where a
network is built to run (training, benchmarks, loading a generator).
"""
import contextlib
import copy
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

FORMS = ('library', 'matmul')
# A layer takes the matrix-product form only when it is clearly faster: ties stay with the
# library, so that timing noise rarely flips a choice between two runs of the same command.
MATMUL_MARGIN = 0.9
# Forms whose times differ by more than this factor in one timed round need no second look.
DECISIVE = 1.3


def _compute_dtype(x):
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


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


class _TwoForms:
    """What both layer classes share: which form to run. `forms` maps a compute dtype to the form
    measured fastest for it in this process; where it has no entry, the rule measured once on
    AVX-512 BF16 applies: `bf16_form` in bf16 on CPUs, the library's kernels everywhere else
    (GPUs always keep their own kernels)."""

    def _init_forms(self, bf16_form):
        if bf16_form not in FORMS:
            raise ValueError(f"bf16_form must be one of {FORMS}, got {bf16_form!r}")
        _check_plain(self)
        self.bf16_form = bf16_form
        self.forms = {}

    def form_for(self, x):
        if x.device.type != 'cpu':
            return 'library'
        dtype = _compute_dtype(x)
        if dtype in self.forms:
            return self.forms[dtype]
        return self.bf16_form if dtype == torch.bfloat16 else 'library'

    @staticmethod
    def _cast(x, *tensors):
        dtype = _compute_dtype(x)
        return [None if t is None else t.to(dtype) for t in (x, *tensors)]


class MatmulConv2d(_TwoForms, nn.Conv2d):
    """A Conv2d that runs as the library's kernel or as window extraction and 2-D matrix products
    (`form_for`). Same parameters, same state-dict keys, same result up to rounding."""

    def __init__(self, *args, bf16_form='matmul', **kwargs):
        super().__init__(*args, **kwargs)
        self._init_forms(bf16_form)

    def _conv_forward(self, x, weight, bias):
        if self.form_for(x) == 'library':
            return super()._conv_forward(x, weight, bias)
        x, weight, bias = self._cast(x, weight, bias)
        return _ConvByMatmul.apply(x, weight, bias, self.stride[0], self.padding[0])


class MatmulConvTranspose2d(_TwoForms, nn.ConvTranspose2d):
    """A ConvTranspose2d that runs as the library's kernel or as 2-D matrix products and window
    scatter (`form_for`)."""

    def __init__(self, *args, bf16_form='matmul', **kwargs):
        super().__init__(*args, **kwargs)
        self._init_forms(bf16_form)

    def forward(self, x, output_size=None):
        if self.form_for(x) == 'library':
            return super().forward(x, output_size)
        x, weight, bias = self._cast(x, self.weight, self.bias)
        return _ConvTransposeByMatmul.apply(x, weight, bias, self.stride[0], self.padding[0])


# The layers that may run as matrix products, by network class: the convolutions on 4x4 and 2x2
# maps of the reference's 32x32 pair. Where nothing was measured, they take that form in bf16: it
# was the faster on AVX-512 BF16 (docs/performance.md); down3 lost and up3 tied on every CPU
# measured, so they are not candidates. Nazeri et al.'s larger networks keep the library's layers.
CANDIDATES = {'Generator': ('down4.model.0', 'down5.model.0', 'up1.model.0', 'up2.model.0'),
              'Discriminator': ('down4.model.0',)}


def _two_form_class(layer):
    """The class that gives `layer` both forms: a library convolution's two-form subclass, or, for a
    parametrized one (spectral norm), a class that keeps the parametrization's class in front."""
    two_form = MatmulConvTranspose2d if isinstance(layer, nn.ConvTranspose2d) else MatmulConv2d
    cls = type(layer)
    if cls in (nn.Conv2d, nn.ConvTranspose2d):
        return two_form
    if parametrize.is_parametrized(layer) and cls.__bases__ in ((nn.Conv2d,), (nn.ConvTranspose2d,)):
        return type(f'Parametrized{two_form.__name__}', (cls, two_form), {})
    raise ValueError(f"a two-form layer replaces a library convolution, not a {cls.__name__}")


def swap_in_two_form_layers(model, bf16_form='matmul'):
    """Make the CANDIDATES layers of `model` two-form, in place, with `bf16_form` their form in
    bf16 until one is measured or set. Each layer stays the same object with the same parameters,
    buffers, parametrizations and state-dict keys; only its class changes, so a network built and
    then swapped has drawn the same random numbers, in the same order, as one built alone. A
    network with no candidates is left as it is. Returns `model`."""
    for name in CANDIDATES.get(type(model).__name__, ()):
        layer = model.get_submodule(name)
        if not isinstance(layer, _TwoForms):
            layer.__class__ = _two_form_class(layer)
            layer._init_forms(bf16_form)
    return model


def two_form_layers(model):
    """{qualified name: layer} for the layers of `model` that can run in either form."""
    return {name: m for name, m in model.named_modules() if isinstance(m, _TwoForms)}


def _time_forward_backward(layer, x, grad, autocast):
    start = time.perf_counter()
    with autocast:
        y = layer(x)
    y.backward(grad.to(y.dtype))
    return time.perf_counter() - start


def choose_forms(model, sample, autocast=contextlib.nullcontext(), max_rounds=2):
    """Time forward plus backward of both forms of every two-form layer of `model` on the inputs
    that `sample` (a batch for `model`) gives those layers, under `autocast`, and set each layer
    to the faster form for that precision (the library's unless the product is clearly faster).
    After a warm-up round, a layer whose forms differ by more than DECISIVE is settled by one
    timed round, the others by the best of up to `max_rounds`. The model's weights, statistics
    and the global random state are left as they were.
    Returns {layer name: (form, library seconds, matmul seconds)}."""
    layers = two_form_layers(model)
    if not layers or sample.device.type != 'cpu':
        return {}
    inputs = {}
    with torch.random.fork_rng(devices=[]):
        # The copy runs (its statistics may change; the model's may not), so the hooks that
        # record each layer's input go on the copy's layers, and go with it.
        trial = copy.deepcopy(model).train()
        hooks = [m.register_forward_pre_hook(lambda m, args, name=name: inputs.setdefault(name, args[0].detach()))
                 for name, m in two_form_layers(trial).items()]
        with torch.no_grad(), autocast:
            trial(sample)
        for h in hooks:
            h.remove()
        with autocast:
            dtype = _compute_dtype(sample)
        chosen = {}
        for name, layer in two_form_layers(trial).items():
            x = inputs[name].requires_grad_()
            with torch.no_grad(), autocast:
                grad = torch.randn_like(layer(x), dtype=torch.float32)
            best = {}
            for i in range(max_rounds + 1):  # round 0 warms both forms up
                for form in FORMS:
                    layer.forms[dtype] = form
                    seconds = _time_forward_backward(layer, x, grad, autocast)
                    if i:
                        best[form] = min(best.get(form, seconds), seconds)
                    x.grad = None
                    layer.zero_grad(set_to_none=True)
                if best and max(best.values()) > DECISIVE * min(best.values()):
                    break
            form = 'matmul' if best['matmul'] < MATMUL_MARGIN * best['library'] else 'library'
            chosen[name] = (form, best['library'], best['matmul'])
    set_forms(model, {name: form for name, (form, _, _) in chosen.items()}, dtype)
    return chosen


def set_forms(model, forms, dtype):
    """Set the form each named two-form layer of `model` runs in for compute `dtype`."""
    layers = two_form_layers(model)
    for name, form in forms.items():
        if form not in FORMS or name not in layers:
            raise ValueError(f"no two-form layer {name!r} taking form {form!r}")
        layers[name].forms[dtype] = form
