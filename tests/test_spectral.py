import torch
from torch import nn

from spectral import sigma_estimate, spectral_norm


def exact_sigma(module):
    w = module.parametrizations.weight.original.detach()
    return torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2)


def test_power_iteration_converges_to_the_largest_singular_value():
    torch.manual_seed(0)
    conv = spectral_norm(nn.Conv2d(16, 32, 4, 2, 1))
    x = torch.randn(1, 16, 4, 4)
    for _ in range(300):  # random matrices have close top singular values: convergence is slow
        conv(x)
    assert torch.allclose(sigma_estimate(conv), exact_sigma(conv), rtol=1e-4)
    normalized = conv.weight.detach().reshape(32, -1)
    assert abs(torch.linalg.matrix_norm(normalized, ord=2).item() - 1.0) < 1e-4


def test_one_power_step_per_training_forward_and_none_in_eval():
    torch.manual_seed(0)
    conv = spectral_norm(nn.Conv2d(8, 16, 4, 2, 1))
    sn = conv.parametrizations.weight[0]
    u0 = sn.u.clone()
    conv.eval()
    conv(torch.randn(1, 8, 8, 8))
    assert torch.equal(sn.u, u0)
    conv.train()
    # perturb the weight so the next power step visibly moves u
    with torch.no_grad():
        conv.parametrizations.weight.original.add_(torch.randn_like(conv.parametrizations.weight.original))
    conv(torch.randn(1, 8, 8, 8))
    u1 = sn.u.clone()
    assert not torch.equal(u1, u0)
    # the step is exactly one iteration of v = W^T u / |.|, u = W v / |.|
    W = conv.parametrizations.weight.original.detach().reshape(16, -1)
    v = torch.nn.functional.normalize(W.t() @ u0, dim=0)
    assert torch.allclose(u1, torch.nn.functional.normalize(W @ v, dim=0), atol=1e-6)


def test_u_and_v_live_in_the_state_dict_and_load_back():
    torch.manual_seed(0)
    a = spectral_norm(nn.Conv2d(8, 16, 4, 2, 1))
    for _ in range(3):
        a(torch.randn(1, 8, 8, 8))
    state = a.state_dict()
    assert {'parametrizations.weight.0.u', 'parametrizations.weight.0.v', 'parametrizations.weight.original'} <= set(state)
    torch.manual_seed(1)
    b = spectral_norm(nn.Conv2d(8, 16, 4, 2, 1))
    b.load_state_dict(state)
    a.eval(), b.eval()
    x = torch.randn(2, 8, 8, 8)
    assert torch.equal(a(x), b(x))


def test_gradient_reaches_the_unnormalized_weight():
    conv = spectral_norm(nn.Conv2d(4, 8, 3))
    conv(torch.randn(2, 4, 6, 6)).sum().backward()
    assert conv.parametrizations.weight.original.grad.abs().sum() > 0


def test_channels_last_and_autocast_give_the_same_result():
    torch.manual_seed(0)
    conv = spectral_norm(nn.Conv2d(16, 32, 4, 2, 1)).eval()
    x = torch.randn(4, 16, 8, 8)
    reference = conv(x)
    conv_cl = conv.to(memory_format=torch.channels_last)
    out_cl = conv_cl(x.to(memory_format=torch.channels_last))
    assert torch.allclose(out_cl, reference, atol=1e-5)
    conv.train()
    sn = conv.parametrizations.weight[0]
    u0 = sn.u.clone()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = conv(x.to(memory_format=torch.channels_last))
        sigma_dtype = sn.u.dtype
    assert out.dtype == torch.bfloat16 and sigma_dtype == torch.float32
    assert torch.allclose(out.float(), reference, atol=0.05)
    # The power step under autocast is the fp32 one: u is one step of v = W^T u / |.|, u = W v / |.|
    # computed in fp64 from the same (channels-last) weight and the previous u, to fp32's rounding.
    # A step in bf16 (8 bits of mantissa) would be off by about 1e-3.
    W = conv.parametrizations.weight.original.detach().double().reshape(32, -1)
    v = torch.nn.functional.normalize(W.t() @ u0.double(), dim=0, eps=sn.eps)
    u1 = torch.nn.functional.normalize(W @ v, dim=0, eps=sn.eps)
    assert (u1 - u0.double()).abs().max() > 1e-4  # the step moves u: the comparison below sees it was taken
    torch.testing.assert_close(sn.u.double(), u1, rtol=0, atol=1e-6)
    torch.testing.assert_close(sn.v.double(), v, rtol=0, atol=1e-6)


def test_each_pass_is_differentiated_with_the_vectors_it_used():
    """The discriminator runs several times before a backward pass. The reference overwrote u and
    v in place at the next forward, so the earlier passes' gradients through sigma used the later
    vectors (SPEC.md, known defects); here every pass keeps its own."""
    torch.manual_seed(0)
    conv = spectral_norm(nn.Conv2d(4, 6, 4, 2, 1))
    sn = conv.parametrizations.weight[0]
    weight = conv.parametrizations.weight.original
    x = torch.randn(2, 4, 8, 8)
    first = conv(x)
    u1, v1 = sn.u.clone(), sn.v.clone()  # the vectors of the first pass
    # what a later pass does to the buffers, made large enough to see: new vectors, in place
    sn.u.copy_(torch.nn.functional.normalize(torch.randn_like(sn.u), dim=0))
    sn.v.copy_(torch.nn.functional.normalize(torch.randn_like(sn.v), dim=0))
    (grad,) = torch.autograd.grad(first.square().sum(), [weight])

    def gradient_with(u, v):
        w = weight.detach().clone().requires_grad_()
        out = nn.functional.conv2d(x, w / (u @ w.reshape(6, -1) @ v), conv.bias, 2, 1)
        return torch.autograd.grad(out.square().sum(), [w])[0]
    right, wrong = gradient_with(u1, v1), gradient_with(sn.u, sn.v)
    scale = right.abs().max()
    assert (grad - right).abs().max() < 1e-5 * scale
    assert (wrong - right).abs().max() > 1e-2 * scale  # the defect would be plain to see
