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
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = conv(x.to(memory_format=torch.channels_last))
        sigma_dtype = conv.parametrizations.weight[0].u.dtype
    assert out.dtype == torch.bfloat16 and sigma_dtype == torch.float32
    assert torch.allclose(out.float(), reference, atol=0.05)
