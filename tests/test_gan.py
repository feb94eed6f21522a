"""The GAN under training (gan.ColorizationGAN): its step, its losses, its schedule."""
import copy

import numpy as np
import pytest
import torch

from training import gan as gan_module
from core.cli import Compute
from conftest import cpu_precisions, lab_batch
from training.gan import ColorizationGAN, NonFiniteLoss, learning_rate, summarize
from training.options import parse_training_args


def fixed_batch(n=16):
    return lab_batch(n, seed=5)


def contiguous_gan(*flags):
    """A GAN of these flags on the CPU in fp32, its networks in the contiguous memory format
    (seeded by --seed, 0 by default, as train.py builds it)."""
    return ColorizationGAN(parse_training_args(['--channels_last', 'off', *flags]))


@pytest.mark.parametrize('disc_norm', ['batch', 'spectral'])
def test_a_few_steps_on_a_fixed_batch_lower_the_l1_loss(disc_norm):
    gan = contiguous_gan('--disc_norm', disc_norm)
    lab = fixed_batch(8)
    l1 = [gan.step(lab, step)[1].item() / len(lab) for step in range(1, 11)]
    assert sum(l1[-3:]) < 0.6 * sum(l1[:3])


def test_the_generator_step_computes_no_gradients_for_the_discriminator():
    gan = contiguous_gan()
    grads_computed = []
    for p in gan.D.parameters():
        p.register_hook(lambda g: grads_computed.append(1))
    gan.step(fixed_batch(4), 1)
    # one gradient per D parameter: the discriminator's own step, none from the generator's
    assert len(grads_computed) == len(list(gan.D.parameters()))
    assert all(p.requires_grad for p in gan.D.parameters())


def test_loss_values_follow_the_spec():
    gan = contiguous_gan('--smoothing', '0.8', '--l1_weight', '0.9')
    G, D = gan.G.eval(), gan.D
    lab = fixed_batch(8)
    stats, predicted_ab = gan.evaluate(G, lab)
    m = summarize(stats)
    D.eval()
    with torch.no_grad():
        fake_ab = G(lab[:, :1])
        fake = torch.cat([lab[:, :1], fake_ab], 1)
        p_fake, p_real = torch.sigmoid(D(fake)), torch.sigmoid(D(lab))
        g_adv = -torch.log(p_fake).mean()
        l1 = (fake_ab - lab[:, 1:]).abs().mean()
        d_loss = -(0.8 * torch.log(p_real) + 0.2 * torch.log(1 - p_real)).mean() - torch.log(1 - p_fake).mean()
    assert torch.allclose(predicted_ab, fake_ab)
    assert m['g_adv'] == pytest.approx(g_adv.item(), rel=1e-4)
    assert m['g_l1'] == pytest.approx(l1.item(), rel=1e-4)
    assert m['g_loss'] == pytest.approx(0.1 * g_adv.item() + 0.9 * l1.item(), rel=1e-4)
    assert m['d_loss'] == pytest.approx(d_loss.item(), rel=1e-4)
    assert m['d_acc_real'] == pytest.approx((p_real > 0.5).float().mean().item())


def test_learning_rate_formula():
    assert learning_rate(3e-4, 1, 0.1, 6e4) == pytest.approx(3e-4 * 0.1 ** (1 / 6e4))
    assert learning_rate(3e-4, 60_000, 0.1, 6e4) == pytest.approx(3e-5)
    assert learning_rate(3e-4, 30_000, 0.1, 6e4) == pytest.approx(3e-4 / np.sqrt(10))
    # smooth, not staircase: every step lowers it
    assert learning_rate(3e-4, 1001, 0.1, 6e4) < learning_rate(3e-4, 1000, 0.1, 6e4)
    assert learning_rate(3e-4, 10**7, 0.1, 6e4) == 1e-6


def everything(g):
    """Every tensor a step may change: weights, buffers, optimizer states, the averaged generator, the scaler."""
    state = {f'G.{k}': v.clone() for k, v in g.G.state_dict().items()}
    state.update({f'D.{k}': v.clone() for k, v in g.D.state_dict().items()})
    state.update({f'EMA.{k}': v.clone() for k, v in g.G_ema.state_dict().items()})
    for name, opt in (('opt_g', g.opt_g), ('opt_d', g.opt_d)):
        for i, s in opt.state_dict()['state'].items():
            state.update({f'{name}.{i}.{k}': v.clone() for k, v in s.items()})
    state['scaler'] = copy.deepcopy(g.scaler.state_dict())
    return state


def assert_unchanged(before, after):
    assert before.keys() == after.keys()
    for key in before:
        if key == 'scaler':
            assert before[key] == after[key]
        else:
            assert torch.equal(before[key], after[key]), key


class FakeGPUTensor(torch.Tensor):
    """A CPU tensor that says it lives on a GPU: the NaN check must not depend on where a loss is."""

    @property
    def device(self):
        return torch.device('cuda', 0)


def poison(monkeypatch, poisoned):
    """Make the named network's loss NaN, found only after the generator's backward pass; returns
    a function that undoes it."""
    bce = gan_module.bce
    target = 1.0 if poisoned == 'generator' else 0.0
    monkeypatch.setattr(gan_module, 'bce', lambda logits, t: bce(logits, t) * (float('nan') if t == target else 1.0))
    return lambda: monkeypatch.setattr(gan_module, 'bce', bce)


@pytest.mark.parametrize('poisoned', ['generator', 'discriminator'])
@pytest.mark.parametrize('disc_norm', ['batch', 'spectral'])
@pytest.mark.parametrize('where', ['device', 'host'])
def test_a_skipped_step_leaves_networks_optimizers_scaler_and_average_as_they_were(where, poisoned, disc_norm,
                                                                                   monkeypatch):
    g = ColorizationGAN(parse_training_args(['--nan_policy', 'skip', '--disc_norm', disc_norm, '--channels_last', 'off']))
    assert g.check_on_device  # the fused optimizers take the skip on the device
    g.check_on_device = where == 'device'  # 'host': as with a gradient scaler or unfused optimizers
    lab = fixed_batch(4)
    g.step(lab, 1)  # optimizer states exist from here on
    before = everything(g)
    undo = poison(monkeypatch, poisoned)
    if where == 'host':
        with pytest.raises(NonFiniteLoss, match=f'the {poisoned} loss is nan'):
            g.step(lab, 2)
    else:
        sums = g.step(lab, 2)  # no exception, no read-back: the step is skipped on the device
        assert torch.equal(sums, torch.zeros_like(sums))  # nothing of it reaches the epoch's sums
        assert g.take_finite_report() == (1, None)
    assert_unchanged(before, everything(g))
    undo()
    g.step(lab, 2)  # and training goes on from there
    assert not torch.equal(before['G.down1.model.0.weight'], g.G.state_dict()['down1.model.0.weight'])
    assert g.take_finite_report() == (0, None)


def test_a_skipped_first_step_leaves_the_optimizers_as_new(monkeypatch):
    """The fused kernels' found_inf also holds where the moments are created by the step itself."""
    g, fresh = contiguous_gan('--nan_policy', 'skip'), contiguous_gan('--nan_policy', 'skip')
    undo = poison(monkeypatch, 'generator')
    g.step(fixed_batch(4), 1)
    undo()
    assert g.take_finite_report() == (1, None)
    for a, b in ((g.G, fresh.G), (g.D, fresh.D), (g.G_ema, fresh.G_ema)):
        for (name, t), u in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(t, u), name
    for s in g.opt_g.state.values():
        assert s['step'] == 0 and not s['exp_avg'].any() and not s['exp_avg_sq'].any()


def test_under_the_stop_policy_the_first_non_finite_step_is_reported_when_read_back(monkeypatch):
    g = contiguous_gan()
    lab = fixed_batch(4)
    g.step(lab, 1)
    undo = poison(monkeypatch, 'discriminator')
    g.step(lab, 2), g.step(lab, 3)
    undo()
    skipped, error = g.take_finite_report()
    assert skipped == 0 and isinstance(error, NonFiniteLoss) and error.step == 2
    assert 'the discriminator loss is nan' in str(error)
    assert g.take_finite_report() == (0, None)  # read and cleared


def test_a_step_reads_no_number_back(monkeypatch):
    """No host-device sync in a step: on a CPU, no tensor is turned into a Python number or bool."""
    reads = []
    for method in ('item', 'tolist', '__bool__', '__float__', '__int__', '__index__'):
        original = getattr(torch.Tensor, method)
        monkeypatch.setattr(torch.Tensor, method,
                            lambda self, *a, _m=method, _o=original, **k: reads.append(_m) or _o(self, *a, **k))
    for policy in ('stop', 'skip'):
        for disc_norm in ('batch', 'spectral'):
            g = contiguous_gan('--nan_policy', policy, '--disc_norm', disc_norm)
            lab = fixed_batch(4)
            reads.clear()
            g.step(lab, 1), g.step(lab, 2)
            assert reads == [], (policy, disc_norm, reads)
            g.take_finite_report()
            assert reads  # the counter does count


def test_a_non_finite_loss_is_caught_whatever_device_it_is_on():
    g = ColorizationGAN(parse_training_args(['--channels_last', 'off']))
    nan_on_gpu = torch.Tensor._make_subclass(FakeGPUTensor, torch.tensor(float('nan')))
    assert nan_on_gpu.device.type == 'cuda'
    with pytest.raises(NonFiniteLoss, match='generator loss is nan'):
        g.check_finite(nan_on_gpu, torch.tensor(0.5))
    g.check_finite(torch.tensor(0.5), torch.tensor(0.5))  # finite: no complaint


def test_the_gan_runs_with_its_defaults_alone():
    """No autocast, device or process group to pass: the defaults are a CPU in fp32, one process."""
    g = ColorizationGAN(parse_training_args([]))
    assert g.compute == Compute(torch.device('cpu'), 'fp32') and not g.procs.distributed
    sums, fake_ab = g.evaluate(g.G.eval(), fixed_batch(4))
    assert fake_ab.shape == (4, 2, 32, 32) and sums[-1].item() == 4
    assert g.step(fixed_batch(4), 1).shape == (len(gan_module.STAT_NAMES),)


def test_no_default_argument_is_an_object_built_at_import():
    import inspect
    for module in (gan_module,):
        for _, obj in inspect.getmembers(module, inspect.isclass):
            for _, fn in inspect.getmembers(obj, inspect.isfunction):
                for p in inspect.signature(fn).parameters.values():
                    assert p.default is inspect.Parameter.empty or isinstance(p.default, (int, float, str, bool, type(None), tuple)), \
                        f'{obj.__name__}.{fn.__name__}({p.name}={p.default!r})'


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
    ours = gan_module.DenseViewAdam(dense, lr=1e-2, betas=(0.5, 0.999), fused=True)
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
    assert clones_under_the_kernel(lambda w: gan_module.DenseViewAdam(w, fused=True)) == 0


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
    ours = gan_module.DenseViewAdam(resumed, lr=1e-2, betas=(0.5, 0.999), fused=True)
    ours.load_state_dict(copy.deepcopy(torch_adam.state_dict()))
    adam_steps(reference, torch_adam, 2, seed=11), adam_steps(resumed, ours, 2, seed=11)
    for a, b in zip(reference, resumed):
        assert torch.equal(a, b)


def trained_state(gan, batches):
    torch.manual_seed(5)  # the dropout masks
    sums = torch.stack([gan.step(lab.contiguous(memory_format=gan.memory_format), i + 1)
                        for i, lab in enumerate(batches)])
    state = everything(gan)
    state.pop('scaler')
    return sums, state


@pytest.mark.parametrize('precision', cpu_precisions())
@pytest.mark.parametrize('flags', [[], ['--disc_norm', 'instance'], ['--image_size', '64', '--dataset', 'folder']],
                         ids=['batch-norm D', 'instance-norm D', '64 px networks'])
def test_scoring_the_fake_batch_once_trains_the_reference_three_pass_step_bit_for_bit(flags, precision):
    """D's second pass on the fake batch recomputed what its first had: leaving it out changes
    no weight, statistic, batch count, optimizer moment, average or loss, in fp32 and in bf16."""
    args = parse_training_args(['--batch_size', '4', '--autotune', 'off', *flags])
    size = args.image_size
    batches = [torch.nn.functional.interpolate(lab_batch(4, seed=s), size=(size, size)) for s in (1, 2, 3)]
    results = []
    for once in (False, True):
        gan = ColorizationGAN(args, Compute(torch.device('cpu'), precision))
        assert gan.scores_fake_once
        gan.scores_fake_once = once
        passes = []
        gan.D.register_forward_hook(lambda *_, passes=passes: passes.append(1))
        results.append(trained_state(gan, batches) + (len(passes),))
    (sums_3, state_3, passes_3), (sums_1, state_1, passes_1) = results
    assert (passes_3, passes_1) == (9, 6)
    assert torch.equal(sums_3, sums_1)
    assert_unchanged(state_3, state_1)


def test_a_spectral_norm_discriminator_keeps_its_three_passes():
    """Its power iteration advances at every pass, so its second score of the fake batch differs."""
    gan = ColorizationGAN(parse_training_args(['--disc_norm', 'spectral', '--batch_size', '4']))
    passes = []
    gan.D.register_forward_hook(lambda *_: passes.append(1))
    gan.step(fixed_batch(4).contiguous(memory_format=gan.memory_format), 1)
    assert not gan.scores_fake_once and len(passes) == 3


@pytest.mark.parametrize('disc_norm', ['batch', 'instance', 'spectral'])
@pytest.mark.parametrize('precision', cpu_precisions())
def test_every_discriminator_norm_trains_with_every_layer_in_its_matrix_product_form(disc_norm, precision):
    """Also where an activation follows a matrix-product layer directly (the spectral recipe's
    D.down4): the activations that run in place must not touch a custom function's output."""
    from core import convolutions
    gan = ColorizationGAN(parse_training_args(['--disc_norm', disc_norm, '--batch_size', '4']),
                          Compute(torch.device('cpu'), precision))
    dtype = torch.bfloat16 if precision == 'bf16' else torch.float32
    for model in (gan.G, gan.G_ema, gan.D):
        convolutions.set_forms(model, {name: 'matmul' for name in convolutions.two_form_layers(model)}, dtype)
    before = [p.detach().clone() for p in gan.D.parameters()]
    sums = gan.step(fixed_batch(4).contiguous(memory_format=gan.memory_format), 1)
    assert torch.isfinite(sums).all()
    assert any(not torch.equal(a, b) for a, b in zip(before, gan.D.parameters()))


def test_moments_saved_with_channels_last_load_into_contiguous_weights_under_torchs_adam():
    """The CUDA path's optimizer (torch's own Adam, fused) meeting a checkpoint of a CPU run,
    whose weights and moments were channels-last: the moments take the weights' layout."""
    lab = fixed_batch(4)
    cpu_run = ColorizationGAN(parse_training_args(['--channels_last', 'on']))
    cpu_run.step(lab.contiguous(memory_format=torch.channels_last), 1)
    saved = cpu_run.opt_g.state_dict()
    assert any(v.dim() == 4 and not v.is_contiguous() for s in saved['state'].values() for v in s.values())
    gpu_like = contiguous_gan()
    opt = gan_module.LaidOutAdam(gpu_like.G.parameters(), lr=1e-4, betas=(0.5, 0.999), fused=True)
    opt.load_state_dict(saved)
    for p in gpu_like.G.parameters():
        for key in ('exp_avg', 'exp_avg_sq'):
            assert opt.state[p][key].stride() == p.stride(), key
    for (i, s), p in zip(saved['state'].items(), gpu_like.G.parameters()):
        assert torch.equal(opt.state[p]['exp_avg'], s['exp_avg'])  # the same numbers, laid out anew
    for p in gpu_like.G.parameters():
        p.grad = torch.ones_like(p)
    opt.step()  # and the fused kernel takes them
