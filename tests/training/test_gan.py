"""The GAN under training (training/gan.py): its step, its losses, its schedule; docs/usage.md's
example of it built from Python."""
import os
import re

import numpy as np
import pytest
import torch

from training import gan as gan_module
from core.cli import Compute
from conftest import ROOT, assert_unchanged, cpu_precisions, everything_a_step_changes, lab_batch
from training.gan import ColorizationGAN, learning_rate, summarize
from training.options import configs_from_args, parse_training_args


def fixed_batch(n=16):
    return lab_batch(n, seed=5)


def contiguous_gan(*flags):
    """A GAN of these flags on the CPU in fp32, its networks in the contiguous memory format
    (seeded by --seed, 0 by default, as train.py builds it)."""
    return ColorizationGAN(*configs_from_args(parse_training_args(['--channels_last', 'off', *flags])))


@pytest.mark.parametrize('disc_norm', ['batch', 'spectral'])
def test_a_few_steps_on_a_fixed_batch_lower_the_l1_loss(disc_norm):
    gan = contiguous_gan('--disc_norm', disc_norm)
    lab = fixed_batch(8)
    l1 = [gan.step(lab, step)[1].item() / len(lab) for step in range(1, 11)]
    assert sum(l1[-3:]) < 0.6 * sum(l1[:3])


@pytest.mark.parametrize('disc_norm', ['batch', 'spectral'])  # one pass for both losses, or backward_G's own
def test_the_generator_step_computes_no_gradients_for_the_discriminator(disc_norm):
    gan = contiguous_gan('--disc_norm', disc_norm)
    assert gan.scores_fake_once == (disc_norm == 'batch')
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
            g.nan_watch.take_report()
            assert reads  # the counter does count


def test_the_gan_runs_with_its_defaults_alone():
    """No autocast, device or process group to pass: the defaults are a CPU in fp32, one process."""
    g = ColorizationGAN(*configs_from_args(parse_training_args([])))
    assert g.compute == Compute(torch.device('cpu'), 'fp32') and not g.procs.distributed
    sums, fake_ab = g.evaluate(g.G.eval(), fixed_batch(4))
    assert fake_ab.shape == (4, 2, 32, 32) and sums[-1].item() == 4
    assert g.step(fixed_batch(4), 1).shape == (len(gan_module.STAT_NAMES),)


def test_no_default_argument_is_an_object_built_at_import():
    import inspect
    from training import config, loss
    for module in (gan_module, loss, config):
        for _, obj in inspect.getmembers(module, inspect.isclass):
            for _, fn in inspect.getmembers(obj, inspect.isfunction):
                for p in inspect.signature(fn).parameters.values():
                    assert p.default is inspect.Parameter.empty or isinstance(p.default, (int, float, str, bool, type(None), tuple)), \
                        f'{obj.__name__}.{fn.__name__}({p.name}={p.default!r})'


def trained_state(gan, batches):
    torch.manual_seed(5)  # the dropout masks
    sums = torch.stack([gan.step(lab.contiguous(memory_format=gan.memory_format), i + 1)
                        for i, lab in enumerate(batches)])
    state = everything_a_step_changes(gan)
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
        gan = ColorizationGAN(*configs_from_args(args), Compute(torch.device('cpu'), precision))
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
    gan = ColorizationGAN(*configs_from_args(parse_training_args(['--disc_norm', 'spectral', '--batch_size', '4'])))
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
    gan = ColorizationGAN(*configs_from_args(parse_training_args(['--disc_norm', disc_norm, '--batch_size', '4'])),
                          Compute(torch.device('cpu'), precision))
    dtype = torch.bfloat16 if precision == 'bf16' else torch.float32
    for model in (gan.G, gan.G_ema, gan.D):
        convolutions.set_forms(model, {name: 'matmul' for name in convolutions.two_form_layers(model)}, dtype)
    before = [p.detach().clone() for p in gan.D.parameters()]
    sums = gan.step(fixed_batch(4).contiguous(memory_format=gan.memory_format), 1)
    assert torch.isfinite(sums).all()
    assert any(not torch.equal(a, b) for a, b in zip(before, gan.D.parameters()))


def test_the_class_loss_adds_its_weight_times_the_cross_entropy_of_the_labelled_images():
    gan = ColorizationGAN(*configs_from_args(parse_training_args(['--channels_last', 'off', '--class_loss', '0.25'])),
                          n_classes=10)
    plain = contiguous_gan()
    lab, classes = fixed_batch(8), torch.tensor([0, 3, 9, -1, 2, 2, 5, 7])
    gan.G.eval(), plain.G.eval()
    with torch.no_grad():
        ab, _, _, class_logits = gan.G(lab[:, :1], with_logits=True)
        scores = gan.D(torch.cat([lab[:, :1], ab], 1))
        with_classes = gan.generator_loss(lab[:, 1:], ab, scores, (None, None, class_logits), classes)
        without = plain.generator_loss(lab[:, 1:], ab, scores)
    # the image without a class (-1) is left out of the mean
    labelled = classes >= 0
    by_hand = -torch.log_softmax(class_logits[labelled], 1)[torch.arange(7), classes[labelled]].mean()
    assert with_classes.adversarial == without.adversarial and with_classes.l1 == without.l1
    assert (with_classes.total - without.total).item() == pytest.approx(0.25 * by_hand.item(), rel=1e-5)
    # and steps with the labels train the class prediction towards them (a heavier weight, to see it in 15
    # steps; measured in training mode, as the batch statistics of so few steps are not yet the running ones)
    gan = ColorizationGAN(*configs_from_args(parse_training_args(['--channels_last', 'off', '--class_loss', '5'])),
                          n_classes=10)
    losses = []
    for step in range(1, 16):
        gan.step(lab, step, classes=classes)
        with torch.no_grad():
            losses.append(torch.nn.functional.cross_entropy(gan.G(lab[:, :1], with_logits=True)[3], classes,
                                                            ignore_index=-1).item())
    assert losses[-1] < 0.25 * losses[0]


def test_the_networks_are_built_with_their_candidate_layers_two_form_and_the_average_too():
    from core.convolutions import two_form_layers
    gan = ColorizationGAN(*configs_from_args(parse_training_args(['--disc_norm', 'spectral'])))
    products = ['down4.model.0', 'down5.model.0', 'up1.model.0', 'up2.model.0']
    assert sorted(two_form_layers(gan.G)) == products and sorted(two_form_layers(gan.G_ema)) == products
    assert sorted(two_form_layers(gan.D)) == ['down4.model.0']


def usage_example():
    """The Python block of docs/usage.md's "From Python" section, as written there."""
    text = open(os.path.join(ROOT, 'docs', 'usage.md')).read()
    section = text[text.index('\n## From Python\n'):]
    return re.search(r'```python\n(.*?)```', section, re.S).group(1)


def test_the_usage_example_builds_the_gan_from_configs_and_steps(capsys):
    """docs/usage.md's example runs as written (so it cannot rot) and trains: the generator's
    weights move, and the losses it prints are finite."""
    namespace = {}
    exec(compile(usage_example(), 'docs/usage.md', 'exec'), namespace)
    gan = namespace['gan']
    assert gan.model_config.disc_norm == 'spectral' and not gan.scores_fake_once
    untrained = ColorizationGAN(namespace['model_config'], namespace['train_config'])
    assert not all(torch.equal(a, b) for a, b in zip(gan.G.parameters(), untrained.G.parameters()))
    printed = capsys.readouterr().out
    assert "'g_l1'" in printed and 'nan' not in printed


def test_the_gan_refuses_a_config_it_cannot_honour_and_enhances_its_targets_itself():
    """A head without its bins, or rebalancing without the L1's pixel weights, is refused in words
    that say what to pass; color_enhance is applied by the step: a step on the true batch with
    color_enhance 1.2 is the step on the enhanced batch without it."""
    from models import ModelConfig
    from training.config import TrainConfig
    from training.remedies import enhance_colors
    with pytest.raises(ValueError, match='ab_classes'):
        ColorizationGAN(ModelConfig(ab_head='classify'), TrainConfig())
    gan = ColorizationGAN(ModelConfig(), TrainConfig(rebalance=0.5, channels_last='off'))
    with pytest.raises(ValueError, match='pixel_weights'):
        gan.step(lab_batch(4), 1)
    lab = lab_batch(4, seed=7)
    # each built (seeding its weights and the dropout masks after) and stepped in turn
    enhanced = ColorizationGAN(ModelConfig(), TrainConfig(color_enhance=1.2, channels_last='off'))
    enhanced.step(lab, 1)
    by_hand = ColorizationGAN(ModelConfig(), TrainConfig(channels_last='off'))
    by_hand.step(enhance_colors(lab, 1.2), 1)
    assert all(torch.equal(a, b) for a, b in zip(enhanced.G.parameters(), by_hand.G.parameters()))
    plain = ColorizationGAN(ModelConfig(), TrainConfig(channels_last='off'))
    plain.step(lab, 1)
    assert not all(torch.equal(a, b) for a, b in zip(plain.G.parameters(), by_hand.G.parameters()))
