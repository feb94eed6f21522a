"""The losses (training/loss.py): each against a hand computation, and the generator's total as
the paper writes it, (1 - l1_weight) * adversarial + l1_weight * reconstruction."""
import numpy as np
import pytest
import torch

from dataset import LabImages
from training import loss
from training.ab_classes import AbClasses
from training.config import TrainConfig


def test_hinge_losses_against_a_hand_computation():
    real = torch.tensor([[2.0], [0.5], [-1.0]])
    fake = torch.tensor([[-2.0], [0.0], [1.5]])
    # D: mean(relu(1 - real)) = (0 + 0.5 + 2) / 3; mean(relu(1 + fake)) = (0 + 1 + 2.5) / 3
    assert loss.hinge_d_loss(real, fake).item() == pytest.approx(2.5 / 3 + 3.5 / 3)
    assert loss.hinge_g_loss(fake).item() == pytest.approx(0.5 / 3)  # -mean(-2, 0, 1.5)
    d = loss.discriminator_loss(real, fake, 'hinge', smoothing=0.9)
    assert d.total.item() == pytest.approx(6 / 3)  # no smoothing under hinge
    assert d.real_scores is real and d.fake_scores is fake
    g = loss.generator_loss(torch.zeros(3, 2, 1, 1), torch.zeros(3, 2, 1, 1), fake, TrainConfig(adv_loss='hinge'))
    assert g.adversarial.item() == pytest.approx(0.5 / 3)


def test_the_bce_losses_use_the_smoothed_real_label_for_d_and_one_for_g():
    real, fake = torch.tensor([[1.0], [-0.5]]), torch.tensor([[0.25], [-2.0]])

    def by_hand(logits, label):
        p = torch.sigmoid(logits.double())
        return float(-(label * torch.log(p) + (1 - label) * torch.log(1 - p)).mean())
    d = loss.discriminator_loss(real, fake, 'bce', smoothing=0.9)
    assert d.total.item() == pytest.approx(by_hand(real, 0.9) + by_hand(fake, 0.0), rel=1e-6)
    ab, fake_ab = torch.full((2, 2, 4, 4), 0.5), torch.zeros(2, 2, 4, 4)
    g = loss.generator_loss(ab, fake_ab, fake, TrainConfig(l1_weight=0.99))
    assert g.adversarial.item() == pytest.approx(by_hand(fake, 1.0), rel=1e-6)
    assert g.l1.item() == pytest.approx(0.5)
    assert g.total.item() == pytest.approx(0.01 * by_hand(fake, 1.0) + 0.99 * 0.5, rel=1e-6)


def test_pixel_weights_weigh_the_total_but_the_reported_l1_stays_plain():
    ab, fake_ab, scores = torch.full((2, 2, 4, 4), 0.5), torch.zeros(2, 2, 4, 4), torch.zeros(2, 1)
    plain = loss.generator_loss(ab, fake_ab, scores, TrainConfig())
    weighted = loss.generator_loss(ab, fake_ab, scores, TrainConfig(), pixel_weights=lambda ab: torch.full_like(ab, 3.0))
    assert weighted.l1 == plain.l1 and weighted.adversarial == plain.adversarial
    assert weighted.total.item() == pytest.approx(0.01 * plain.adversarial.item() + 0.99 * 3 * 0.5)


def test_the_ab_cross_entropy_is_the_soft_targets_against_the_log_softmax_weighted_by_the_nearest_bin():
    images = LabImages(np.random.default_rng(5).integers(0, 256, (64, 8, 8, 3), dtype=np.uint8), np.zeros(64))
    classes = AbClasses.from_training_set(images)
    ab = images.lab[:2].permute(0, 3, 1, 2)[:, 1:]
    logits = torch.randn(2, len(classes), 8, 8)
    targets = classes.soft_targets(ab)
    by_hand = -(targets * torch.log_softmax(logits, dim=1)).sum(dim=1)
    assert loss.ab_cross_entropy(classes, logits, ab).item() == pytest.approx(by_hand.mean().item(), rel=1e-5)
    weighted = AbClasses(classes.ab_prior, lam=0.5)
    w = weighted.weights[targets.argmax(dim=1)]
    assert loss.ab_cross_entropy(weighted, logits, ab).item() == pytest.approx((by_hand * w).mean().item(), rel=1e-5)
    # a distribution head's reconstruction term is the cross-entropy (plus its regression's L1), not the L1
    g = loss.generator_loss(ab, torch.zeros_like(ab), torch.zeros(2, 1), TrainConfig(l1_weight=1.0),
                            head=(logits, None, None), ab_classes=classes)
    assert g.total.item() == pytest.approx(by_hand.mean().item(), rel=1e-5)
    assert g.l1.item() == pytest.approx(ab.abs().mean().item())


def test_the_class_loss_is_its_weight_times_the_cross_entropy_of_the_labelled_images():
    class_logits, classes = torch.randn(4, 10), torch.tensor([3, -1, 0, 9])
    ab, scores = torch.zeros(4, 2, 2, 2), torch.zeros(4, 1)
    without = loss.generator_loss(ab, ab, scores, TrainConfig())
    with_classes = loss.generator_loss(ab, ab, scores, TrainConfig(), head=(None, None, class_logits),
                                       classes=classes, class_weight=0.5)
    labelled = classes >= 0
    by_hand = -torch.log_softmax(class_logits[labelled], 1)[torch.arange(3), classes[labelled]].mean()
    assert (with_classes.total - without.total).item() == pytest.approx(0.5 * by_hand.item(), rel=1e-5)
