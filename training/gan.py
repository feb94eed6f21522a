"""The GAN under training, as one object that owns everything a training step changes.

Both networks, the averaged generator, their Adam optimizers, the gradient scaler and the
learning-rate schedule. `step(lab)` is one training step as Nazeri et al. and the reference take
it: the generator first, on (1 - l1_weight) * BCE(D(L, G(L)), 1) + l1_weight * |ab - G(L)|, then
the discriminator, on BCE(D(real), smoothing) + BCE(D(fake), 0), on the same fake batch (the
losses are training/loss.py's). It is built from two configs, models.ModelConfig (the networks)
and training.config.TrainConfig (how they train), never from a command line. Where
D's passes change nothing but batch-norm statistics, its one pass on the fake batch serves both
losses (the reference's second pass recomputed the same scores), and the run stays the same bit
for bit. `evaluate(G, lab)` computes the same losses in eval mode, and the prediction.
"""
import contextlib
import copy
import dataclasses

import torch
from torch import nn

import models
from core.calibration import recalibrate_generator
from core.convolutions import swap_in_two_form_layers
from core.cli import Compute
from training import distributed, loss, remedies
from training.nan_watch import NanWatch
from training.optimizers import adam

# What a step reports, summed over its batch: the losses' reported terms (training/loss.py), then
# D's hits and the batch's images.
STAT_NAMES = loss.REPORTED + ('real_correct', 'fake_correct', 'images')


def learning_rate(base_lr, step, decay_rate, decay_steps):
    """Smooth exponential decay with a floor, set before every step; the step counter starts at 1."""
    return max(base_lr * decay_rate ** (step / decay_steps), 1e-6)


def ema_decay(decay, step):
    """The averaging rate at `step`: warms up as (1 + step) / (10 + step), so that a short run
    averages its last few dozen steps instead of keeping the random initialization."""
    return min(decay, (1.0 + step) / (10.0 + step))


@torch.no_grad()
def ema_update(average, model, decay):
    torch._foreach_lerp_(list(average.parameters()), [p.detach() for p in model.parameters()], 1.0 - decay)


def use_channels_last(choice, device):
    """auto: on where measured to help (CPUs, in fp32 and bf16: docs/performance.md), off elsewhere."""
    if choice != 'auto':
        return choice == 'on'
    return device.type == 'cpu'


def summarize(sums):
    """Means per image of a tensor of STAT_NAMES sums (accuracies: the share of scores right)."""
    s = dict(zip(STAT_NAMES, sums.tolist()))
    n = max(s['images'], 1)
    return {**{name: s[name] / n for name in loss.REPORTED},
            'd_acc': (s['real_correct'] + s['fake_correct']) / (2 * n), 'd_acc_real': s['real_correct'] / n,
            'd_acc_fake': s['fake_correct'] / n, 'images': int(s['images'])}


def batch_sums(lab, g, d):
    """Sums over the batch of STAT_NAMES, from the generator's and the discriminator's losses
    (loss.GeneratorLoss, loss.DiscriminatorLoss); a patch discriminator's accuracy is each
    image's share of patches right."""
    n = lab.shape[0]

    def share_right(hits):
        return hits.float().reshape(n, -1).mean(dim=1).sum()
    return torch.stack([*(term.detach() * n for term in loss.reported_terms(g, d)),
                        share_right(d.real_scores.detach() > 0), share_right(d.fake_scores.detach() <= 0),
                        # a fill, not a copy from the host, which would wait for the device
                        torch.full((), float(n), device=lab.device)])


@contextlib.contextmanager
def batch_norm_replay(model):
    """Records what each batch-norm layer of `model` is given inside the block, and yields a
    function that gives it to each layer again (no gradients): the running statistics and the
    batch count advance as a second pass of `model` on the same batch would advance them."""
    seen = []
    hooks = [m.register_forward_pre_hook(lambda m, inputs: seen.append((m, inputs[0])))
             for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    @torch.no_grad()
    def replay():
        for layer, x in seen:
            layer(x)
    try:
        yield replay
    finally:
        for h in hooks:
            h.remove()


@dataclasses.dataclass
class GeneratorPass:
    """The generator's pass on a batch and D's score of it: the predicted ab, the Lab batch D
    scored, D's scores (logits), and the generator's loss (loss.GeneratorLoss)."""
    fake_ab: torch.Tensor
    fake: torch.Tensor
    fake_scores: torch.Tensor
    loss: loss.GeneratorLoss


class ColorizationGAN:
    """`model_config`: models.ModelConfig, what builds the networks; `train_config`:
    training.config.TrainConfig, how they train; `compute`: where and in what precision it runs;
    `procs`: this process's place in a torchrun run (one process where None); `ab_classes`: the
    training images' ab bins (training/ab_classes.py), for a colour-distribution head
    (model_config.ab_head classify or both); `n_classes`: the training images' number of classes,
    for a class context (model_config.class_context)."""

    def __init__(self, model_config, train_config, compute=None, procs=None, ab_classes=None, n_classes=0):
        if model_config.class_context != bool(n_classes):
            raise ValueError(f"a class context (ModelConfig.class_context {model_config.class_context}) takes the "
                             f"training images' number of classes, n_classes (given {n_classes})")
        if (model_config.ab_head != 'regress') != (ab_classes is not None):
            raise ValueError(f"ab_head {model_config.ab_head!r} takes the training images' ab bins (ab_classes="
                             f"training.ab_classes.AbClasses.from_training_set(images)) and the regression head none "
                             f"(given {'none' if ab_classes is None else len(ab_classes)})")
        self.model_config, self.train_config = model_config, train_config
        self.compute = compute or Compute(torch.device('cpu'), 'fp32')
        self.procs = procs or distributed.Processes()
        device = self.compute.device
        self.channels_last = use_channels_last(train_config.channels_last, device)
        self.memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        torch.manual_seed(train_config.seed)
        self.ab_classes = ab_classes
        self.class_weight = train_config.class_loss if n_classes else 0.0
        m = model_config
        if ab_classes is None and not n_classes:
            self.G = models.build_generator(m.image_size, m.gen_norm, m.gen_dropout)
        else:
            self.G = models.build_generator(m.image_size, m.gen_norm, m.gen_dropout, m.ab_head,
                                            0 if ab_classes is None else len(ab_classes), n_classes)
            models.set_decoding(self.G, m.temperature, m.blend, None if ab_classes is None else ab_classes.centres)
        self.D = models.build_discriminator(m.image_size, m.disc_norm)
        swap_in_two_form_layers(self.G), swap_in_two_form_layers(self.D)  # their forms: training/layer_forms.py
        if m.apply_weight_init:
            models.init_weights(self.G), models.init_weights(self.D)
        self.G.to(device, memory_format=self.memory_format), self.D.to(device, memory_format=self.memory_format)
        scaled = self.compute.precision == 'fp16'
        self.opt_g = adam(self.G.parameters(), train_config.base_lr_gen, device, scaled)
        self.opt_d = adam(self.D.parameters(), train_config.base_lr_disc, device, scaled)
        self.G_ema = copy.deepcopy(self.G).requires_grad_(False) if train_config.ema_decay > 0 else None
        self.scaler = torch.amp.GradScaler(device.type, enabled=scaled)
        self.G_run, self.D_run = self.G, self.D  # what the step calls: DistributedDataParallel under torchrun
        # D is the same function in both losses of a step (it steps after the generator), so one
        # pass on the fake batch serves both, where its passes change nothing but batch-norm
        # statistics (a spectral norm's power iteration advances per pass) and it runs in one process.
        self.scores_fake_once = m.disc_norm != 'spectral' and not self.procs.distributed
        self.nan_watch = NanWatch(train_config.nan_policy, self.procs, (self.G, self.D), self.G_ema,
                                  (self.opt_g, self.opt_d), scaled, device)
        # --rebalance: per-pixel L1 weights (remedies.RebalanceWeights), set once the training set is known.
        self.pixel_weights = None

    # ------------------------------------------------------------ set-up

    def distribute(self):
        """Under torchrun: batch norm over the global batch, gradients averaged by DistributedDataParallel."""
        if self.procs.distributed:
            distributed.synchronize_batchnorm(self.G), distributed.synchronize_batchnorm(self.D)
            self.G_run, self.D_run = self.procs.wrap(self.G), self.procs.wrap(self.D)

    # ------------------------------------------------------------ the training step

    def scheduled_rates(self, step):
        """[(optimizer, its learning rate at step `step`)] for both networks."""
        t = self.train_config
        return [(opt, learning_rate(base, step, t.lr_decay_rate, t.lr_decay_steps))
                for opt, base in ((self.opt_g, t.base_lr_gen), (self.opt_d, t.base_lr_disc))]

    def set_learning_rates(self, step):
        for opt, lr in self.scheduled_rates(step):
            for group in opt.param_groups:
                group['lr'] = lr

    def step(self, lab, step, global_images=None, classes=None):
        """Optimizer step number `step` (counted from 1) on a Lab batch: this process's part of a
        global batch of `global_images` (`classes`: its images' class indices, for --class_loss).
        Returns the batch's sums of STAT_NAMES as one device tensor, so the caller syncs with the
        host only when it shows them. A non-finite loss (--nan_policy, training/nan_watch.py):
        where the check reads the losses back (a gradient scaler, unfused optimizers) the step
        raises NonFiniteLoss before anything is updated. Where the check stays on the device (fused
        optimizers, no scaler), under skip both networks (weights, batch-norm statistics,
        spectral-norm vectors), optimizers and averaged generator stay as they were; under stop
        the step is applied as computed (weights may turn non-finite), as are the steps after it,
        until the caller reads the watch back (train.py: every --log_steps steps, before a
        checkpoint, at the epoch's end) and stops, naming this step, with nothing after it saved."""
        if self.train_config.rebalance is not None and self.ab_classes is None and self.pixel_weights is None:
            raise ValueError("rebalance is set but the L1's pixel weights are not: set gan.pixel_weights = "
                             "training.remedies.RebalanceWeights.from_training_set(images, rebalance) first")
        if self.train_config.color_enhance != 1:  # DDColor's targets; validation keeps the truth
            lab = remedies.enhance_colors(lab, self.train_config.color_enhance)
        self.set_learning_rates(step)
        # DistributedDataParallel averages the processes' gradients; this weight makes that
        # average the gradient of the global batch's mean losses.
        share = len(lab) * self.procs.world_size / (global_images or len(lab))
        kept = self.nan_watch.snapshot()
        if self.scores_fake_once:
            g_loss, d_loss = self.backward_G_scoring_once(lab, share, classes)
        else:
            generated = self.backward_G(lab, share, classes)
            g_loss = generated.loss
            d_loss = self.discriminator_pass(self.D_run, lab, generated.fake.detach())
        finite = self.nan_watch.check(g_loss.total, d_loss.total, step, kept)
        with self.nan_watch.updates(finite):
            self.scaler.step(self.opt_g)
            self.backward_D(d_loss.total, share)
        self.scaler.update()
        if self.G_ema is not None:
            self.update_average(step)
        return self.nan_watch.settle(finite, kept, batch_sums(lab, g_loss, d_loss))

    def update_average(self, step):
        ema_update(self.G_ema, self.G, ema_decay(self.train_config.ema_decay, step))

    def backward_G(self, lab, share, classes=None):
        """The generator's pass and its loss's gradients (a GeneratorPass). D is scored outside
        DDP, with no gradients for its weights: the generator's step needs none (the reference
        computed and discarded them)."""
        self.D.requires_grad_(False)
        try:
            with self.compute.autocast:
                generated = self.generator_pass(self.G_run, self.D, lab, classes)
            self.opt_g.zero_grad(set_to_none=True)
            self.scaler.scale(generated.loss.total * share).backward()
        finally:
            self.D.requires_grad_(True)
        return generated

    def backward_G_scoring_once(self, lab, share, classes=None):
        """backward_G where D scores the fake batch once, for both losses; D's running statistics
        still advance as in the reference's three passes (fake, real, fake), by a replay. The
        generator's gradients pass through D to a detached copy of the fake batch and on into G,
        the same sums as one backward pass; D's weight gradients are left for backward_D.
        Returns (loss.GeneratorLoss, loss.DiscriminatorLoss)."""
        L, ab = lab[:, :1], lab[:, 1:]
        with self.compute.autocast:
            fake_ab, fake, head = self.fake_batch(self.G_run, L)
            fake_in = fake.detach().requires_grad_()
            with batch_norm_replay(self.D) as replay_fake_batch:
                fake_logits = self.D(fake_in)
            # In the same autocast region as the fake pass: the two share their bf16 weight casts
            # (and so how D's weight gradients add up), as the reference's D step's two passes did.
            real_logits = self.D(lab)
            replay_fake_batch()
            g_loss = self.generator_loss(ab, fake_ab, fake_logits, head, classes)
            d_loss = self.discriminator_loss(real_logits, fake_logits)
        self.opt_g.zero_grad(set_to_none=True)
        scaled = self.scaler.scale(g_loss.total * share)
        # backward(inputs=...), not autograd.grad: FlopCounterMode's module tracker takes no leaf in grad().
        torch.autograd.backward(scaled, inputs=[fake_in], retain_graph=True)
        torch.autograd.backward([scaled, fake], [None, fake_in.grad], inputs=list(self.G.parameters()))
        return g_loss, d_loss

    def backward_D(self, d_loss, share):
        self.opt_d.zero_grad(set_to_none=True)
        torch.autograd.backward(self.scaler.scale(d_loss * share), inputs=list(self.D.parameters()))
        self.scaler.step(self.opt_d)

    def fake_batch(self, G, L):
        """G's ab for lightness L, the Lab batch D scores, and what the losses of a colour-
        distribution head and a class context need besides ((its logits, its regression, the
        class logits); None for the reference's generator)."""
        if self.ab_classes is None and not self.class_weight:
            fake_ab, head = G(L), None
        else:
            fake_ab, *head = G(L, with_logits=True)
        return fake_ab, torch.cat([L, fake_ab.to(L.dtype)], dim=1), head

    def generator_pass(self, G, D, lab, classes=None):
        """G colours the batch's lightness, D scores the result: a GeneratorPass."""
        L, ab = lab[:, :1], lab[:, 1:]
        fake_ab, fake, head = self.fake_batch(G, L)
        fake_scores = D(fake)
        return GeneratorPass(fake_ab, fake, fake_scores, self.generator_loss(ab, fake_ab, fake_scores, head, classes))

    def generator_loss(self, ab, fake_ab, fake_scores, head=None, classes=None):
        """loss.generator_loss under this GAN's config, bins, pixel weights and class weight."""
        return loss.generator_loss(ab, fake_ab, fake_scores, self.train_config, head, classes, self.ab_classes,
                                   self.pixel_weights, self.class_weight)

    def discriminator_loss(self, real_scores, fake_scores):
        """loss.discriminator_loss under this GAN's config."""
        return loss.discriminator_loss(real_scores, fake_scores, self.train_config.adv_loss,
                                       self.train_config.smoothing)

    def discriminator_pass(self, D, lab, fake, fake_scores=None):
        """D scores the real and the fake batch: its loss (loss.DiscriminatorLoss). With
        `fake_scores` (eval mode, where D is a fixed function) D's score of the fake batch is the
        one the generator's loss used; in training mode D runs again, as in the reference
        (batch-norm statistics and the spectral-norm power iteration advance once per pass)."""
        with self.compute.autocast:
            real_scores = D(lab)
            return self.discriminator_loss(real_scores, D(fake) if fake_scores is None else fake_scores)

    # ------------------------------------------------------------ evaluation

    @torch.no_grad()
    def evaluate(self, G, lab, classes=None):
        """The step's losses for generator `G` (in eval mode, as the caller set it) against the
        discriminator in eval mode, without updates: (STAT_NAMES sums, predicted ab)."""
        self.D.eval()
        try:
            with self.compute.autocast:
                generated = self.generator_pass(G, self.D, lab, classes)
            d_loss = self.discriminator_pass(self.D, lab, generated.fake, generated.fake_scores.detach())
        finally:
            self.D.train()
        return batch_sums(lab, generated.loss, d_loss), generated.fake_ab

    def eval_generator(self, train_set):
        """The generator to validate and save: the averaged weights (or the trained ones), with
        exact batch-norm statistics over a fixed sample of training images (dropout off, as at
        test time); a copy for the first process alone."""
        G_eval = distributed.unsynchronized(copy.deepcopy(self.G_ema if self.G_ema is not None else self.G))
        return recalibrate_generator(G_eval, train_set, self.train_config.seed, self.compute.device, self.compute.autocast,
                                     self.memory_format)

    # ------------------------------------------------------------ what a checkpoint holds

    def generator_with_running_statistics(self):
        """What a mid-epoch checkpoint stores as the generator: the averaged weights with the
        running batch-norm statistics of training (exact ones cost a pass over training images,
        which a save or a Ctrl-C need not wait for; loading for use recomputes them)."""
        if self.G_ema is None:
            return self.G.state_dict()
        state = self.G_ema.state_dict()
        state.update((name, buffer) for name, buffer in self.G.named_buffers())
        return state

    def state_dict(self):
        state = {'generator_train': self.G.state_dict(), 'discriminator': self.D.state_dict(),
                 'opt_gen': self.opt_g.state_dict(), 'opt_disc': self.opt_d.state_dict(),
                 'scaler': self.scaler.state_dict() if self.scaler.is_enabled() else {}}
        if self.ab_classes is not None:
            state['ab_classes'] = self.ab_classes.state()
        if self.pixel_weights is not None:
            state['rebalance_prior'] = self.pixel_weights.ab_prior.state()
        return state

    def load_state_dict(self, ckpt):
        self.G.load_state_dict(ckpt['generator_train'])
        if self.G_ema is not None:
            self.G_ema.load_state_dict(ckpt['generator'])
            # An epoch's saved generator decodes as its run chose on held-out images; the average
            # under training decodes as the training generator does.
            final = self.G.final
            models.set_decoding(self.G_ema, getattr(final, 'temperature', None), getattr(final, 'blend', None))
        self.D.load_state_dict(ckpt['discriminator'])
        self.opt_g.load_state_dict(ckpt['opt_gen'])
        self.opt_d.load_state_dict(ckpt['opt_disc'])
        if ckpt.get('scaler'):
            self.scaler.load_state_dict(ckpt['scaler'])

    def learning_rates(self):
        return {'lr_gen': self.opt_g.param_groups[0]['lr'], 'lr_disc': self.opt_d.param_groups[0]['lr']}
