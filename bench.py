"""Measure training and inference speed, model FLOPs and utilisation on this machine, and with
--baseline, the reference's training step side by side in the same run.

For the default recipe and the spectral recipe, at batch 32 and 128: training images per second
of train.py's whole step (learning rates, both networks, the averaged generator, fed by its data
path; after warm-up, the median of several timed windows), generator inference images per second,
model FLOPs per training image (torch.utils.flop_counter), and MFU against the machine's measured
matrix-multiply peak at the same precision, and (torch.profiler over a few steps) the share of the
step spent outside matrix products and convolutions ('other') and in copies ('copy_'). --baseline
adds the reference's step as the reference takes it, timed in the same process, and the ratio.

With --dataset folder (--data_path holding train/ and val/ folders of photographs, as train.py
reads them) and --image_size 32|64|128|256: the same figures for the step at that image size (its
networks), fed with batches decoded from the folder in advance, so that the step's rate holds no
decoding; then the loader's own rate (FolderImages' training batches: decode, random crop, flip,
Lab) with each of --loader_workers DataLoader workers, and for each whether it keeps up with the
step. --baseline is CIFAR-10's only.
"""
import contextlib
import dataclasses
import itertools
import os
import statistics
import sys
import tempfile
import time
import warnings

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import utils
from core import pictures
from core.cli import (Compute, OneLineArgumentParser, UserError, add_compute_flags, cpu_description, gpu_description,
                 number_in, run_cli)
from dataset import DATASETS, LabImages, load_split
from models import IMAGE_SIZES, Discriminator, Generator, ModelConfig, init_weights
from core.folders import FolderImages
from training.gan import ColorizationGAN, learning_rate, use_channels_last
from training.ab_classes import AbClasses
from training.config import TrainConfig
from training.layer_forms import choose_layer_forms
from training.options import RECIPES as TRAINING_RECIPES

# The recipes timed, as the configs the GAN is built from: train.py's defaults, the reference's
# spectral-norm recipe, and on it the colour-distribution heads (train.py --ab_head) and the class
# context (--class_loss). tests/test_bench.py checks that each is what train.py makes of RECIPE_FLAGS.
SPECTRAL_MODEL = ModelConfig(disc_norm='spectral')
SPECTRAL_TRAINING = TrainConfig(smoothing=1.0, l1_weight=0.985, base_lr_gen=2e-4, base_lr_disc=2e-4,
                                lr_decay_steps=4e4)
RECIPES = {'default': (ModelConfig(), TrainConfig()), 'spectral': (SPECTRAL_MODEL, SPECTRAL_TRAINING),
           'classify': (dataclasses.replace(SPECTRAL_MODEL, ab_head='classify'), SPECTRAL_TRAINING),
           'both': (dataclasses.replace(SPECTRAL_MODEL, ab_head='both'), SPECTRAL_TRAINING),
           'class': (dataclasses.replace(SPECTRAL_MODEL, class_context=True),
                     dataclasses.replace(SPECTRAL_TRAINING, class_loss=0.0033))}
# The same recipes as train.py's flags, for tools/ab_steps.py, which hands them to two commits' command lines.
RECIPE_FLAGS = {'default': [], 'spectral': TRAINING_RECIPES['spectral'],
                'classify': TRAINING_RECIPES['spectral'] + ['--ab_head', 'classify'],
                'both': TRAINING_RECIPES['spectral'] + ['--ab_head', 'both'],
                'class': TRAINING_RECIPES['spectral'] + ['--class_loss', '0.0033']}
# The reference-style data path reads this many PNG files (enough that no timing runs out of them).
BASELINE_IMAGES = 2048
# Batch sizes and loader workers timed where none are given: 64- to 256-pixel networks are heavy.
CIFAR_BATCH_SIZES, FOLDER_BATCH_SIZES = [32, 128], [16]
LOADER_WORKERS = [1, 2, 4]
# With --dataset folder, the step cycles through this many batches decoded before the timing.
FOLDER_POOL_BATCHES = 4


def parse_args(argv=None):
    p = OneLineArgumentParser(prog='bench.py', description=__doc__.split('\n\n')[0])
    p.add_argument('--dataset', choices=DATASETS, default='cifar10',
                   help='cifar10 (in memory), or folder: a folder of photographs, as train.py reads it; also times '
                        'its loader (default: cifar10)')
    p.add_argument('--data_path', default='./data',
                   help='where CIFAR-10 is, or with --dataset folder the folder holding train/ and val/ '
                        '(default: ./data)')
    p.add_argument('--image_size', type=int, choices=IMAGE_SIZES, default=None,
                   help="with --dataset folder: the images' side, which picks the networks, as train.py's "
                        "(default: 32 for cifar10, 256 for folder)")
    p.add_argument('--synthetic', action='store_true', help='random images instead of CIFAR-10; skips the load timing')
    p.add_argument('--baseline', action='store_true',
                   help="also time the reference's training step (fp32, contiguous, library layers, sigmoid + BCE, "
                        "per-image PNG decoding in a DataLoader) in the same run, and print the ratio")
    p.add_argument('--recipes', nargs='+', choices=tuple(RECIPES), default=['default', 'spectral'],
                   help="default and spectral: the reference's two recipes; classify and both: the spectral recipe "
                        "with train.py's --ab_head classify or both; class: the spectral recipe with the class "
                        "context, --class_loss 0.0033 (default: default spectral)")
    p.add_argument('--batch_sizes', type=number_in(int, 1), nargs='+', default=None,
                   help=f"(default: {' '.join(map(str, CIFAR_BATCH_SIZES))} for cifar10, "
                        f"{' '.join(map(str, FOLDER_BATCH_SIZES))} for folder)")
    p.add_argument('--windows', type=number_in(int, 1), default=3, help='timed windows per measurement (default: 3)')
    p.add_argument('--seconds', type=number_in(float, 0.1), default=6.0,
                   help='about how long each training measurement runs (default: 6)')
    p.add_argument('--num_workers', type=number_in(int, 0), default=4,
                   help="the reference-style DataLoader's workers (default: 4, the reference's)")
    p.add_argument('--loader_workers', type=number_in(int, 0), nargs='+', default=None,
                   help=f"with --dataset folder: the loader is timed with each of these numbers of DataLoader "
                        f"workers (default: {' '.join(map(str, LOADER_WORKERS))})")
    add_compute_flags(p)
    p.add_argument('--tf32', choices=('on', 'off'), default='on', help="as train.py's (default: on)")
    p.add_argument('--channels_last', choices=('auto', 'on', 'off'), default='auto')
    p.add_argument('--autotune', choices=('on', 'off'), default='on', help="as train.py's (default: on)")
    p.add_argument('--json', metavar='FILE', help='also write the results as JSON')
    args = p.parse_args(argv)
    if args.dataset == 'folder':
        if args.baseline:
            p.error("--baseline times the reference's step on CIFAR-10 only; leave it out with --dataset folder")
        if args.synthetic:
            p.error("--synthetic replaces CIFAR-10 with random images; leave it out with --dataset folder")
        args.image_size = args.image_size or 256
        args.batch_sizes = args.batch_sizes or list(FOLDER_BATCH_SIZES)
        args.loader_workers = args.loader_workers or list(LOADER_WORKERS)
    else:
        if args.image_size not in (None, 32):
            p.error(f"--image_size {args.image_size}: CIFAR-10's images are 32x32; use --dataset folder for "
                    f"larger ones")
        if args.loader_workers is not None:
            p.error("--loader_workers times a folder data set's loader; it needs --dataset folder")
        args.image_size = 32
        args.batch_sizes = args.batch_sizes or list(CIFAR_BATCH_SIZES)
    return args


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize()
    elif device.type == 'mps':
        torch.mps.synchronize()


def timed_rates(runs, images_per_call, device, windows, seconds):
    """Median images per second of each of `runs` (name: function doing one call), over `windows`
    windows each, after a warm-up. The runs' windows alternate (A, B, A, B, ...), so that a change
    in the machine's speed during the measurement reaches all of them alike; each window runs
    about seconds / windows of work, sized from the warm-up."""
    calls = {}
    for name, run_once in runs.items():
        for _ in range(3 if device.type == 'cuda' else 0):  # CUDA: kernels chosen, memory pooled
            run_once()
        sync(device)
        start = time.perf_counter()
        for _ in range(2):
            run_once()
        sync(device)
        calls[name] = max(1, round(seconds / windows / ((time.perf_counter() - start) / 2)))
    rates = {name: [] for name in runs}
    for _ in range(windows):
        for name, run_once in runs.items():
            with WindowTimer(device) as elapsed:
                for _ in range(calls[name]):
                    run_once()
            rates[name].append(calls[name] * images_per_call / elapsed())
    return {name: statistics.median(r) for name, r in rates.items()}


class WindowTimer:
    """The block's seconds, as the value the `with` gives a function for: on CUDA between two
    events on the stream (the GPU's own clock), elsewhere the host's clock after a sync."""

    def __init__(self, device):
        self.device = device

    def __enter__(self):
        if self.device.type == 'cuda':
            self.start, self.end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self.start.record()
        else:
            sync(self.device)
            self.started = time.perf_counter()
        return self.seconds

    def __exit__(self, *exc):
        if self.device.type == 'cuda':
            self.end.record()
            self.end.synchronize()
        else:
            sync(self.device)
            self.ended = time.perf_counter()
        return False

    def seconds(self):
        if self.device.type == 'cuda':
            return self.start.elapsed_time(self.end) / 1000
        return self.ended - self.started


def endless_batches(images, batch_size, device, memory_format):
    """train.py's data path (in-memory gather and flip), epoch after epoch."""
    for epoch in itertools.count():
        order = torch.Generator().manual_seed(epoch)
        for _, lab in images.batches(batch_size, shuffle=True, flip=True, generator=order, device=device):
            yield lab.contiguous(memory_format=memory_format)


def recipe_gan(recipe, compute, images, **training):
    """The GAN of `recipe` (a (ModelConfig, TrainConfig) pair, its TrainConfig's fields
    `training` replaced), with the ab bins of `images` for a distribution head."""
    model_config, train_config = recipe
    return ColorizationGAN(model_config, dataclasses.replace(train_config, **training), compute,
                           ab_classes=head_classes(recipe, images, compute.device),
                           n_classes=CLASSES if model_config.class_context else 0)


def project_step(recipe, batch_size, images, compute, channels_last, autotune, pool=None):
    """train.py's step as train.py runs it for `recipe` (a (ModelConfig, TrainConfig) pair), and
    the line saying which layer forms it chose. `pool`: ready batches to cycle through instead of
    `images`' data path (a folder's, decoded in advance, so that the timing holds the step alone)."""
    gan = recipe_gan(recipe, compute, images, channels_last='on' if channels_last else 'off')
    classes = step_classes(recipe, batch_size, compute.device)
    _, forms_line = choose_layer_forms(gan, batch_size, autotune)
    if pool is None:
        batches = endless_batches(images, batch_size, compute.device, gan.memory_format)
    else:
        batches = itertools.cycle(pool)
    step = itertools.count(1)

    def run_once():
        gan.step(next(batches), next(step), classes=classes)

    def infer():
        with torch.no_grad(), compute.autocast:
            gan.G_ema(next(batches)[:, :1])
    gan.G_ema.eval()
    return run_once, infer, forms_line


class ReferenceStyleImages(torch.utils.data.Dataset):
    """The reference's input path: one PNG file per image, decoded, flipped and converted to Lab
    one image at a time, every epoch."""

    def __init__(self, folder):
        self.paths = sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.endswith('.png'))

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        rgb = cv2.cvtColor(cv2.imread(self.paths[i]), cv2.COLOR_BGR2RGB)
        if np.random.random() < 0.5:
            rgb = rgb[:, ::-1]
        lab = cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.float32) / 255.0, cv2.COLOR_RGB2Lab)
        lab = lab / np.float32([pictures.L_HALF_RANGE, pictures.AB_RANGE, pictures.AB_RANGE]) - np.float32([1, 0, 0])
        return torch.from_numpy(lab.transpose(2, 0, 1).copy())


def write_pngs(rgb, folder):
    for i, image in enumerate(rgb):
        cv2.imwrite(os.path.join(folder, f'{i:05d}.png'), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def reference_step(recipe, batch_size, png_folder, num_workers, device=torch.device('cpu')):
    """The reference's training step as the reference takes it: fp32, contiguous tensors, the
    library's layers and dropout, a sigmoid and BCE on probabilities, the discriminator's weight
    gradients computed (and thrown away) in the generator's step, PyTorch's default Adam, fed by
    a DataLoader that decodes PNG files."""
    model_config, config = recipe
    torch.manual_seed(0)
    G, D = Generator(model_config.gen_norm, model_config.gen_dropout), Discriminator(model_config.disc_norm)
    if model_config.apply_weight_init:
        init_weights(G), init_weights(D)
    for block in (G.up1, G.up2):  # the library's dropout, as the reference used
        block.model[3] = nn.Dropout(block.model[3].p)
    G.to(device), D.to(device)  # on a GPU, as the reference ran there: batches copied in each step
    D_probability = nn.Sequential(D, nn.Sigmoid())
    opt_g = torch.optim.Adam(G.parameters(), lr=config.base_lr_gen, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=config.base_lr_disc, betas=(0.5, 0.999))
    loader = torch.utils.data.DataLoader(ReferenceStyleImages(png_folder), batch_size=batch_size, shuffle=True,
                                         num_workers=num_workers, drop_last=True,
                                         persistent_workers=num_workers > 0)
    batches = itertools.chain.from_iterable(iter(loader) for _ in itertools.count())
    step = itertools.count(1)

    def run_once():
        lab = next(batches).to(device)
        number = next(step)
        for opt, base in ((opt_g, config.base_lr_gen), (opt_d, config.base_lr_disc)):
            for group in opt.param_groups:
                group['lr'] = learning_rate(base, number, config.lr_decay_rate, config.lr_decay_steps)
        L, ab = lab[:, :1], lab[:, 1:]
        fake_ab = G(L)
        fake = torch.cat([L, fake_ab], dim=1)
        opt_g.zero_grad()
        p_fake = D_probability(fake)
        g_loss = ((1 - config.l1_weight) * F.binary_cross_entropy(p_fake, torch.ones_like(p_fake))
                  + config.l1_weight * (ab - fake_ab).abs().mean())
        g_loss.backward()
        opt_g.step()
        opt_d.zero_grad()
        p_real, p_fake = D_probability(lab), D_probability(fake.detach())
        d_loss = (F.binary_cross_entropy(p_real, torch.full_like(p_real, config.smoothing))
                  + F.binary_cross_entropy(p_fake, torch.zeros_like(p_fake)))
        d_loss.backward()
        opt_d.step()
    return run_once


CLASSES = 10  # the class context's classes, as CIFAR-10's


def step_classes(recipe, batch_size, device):
    """A class context's batch of class labels (fixed: the step's cost does not depend on them); else None."""
    return torch.arange(batch_size, device=device) % CLASSES if recipe[0].class_context else None


def head_classes(recipe, images, device):
    """A colour-distribution head's ab bins, from the images timed (None for the reference's head)."""
    model_config, train_config = recipe
    if model_config.ab_head == 'regress':
        return None
    return AbClasses.from_training_set(images, train_config.rebalance, device)


def flops_per_training_image(recipe, device, images=None):
    """Forward and backward of both networks for one step, counted in fp32 at batch 8."""
    gan = recipe_gan(recipe, Compute(device, 'fp32'), images, channels_last='off', ema_decay=0.0)
    size = recipe[0].image_size
    lab = torch.rand(8, 3, size, size, device=device) * 2 - 1
    with FlopCounterMode(display=False) as counter:
        gan.step(lab, 1, classes=step_classes(recipe, 8, device))
    return counter.get_total_flops() / 8


# The profiler's names of the work a training step is for: matrix products and convolutions
# (forward and backward). Everything else (copies, casts, norms, activations, the optimizer) is
# the step's overhead, whose share bench.py prints so that a regression shows at once.
# aten::_convolution is in: on CPUs it computes the transposed convolutions itself (no child op).
PRODUCT_OPS = frozenset({'aten::mm', 'aten::addmm', 'aten::bmm', 'aten::mkldnn_convolution', 'aten::_convolution',
                         'aten::convolution_backward', 'aten::cudnn_convolution', 'aten::mkldnn_rnn_layer'})


@contextlib.contextmanager
def native_stderr_silenced():
    """The profiler's C++ library prints its start and stop to file descriptor 2 at every use."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, 'w') as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def step_profile(run_once, steps=4, device=torch.device('cpu')):
    """{'outside_products': share of the step's self time outside matrix products and
    convolutions, 'copies': share in aten::copy_} over `steps` profiled steps: CPU time on a
    CPU; on CUDA the GPU's kernel time (each operator's kernels counted under it)."""
    from torch.profiler import ProfilerActivity, profile
    on_gpu = device.type == 'cuda'
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    with native_stderr_silenced(), profile(activities=activities) as prof:
        for _ in range(steps):
            run_once()
        sync(device)
    events = prof.key_averages()
    if not on_gpu:
        times = {e.key: e.self_cpu_time_total for e in events}
        total = sum(times.values()) or 1.0
        return {'outside_products': 1 - sum(t for k, t in times.items() if k in PRODUCT_OPS) / total,
                'copies': times.get('aten::copy_', 0.0) / total}
    # Kernels are events of their own (device type CUDA); operators carry their kernels' time.
    total = sum(e.self_device_time_total for e in events if e.device_type.name == 'CUDA') or 1.0
    inclusive = {e.key: e.device_time_total for e in events if e.device_type.name == 'CPU'}
    products = sum(inclusive.get(k, 0.0) for k in ('aten::convolution', 'aten::convolution_backward', 'aten::mm',
                                                   'aten::addmm', 'aten::bmm'))
    return {'outside_products': max(0.0, 1 - products / total), 'copies': inclusive.get('aten::copy_', 0.0) / total}


def matmul_peak(device, precision, n=4096, calls=5):
    """The best rate of `calls` single n x n products after one warm-up: a peak, not a typical rate.
    On CUDA, bf16 products of 8192 (the GPU's tensor-core peak, whatever the run's precision)."""
    dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(precision, torch.float32)
    if device.type == 'cuda':
        dtype, n, calls = torch.bfloat16, 8192, 20
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    rates = []
    for _ in range(calls):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        rates.append(2 * n ** 3 / (time.perf_counter() - start))
    return max(rates)


def folder_pool(train_set, batch_size, device, memory_format, batches=FOLDER_POOL_BATCHES):
    """The first `batches` whole training batches of a folder data set (shuffled, cropped and
    flipped as train.py draws them), decoded now, on `device` in `memory_format`."""
    pool = []
    drawn = train_set.batches(batch_size, shuffle=True, flip=True, generator=torch.Generator().manual_seed(0),
                              device=device)
    try:
        for _, lab in drawn:
            if len(lab) == batch_size:
                pool.append(lab.contiguous(memory_format=memory_format))
            if len(pool) == batches:
                break
    finally:
        drawn.close()
    if not pool:
        raise UserError(f"the training folder holds {len(train_set)} images, fewer than --batch_sizes {batch_size}; "
                        f"pick a smaller batch size")
    return pool


def loader_rate(train_set, batch_size, seconds):
    """(images per second, images, seconds) of a folder data set's training batches alone, as
    train.py draws them (shuffle, crop, flip), counted from the first batch on for about `seconds`:
    the workers' start-up is left out, except where a small folder's epochs end and restart."""
    images, start = 0, None
    for epoch in itertools.count():
        drawn = train_set.batches(batch_size, shuffle=True, flip=True, generator=torch.Generator().manual_seed(epoch))
        try:
            for _, lab in drawn:
                if start is None:
                    start = time.perf_counter()
                    continue
                images += len(lab)
                elapsed = time.perf_counter() - start
                if elapsed >= seconds:
                    return images / elapsed, images, elapsed
        finally:
            drawn.close()


def workers_name(n):
    return f"{n} worker{'' if n == 1 else 's'}" if n else 'no workers (in process)'


def synthetic_images(n, seed=0):
    rng = np.random.default_rng(seed)
    return LabImages(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), np.zeros(n, np.int64))


def print_rows(rows, baseline):
    header = (f"{'recipe':9s} {'batch':>5s} {'train img/s':>11s} {'infer img/s':>11s} {'GFLOP/img':>9s} {'MFU':>6s} "
              f"{'other':>6s} {'copy_':>6s}")
    if baseline:
        header += f" {'reference img/s':>15s} {'ratio':>6s}"
    print(header)
    for r in rows:
        line = (f"{r['recipe']:9s} {r['batch_size']:5d} {r['train_images_per_s']:11.1f} "
                f"{r['inference_images_per_s']:11.0f} {r['flops_per_train_image'] / 1e9:9.2f} {100 * r['mfu']:5.1f}% "
                f"{100 * r['outside_products']:5.1f}% {100 * r['copies']:5.1f}%")
        if baseline:
            line += f" {r['reference_images_per_s']:15.1f} {r['ratio']:5.2f}x"
        print(line)


def machine_line(results):
    gpu = f" ({results['gpu']})" if results.get('gpu') else ''
    tf32 = f", tf32 {results['tf32']}" if results.get('gpu') else ''
    return (f"cpu {results['cpu']}; device {results['device']}{gpu}, precision {results['precision']}{tf32}, "
            f"channels-last {'on' if results['channels_last'] else 'off'}, torch {results['torch']}, "
            f"{results['threads']} threads")


def main(argv=None):
    args = parse_args(argv)
    # The reference's 4 workers on a 2-core machine draw PyTorch's warning; that is what it ran with.
    warnings.filterwarnings('ignore', message='This DataLoader will create')
    compute = Compute.from_flags(args)
    device, precision = compute.device, compute.precision
    channels_last = use_channels_last(args.channels_last, device)
    results = {'device': str(device), 'cpu': cpu_description(), 'precision': precision, 'tf32': args.tf32,
               'gpu': gpu_description(device) if device.type == 'cuda' else None,
               'channels_last': channels_last, 'torch': torch.__version__, 'threads': torch.get_num_threads(),
               'dataset': args.dataset, 'image_size': args.image_size}
    if args.dataset == 'folder':
        return bench_folder(args, compute, channels_last, results)
    if args.synthetic:
        images = synthetic_images(max(BASELINE_IMAGES, 4 * max(args.batch_sizes)))
    else:
        start = time.perf_counter()
        images, test_set = load_split(args.data_path, train=True), load_split(args.data_path, train=False)
        results['load_seconds'] = time.perf_counter() - start
        results['load_images'] = len(images) + len(test_set)
    peak = matmul_peak(device, precision)
    results['matmul_peak_flops'] = peak
    rows = []
    with tempfile.TemporaryDirectory(prefix='bench-pngs-') as png_folder:
        if args.baseline:
            write_pngs(images.rgb[:BASELINE_IMAGES], png_folder)
        for name in args.recipes:
            recipe = RECIPES[name]
            flops = flops_per_training_image(recipe, device, images)
            for batch_size in args.batch_sizes:
                train_once, infer, forms_line = project_step(recipe, batch_size, images, compute, channels_last,
                                                             args.autotune)
                print(f"  {name} batch {batch_size}: {forms_line}", file=sys.stderr)
                runs = {'project': train_once}
                if args.baseline:
                    runs['reference'] = reference_step(recipe, batch_size, png_folder, args.num_workers, device)
                rates = timed_rates(runs, batch_size, device, args.windows, args.seconds)
                train_rate = rates['project']
                infer_rate = timed_rates({'infer': infer}, batch_size, device, args.windows, args.seconds / 3)['infer']
                row = {'recipe': name, 'batch_size': batch_size, 'train_images_per_s': train_rate,
                       'inference_images_per_s': infer_rate, 'flops_per_train_image': flops,
                       'mfu': train_rate * flops / peak, 'layer_forms': forms_line,
                       **step_profile(train_once, device=device)}
                if args.baseline:
                    row['reference_images_per_s'] = rates['reference']
                    row['ratio'] = train_rate / rates['reference']
                rows.append(row)
                print(f"  {name} batch {batch_size}: {train_rate:.1f} img/s training, {infer_rate:.0f} inference"
                      + (f"; reference-style step {row['reference_images_per_s']:.1f} img/s" if args.baseline else ''),
                      file=sys.stderr)
    results['rows'] = rows

    print(machine_line(results))
    if 'load_seconds' in results:
        print(f"load and convert {results['load_images']} images: {results['load_seconds']:.2f} s")
    print(f"matrix-multiply peak ({'bf16' if device.type == 'cuda' else precision}): {peak / 1e9:.0f} GFLOP/s")
    print_rows(rows, args.baseline)
    if args.json:
        utils.write_json(args.json, results)
    return 0


def bench_folder(args, compute, channels_last, results):
    """--dataset folder: the step at --image_size fed from the folder's batches, the loader alone
    with each of --loader_workers, and whether each keeps up with the step."""
    device, precision, size = compute.device, compute.precision, args.image_size
    start = time.perf_counter()
    train_set = FolderImages(args.data_path, 'train', size, num_workers=0)
    results['list_seconds'] = time.perf_counter() - start
    results['data_path'] = os.path.abspath(args.data_path)
    results['train_images'] = len(train_set)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    pools = {b: folder_pool(train_set, b, device, memory_format) for b in args.batch_sizes}
    peak = matmul_peak(device, precision)
    results['matmul_peak_flops'] = peak
    rows = []
    for name in args.recipes:
        model_config, train_config = RECIPES[name]
        recipe = (dataclasses.replace(model_config, image_size=size), train_config)
        flops = flops_per_training_image(recipe, device, train_set)
        for batch_size in args.batch_sizes:
            train_once, infer, forms_line = project_step(recipe, batch_size, train_set, compute, channels_last,
                                                         args.autotune, pool=pools[batch_size])
            print(f"  {name} batch {batch_size}: {forms_line}", file=sys.stderr)
            train_rate = timed_rates({'project': train_once}, batch_size, device, args.windows,
                                     args.seconds)['project']
            infer_rate = timed_rates({'infer': infer}, batch_size, device, args.windows, args.seconds / 3)['infer']
            rows.append({'recipe': name, 'batch_size': batch_size, 'train_images_per_s': train_rate,
                         'inference_images_per_s': infer_rate, 'flops_per_train_image': flops,
                         'mfu': train_rate * flops / peak, 'layer_forms': forms_line,
                       **step_profile(train_once, device=device)})
            print(f"  {name} batch {batch_size}: {train_rate:.1f} img/s training, {infer_rate:.0f} inference",
                  file=sys.stderr)
    del pools
    results['rows'] = rows

    loader = []
    for batch_size in args.batch_sizes:
        for workers in args.loader_workers:
            timed_set = FolderImages(args.data_path, 'train', size, num_workers=workers)
            rate, images, seconds = loader_rate(timed_set, batch_size, args.seconds)
            loader.append({'batch_size': batch_size, 'workers': workers, 'images_per_s': rate, 'images': images,
                           'seconds': seconds})
            print(f"  loader batch {batch_size}, {workers_name(workers)}: {rate:.0f} img/s", file=sys.stderr)
    results['loader'] = loader
    verdicts = []
    for row in rows:
        for entry in loader:
            if entry['batch_size'] == row['batch_size']:
                loaded, trained = entry['images_per_s'], row['train_images_per_s']
                verdicts.append({'recipe': row['recipe'], 'batch_size': row['batch_size'],
                                 'workers': entry['workers'], 'loader_images_per_s': loaded,
                                 'train_images_per_s': trained, 'keeps_up': loaded >= trained,
                                 'loaded_per_trained': loaded / trained})
    results['keeps_up'] = verdicts

    print(machine_line(results))
    print(f"folder {args.data_path}: {len(train_set)} training images, listed in {results['list_seconds']:.2f} s; "
          f"{size}x{size} images and networks")
    print(f"matrix-multiply peak ({'bf16' if device.type == 'cuda' else precision}): {peak / 1e9:.0f} GFLOP/s")
    print("the step, fed with batches decoded in advance:")
    print_rows(rows, False)
    print(f"the loader alone (decode, crop, flip, Lab; in training its workers share the {os.cpu_count()} cores "
          f"with the step):")
    print(f"{'batch':>5s} {'workers':>7s} {'loaded img/s':>12s}")
    for entry in loader:
        print(f"{entry['batch_size']:5d} {entry['workers']:7d} {entry['images_per_s']:12.0f}")
    print("does the loader keep up with the step?")
    for v in verdicts:
        how = (f"keeps up ({v['loader_images_per_s']:.0f} img/s loaded >= {v['train_images_per_s']:.1f} img/s "
               f"trained)" if v['keeps_up'] else
               f"the step waits for the data ({v['loader_images_per_s']:.0f} img/s loaded < "
               f"{v['train_images_per_s']:.1f} img/s trained)")
        print(f"  {v['recipe']} batch {v['batch_size']}, {workers_name(v['workers'])}: {how}")
    if args.json:
        utils.write_json(args.json, results)
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
