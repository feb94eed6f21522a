import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models import Discriminator, Generator, init_weights


def count(model):
    return sum(p.numel() for p in model.parameters())


BN_PARAMS_DISC = 2 * (128 + 256 + 512)  # weight and bias of down2..down4's batch norms


def test_parameter_counts_match_spec():
    assert count(Generator('batch')) == 16_654_722
    assert count(Discriminator('batch')) == 2_766_529
    # instance norm has no parameters; spectral norm replaces the batch norms of down2..down4
    bn_params_gen = sum(m.weight.numel() + m.bias.numel() for m in Generator('batch').modules()
                        if isinstance(m, nn.BatchNorm2d))
    assert count(Generator('instance')) == 16_654_722 - bn_params_gen
    assert count(Discriminator('spectral')) == 2_766_529 - BN_PARAMS_DISC
    assert count(Discriminator('instance')) == 2_766_529 - BN_PARAMS_DISC


@pytest.mark.parametrize('norm', ['batch', 'instance'])
def test_generator_maps_L_to_ab_in_range(norm):
    G = Generator(norm)
    ab = G(torch.randn(3, 1, 32, 32) * 3)
    assert ab.shape == (3, 2, 32, 32)
    assert ab.abs().max() <= 1.0


@pytest.mark.parametrize('norm', ['batch', 'instance', 'spectral'])
def test_discriminator_gives_one_logit_per_image(norm):
    scores = Discriminator(norm)(torch.randn(5, 3, 32, 32))
    assert scores.shape == (5,)
    # raw logits, not probabilities: the last layer is the convolution itself, and scores go below 0
    D = Discriminator(norm).eval()  # eval: no power-iteration step between the two forwards
    x = torch.randn(64, 3, 32, 32)
    features = D.down4(D.down3(D.down2(D.down1(torch.nn.functional.interpolate(x, size=35, mode='bilinear', align_corners=True)))))
    assert torch.allclose(D(x), D.final.model[0](features).flatten(), atol=1e-5)


def test_state_dict_uses_the_reference_key_layout():
    state = Generator('batch').state_dict()
    assert state['down1.model.0.weight'].shape == (64, 1, 4, 4)
    assert state['up1.model.0.weight'].shape == (512, 512, 4, 4)
    assert state['final.model.0.weight'].shape == (2, 128, 1, 1)
    assert state['final.model.0.bias'].shape == (2,)
    for block in ['down1', 'down2', 'down3', 'down4', 'down5', 'up1', 'up2', 'up3', 'up4']:
        for key in ['weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked']:
            assert f'{block}.model.1.{key}' in state


def test_layer_geometry_follows_the_spec():
    G = Generator()
    sizes = {}
    hooks = [getattr(G, name).register_forward_hook(lambda m, i, o, name=name: sizes.__setitem__(name, tuple(o.shape[1:])))
             for name in ['down1', 'down2', 'down3', 'down4', 'down5', 'up1', 'up2', 'up3', 'up4']]
    G(torch.randn(2, 1, 32, 32))
    for h in hooks:
        h.remove()
    assert sizes == {'down1': (64, 32, 32), 'down2': (128, 16, 16), 'down3': (256, 8, 8), 'down4': (512, 4, 4),
                     'down5': (512, 2, 2), 'up1': (512, 4, 4), 'up2': (256, 8, 8), 'up3': (128, 16, 16),
                     'up4': (64, 32, 32)}
    dropouts = [name for name, m in G.named_modules() if isinstance(m, nn.Dropout)]
    assert [d.split('.')[0] for d in dropouts] == ['up1', 'up2']


def test_weight_init_draws_from_the_spec_distributions():
    torch.manual_seed(0)
    G = init_weights(Generator('batch'))
    conv = G.down4.model[0].weight
    assert abs(conv.std().item() - 0.02) < 0.001 and abs(conv.mean().item()) < 0.001
    bn = G.down4.model[1]
    assert abs(bn.weight.mean().item() - 1.0) < 0.005 and abs(bn.weight.std().item() - 0.02) < 0.005
    assert torch.all(bn.bias == 0)
    default_bias = Generator('batch').down4.model[0].bias
    assert G.down4.model[0].bias.abs().max() <= 1 / (256 * 16) ** 0.5 + 1e-6  # default bias bound kept
    assert default_bias.std() > 0


def test_weight_init_leaves_spectral_layers_at_their_defaults():
    torch.manual_seed(0)
    D = Discriminator('spectral')
    before = D.down3.model[0].parametrizations.weight.original.clone()
    init_weights(D)
    assert torch.equal(D.down3.model[0].parametrizations.weight.original, before)
    assert abs(D.down1.model[0].weight.std().item() - 0.02) < 0.003


MATMUL_CASES = [  # (kernel, stride, padding, input size): the networks' geometry, and a stride-1 one
    (4, 2, 1, 4), (4, 2, 1, 8), (3, 1, 0, 5)]


@pytest.mark.parametrize('transposed', [False, True])
@pytest.mark.parametrize('k,s,p,size', MATMUL_CASES)
@pytest.mark.parametrize('memory_format', [torch.contiguous_format, torch.channels_last])
def test_matrix_product_convolutions_equal_the_library_and_its_gradients(transposed, k, s, p, size, memory_format):
    """The matrix-product path in float64 (the layers use it in bf16 only) against F.conv2d and
    F.conv_transpose2d: outputs, and the gradients of input, weight and bias."""
    from convolutions import _ConvByMatmul, _ConvTransposeByMatmul
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
    from convolutions import MatmulConv2d, MatmulConvTranspose2d
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
    from convolutions import MatmulConv2d, MatmulConvTranspose2d
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


def test_dropout_keeps_half_and_rescales():
    from models import Dropout
    torch.manual_seed(0)
    d = Dropout(0.5)
    y = d(torch.ones(200_000))
    assert set(y.unique().tolist()) == {0.0, 2.0}
    assert abs((y > 0).float().mean().item() - 0.5) < 0.005
    assert torch.equal(d.eval()(torch.ones(10)), torch.ones(10))


def test_generator_dropout_is_a_setting_and_zero_makes_training_mode_deterministic():
    torch.manual_seed(0)
    L = torch.rand(4, 1, 32, 32) * 2 - 1
    off, on = Generator(dropout=0.0).train(), Generator(dropout=0.5).train()
    on.load_state_dict(off.state_dict())  # same weights, same keys: dropout has no parameters
    assert torch.equal(off(L), off(L))
    assert not torch.equal(on(L), on(L))
    assert on.up1.model[3].p == 0.5 and off.up2.model[3].p == 0.0
    with pytest.raises(ValueError):
        Generator(dropout=1.0)
