"""Train the colorization GAN of Nazeri et al. (2018) on CIFAR-10.

Each step: the generator updates first (adversarial BCE + L1 on ab), then the discriminator
(BCE with one-sided label smoothing) on the same fake batch. Each epoch: a validation pass in eval
mode, a sample grid, a CSV row per pass, and a checkpoint every --save_freq epochs.
"""
import collections
import contextlib
import copy
import json
import math
import os
import signal
import sys
import threading
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

import convolutions
import distributed
import plot
import utils
from dataset import load_split
from models import DISCRIMINATOR_NORMS, GENERATOR_NORMS, Discriminator, Generator, init_weights
from utils import UserError, number_in

# The flags that fix the networks' shapes: a checkpoint must agree on them to be resumed.
ARCHITECTURE_FLAGS = ('gen_norm', 'disc_norm', 'gen_dropout')
STEP_CHECKPOINTS_KEPT = 3
# Layer forms are timed on at most this many images, so the measurement stays within seconds.
AUTOTUNE_IMAGES = 32
STAT_NAMES = ('g_adv', 'g_l1', 'g_loss', 'd_loss', 'real_correct', 'fake_correct', 'images')


def parse_args(argv=None):
    p = utils.OneLineArgumentParser(description=__doc__.split('\n\n')[0])
    positive = number_in(float, 0, None, low_open=True)
    p.add_argument('--data_path', default='./data', help='where CIFAR-10 is, or is downloaded to (default: ./data)')
    p.add_argument('--save_path', default='./checkpoints', help='checkpoints, args.json and log.csv (default: ./checkpoints)')
    p.add_argument('--samples_path', default='samples/', help='per-epoch sample grids (default: samples/)')
    p.add_argument('--save_freq', type=number_in(int, 1), default=5, help='checkpoint every N epochs, and after the last (default: 5)')
    p.add_argument('--batch_size', type=number_in(int, 1), default=32, help='(default: 32)')
    p.add_argument('--num_workers', type=number_in(int, 0), default=4,
                   help='accepted for compatibility and unused: the data set lives in memory as tensors (default: 4)')
    p.add_argument('--start_epoch', type=number_in(int, 0), default=0,
                   help='>0: resume from checkpoint_ep{start_epoch-1}.pt in --save_path (default: 0)')
    p.add_argument('--max_epoch', type=number_in(int, 1), default=200, help='(default: 200)')
    p.add_argument('--smoothing', type=number_in(float, 0, 1, low_open=True), default=0.9,
                   help='real label for the discriminator, in (0, 1]; 1 means no smoothing (default: 0.9)')
    p.add_argument('--l1_weight', type=number_in(float, 0, 1), default=0.99,
                   help='weight of L1 in the generator loss, in [0, 1] (default: 0.99)')
    p.add_argument('--base_lr_gen', type=positive, default=3e-4, help='(default: 3e-4)')
    p.add_argument('--base_lr_disc', type=positive, default=6e-5, help='(default: 6e-5)')
    p.add_argument('--lr_decay_rate', type=positive, default=0.1, help='(default: 0.1)')
    p.add_argument('--lr_decay_steps', type=positive, default=6e4, help='(default: 6e4)')
    p.add_argument('--gen_norm', choices=GENERATOR_NORMS, default='batch', help='(default: batch)')
    p.add_argument('--disc_norm', choices=DISCRIMINATOR_NORMS, default='batch', help='(default: batch)')
    p.add_argument('--gen_dropout', type=number_in(float, 0, 1, high_open=True), default=0.5,
                   help="dropout probability after the generator's up1 and up2, in [0, 1); 0 turns it off, so that "
                        "runs compare step for step (default: 0.5, the reference's)")
    p.add_argument('--apply_weight_init', type=int, choices=(0, 1), default=0,
                   help='1: N(0, 0.02) conv weights, N(1, 0.02) batch-norm weights (default: 0)')
    p.add_argument('--max_steps', type=number_in(int, 1), default=None,
                   help='stop after N optimizer steps, then validate, draw and checkpoint as at an epoch end')
    p.add_argument('--val_batches', type=number_in(int, 1), default=None,
                   help='validate on the first K test batches only (default: all)')
    p.add_argument('--device', default='auto', help='auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps')
    p.add_argument('--precision', choices=('auto', 'fp32', 'bf16', 'fp16'), default='auto',
                   help='autocast precision; auto: bf16 where the hardware runs it natively, else fp32 (default: auto)')
    p.add_argument('--ema_decay', type=number_in(float, 0, 1, high_open=True), default=0.999,
                   help="the generator that is validated and saved averages the trained weights with this decay, "
                        "warmed up over the first steps; 0: use the trained weights as they are (default: 0.999)")
    p.add_argument('--resume', metavar='PATH|latest',
                   help='resume from this checkpoint, or from the newest one in --save_path')
    p.add_argument('--save_steps', type=number_in(int, 1), default=None,
                   help=f'also checkpoint every N steps, keeping the newest {STEP_CHECKPOINTS_KEPT} (default: off)')
    p.add_argument('--log_steps', type=number_in(int, 1), default=50,
                   help="append the training losses averaged over every N steps to --save_path/steps.csv, "
                        "for plot.py's step axis (default: 50)")
    p.add_argument('--nan_policy', choices=('stop', 'skip'), default='stop',
                   help='on a NaN or infinite loss: stop (keeping the last good checkpoint) or skip the step (default: stop)')
    p.add_argument('--channels_last', choices=('auto', 'on', 'off'), default='auto',
                   help='channels-last memory format; auto: on for CPUs, where it measurably helps (default: auto)')
    p.add_argument('--autotune', choices=('on', 'off'), default='on',
                   help='on a CPU, time both forms of the layers that can run as matrix products at start-up and '
                        'keep the faster of each (a few seconds; a resumed run reuses its checkpoint\'s choice on the '
                        'same machine); off: the fixed default forms, for runs that must match bit for bit (default: on)')
    p.add_argument('--seed', type=int, default=0, help='seeds weights, data order, flips and dropout (default: 0)')
    args = p.parse_args(argv)
    if args.max_epoch <= args.start_epoch:
        p.error(f"--max_epoch {args.max_epoch} must be greater than --start_epoch {args.start_epoch}")
    return args


class NonFiniteLoss(ArithmeticError):
    pass


def check_finite(name, loss, procs):
    # On a CPU this costs nothing; the fp16 gradient scaler handles overflow on its own. Under
    # torchrun the processes sum their losses, so that a NaN on one stops or skips on all.
    if loss.device.type == 'cpu':
        value = procs.total(loss)
        if not math.isfinite(value):
            raise NonFiniteLoss(f"the {name} loss is {value}" + (' (summed over the processes)' if procs.distributed else ''))


def bce(logits, target):
    return F.binary_cross_entropy_with_logits(logits.float(), torch.full_like(logits, target, dtype=torch.float32))


def gan_step(G, D, lab, args, opt_g=None, opt_d=None, scaler=None, autocast=None,
             procs=distributed.Processes(), share=1.0, keep_fake=False):
    """One generator-then-discriminator step on a Lab batch (or, with no optimizers, the same
    losses without updates). Returns the batch's sums of STAT_NAMES as one device tensor, so the
    caller syncs with the host only when it wants to show them. Under torchrun, `lab` is this
    process's part of the global batch and `share` is (its images x processes / global images):
    DistributedDataParallel averages the processes' gradients, and this weight makes that average
    the gradient of the global batch's mean losses. `keep_fake`: also return the predicted ab."""
    L, ab = lab[:, :1], lab[:, 1:]
    training = opt_g is not None
    D_fixed = distributed.unwrapped(D)  # scored outside DDP: it must expect no gradients for D's weights
    with autocast:
        fake_ab = G(L)
        fake = torch.cat([L, fake_ab.to(L.dtype)], dim=1)
        if training:
            D_fixed.requires_grad_(False)  # the generator's step needs no gradients for D's weights
        fake_scores = D_fixed(fake)
        g_adv = bce(fake_scores, 1.0)
        g_l1 = (ab - fake_ab.float()).abs().mean()
        g_loss = (1 - args.l1_weight) * g_adv + args.l1_weight * g_l1
    if training:
        try:
            check_finite('generator', g_loss, procs)
            opt_g.zero_grad(set_to_none=True)
            scaler.scale(g_loss * share).backward()
            scaler.step(opt_g)
        finally:
            D_fixed.requires_grad_(True)
    with autocast:
        real_logits = D(lab)
        # In eval mode (validation) D is a fixed function, so its score of the fake batch is the
        # one just computed; in training mode it runs again, as in the reference (batch-norm
        # running statistics and the spectral-norm power iteration advance once per pass).
        fake_logits = D(fake.detach()) if D.training else fake_scores.detach()
        d_loss = bce(real_logits, args.smoothing) + bce(fake_logits, 0.0)
    if training:
        check_finite('discriminator', d_loss, procs)
        opt_d.zero_grad(set_to_none=True)
        scaler.scale(d_loss * share).backward()
        scaler.step(opt_d)
        scaler.update()
    n = lab.shape[0]
    sums = torch.stack([g_adv.detach() * n, g_l1.detach() * n, g_loss.detach() * n, d_loss.detach() * n,
                        (real_logits.detach() > 0).sum().float(), (fake_logits.detach() <= 0).sum().float(),
                        torch.tensor(float(n), device=lab.device)])
    return (sums, fake_ab.detach()) if keep_fake else sums


def summarize(sums):
    s = dict(zip(STAT_NAMES, sums.tolist()))
    n = max(s['images'], 1)
    return {'g_adv': s['g_adv'] / n, 'g_l1': s['g_l1'] / n, 'g_loss': s['g_loss'] / n, 'd_loss': s['d_loss'] / n,
            'd_acc': (s['real_correct'] + s['fake_correct']) / (2 * n), 'd_acc_real': s['real_correct'] / n,
            'd_acc_fake': s['fake_correct'] / n, 'images': int(s['images'])}


def summary_line(epoch, phase, m, seconds):
    return (f"[epoch {epoch} {phase:5s}] G adv {m['g_adv']:.4f}  L1 {m['g_l1']:.4f}  total {m['g_loss']:.4f} | "
            f"D loss {m['d_loss']:.4f}  acc {m['d_acc']:.3f} (real {m['d_acc_real']:.3f}, fake {m['d_acc_fake']:.3f}) | "
            f"{m['images']} images, {seconds:.0f} s, {m['images'] / max(seconds, 1e-9):.0f} img/s")


def inference_generator(G, G_ema, train_set, args, device, autocast, memory_format):
    """The generator to validate and save: the averaged weights (or the trained ones), with exact
    batch-norm statistics over a fixed sample of training images (dropout off, as at test time)."""
    G_eval = distributed.unsynchronized(copy.deepcopy(G_ema if G_ema is not None else G))  # the first process's alone
    return utils.recalibrate_generator(G_eval, train_set, args.seed, device, autocast, memory_format)


def generator_with_running_statistics(G, G_ema):
    """What a mid-epoch checkpoint stores as the generator: the averaged weights with the running
    batch-norm statistics of training. Exact statistics cost a pass over training images, which
    a save or a Ctrl-C need not wait for: test.py recomputes them where a checkpoint lacks them."""
    if G_ema is None:
        return G.state_dict()
    state = G_ema.state_dict()
    state.update((name, buffer) for name, buffer in G.named_buffers())
    return state


@torch.no_grad()
def validate(G, D, test_set, args, device, autocast):
    """Losses and accuracies over the test set (or its first --val_batches batches) in eval mode,
    the mean colorfulness of the recolored images, and the sample grid rows of the first batch."""
    G.eval(), D.eval()
    sums = torch.zeros(len(STAT_NAMES), device=device)
    colorfulness_sum, images = 0.0, 0
    grid_rows = None
    batches = test_set.batches(args.batch_size, device=device)
    total = min(test_set.num_batches(args.batch_size), args.val_batches or float('inf'))
    for i, (idx, lab) in enumerate(tqdm(batches, total=total, desc='validate', leave=False, dynamic_ncols=True)):
        if i >= total:
            break
        batch_sums, fake_ab = gan_step(G, D, lab, args, autocast=autocast, keep_fake=True)
        sums += batch_sums
        L = lab[:, :1]
        fake_rgb = utils.network_to_rgb(L, fake_ab)
        colorfulness_sum += float(utils.colorfulness(fake_rgb).sum())
        images += len(fake_rgb)
        if grid_rows is None:
            grid_rows = [test_set.rgb[idx[:20].numpy()], utils.network_to_rgb(L[:20], torch.zeros_like(lab[:20, 1:])),
                         fake_rgb[:20]]
    D.train()
    return sums, colorfulness_sum / max(images, 1), grid_rows


def checkpoint_path(save_path, epoch):
    return os.path.join(save_path, f'checkpoint_ep{epoch}.pt')


def newest_checkpoint(save_path):
    """The most recently written checkpoint in `save_path` (writes are atomic, so each is whole)."""
    names = [n for n in os.listdir(save_path) if n.startswith('checkpoint_') and n.endswith('.pt')]
    if not names:
        raise UserError(f"--resume latest: no checkpoint in {save_path}; start without --resume")
    return max((os.path.join(save_path, n) for n in names), key=os.path.getmtime)


def resume_from(ckpt, path, args, G, G_ema, D, opt_g, opt_d, scaler, procs):
    """Restore everything the checkpoint `ckpt` (read from `path`) holds; returns (epoch, batches
    done in it, step, the layer forms it was trained with). The checkpoint may come from any
    number of processes: its step and batch counts are of global batches."""
    if not isinstance(ckpt, dict) or not {'generator', 'generator_train', 'discriminator'} <= set(ckpt):
        raise UserError(f"{path} is not a training checkpoint of this tool (no generator and discriminator)")
    saved = ckpt.get('args', {})
    clashes = [f for f in ARCHITECTURE_FLAGS if f in saved and saved[f] != getattr(args, f)]
    if clashes:
        theirs = ' '.join(f"--{f} {saved[f]}" for f in clashes)
        ours = ' '.join(f"--{f} {getattr(args, f)}" for f in clashes)
        raise UserError(f"checkpoint {path} was trained with {theirs}, but this run has {ours}; "
                        f"resume with the checkpoint's flags or start a new --save_path")
    try:
        G.load_state_dict(ckpt['generator_train'])
        if G_ema is not None:
            G_ema.load_state_dict(ckpt['generator'])
        D.load_state_dict(ckpt['discriminator'])
        opt_g.load_state_dict(ckpt['opt_gen'])
        opt_d.load_state_dict(ckpt['opt_disc'])
    except (RuntimeError, KeyError, ValueError) as e:
        raise UserError(f"checkpoint {path} does not fit this configuration "
                        f"({str(e).strip().splitlines()[0]}); resume with the flags it was trained with")
    if ckpt.get('scaler'):
        scaler.load_state_dict(ckpt['scaler'])
    # Each process's own dropout random state where the checkpoint has one for it (the same
    # number of processes); otherwise the first process's, and fresh ones for the others.
    states = ckpt.get('rng_per_process') or [ckpt['rng']]
    if len(states) == procs.world_size or procs.is_main:
        torch.set_rng_state(states[procs.rank] if len(states) == procs.world_size else states[0])
    else:
        torch.manual_seed(process_seed(args.seed, procs.rank, ckpt['step']))
    batches_done = ckpt.get('batches_done', 0)
    if not batches_done:  # a finished epoch: go on with the next one
        return ckpt['epoch'] + 1, 0, ckpt['step'], ckpt.get('layer_forms')
    return ckpt['epoch'], batches_done, ckpt['step'], ckpt.get('layer_forms')


def process_seed(seed, rank, step):
    """The dropout random stream of process `rank` > 0 from `step` on (process 0 uses `seed`'s, as
    a single process does)."""
    return seed + 1_000_003 * rank + 7919 * step


class StopRequest:
    """Ctrl-C or SIGTERM: finish the current step, checkpoint, exit with 128 + the signal number.
    A second signal interrupts at once, except under torchrun, where a Ctrl-C reaches every
    process twice (from the terminal and from the launcher) and the launcher kills what is left
    after its shutdown timeout."""

    def __init__(self, second_signal_interrupts=True):
        self.signal = None
        self.second_signal_interrupts = second_signal_interrupts
        self.previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self.handle)

    def handle(self, signum, frame):
        self.signal = self.signal or signum
        if self.second_signal_interrupts:
            self.restore()

    def restore(self):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def use_channels_last(choice, device):
    """auto: on where measured to help (CPUs, in fp32 and bf16: docs/performance.md), off elsewhere."""
    if choice != 'auto':
        return choice == 'on'
    return device.type == 'cpu'


def build_networks(args, device, channels_last=False):
    """Both networks, initialized as the flags say, on `device`, with their Adam optimizers."""
    G, D = Generator(args.gen_norm, args.gen_dropout), Discriminator(args.disc_norm)
    if args.apply_weight_init:
        init_weights(G), init_weights(D)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    G.to(device, memory_format=memory_format), D.to(device, memory_format=memory_format)
    return G, D, adam(G.parameters(), args.base_lr_gen, device), adam(D.parameters(), args.base_lr_disc, device)


def adam(params, lr, device):
    # The fused kernel: measured 2x faster than the multi-tensor one on a CPU (docs/performance.md).
    return torch.optim.Adam(params, lr=lr, betas=(0.5, 0.999), fused=device.type in ('cpu', 'cuda') or None)


def choose_layer_forms(G, D, G_ema, args, device, precision, channels_last, saved=None,
                       procs=distributed.Processes()):
    """Measure which form each two-form layer runs fastest in (convolutions.py), or reuse the
    choice `saved` in a checkpoint when it was measured for the same machine and settings.
    Returns the record to save (None where nothing was measured: GPUs, --autotune off) and a line
    that says what was chosen. Under torchrun the first process measures and all take its choice,
    so that every process computes the same way."""
    if device.type != 'cpu' or args.autotune == 'off':
        return None, "layer forms: the fixed defaults (--autotune off, or not a CPU)"
    dtype = torch.bfloat16 if precision == 'bf16' else torch.float32
    setting = {'machine': utils.cpu_description(), 'torch': str(torch.__version__), 'precision': precision,
               'channels_last': channels_last, 'batch_size': args.batch_size, 'processes': procs.world_size}
    if saved and all(saved.get(k, 1 if k == 'processes' else None) == v for k, v in setting.items()):
        record, how = saved, 'from the checkpoint, measured on this machine'
    elif not procs.is_main:
        record, how = None, 'measured by the first process'
    else:
        started = time.time()
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        n = min(args.batch_size // procs.world_size, AUTOTUNE_IMAGES)  # this process's part of a batch
        autocast = utils.autocast_context(device, precision)
        record = dict(setting)
        for key, model, channels in (('generator', G, 1), ('discriminator', D, 3)):
            sample = torch.randn(n, channels, 32, 32).contiguous(memory_format=memory_format)
            chosen = convolutions.choose_forms(model, sample, autocast)
            record[key] = {name: form for name, (form, _, _) in chosen.items()}
        how = f'measured in {time.time() - started:.1f} s'
    record = procs.broadcast(record)
    for key, models in (('generator', (G, G_ema)), ('discriminator', (D,))):
        for model in models:
            if model is not None:
                convolutions.set_forms(model, record[key], dtype)
    products = [f"{'G' if key == 'generator' else 'D'}.{name.split('.')[0]}"
                for key in ('generator', 'discriminator') for name, form in record[key].items() if form == 'matmul']
    return record, f"layer forms ({how}): {', '.join(products) or 'none'} as matrix products, the rest the library's"


def set_learning_rates(opt_g, opt_d, step, args):
    """The schedule of SPEC.md, set before optimizer step number `step` (counted from 1)."""
    for opt, base in ((opt_g, args.base_lr_gen), (opt_d, args.base_lr_disc)):
        for group in opt.param_groups:
            group['lr'] = utils.learning_rate(base, step, args.lr_decay_rate, args.lr_decay_steps)


def train_step(G, D, G_ema, opt_g, opt_d, scaler, lab, step, args, autocast,
               procs=distributed.Processes(), global_images=None):
    """Optimizer step number `step` (counted from 1) on a Lab batch (this process's part of a
    global batch of `global_images`): set the learning rates, update both networks, then the
    averaged generator. Returns gan_step's sums."""
    set_learning_rates(opt_g, opt_d, step, args)
    share = len(lab) * procs.world_size / (global_images or len(lab))
    sums = gan_step(G, D, lab, args, opt_g, opt_d, scaler, autocast, procs, share)
    if G_ema is not None:
        utils.ema_update(G_ema, distributed.unwrapped(G), utils.ema_decay(args.ema_decay, step))
    return sums


def main(argv=None):
    args = parse_args(argv)
    device = utils.pick_device(args.device)
    procs = distributed.Processes.from_environment(device.type)
    try:
        # Under torchrun only the first process prints; the others print nothing but errors.
        with open(os.devnull, 'w') as quiet, contextlib.redirect_stdout(sys.stdout if procs.is_main else quiet):
            return train(args, procs.device(device), procs)
    except RuntimeError as e:
        if not (procs.distributed and distributed.lost_contact(e)):
            raise
        # Another process failed (and printed why) or was killed: one line, not a traceback.
        print(f"{os.path.basename(sys.argv[0])}: error: process {procs.rank} of {procs.world_size} lost contact "
              f"with the others ({str(e).strip().splitlines()[0][:160]}); the run is stopped: see the first "
              f"error above, then continue with --resume latest", file=sys.stderr)
        return 1
    finally:
        procs.close()


def train(args, device, procs):
    precision = utils.resolve_precision(args.precision, device)
    autocast = utils.autocast_context(device, precision)
    if args.batch_size % procs.world_size:
        raise UserError(f"--batch_size {args.batch_size} is the global batch, which the {procs.world_size} "
                        f"processes must share equally: pick a multiple of {procs.world_size}")
    resume_path = args.resume
    if procs.is_main:
        utils.check_writable_folder(args.save_path, '--save_path')
        utils.check_writable_folder(args.samples_path, '--samples_path')
        for prefix in ('checkpoint_', 'generator_ep'):
            utils.remove_torn_writes(args.save_path, prefix)
        if args.resume == 'latest':
            resume_path = newest_checkpoint(args.save_path)
        elif args.start_epoch > 0 and not args.resume:
            resume_path = checkpoint_path(args.save_path, args.start_epoch - 1)
        if resume_path and not os.path.isfile(resume_path):
            raise UserError(f"cannot resume: {resume_path} does not exist")

    channels_last = use_channels_last(args.channels_last, device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    torch.manual_seed(args.seed)
    G, D, opt_g, opt_d = build_networks(args, device, channels_last)
    G_ema = copy.deepcopy(G).requires_grad_(False) if args.ema_decay > 0 else None
    if procs.rank > 0:  # the same weights everywhere, but each process its own dropout masks
        torch.manual_seed(process_seed(args.seed, procs.rank, 0))
    scaler = torch.amp.GradScaler(device.type, enabled=precision == 'fp16')
    first_epoch, first_batch, step, saved_forms = args.start_epoch, 0, 0, None
    # The first process reads the checkpoint and hands it to the others, which need no access to its folder.
    resume_path = procs.broadcast(resume_path)
    if resume_path:
        ckpt = procs.broadcast(utils.load_checkpoint(resume_path) if procs.is_main else None)
        first_epoch, first_batch, step, saved_forms = resume_from(ckpt, resume_path, args, G, G_ema, D,
                                                                  opt_g, opt_d, scaler, procs)
        del ckpt
        print(f"resuming from {resume_path}: epoch {first_epoch}, batch {first_batch}, step {step}")
    first_step = step
    if first_epoch >= args.max_epoch:
        raise UserError(f"the checkpoint is at epoch {first_epoch}, which --max_epoch {args.max_epoch} leaves no room for")

    run_info = dict(vars(args), device=str(device), resolved_precision=precision, channels_last_on=channels_last,
                    processes=procs.world_size)
    print('options: ' + json.dumps(run_info, sort_keys=True))
    spent = collections.Counter()  # seconds per kind of work, for the closing line
    with timed(spent, 'layer forms'):
        layer_forms, forms_line = choose_layer_forms(G, D, G_ema, args, device, precision, channels_last,
                                                     saved_forms, procs)
    print(forms_line)
    with timed(spent, 'data'):
        if procs.local_rank > 0:  # the first process on each machine downloads the data if needed
            procs.barrier()
        train_set = load_split(args.data_path, train=True)
        test_set = load_split(args.data_path, train=False) if procs.is_main else None
        if procs.local_rank == 0:
            procs.barrier()
    last_batch = len(train_set) % args.batch_size
    if 0 < last_batch < procs.world_size:
        raise UserError(f"the last batch of each epoch holds {last_batch} of the {len(train_set)} training images, "
                        f"fewer than the {procs.world_size} processes: pick another --batch_size or fewer processes")
    log_path = os.path.join(args.save_path, 'log.csv')
    steps_log_path = os.path.join(args.save_path, 'steps.csv')
    if procs.is_main:
        utils.write_json(os.path.join(args.save_path, 'args.json'), dict(run_info, layer_forms=layer_forms))
    print(f"data: {len(train_set)} training images" + (f" and {len(test_set)} test images" if test_set else '') +
          f"; device {device}, precision {precision}" +
          (f"; {procs.world_size} processes, {args.batch_size // procs.world_size} images each per step"
           if procs.distributed else ''))
    G.train(), D.train()
    # Under torchrun: batch norm over the global batch, gradients averaged by DistributedDataParallel.
    if procs.distributed:
        distributed.synchronize_batchnorm(G), distributed.synchronize_batchnorm(D)
    G_run, D_run = procs.wrap(G), procs.wrap(D)

    def save(path, epoch, batches_done, rng_states, G_eval=None):
        """G_eval: the generator just validated, with exact statistics; without it (mid-epoch
        saves, Ctrl-C) the checkpoint holds what resuming needs and nothing slower to compute.
        `rng_states`: every process's random state (procs.gather)."""
        with timed(spent, 'checkpoints'):
            utils.save_checkpoint(path, {
                'generator': G_eval.state_dict() if G_eval is not None else generator_with_running_statistics(G, G_ema),
                'generator_exact_statistics': G_eval is not None,
                'generator_train': G.state_dict(), 'discriminator': D.state_dict(),
                'opt_gen': opt_g.state_dict(), 'opt_disc': opt_d.state_dict(),
                'scaler': scaler.state_dict() if scaler.is_enabled() else {},
                'epoch': epoch, 'batches_done': batches_done, 'step': step, 'args': vars(args),
                'rng': rng_states[0], 'rng_per_process': rng_states if procs.distributed else None,
                'layer_forms': layer_forms,
            })

    stop = StopRequest(second_signal_interrupts=not procs.distributed)
    skipped = 0
    try:
        for epoch in range(first_epoch, args.max_epoch):
            # The data order depends on (seed, epoch) alone, so a resumed run sees the same batches,
            # and so does each process, which takes its part of every batch.
            order = torch.Generator().manual_seed(args.seed * 1_000_003 + epoch)
            n_batches = train_set.num_batches(args.batch_size)
            start_batch = first_batch if epoch == first_epoch else 0
            sums = torch.zeros(len(STAT_NAMES), device=device)
            since_logged = torch.zeros(len(STAT_NAMES), device=device)
            started = time.time()
            saving_before = spent['checkpoints']
            batches = train_set.batches(args.batch_size, shuffle=True, flip=True, generator=order, device=device,
                                        start=start_batch, share=procs.share)
            bar = tqdm(batches, total=n_batches, initial=start_batch, desc=f'epoch {epoch}', dynamic_ncols=True,
                       disable=not procs.is_main)
            batches_done = start_batch
            for _, lab in bar:
                lab = lab.contiguous(memory_format=memory_format)
                global_images = min(args.batch_size, len(train_set) - batches_done * args.batch_size)
                step += 1
                try:
                    step_sums = train_step(G_run, D_run, G_ema, opt_g, opt_d, scaler, lab, step, args, autocast,
                                           procs, global_images)
                    sums += step_sums
                    since_logged += step_sums
                except NonFiniteLoss as e:
                    if args.nan_policy == 'stop':
                        if not procs.is_main:
                            return 2  # the first process says why
                        raise UserError(f"{e} at step {step} (epoch {epoch}); training stopped, the last good "
                                        f"checkpoint in {args.save_path} is kept: lower the learning rates or "
                                        f"resume from it with --nan_policy skip")
                    skipped += 1
                    if procs.is_main:
                        tqdm.write(f"step {step}: {e}; step skipped ({skipped} so far)")
                    if G_ema is not None:
                        utils.ema_update(G_ema, G, utils.ema_decay(args.ema_decay, step))
                batches_done += 1
                if step % args.log_steps == 0:
                    m = summarize(procs.sum_(since_logged))
                    since_logged = torch.zeros_like(since_logged)
                    if procs.is_main:
                        utils.append_csv_row(steps_log_path, dict(epoch=epoch, step=step, **m))
                if batches_done % 20 == 0 or batches_done == n_batches:
                    m = summarize(procs.sum_(sums.clone()))
                    bar.set_postfix_str(f"G {m['g_loss']:.4f} L1 {m['g_l1']:.4f} D {m['d_loss']:.4f} "
                                        f"acc {m['d_acc']:.2f} {m['images'] / (time.time() - started):.0f} img/s")
                signal_number = procs.max(stop.signal or 0)  # every process stops at the same step
                if signal_number:
                    bar.close()
                    path = os.path.join(args.save_path, f'checkpoint_step{step}.pt')
                    rng_states = procs.gather(torch.get_rng_state())
                    if procs.is_main:
                        save(path, epoch, batches_done, rng_states)
                        print(f"interrupted: saved {path} (epoch {epoch}, batch {batches_done} of {n_batches}); "
                              f"continue with: python train.py --save_path {args.save_path} --resume {path} "
                              f"(and this run's other flags)", file=sys.stderr)
                    procs.barrier()  # no process exits (which ends the run) before the checkpoint is whole
                    return 128 + signal_number
                if args.save_steps and step % args.save_steps == 0 and batches_done < n_batches:
                    rng_states = procs.gather(torch.get_rng_state())
                    if procs.is_main:
                        save(os.path.join(args.save_path, f'checkpoint_step{step}.pt'), epoch, batches_done, rng_states)
                        prune_step_checkpoints(args.save_path)
                if args.max_steps and step >= args.max_steps:
                    break
            bar.close()
            stopping = bool(args.max_steps and step >= args.max_steps)
            train_seconds = time.time() - started
            spent['training steps'] += train_seconds - (spent['checkpoints'] - saving_before)
            train_m = summarize(procs.sum_(sums))
            print(summary_line(epoch, 'train', train_m, train_seconds) + (f", {skipped} steps skipped" if skipped else ''))
            rng_states = procs.gather(torch.get_rng_state())
            if procs.is_main:  # validation, pictures, log and checkpoint; the others wait at the barrier
                started = time.time()
                G_eval = inference_generator(G, G_ema, train_set, args, device, autocast, memory_format)
                val_sums, val_colorfulness, grid_rows = validate(G_eval, D, test_set, args, device, autocast)
                val_seconds = time.time() - started
                spent['validation'] += val_seconds
                val_m = summarize(val_sums)
                print(summary_line(epoch, 'val', val_m, val_seconds))
                started = time.time()

                grid_path = os.path.join(args.samples_path, f'epoch_{epoch:03d}.png')
                utils.write_image(grid_path, utils.image_grid(grid_rows, border=6, scale=2.2))
                lr_now = {'lr_gen': opt_g.param_groups[0]['lr'], 'lr_disc': opt_d.param_groups[0]['lr']}
                for phase, m, seconds, colorfulness in (('train', train_m, train_seconds, ''),
                                                        ('val', val_m, val_seconds, round(val_colorfulness, 4))):
                    utils.append_csv_row(log_path, dict(epoch=epoch, step=step, phase=phase, **m,
                                                        seconds=round(seconds, 2), skipped_steps=skipped, **lr_now,
                                                        colorfulness=colorfulness))
                # The curves are drawn while the checkpoint is written, which waits on the disk.
                curves = threading.Thread(target=draw_curves, args=(args.save_path,), daemon=True)
                curves.start()
                spent['pictures and log'] += time.time() - started
                if (epoch + 1) % args.save_freq == 0 or stopping or epoch == args.max_epoch - 1:
                    # A run stopped by --max_steps inside an epoch saves it as mid-epoch, so resuming continues it.
                    done = batches_done if batches_done < n_batches else 0
                    path = checkpoint_path(args.save_path, epoch)
                    # The generator alone first: a run killed between the two redoes the epoch and writes both.
                    with timed(spent, 'checkpoints'):
                        weights = utils.save_generator_weights(
                            os.path.join(args.save_path, f'generator_ep{epoch}.safetensors'), G_eval.state_dict(),
                            args.gen_norm, args.gen_dropout, epoch, step, args.seed)
                    save(path, epoch, done, rng_states, G_eval)
                    print(f"saved {path}, {weights} and {grid_path}")
                started = time.time()
                curves.join()
                spent['pictures and log'] += time.time() - started
            procs.barrier()
            if stopping:
                print(f"stopped after --max_steps {args.max_steps} steps")
                break
    finally:
        stop.restore()
    print(time_line(spent, step - first_step))
    return 0


def draw_curves(save_path):
    try:
        plot.draw_curves(save_path)
    except Exception as e:  # a picture is not worth a training run
        print(f"warning: could not draw {save_path}/curves.png ({e})", file=sys.stderr)


@contextlib.contextmanager
def timed(spent, key):
    started = time.time()
    try:
        yield
    finally:
        spent[key] += time.time() - started


def time_line(spent, steps):
    """Where the time went: 'time: 111.1 s in 100 training steps; 14.2 s besides (layer forms 2.1, ...)'."""
    besides = {k: v for k, v in spent.items() if k != 'training steps'}
    details = ', '.join(f"{k} {v:.1f}" for k, v in besides.items())
    return (f"time: {spent['training steps']:.1f} s in {steps} training steps; {sum(besides.values()):.1f} s besides "
            f"({details}; Python's start-up before these not counted)")


def prune_step_checkpoints(save_path):
    """Keep the newest few step checkpoints; epoch checkpoints are never removed."""
    steps = sorted((n for n in os.listdir(save_path) if n.startswith('checkpoint_step') and n.endswith('.pt')),
                   key=lambda n: int(n[len('checkpoint_step'):-3]))
    for name in steps[:-STEP_CHECKPOINTS_KEPT]:
        os.remove(os.path.join(save_path, name))


if __name__ == '__main__':
    sys.exit(utils.run_cli(main))
