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


# ---- Nazeri et al.'s larger networks (64, 128, 256) and the factory --------------------------

from models import (IMAGE_SIZES, NazeriGenerator, PatchDiscriminator, SameConv2d, build_discriminator,
                    build_generator, network_family)

# Their encoders, written out from the layer tables rather than from models.py's rule.
NAZERI_ENCODERS = {
    64: [64, 64, 128, 256, 512, 512],
    128: [64, 64, 128, 256, 512, 512, 512],
    256: [64, 64, 128, 256, 512, 512, 512, 512],
}


def nazeri_generator_parameters(encoder, batch_norm=True):
    """Parameters of a 4x4 U-Net with biased convs: each encoder layer maps the previous width
    (1 at the input) to its own; each decoder layer the previous width (doubled by the concat,
    except at the bottom) to the width of the encoder layer it is concatenated with; 1x1 conv to 2."""
    def conv(c_in, c_out):
        return 16 * c_in * c_out + c_out + (2 * c_out if batch_norm else 0)
    total = sum(conv(c_in, c_out) for c_in, c_out in zip([1] + encoder[:-1], encoder))
    c_in = encoder[-1]
    for c_out in reversed(encoder[:-1]):
        total += conv(c_in, c_out)
        c_in = 2 * c_out
    return total + c_in * 2 + 2


def test_nazeri_parameter_counts():
    assert nazeri_generator_parameters(NAZERI_ENCODERS[256]) == 42_023_682  # the formula, checked once
    for size, encoder in NAZERI_ENCODERS.items():
        assert count(NazeriGenerator(size, 'batch')) == nazeri_generator_parameters(encoder)
        assert count(NazeriGenerator(size, 'instance')) == nazeri_generator_parameters(encoder, batch_norm=False)
    assert count(NazeriGenerator(256, 'batch')) == 42_023_682
    assert count(PatchDiscriminator('batch')) == 2_766_529
    assert count(PatchDiscriminator('instance')) == 2_766_529 - BN_PARAMS_DISC
    assert count(PatchDiscriminator('spectral')) == 2_766_529 - BN_PARAMS_DISC


def test_nazeri_256_generator_follows_the_layer_table():
    state = NazeriGenerator(256).state_dict()
    table = {  # block: (in, out) channels; weights are (out, in, 4, 4), transposed ones (in, out, 4, 4)
        'e1': (1, 64), 'e2': (64, 64), 'e3': (64, 128), 'e4': (128, 256), 'e5': (256, 512), 'e6': (512, 512),
        'e7': (512, 512), 'e8': (512, 512), 'd1': (512, 512), 'd2': (1024, 512), 'd3': (1024, 512),
        'd4': (1024, 256), 'd5': (512, 128), 'd6': (256, 64), 'd7': (128, 64)}
    for block, (c_in, c_out) in table.items():
        shape = (c_out, c_in, 4, 4) if block[0] == 'e' else (c_in, c_out, 4, 4)
        assert state[f'{block}.model.0.weight'].shape == shape
        assert state[f'{block}.model.0.bias'].shape == (c_out,)
        for key in ['weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked']:
            assert f'{block}.model.1.{key}' in state
    assert state['final.model.0.weight'].shape == (2, 128, 1, 1)
    assert {k.split('.')[0] for k in state} == set(table) | {'final'}


def test_same_padding_is_one_before_two_after():
    torch.manual_seed(0)
    conv = SameConv2d(3, 5)
    x = torch.randn(2, 3, 7, 10)
    y = conv(x)
    assert y.shape == (2, 5, 7, 10)
    assert torch.allclose(y, F.conv2d(F.pad(x, (1, 2, 1, 2)), conv.weight, conv.bias), atol=1e-6)
    assert isinstance(conv, nn.Conv2d) and list(conv.state_dict()) == ['weight', 'bias']


def test_nazeri_64_generator_geometry_and_dropout():
    G = NazeriGenerator(64)
    sizes = {}
    names = [f'e{i}' for i in range(1, 7)] + [f'd{i}' for i in range(1, 6)]
    hooks = [getattr(G, name).register_forward_hook(lambda m, i, o, name=name: sizes.__setitem__(name, tuple(o.shape[1:])))
             for name in names]
    with torch.no_grad():
        G(torch.randn(1, 1, 64, 64))
    for h in hooks:
        h.remove()
    assert sizes == {'e1': (64, 64, 64), 'e2': (64, 32, 32), 'e3': (128, 16, 16), 'e4': (256, 8, 8),
                     'e5': (512, 4, 4), 'e6': (512, 2, 2), 'd1': (512, 4, 4), 'd2': (256, 8, 8),
                     'd3': (128, 16, 16), 'd4': (64, 32, 32), 'd5': (64, 64, 64)}
    dropouts = [(name.split('.')[0], m.p) for name, m in G.named_modules() if isinstance(m, nn.Dropout)]
    assert dropouts == [('d1', 0.5), ('d2', 0.5)]
    assert [(n.split('.')[0], m.p) for n, m in NazeriGenerator(64, dropout=0.0).named_modules()
            if isinstance(m, nn.Dropout)] == [('d1', 0.0), ('d2', 0.0)]
    assert [m.p for m in NazeriGenerator(256, dropout=0.3).modules() if isinstance(m, nn.Dropout)] == [0.3, 0.3]


@pytest.mark.parametrize('norm', ['batch', 'instance'])
@pytest.mark.parametrize('size', [64, 128])
def test_nazeri_generator_maps_L_to_ab_in_range(size, norm):
    with torch.no_grad():
        ab = NazeriGenerator(size, norm)(torch.randn(2, 1, size, size) * 3)
    assert ab.shape == (2, 2, size, size)
    assert ab.abs().max() <= 1.0


def test_nazeri_256_generator_runs():
    with torch.no_grad():
        ab = NazeriGenerator(256).eval()(torch.randn(1, 1, 256, 256))
    assert ab.shape == (1, 2, 256, 256) and ab.abs().max() <= 1.0


@pytest.mark.parametrize('norm', ['batch', 'instance', 'spectral'])
def test_patch_discriminator_gives_one_logit_per_patch(norm):
    D = PatchDiscriminator(norm)
    with torch.no_grad():
        assert D(torch.randn(2, 3, 64, 64)).shape == (2, 64)
        assert D(torch.randn(1, 3, 128, 128)).shape == (1, 256)
        # raw logits: the last layer is the convolution itself
        D.eval()
        x = torch.randn(4, 3, 64, 64)
        features = D.down4(D.down3(D.down2(D.down1(x))))
        assert torch.allclose(D(x), D.final.model[0](features).flatten(1), atol=1e-5)
    assert [type(m) for m in D.down1.model] == [nn.Conv2d, nn.LeakyReLU]  # never normalized


def test_patch_discriminator_at_256():
    with torch.no_grad():
        assert PatchDiscriminator().eval()(torch.randn(1, 3, 256, 256)).shape == (1, 32 * 32)


def test_patch_discriminator_scores_see_70x70_patches():
    """The support of one central score's input gradient, with every weight a positive constant and
    eval-mode batch norm (a per-channel affine map): nothing cancels, so the support is the whole
    receptive field."""
    D = PatchDiscriminator('batch').double().eval()
    with torch.no_grad():
        for m in D.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.fill_(1.0 / m.weight[0].numel())
                m.bias.zero_()
    x = torch.ones(1, 3, 128, 128, dtype=torch.float64, requires_grad=True)
    scores = D(x)
    assert scores.shape == (1, 16 * 16)
    (grad,) = torch.autograd.grad(scores[0, 8 * 16 + 8], [x])
    support = grad[0].abs().sum(0) > 0
    rows, cols = support.any(1).nonzero().flatten(), support.any(0).nonzero().flatten()
    assert 0 < rows.min() and rows.max() < 127 and 0 < cols.min() and cols.max() < 127  # not clipped
    assert rows.max() - rows.min() + 1 == 70 and cols.max() - cols.min() + 1 == 70
    assert support.sum() == 70 * 70  # a full square


def test_nazeri_networks_are_fully_convolutional():
    assert {s: NazeriGenerator(s).size_multiple for s in (64, 128, 256)} == {64: 32, 128: 64, 256: 128}
    G = NazeriGenerator(64).eval()
    with torch.no_grad():
        assert G(torch.randn(1, 1, 96, 160)).shape == (1, 2, 96, 160)
        assert PatchDiscriminator().eval()(torch.randn(1, 3, 96, 160)).shape == (1, 12 * 20)
        with pytest.raises(ValueError, match='multiples of 32'):
            G(torch.randn(1, 1, 64, 80))


def test_nazeri_generator_dropout_zero_makes_training_mode_deterministic():
    torch.manual_seed(0)
    L = torch.rand(2, 1, 64, 64) * 2 - 1
    off, on = NazeriGenerator(64, dropout=0.0).train(), NazeriGenerator(64, dropout=0.5).train()
    on.load_state_dict(off.state_dict())  # same keys: dropout has no parameters
    with torch.no_grad():
        assert torch.equal(off(L), off(L))
        assert not torch.equal(on(L), on(L))
    with pytest.raises(ValueError):
        NazeriGenerator(64, dropout=1.0)
    with pytest.raises(ValueError):
        NazeriGenerator(64, norm='spectral')


def test_nazeri_state_dict_keys():
    G = NazeriGenerator(64).state_dict()
    assert [k for k in G if k.endswith('.weight')] == \
        [f'e{i}.model.{j}.weight' for i in range(1, 7) for j in (0, 1)] + \
        [f'd{i}.model.{j}.weight' for i in range(1, 6) for j in (0, 1)] + ['final.model.0.weight']
    D = PatchDiscriminator('batch').state_dict()
    assert D['down1.model.0.weight'].shape == (64, 3, 4, 4) and 'down1.model.1.weight' not in D
    assert D['down4.model.0.weight'].shape == (512, 256, 4, 4) and 'down4.model.1.running_var' in D
    assert D['final.model.0.weight'].shape == (1, 512, 4, 4)
    S = PatchDiscriminator('spectral').state_dict()
    assert 'down2.model.0.parametrizations.weight.original' in S and 'down2.model.1.weight' not in S


def test_weight_init_on_the_nazeri_networks():
    torch.manual_seed(0)
    G = init_weights(NazeriGenerator(64, 'batch'))
    for block in (G.e1, G.e5, G.d1):
        w = block.model[0].weight
        assert abs(w.std().item() - 0.02) < 0.002 and abs(w.mean().item()) < 0.002
    bn = G.e5.model[1]
    assert abs(bn.weight.mean().item() - 1.0) < 0.005 and torch.all(bn.bias == 0)
    D = PatchDiscriminator('spectral')
    before = D.down4.model[0].parametrizations.weight.original.clone()
    init_weights(D)
    assert torch.equal(D.down4.model[0].parametrizations.weight.original, before)
    assert abs(D.down1.model[0].weight.std().item() - 0.02) < 0.003
    assert abs(D.final.model[0].weight.std().item() - 0.02) < 0.003  # the "same"-padded conv too


def test_gradients_reach_every_parameter_of_the_nazeri_networks():
    torch.manual_seed(0)
    G, D = NazeriGenerator(64, 'batch'), PatchDiscriminator('spectral')
    L = torch.rand(2, 1, 64, 64) * 2 - 1
    scores = D(torch.cat([L, G(L)], dim=1))
    F.binary_cross_entropy_with_logits(scores, torch.ones_like(scores)).backward()
    # A conv bias right before a batch norm gets a zero gradient in exact arithmetic (the norm
    # removes it), so only rounding noise: those need a gradient, not a nonzero one.
    before_norm = {f'{name}.model.0.bias' for name, block in G.named_children()
                   if len(block.model) > 1 and isinstance(block.model[1], nn.BatchNorm2d)}
    for model in (G, D):
        for name, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            if name not in before_norm:
                assert p.grad.abs().sum() > 0, name
    assert len(before_norm) == 11


def test_factory_picks_the_network_family():
    assert IMAGE_SIZES == (32, 64, 128, 256)
    assert [network_family(s) for s in IMAGE_SIZES] == ['reference', 'nazeri', 'nazeri', 'nazeri']
    for bad in (16, 48, 512, '64'):
        with pytest.raises(ValueError):
            network_family(bad)
    G, D = build_generator(32, 'instance', 0.0), build_discriminator(32, 'spectral')
    assert type(G) is Generator and type(D) is Discriminator
    assert list(G.state_dict()) == list(Generator('instance', 0.0).state_dict())
    assert G.up1.model[3].p == 0.0 and G.fixed_size == 32 and D.fixed_size == 32
    assert list(D.state_dict()) == list(Discriminator('spectral').state_dict())
    assert type(build_generator()) is Generator and type(build_discriminator()) is Discriminator
    G, D = build_generator(128, 'batch', 0.2), build_discriminator(128, 'instance')
    assert type(G) is NazeriGenerator and G.image_size == 128 and G.size_multiple == 64 and G.fixed_size is None
    assert G.d2.model[3].p == 0.2
    assert type(D) is PatchDiscriminator and D.fixed_size is None
    assert isinstance(D.down2.model[1], nn.InstanceNorm2d)


def test_the_class_context_fuses_its_global_features_into_every_position_and_predicts_classes():
    from models import ClassContext
    torch.manual_seed(0)
    context = ClassContext(8, 10)
    x = torch.randn(3, 8, 2, 2)
    fused, logits = context(x)
    # by hand: the mean over positions through a linear layer and ReLU; the classes from that vector; each
    # position's fused features ReLU(W_x x + W_g g + b), the 1x1 convolution's weight split in two
    g = torch.relu(x.mean(dim=(2, 3)) @ context.features[0].weight.T + context.features[0].bias)
    assert torch.allclose(logits, g @ context.classes.weight.T + context.classes.bias, atol=1e-6)
    w = context.fuse.model[0].weight[:, :, 0, 0]
    by_hand = torch.relu(torch.einsum('oc,nchw->nohw', w[:, :8], x) + (g @ w[:, 8:].T)[:, :, None, None]
                         + context.fuse.model[0].bias[None, :, None, None])
    assert fused.shape == x.shape and torch.allclose(fused, by_hand, atol=1e-6)


@pytest.mark.parametrize('image_size', [32, 64])
def test_a_generator_with_a_class_context_keeps_the_reference_layers_and_their_random_weights(image_size):
    from models import build_generator
    torch.manual_seed(7)
    plain = build_generator(image_size)
    torch.manual_seed(7)
    with_context = build_generator(image_size, n_classes=10)
    plain_state, context_state = plain.state_dict(), with_context.state_dict()
    assert all(torch.equal(plain_state[k], context_state[k]) for k in plain_state)
    assert sorted(set(context_state) - set(plain_state)) == [
        'context.classes.bias', 'context.classes.weight', 'context.features.0.bias', 'context.features.0.weight',
        'context.fuse.model.0.bias', 'context.fuse.model.0.weight']
    L = torch.randn(2, 1, image_size, image_size)
    ab, logits, regressed, class_logits = with_context.eval()(L, with_logits=True)
    assert ab.shape == (2, 2, image_size, image_size) and logits is None and regressed is None
    assert class_logits.shape == (2, 10)
    assert torch.equal(with_context(L), ab)


@pytest.mark.parametrize('size', IMAGE_SIZES)
def test_every_network_is_built_of_the_librarys_convolutions(size):
    """The networks as the paper draws them: a CPU's matrix-product forms are swapped in later
    (core/convolutions.py), never built here."""
    for model in (build_generator(size), build_discriminator(size, 'batch'), build_discriminator(size, 'spectral')):
        kinds = {type(m).__name__ for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))}
        assert kinds <= {'Conv2d', 'ConvTranspose2d', 'SameConv2d', 'ParametrizedConv2d', 'ParametrizedSameConv2d'}, kinds
