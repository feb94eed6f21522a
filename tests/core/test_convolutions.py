"""The two forms of a convolution (core/convolutions.py), the swap that gives a network's candidate
layers both forms, and the start-up measurement that picks each layer's form (choose_forms)."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core import convolutions
from models import Discriminator, Generator, build_discriminator, build_generator


def two_form_generator(*args):
    """The reference's generator as a run builds it: its candidate layers two-form."""
    return convolutions.swap_in_two_form_layers(Generator(*args))


def fake_timer(fast):
    """A stand-in for the timer: the matrix-product form takes 1 s in the layers listed in `fast`
    (by kind and channels), 2 s elsewhere; the library's always 1.5 s."""
    def time_forward_backward(layer, x, grad, autocast):
        key = (type(layer).__name__, layer.in_channels, layer.out_channels)
        return {'library': 1.5, 'matmul': 1.0 if key in fast else 2.0}[layer.form_for(x)]
    return time_forward_backward


def test_each_layer_takes_the_form_timed_faster(monkeypatch):
    torch.manual_seed(0)
    G = two_form_generator()
    fast = {('MatmulConv2d', 512, 512), ('MatmulConvTranspose2d', 1024, 256)}  # down5, up2
    monkeypatch.setattr(convolutions, '_time_forward_backward', fake_timer(fast))
    chosen = convolutions.choose_forms(G, torch.randn(2, 1, 32, 32))
    assert set(chosen) == set(convolutions.two_form_layers(G)) == {
        'down4.model.0', 'down5.model.0', 'up1.model.0', 'up2.model.0'}
    assert {name: form for name, (form, _, _) in chosen.items()} == {
        'down4.model.0': 'library', 'down5.model.0': 'matmul', 'up1.model.0': 'library', 'up2.model.0': 'matmul'}
    assert G.down5.model[0].forms == {torch.float32: 'matmul'} and G.up1.model[0].forms == {torch.float32: 'library'}


def test_a_narrow_win_stays_with_the_library(monkeypatch):
    layer = convolutions.MatmulConv2d(8, 8, 4, 2, 1)
    model = torch.nn.Sequential(layer)
    times = {'library': 1.0, 'matmul': 0.95}  # 5% faster: inside the margin
    monkeypatch.setattr(convolutions, '_time_forward_backward',
                        lambda layer, x, grad, autocast: times[layer.form_for(x)])
    assert convolutions.choose_forms(model, torch.randn(2, 8, 8, 8))['0'][0] == 'library'
    times['matmul'] = 0.8
    assert convolutions.choose_forms(model, torch.randn(2, 8, 8, 8))['0'][0] == 'matmul'


@pytest.mark.parametrize('model_class, channels', [(Generator, 1), (Discriminator, 3)])
def test_measuring_changes_no_weight_statistic_or_random_state(model_class, channels):
    torch.manual_seed(0)
    model = convolutions.swap_in_two_form_layers(model_class()).to(memory_format=torch.channels_last)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sample = torch.randn(4, channels, 32, 32).contiguous(memory_format=torch.channels_last)
    rng = torch.get_rng_state()
    chosen = convolutions.choose_forms(model, sample)
    assert chosen and all(form in convolutions.FORMS and t_lib > 0 and t_mm > 0 for form, t_lib, t_mm in chosen.values())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training and all(p.grad is None for p in model.parameters())


def test_set_forms_refuses_unknown_layers_and_forms():
    G = two_form_generator()
    with pytest.raises(ValueError):
        convolutions.set_forms(G, {'down1.model.0': 'matmul'}, torch.float32)  # not a two-form layer
    with pytest.raises(ValueError):
        convolutions.set_forms(G, {'up1.model.0': 'fast'}, torch.float32)


def test_choosing_forms_does_not_rely_on_deepcopy_copying_hooks(monkeypatch):
    """The layer inputs are recorded by hooks on the copy that runs, not on the model (whose
    hooks a copy need not carry), and no hook is left behind on either."""
    deepcopy = copy.deepcopy

    def copy_without_hooks(obj, memo=None):
        duplicate = deepcopy(obj, memo)
        if memo is None and isinstance(duplicate, torch.nn.Module):  # the top-level copy of the model
            for module in duplicate.modules():
                module._forward_pre_hooks.clear()
        return duplicate
    monkeypatch.setattr(convolutions.copy, 'deepcopy', copy_without_hooks)
    monkeypatch.setattr(convolutions, '_time_forward_backward', lambda layer, x, grad, autocast: 1.0)
    G = two_form_generator()
    kept = G.down4.register_forward_pre_hook(lambda m, args: None)  # the user's own hook stays
    chosen = convolutions.choose_forms(G, torch.randn(2, 1, 32, 32))
    assert set(chosen) == set(convolutions.two_form_layers(G))
    assert [len(m._forward_pre_hooks) for m in G.modules() if m._forward_pre_hooks] == [1]
    kept.remove()


# ---- the swap ---------------------------------------------------------------------------------

@pytest.mark.parametrize('network', ['generator', 'batch discriminator', 'spectral discriminator'])
def test_the_swap_keeps_every_parameter_key_and_random_draw_and_changes_the_candidates_only(network):
    """A run builds the library's layers and then swaps: it must draw the same random numbers,
    keep the same Parameter objects in the same order (the optimizers hold them), and the same
    state-dict keys (old checkpoints load)."""
    torch.manual_seed(0)
    model = Generator() if network == 'generator' else Discriminator(network.split()[0])
    rng = torch.get_rng_state()
    parameters = [(name, id(p)) for name, p in model.named_parameters()]
    state = {key: value.clone() for key, value in model.state_dict().items()}
    assert convolutions.two_form_layers(model) == {}
    assert convolutions.swap_in_two_form_layers(model) is model
    assert torch.equal(torch.get_rng_state(), rng)
    assert [(name, id(p)) for name, p in model.named_parameters()] == parameters
    assert list(model.state_dict()) == list(state)
    assert all(torch.equal(value, state[key]) for key, value in model.state_dict().items())
    assert sorted(convolutions.two_form_layers(model)) == sorted(convolutions.CANDIDATES[type(model).__name__])
    convolutions.swap_in_two_form_layers(model)  # a second swap changes nothing
    assert [(name, id(p)) for name, p in model.named_parameters()] == parameters


def test_a_swapped_spectral_layer_keeps_its_normalization_in_both_forms_and_copies():
    torch.manual_seed(0)
    D = convolutions.swap_in_two_form_layers(Discriminator('spectral'))
    layer = D.down4.model[0]
    assert isinstance(layer, convolutions.MatmulConv2d) and 'weight' in layer.parametrizations
    x = torch.randn(2, 256, 8, 8)
    normalized = layer.weight.detach()
    assert not torch.allclose(normalized, layer.parametrizations.weight.original)
    expected = F.conv2d(x, normalized, layer.bias, 2, 1)
    layer.eval()  # no power step: the same sigma in every call
    assert torch.allclose(layer(x), expected, atol=1e-5)
    layer.forms[torch.float32] = 'matmul'
    y = layer(x)
    assert 'ByMatmul' in type(y.grad_fn).__name__ and torch.allclose(y, expected, atol=1e-5)
    y.sum().backward()
    assert layer.parametrizations.weight.original.grad is not None
    twin = copy.deepcopy(D).down4.model[0]  # G_ema and choose_forms copy networks
    assert isinstance(twin, convolutions.MatmulConv2d) and twin.forms == {torch.float32: 'matmul'}
    assert torch.allclose(twin(x), y, atol=1e-6)


def test_the_swapped_layers_run_as_products_in_bf16_only_until_measured():
    torch.manual_seed(0)
    G = two_form_generator().eval()
    seen = {}
    for name, layer in G.named_modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            layer.register_forward_hook(lambda m, args, y, name=name: seen.__setitem__(name, type(y.grad_fn).__name__))
    L = torch.randn(2, 1, 32, 32, requires_grad=True)
    G(L)
    assert not any('ByMatmul' in kind for kind in seen.values())
    with torch.autocast('cpu', dtype=torch.bfloat16):
        G(L)
    # the layers on 4x4 and 2x2 maps, as before the swap existed
    assert sorted(name for name, kind in seen.items() if 'ByMatmul' in kind) == [
        'down4.model.0', 'down5.model.0', 'up1.model.0', 'up2.model.0']


def test_nazeri_networks_have_no_candidates_and_stay_as_built():
    for model in (build_generator(64), build_discriminator(64, 'spectral')):
        assert convolutions.swap_in_two_form_layers(model) is model
        assert convolutions.two_form_layers(model) == {}


# ---- the two forms ----------------------------------------------------------------------------

MATMUL_CASES = [  # (kernel, stride, padding, input size): the networks' geometry, and a stride-1 one
    (4, 2, 1, 4), (4, 2, 1, 8), (3, 1, 0, 5)]


@pytest.mark.parametrize('transposed', [False, True])
@pytest.mark.parametrize('k,s,p,size', MATMUL_CASES)
@pytest.mark.parametrize('memory_format', [torch.contiguous_format, torch.channels_last])
def test_matrix_product_convolutions_equal_the_library_and_its_gradients(transposed, k, s, p, size, memory_format):
    """The matrix-product path in float64 (the layers use it in bf16 only) against F.conv2d and
    F.conv_transpose2d: outputs, and the gradients of input, weight and bias."""
    from core.convolutions import _ConvByMatmul, _ConvTransposeByMatmul
    torch.manual_seed(0)
    shape = (5, 7, k, k) if transposed else (7, 5, k, k)
    weight = torch.randn(shape, dtype=torch.float64).contiguous(memory_format=memory_format).requires_grad_()
    bias = torch.randn(7, dtype=torch.float64, requires_grad=True)
    x = torch.randn(3, 5, size, size, dtype=torch.float64).contiguous(memory_format=memory_format).requires_grad_()
    fast_fn, lib_fn = ((_ConvTransposeByMatmul, F.conv_transpose2d) if transposed else (_ConvByMatmul, F.conv2d))
    y, y_lib = fast_fn.apply(x, weight, bias, s, p), lib_fn(x, weight, bias, s, p)
    assert y.shape == y_lib.shape
    assert torch.allclose(y, y_lib, atol=1e-12)
    upstream = torch.randn_like(y)
    for a, b in zip(torch.autograd.grad(y, [x, weight, bias], upstream),
                    torch.autograd.grad(y_lib, [x, weight, bias], upstream)):
        assert torch.allclose(a, b, atol=1e-12)
    # frozen weights (the discriminator during the generator's step): the input gradient alone
    frozen_w, frozen_b = weight.detach(), bias.detach()
    (gx,) = torch.autograd.grad(fast_fn.apply(x, frozen_w, frozen_b, s, p), [x], upstream)
    (gx_lib,) = torch.autograd.grad(lib_fn(x, frozen_w, frozen_b, s, p), [x], upstream)
    assert torch.allclose(gx, gx_lib, atol=1e-12)


def test_two_form_layers_run_the_form_set_for_their_precision():
    from core.convolutions import MatmulConv2d, MatmulConvTranspose2d
    for layer, size in [(MatmulConv2d(4, 6, 4, 2, 1), 8), (MatmulConvTranspose2d(4, 6, 4, 2, 1), 4)]:
        x = torch.randn(2, 4, size, size)
        assert 'Convolution' in type(layer(x).grad_fn).__name__  # nothing measured, fp32: the library's kernel
        with torch.autocast('cpu', dtype=torch.bfloat16):
            assert 'ByMatmul' in type(layer(x).grad_fn).__name__  # nothing measured, bf16: bf16_form
        layer.forms[torch.float32] = 'matmul'
        y = layer(x)
        assert 'ByMatmul' in type(y.grad_fn).__name__
        layer.forms[torch.float32] = 'library'
        assert torch.allclose(y, layer(x), atol=1e-5)  # the same convolution in fp32, either way


def test_matmul_layers_under_bf16_autocast():
    from core.convolutions import MatmulConv2d, MatmulConvTranspose2d
    torch.manual_seed(0)
    for fast_cls, lib_cls, size in [(MatmulConv2d, nn.Conv2d, 8), (MatmulConvTranspose2d, nn.ConvTranspose2d, 4)]:
        fast = fast_cls(64, 32, 4, 2, 1).to(memory_format=torch.channels_last)
        lib = lib_cls(64, 32, 4, 2, 1)
        lib.load_state_dict(fast.state_dict())
        x = torch.randn(4, 64, size, size).contiguous(memory_format=torch.channels_last).requires_grad_()
        with torch.autocast('cpu', dtype=torch.bfloat16):
            y_fast, y_lib = fast(x), lib(x)
        assert y_fast.dtype == torch.bfloat16
        assert (y_fast.float() - y_lib.float()).abs().max() < 0.02 * y_lib.float().abs().max()
        y_fast.float().square().sum().backward()
        assert fast.weight.grad.dtype == torch.float32 and x.grad.dtype == torch.float32
        grads = [x.grad.clone(), fast.weight.grad]
        x.grad = None
        y_lib.float().square().sum().backward()
        for a, b in zip(grads, [x.grad, lib.weight.grad]):
            assert (a - b).abs().max() < 0.03 * b.abs().max()
