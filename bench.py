"""Measure training and inference speed, model FLOPs and utilisation on this machine, and with
--baseline, the reference's training step side by side in the same run.

For the default recipe and the spectral recipe, at batch 32 and 128: training images per second
of train.py's whole step (learning rates, both networks, the averaged generator, fed by its data
path; after warm-up, the median of several timed windows), generator inference images per second,
model FLOPs per training image (torch.utils.flop_counter), and MFU against the machine's measured
matrix-multiply peak at the same precision. --baseline adds the reference's step as SPEC.md
describes it, timed in the same process, and the ratio of the two.
"""
import copy
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

import train
import utils
from dataset import LabImages, load_split
from models import Discriminator, Generator, init_weights

RECIPES = {
    'default': [],
    'spectral': ['--smoothing', '1.0', '--l1_weight', '0.985', '--base_lr_gen', '2e-4', '--base_lr_disc', '2e-4',
                 '--lr_decay_steps', '4e4', '--disc_norm', 'spectral', '--apply_weight_init', '0'],
}
# The reference-style data path reads this many PNG files (enough that no timing runs out of them).
BASELINE_IMAGES = 2048


def parse_args(argv=None):
    p = utils.OneLineArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--data_path', default='./data', help='where CIFAR-10 is (default: ./data)')
    p.add_argument('--synthetic', action='store_true', help='random images instead of CIFAR-10; skips the load timing')
    p.add_argument('--baseline', action='store_true',
                   help="also time the reference's training step (fp32, contiguous, library layers, sigmoid + BCE, "
                        "per-image PNG decoding in a DataLoader) in the same run, and print the ratio")
    p.add_argument('--recipes', nargs='+', choices=tuple(RECIPES), default=list(RECIPES), help='(default: both)')
    p.add_argument('--batch_sizes', type=utils.number_in(int, 1), nargs='+', default=[32, 128])
    p.add_argument('--windows', type=utils.number_in(int, 1), default=3, help='timed windows per measurement (default: 3)')
    p.add_argument('--seconds', type=utils.number_in(float, 0.1), default=6.0,
                   help='about how long each training measurement runs (default: 6)')
    p.add_argument('--num_workers', type=utils.number_in(int, 0), default=4,
                   help="the reference-style DataLoader's workers (default: 4, the reference's)")
    p.add_argument('--device', default='auto')
    p.add_argument('--precision', choices=('auto', 'fp32', 'bf16', 'fp16'), default='auto')
    p.add_argument('--channels_last', choices=('auto', 'on', 'off'), default='auto')
    p.add_argument('--autotune', choices=('on', 'off'), default='on', help="as train.py's (default: on)")
    p.add_argument('--json', metavar='FILE', help='also write the results as JSON')
    return p.parse_args(argv)


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
        start = time.perf_counter()
        for _ in range(2):
            run_once()
        sync(device)
        calls[name] = max(1, round(seconds / windows / ((time.perf_counter() - start) / 2)))
    rates = {name: [] for name in runs}
    for _ in range(windows):
        for name, run_once in runs.items():
            start = time.perf_counter()
            for _ in range(calls[name]):
                run_once()
            sync(device)
            rates[name].append(calls[name] * images_per_call / (time.perf_counter() - start))
    return {name: statistics.median(r) for name, r in rates.items()}


def endless_batches(images, batch_size, device, memory_format):
    """train.py's data path (in-memory gather and flip), epoch after epoch."""
    for epoch in itertools.count():
        order = torch.Generator().manual_seed(epoch)
        for _, lab in images.batches(batch_size, shuffle=True, flip=True, generator=order, device=device):
            yield lab.contiguous(memory_format=memory_format)


def project_step(flags, batch_size, images, device, precision, channels_last, autotune):
    """train.py's step as train.py runs it, and the line saying which layer forms it chose."""
    args = train.parse_args(flags + ['--batch_size', str(batch_size), '--autotune', autotune])
    torch.manual_seed(0)
    G, D, opt_g, opt_d = train.build_networks(args, device, channels_last)
    G_ema = copy.deepcopy(G).requires_grad_(False)
    _, forms_line = train.choose_layer_forms(G, D, G_ema, args, device, precision, channels_last)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == 'fp16')
    autocast = utils.autocast_context(device, precision)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    batches = endless_batches(images, batch_size, device, memory_format)
    step = itertools.count(1)

    def run_once():
        train.train_step(G, D, G_ema, opt_g, opt_d, scaler, next(batches), next(step), args, autocast)

    def infer():
        with torch.no_grad(), autocast:
            G_ema(next(batches)[:, :1])
    G_ema.eval()
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
        lab = lab / np.float32([50, 127, 127]) - np.float32([1, 0, 0])
        return torch.from_numpy(lab.transpose(2, 0, 1).copy())


def write_pngs(rgb, folder):
    for i, image in enumerate(rgb):
        cv2.imwrite(os.path.join(folder, f'{i:05d}.png'), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def reference_step(flags, batch_size, png_folder, num_workers):
    """The reference's training step as SPEC.md describes it: fp32, contiguous tensors, the
    library's layers and dropout, a sigmoid and BCE on probabilities, the discriminator's weight
    gradients computed (and thrown away) in the generator's step, PyTorch's default Adam, fed by
    a DataLoader that decodes PNG files."""
    args = train.parse_args(flags + ['--batch_size', str(batch_size)])
    torch.manual_seed(0)
    G, D = Generator(args.gen_norm, args.gen_dropout), Discriminator(args.disc_norm)
    if args.apply_weight_init:
        init_weights(G), init_weights(D)
    for block in (G.up1, G.up2):  # the library's dropout, as the reference used
        block.model[3] = nn.Dropout(block.model[3].p)
    D_probability = nn.Sequential(D, nn.Sigmoid())
    opt_g = torch.optim.Adam(G.parameters(), lr=args.base_lr_gen, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=args.base_lr_disc, betas=(0.5, 0.999))
    loader = torch.utils.data.DataLoader(ReferenceStyleImages(png_folder), batch_size=batch_size, shuffle=True,
                                         num_workers=num_workers, drop_last=True,
                                         persistent_workers=num_workers > 0)
    batches = itertools.chain.from_iterable(iter(loader) for _ in itertools.count())
    step = itertools.count(1)

    def run_once():
        lab = next(batches)
        train.set_learning_rates(opt_g, opt_d, next(step), args)
        L, ab = lab[:, :1], lab[:, 1:]
        fake_ab = G(L)
        fake = torch.cat([L, fake_ab], dim=1)
        opt_g.zero_grad()
        p_fake = D_probability(fake)
        g_loss = ((1 - args.l1_weight) * F.binary_cross_entropy(p_fake, torch.ones_like(p_fake))
                  + args.l1_weight * (ab - fake_ab).abs().mean())
        g_loss.backward()
        opt_g.step()
        opt_d.zero_grad()
        p_real, p_fake = D_probability(lab), D_probability(fake.detach())
        d_loss = (F.binary_cross_entropy(p_real, torch.full_like(p_real, args.smoothing))
                  + F.binary_cross_entropy(p_fake, torch.zeros_like(p_fake)))
        d_loss.backward()
        opt_d.step()
    return run_once


def flops_per_training_image(flags, device):
    """Forward and backward of both networks for one step, counted in fp32 at batch 8."""
    args = train.parse_args(flags + ['--batch_size', '8'])
    torch.manual_seed(0)
    G, D, opt_g, opt_d = train.build_networks(args, device)
    lab = torch.rand(8, 3, 32, 32, device=device) * 2 - 1
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    with FlopCounterMode(display=False) as counter:
        train.gan_step(G, D, lab, args, opt_g, opt_d, scaler, utils.autocast_context(device, 'fp32'))
    return counter.get_total_flops() / 8


def matmul_peak(device, precision, n=4096, calls=5):
    """The best rate of `calls` single n x n products after one warm-up: a peak, not a typical rate."""
    dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(precision, torch.float32)
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


def synthetic_images(n, seed=0):
    rng = np.random.default_rng(seed)
    return LabImages(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), np.zeros(n, np.int64))


def main(argv=None):
    args = parse_args(argv)
    # The reference's 4 workers on a 2-core machine draw PyTorch's warning; that is what it ran with.
    warnings.filterwarnings('ignore', message='This DataLoader will create')
    device = utils.pick_device(args.device)
    precision = utils.resolve_precision(args.precision, device)
    channels_last = train.use_channels_last(args.channels_last, device)
    results = {'device': str(device), 'cpu': utils.cpu_description(), 'precision': precision,
               'channels_last': channels_last, 'torch': torch.__version__, 'threads': torch.get_num_threads()}
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
            flags = RECIPES[name]
            flops = flops_per_training_image(flags, device)
            for batch_size in args.batch_sizes:
                train_once, infer, forms_line = project_step(flags, batch_size, images, device, precision,
                                                             channels_last, args.autotune)
                print(f"  {name} batch {batch_size}: {forms_line}", file=sys.stderr)
                runs = {'project': train_once}
                if args.baseline:
                    runs['reference'] = reference_step(flags, batch_size, png_folder, args.num_workers)
                rates = timed_rates(runs, batch_size, device, args.windows, args.seconds)
                train_rate = rates['project']
                infer_rate = timed_rates({'infer': infer}, batch_size, device, args.windows, args.seconds / 3)['infer']
                row = {'recipe': name, 'batch_size': batch_size, 'train_images_per_s': train_rate,
                       'inference_images_per_s': infer_rate, 'flops_per_train_image': flops,
                       'mfu': train_rate * flops / peak, 'layer_forms': forms_line}
                if args.baseline:
                    row['reference_images_per_s'] = rates['reference']
                    row['ratio'] = train_rate / rates['reference']
                rows.append(row)
                print(f"  {name} batch {batch_size}: {train_rate:.1f} img/s training, {infer_rate:.0f} inference"
                      + (f"; reference-style step {row['reference_images_per_s']:.1f} img/s" if args.baseline else ''),
                      file=sys.stderr)
    results['rows'] = rows

    print(f"cpu {results['cpu']}; device {device}, precision {precision}, "
          f"channels-last {'on' if channels_last else 'off'}, torch {torch.__version__}, {results['threads']} threads")
    if 'load_seconds' in results:
        print(f"load and convert {results['load_images']} images: {results['load_seconds']:.2f} s")
    print(f"matrix-multiply peak ({precision}): {peak / 1e9:.0f} GFLOP/s")
    header = f"{'recipe':9s} {'batch':>5s} {'train img/s':>11s} {'infer img/s':>11s} {'GFLOP/img':>9s} {'MFU':>6s}"
    if args.baseline:
        header += f" {'reference img/s':>15s} {'ratio':>6s}"
    print(header)
    for r in rows:
        line = (f"{r['recipe']:9s} {r['batch_size']:5d} {r['train_images_per_s']:11.1f} "
                f"{r['inference_images_per_s']:11.0f} {r['flops_per_train_image'] / 1e9:9.2f} {100 * r['mfu']:5.1f}%")
        if args.baseline:
            line += f" {r['reference_images_per_s']:15.1f} {r['ratio']:5.2f}x"
        print(line)
    if args.json:
        utils.write_json(args.json, results)
    return 0


if __name__ == '__main__':
    sys.exit(utils.run_cli(main))
