"""Every loss of the GAN, each returning its named terms: the generator's (adversarial, L1 or a
distribution head's cross-entropy, the class context's cross-entropy) and the discriminator's.

The adversarial losses: the reference's binary cross-entropy on logits (with one-sided label
smoothing for D's real label), or BigColor's hinge (`--adv_loss hinge`). The reconstruction: the
mean |ab error|, weighted per pixel under `--rebalance` (remedies.RebalanceWeights); for a
colour-distribution head (`--ab_head classify|both`), Zhang et al.'s cross-entropy against
soft-encoded targets over the head's bins (ab_classes.AbClasses), rebalanced where the bins carry
weights. Every loss is computed in float32 whatever the autocast.
"""
import dataclasses

import torch
import torch.nn.functional as F


def reported(name):
    """A loss term that every step reports, summed over its batch, as `name` (log.csv's column,
    training/gan.py's STAT_NAMES): a term added with it is logged with no other change."""
    return dataclasses.field(metadata={'reported': name})


@dataclasses.dataclass
class GeneratorLoss:
    """`adversarial`: the adversarial term; `l1`: the plain mean |ab error| of the decoded ab (what
    is reported, whatever the reconstruction term); `total`: what the generator steps on."""
    adversarial: torch.Tensor = reported('g_adv')
    l1: torch.Tensor = reported('g_l1')
    total: torch.Tensor = reported('g_loss')


@dataclasses.dataclass
class DiscriminatorLoss:
    """`total`: what the discriminator steps on; its scores (logits) of the real and fake batches,
    for its accuracy."""
    total: torch.Tensor = reported('d_loss')
    real_scores: torch.Tensor
    fake_scores: torch.Tensor


LOSS_CLASSES = (GeneratorLoss, DiscriminatorLoss)
# The reported terms' names, in the order reported_terms gives them.
REPORTED = tuple(field.metadata['reported'] for cls in LOSS_CLASSES for field in dataclasses.fields(cls)
                 if 'reported' in field.metadata)


def reported_terms(*losses):
    """The reported terms of a GeneratorLoss and a DiscriminatorLoss, in REPORTED's order."""
    return [getattr(terms, field.name) for terms in losses for field in dataclasses.fields(terms)
            if 'reported' in field.metadata]


# ---------------------------------------------------------------- adversarial

def bce(logits, target):
    """Binary cross-entropy of `logits` against the constant label `target`."""
    return F.binary_cross_entropy_with_logits(logits.float(), torch.full_like(logits, target, dtype=torch.float32))


def hinge_d_loss(real_logits, fake_logits):
    """BigColor's discriminator hinge loss: mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))."""
    return F.relu(1.0 - real_logits.float()).mean() + F.relu(1.0 + fake_logits.float()).mean()


def hinge_g_loss(fake_logits):
    """The generator's side of the hinge loss: -mean(D(fake))."""
    return -fake_logits.float().mean()


def generator_adversarial(fake_scores, adv_loss):
    return hinge_g_loss(fake_scores) if adv_loss == 'hinge' else bce(fake_scores, 1.0)


def discriminator_loss(real_scores, fake_scores, adv_loss, smoothing):
    """D's loss on its scores of a real and a fake batch: BCE(real, smoothing) + BCE(fake, 0), or
    the hinge (where smoothing does not apply)."""
    if adv_loss == 'hinge':
        total = hinge_d_loss(real_scores, fake_scores)
    else:
        total = bce(real_scores, smoothing) + bce(fake_scores, 0.0)
    return DiscriminatorLoss(total, real_scores, fake_scores)


# ---------------------------------------------------------------- reconstruction

def ab_cross_entropy(ab_classes, logits, ab):
    """The mean over pixels of -sum_q target_q log softmax(logits)_q, the targets soft-encoded over
    the nearest bins of `ab_classes` (an ab_classes.AbClasses), each pixel weighted by its nearest
    bin's rebalancing weight where the bins carry weights; computed on the bins that hold the
    target, as logsumexp(logits) - sum_k w_k logits[bin_k]."""
    bins, weights = ab_classes.nearest_bins(ab)
    flat = logits.float().permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
    per_pixel = torch.logsumexp(flat, dim=1) - (weights * flat.gather(1, bins)).sum(dim=1)
    if ab_classes.weights is not None:
        per_pixel = per_pixel * ab_classes.weights[bins[:, 0]]
    return per_pixel.mean()


def class_cross_entropy(class_logits, classes):
    """The class context's loss: cross-entropy of its class logits, images without a class (-1) left out."""
    return F.cross_entropy(class_logits.float(), classes, ignore_index=-1)


def generator_loss(ab, fake_ab, fake_scores, config, head=None, classes=None, ab_classes=None, pixel_weights=None,
                   class_weight=0.0):
    """The generator's loss for true ab `ab`, its prediction `fake_ab` and D's scores of it, under
    TrainConfig `config`: (1 - l1_weight) * adversarial + l1_weight * reconstruction, where the
    reconstruction is the L1 (weighted per pixel by `pixel_weights(ab)` where given), or a
    distribution head's cross-entropy over `ab_classes` (plus its regression's L1). `head`: (its
    logits, its regression, the class logits), each None where the generator lacks it; with the
    class logits and `classes`, plus `class_weight` times their cross-entropy."""
    adversarial = generator_adversarial(fake_scores, config.adv_loss)
    errors = (ab - fake_ab.float()).abs()
    l1 = errors.mean()
    logits, regressed, class_logits = head if head is not None else (None, None, None)
    if logits is not None:
        reconstruction = ab_cross_entropy(ab_classes, logits, ab)
        if regressed is not None:
            reconstruction = reconstruction + (ab - regressed.float()).abs().mean()
    else:
        reconstruction = l1 if pixel_weights is None else (errors * pixel_weights(ab)).mean()
    total = (1 - config.l1_weight) * adversarial + config.l1_weight * reconstruction
    if class_logits is not None and classes is not None:
        total = total + class_weight * class_cross_entropy(class_logits, classes)
    return GeneratorLoss(adversarial, l1, total)
