"""The start-up measurement that picks each layer's form (convolutions.choose_forms)."""
import copy

import pytest
import torch

from core import convolutions
from models import Discriminator, Generator


def fake_timer(fast):
    """A stand-in for the timer: the matrix-product form takes 1 s in the layers listed in `fast`
    (by kind and channels), 2 s elsewhere; the library's always 1.5 s."""
    def time_forward_backward(layer, x, grad, autocast):
        key = (type(layer).__name__, layer.in_channels, layer.out_channels)
        return {'library': 1.5, 'matmul': 1.0 if key in fast else 2.0}[layer.form_for(x)]
    return time_forward_backward


def test_each_layer_takes_the_form_timed_faster(monkeypatch):
    torch.manual_seed(0)
    G = Generator()
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
    model = model_class().to(memory_format=torch.channels_last)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sample = torch.randn(4, channels, 32, 32).contiguous(memory_format=torch.channels_last)
    rng = torch.get_rng_state()
    chosen = convolutions.choose_forms(model, sample)
    assert chosen and all(form in convolutions.FORMS and t_lib > 0 and t_mm > 0 for form, t_lib, t_mm in chosen.values())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training and all(p.grad is None for p in model.parameters())


def test_set_forms_refuses_unknown_layers_and_forms():
    G = Generator()
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
    G = Generator()
    kept = G.down4.register_forward_pre_hook(lambda m, args: None)  # the user's own hook stays
    chosen = convolutions.choose_forms(G, torch.randn(2, 1, 32, 32))
    assert set(chosen) == set(convolutions.two_form_layers(G))
    assert [len(m._forward_pre_hooks) for m in G.modules() if m._forward_pre_hooks] == [1]
    kept.remove()
