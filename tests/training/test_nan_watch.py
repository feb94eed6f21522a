"""The NaN policy's watch (training/nan_watch.py): a skipped step leaves everything as it was, a
stopped one is reported with its step, on the device or on the host."""
import pytest
import torch

from conftest import assert_unchanged, everything_a_step_changes, lab_batch
from training import loss
from training.gan import ColorizationGAN
from training.nan_watch import NonFiniteLoss
from training.options import configs_from_args, parse_training_args


def fixed_batch(n=16):
    return lab_batch(n, seed=5)


def contiguous_gan(*flags):
    return ColorizationGAN(*configs_from_args(parse_training_args(['--channels_last', 'off', *flags])))


class FakeGPUTensor(torch.Tensor):
    """A CPU tensor that says it lives on a GPU: the NaN check must not depend on where a loss is."""

    @property
    def device(self):
        return torch.device('cuda', 0)


def poison(monkeypatch, poisoned):
    """Make the named network's loss NaN, found only after the generator's backward pass; returns
    a function that undoes it."""
    bce = loss.bce
    target = 1.0 if poisoned == 'generator' else 0.0
    monkeypatch.setattr(loss, 'bce', lambda logits, t: bce(logits, t) * (float('nan') if t == target else 1.0))
    return lambda: monkeypatch.setattr(loss, 'bce', bce)


@pytest.mark.parametrize('poisoned', ['generator', 'discriminator'])
@pytest.mark.parametrize('disc_norm', ['batch', 'spectral'])
@pytest.mark.parametrize('where', ['device', 'host'])
def test_a_skipped_step_leaves_networks_optimizers_scaler_and_average_as_they_were(where, poisoned, disc_norm,
                                                                                   monkeypatch):
    args = parse_training_args(['--nan_policy', 'skip', '--disc_norm', disc_norm, '--channels_last', 'off'])
    g = ColorizationGAN(*configs_from_args(args))
    assert g.nan_watch.on_device  # the fused optimizers take the skip on the device
    g.nan_watch.on_device = where == 'device'  # 'host': as with a gradient scaler or unfused optimizers
    lab = fixed_batch(4)
    g.step(lab, 1)  # optimizer states exist from here on
    before = everything_a_step_changes(g)
    undo = poison(monkeypatch, poisoned)
    if where == 'host':
        with pytest.raises(NonFiniteLoss, match=f'the {poisoned} loss is nan'):
            g.step(lab, 2)
    else:
        sums = g.step(lab, 2)  # no exception, no read-back: the step is skipped on the device
        assert torch.equal(sums, torch.zeros_like(sums))  # nothing of it reaches the epoch's sums
        assert g.nan_watch.take_report() == (1, None)
    assert_unchanged(before, everything_a_step_changes(g))
    undo()
    g.step(lab, 2)  # and training goes on from there
    assert not torch.equal(before['G.down1.model.0.weight'], g.G.state_dict()['down1.model.0.weight'])
    assert g.nan_watch.take_report() == (0, None)


def test_a_skipped_first_step_leaves_the_optimizers_as_new(monkeypatch):
    """The fused kernels' found_inf also holds where the moments are created by the step itself."""
    g, fresh = contiguous_gan('--nan_policy', 'skip'), contiguous_gan('--nan_policy', 'skip')
    undo = poison(monkeypatch, 'generator')
    g.step(fixed_batch(4), 1)
    undo()
    assert g.nan_watch.take_report() == (1, None)
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
    skipped, error = g.nan_watch.take_report()
    assert skipped == 0 and isinstance(error, NonFiniteLoss) and error.step == 2
    assert 'the discriminator loss is nan' in str(error)
    assert g.nan_watch.take_report() == (0, None)  # read and cleared


def test_under_the_stop_policy_on_the_device_the_non_finite_step_and_the_next_are_applied_until_read_back(
        monkeypatch):
    """What gan.step's docstring says of --nan_policy stop with the fused optimizers: no sync in
    the step, so nothing holds it back; the caller stops at the read-back."""
    g = contiguous_gan()
    assert g.nan_watch.on_device
    lab = fixed_batch(4)
    g.step(lab, 1)
    before = everything_a_step_changes(g)
    undo = poison(monkeypatch, 'discriminator')
    g.step(lab, 2)  # no exception
    undo()
    assert all(not torch.isfinite(p).all() for p in g.D.parameters())  # the NaN gradients' update applied
    assert all(torch.isfinite(p).all() for p in g.G.parameters())  # the generator's loss was finite: a normal step
    assert not torch.equal(before['G.down1.model.0.weight'], g.G.state_dict()['down1.model.0.weight'])
    assert all(state['step'] == 2 for state in g.opt_d.state.values())
    g.step(lab, 3)  # and the next step too
    assert all(state['step'] == 3 for state in g.opt_d.state.values())
    skipped, error = g.nan_watch.take_report()
    assert skipped == 0 and error.step == 2


def test_a_non_finite_loss_is_caught_whatever_device_it_is_on():
    g = ColorizationGAN(*configs_from_args(parse_training_args(['--channels_last', 'off'])))
    g.nan_watch.on_device = False  # the check that reads the losses back, as with a gradient scaler
    nan_on_gpu = torch.Tensor._make_subclass(FakeGPUTensor, torch.tensor(float('nan')))
    assert nan_on_gpu.device.type == 'cuda'
    with pytest.raises(NonFiniteLoss, match='generator loss is nan'):
        g.nan_watch.check(nan_on_gpu, torch.tensor(0.5), 1, None)
    g.nan_watch.check(torch.tensor(0.5), torch.tensor(0.5), 1, None)  # finite: no complaint
