"""Adam laid out for its device (training/optimizers.py): the same numbers and state as
torch.optim.Adam, no gradient clone under the CPU's fused kernel, moments that take their weights'
layout."""
import copy

import pytest
import torch

from conftest import lab_batch
from training import optimizers
from training.gan import ColorizationGAN
from training.options import configs_from_args, parse_training_args


def channels_last_weights(seed=1):
    """Weights shaped like a generator's: channels-last kernels (one with as many input channels
    as kernel rows, where a shape alone cannot tell the layouts apart), a 1x1 kernel, a bias."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(64, 32, 4, 4), (8, 4, 4, 4), (2, 128, 1, 1), (16,)]
    return [torch.nn.Parameter(torch.randn(s, generator=g).contiguous(memory_format=torch.channels_last)
                               if len(s) == 4 else torch.randn(s, generator=g)) for s in shapes]


def w_layout(w):
    return torch.channels_last if w.dim() == 4 and not w.is_contiguous() else torch.contiguous_format


def adam_steps(weights, opt, steps, seed=10):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for w in weights:
            w.grad = torch.randn(w.shape, generator=g).contiguous(memory_format=w_layout(w))
        opt.step()
        opt.zero_grad(set_to_none=True)


def test_the_dense_view_adam_computes_what_torch_adam_does_and_saves_the_same_state():
    reference, dense = channels_last_weights(), channels_last_weights()
    torch_adam = torch.optim.Adam(reference, lr=1e-2, betas=(0.5, 0.999), fused=True)
    ours = optimizers.DenseViewAdam(dense, lr=1e-2, betas=(0.5, 0.999), fused=True)
    adam_steps(reference, torch_adam, 4), adam_steps(dense, ours, 4)
    for a, b in zip(reference, dense):
        assert torch.equal(a, b) and a.stride() == b.stride() and b.grad is None
    theirs, mine = torch_adam.state_dict(), ours.state_dict()
    assert theirs['param_groups'] == mine['param_groups']
    for i, state in theirs['state'].items():
        for key, value in state.items():
            assert torch.equal(value, mine['state'][i][key]) and value.stride() == mine['state'][i][key].stride()


def test_the_dense_view_adam_hands_the_fused_kernel_no_gradient_to_clone():
    def clones_under_the_kernel(make_optimizer):
        weights = channels_last_weights()
        opt = make_optimizer(weights)
        adam_steps(weights, opt, 1)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            adam_steps(weights, opt, 1)
        kernels = [e for e in prof.events() if e.name == 'aten::_fused_adam_']
        assert kernels
        return sum(1 for e in prof.events() if e.name == 'aten::clone'
                   and any(p.name == 'aten::_fused_adam_' for p in ancestors(e)))

    def ancestors(event):
        while event.cpu_parent is not None:
            event = event.cpu_parent
            yield event
    assert clones_under_the_kernel(lambda w: torch.optim.Adam(w, fused=True)) > 0
    assert clones_under_the_kernel(lambda w: optimizers.DenseViewAdam(w, fused=True)) == 0


@pytest.mark.parametrize('source', [torch.channels_last, torch.contiguous_format])
@pytest.mark.parametrize('layout', [torch.channels_last, torch.contiguous_format])
def test_the_dense_view_adam_resumes_torch_adams_state_whatever_the_weights_layout(source, layout):
    """A checkpoint of the previous release (torch.optim.Adam's state, its moments laid out like
    the weights it trained) goes on as it would have, also into weights now laid out another way
    (where torch's fused kernel itself would read moment and weight in different orders)."""
    def laid_out(weights, memory_format):
        return [torch.nn.Parameter(w.detach().clone().contiguous(
            memory_format=memory_format if w.dim() == 4 else torch.contiguous_format)) for w in weights]
    reference = laid_out(channels_last_weights(), source)
    torch_adam = torch.optim.Adam(reference, lr=1e-2, betas=(0.5, 0.999), fused=True)
    adam_steps(reference, torch_adam, 3)
    resumed = laid_out(reference, layout)
    ours = optimizers.DenseViewAdam(resumed, lr=1e-2, betas=(0.5, 0.999), fused=True)
    ours.load_state_dict(copy.deepcopy(torch_adam.state_dict()))
    adam_steps(reference, torch_adam, 2, seed=11), adam_steps(resumed, ours, 2, seed=11)
    for a, b in zip(reference, resumed):
        assert torch.equal(a, b)


def test_moments_saved_with_channels_last_load_into_contiguous_weights_under_torchs_adam():
    """The CUDA path's optimizer (torch's own Adam, fused) meeting a checkpoint of a CPU run,
    whose weights and moments were channels-last: the moments take the weights' layout."""
    lab = lab_batch(4, seed=5)
    cpu_run = ColorizationGAN(*configs_from_args(parse_training_args(['--channels_last', 'on'])))
    cpu_run.step(lab.contiguous(memory_format=torch.channels_last), 1)
    saved = cpu_run.opt_g.state_dict()
    assert any(v.dim() == 4 and not v.is_contiguous() for s in saved['state'].values() for v in s.values())
    gpu_like = ColorizationGAN(*configs_from_args(parse_training_args(['--channels_last', 'off'])))
    opt = optimizers.LaidOutAdam(gpu_like.G.parameters(), lr=1e-4, betas=(0.5, 0.999), fused=True)
    opt.load_state_dict(saved)
    for p in gpu_like.G.parameters():
        for key in ('exp_avg', 'exp_avg_sq'):
            assert opt.state[p][key].stride() == p.stride(), key
    for (i, s), p in zip(saved['state'].items(), gpu_like.G.parameters()):
        assert torch.equal(opt.state[p]['exp_avg'], s['exp_avg'])  # the same numbers, laid out anew
    for p in gpu_like.G.parameters():
        p.grad = torch.ones_like(p)
    opt.step()  # and the fused kernel takes them
