"""Measure training and inference speed, model FLOPs and utilisation on this machine.

For the default recipe and the spectral recipe, at batch 32 and 128: training images per second
(after warm-up, the median of several timed windows), generator inference images per second,
model FLOPs per training image (torch.utils.flop_counter), and MFU against the machine's measured
matrix-multiply peak at the same precision. Also times loading and converting the whole data set.
"""
import statistics
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

import train
import utils
from dataset import load_split

RECIPES = {
    'default': [],
    'spectral': ['--smoothing', '1.0', '--l1_weight', '0.985', '--base_lr_gen', '2e-4', '--base_lr_disc', '2e-4',
                 '--lr_decay_steps', '4e4', '--disc_norm', 'spectral', '--apply_weight_init', '0'],
}


def parse_args(argv=None):
    p = utils.OneLineArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--data_path', default='./data', help='where CIFAR-10 is (default: ./data)')
    p.add_argument('--synthetic', action='store_true', help='random images instead of CIFAR-10; skips the load timing')
    p.add_argument('--batch_sizes', type=utils.number_in(int, 1), nargs='+', default=[32, 128])
    p.add_argument('--windows', type=utils.number_in(int, 1), default=3, help='timed windows per measurement (default: 3)')
    p.add_argument('--seconds', type=utils.number_in(float, 0.1), default=6.0,
                   help='about how long each training measurement runs (default: 6)')
    p.add_argument('--device', default='auto')
    p.add_argument('--precision', choices=('auto', 'fp32', 'bf16', 'fp16'), default='auto')
    p.add_argument('--channels_last', choices=('auto', 'on', 'off'), default='auto')
    p.add_argument('--json', metavar='FILE', help='also write the results as JSON')
    return p.parse_args(argv)


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize()
    elif device.type == 'mps':
        torch.mps.synchronize()


def timed_rate(run_once, images_per_call, device, windows, seconds):
    """Median images per second over `windows` windows, after a warm-up; each window runs about
    seconds / windows of work, sized from the warm-up."""
    start = time.perf_counter()
    for _ in range(2):
        run_once()
    sync(device)
    per_call = (time.perf_counter() - start) / 2
    calls = max(1, round(seconds / windows / per_call))
    rates = []
    for _ in range(windows):
        start = time.perf_counter()
        for _ in range(calls):
            run_once()
        sync(device)
        rates.append(calls * images_per_call / (time.perf_counter() - start))
    return statistics.median(rates)


def training_setup(flags, batch_size, device, precision, channels_last):
    args = train.parse_args(flags + ['--batch_size', str(batch_size)])
    torch.manual_seed(0)
    G, D, opt_g, opt_d = train.build_networks(args, device, channels_last)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == 'fp16')
    lab = (torch.rand(batch_size, 3, 32, 32, device=device) * 2 - 1)
    if channels_last:
        lab = lab.contiguous(memory_format=torch.channels_last)
    return args, G, D, opt_g, opt_d, scaler, lab


def flops_per_training_image(flags, device):
    """Forward and backward of both networks for one step, counted in fp32 at batch 8."""
    args, G, D, opt_g, opt_d, scaler, lab = training_setup(flags, 8, device, 'fp32', False)
    with FlopCounterMode(display=False) as counter:
        train.gan_step(G, D, lab, args, opt_g, opt_d, scaler, utils.autocast_context(device, 'fp32'))
    return counter.get_total_flops() / 8


def matmul_peak(device, precision, n=4096):
    dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(precision, torch.float32)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return timed_rate(lambda: a @ b, 2 * n ** 3, device, 3, 3.0)


def main(argv=None):
    args = parse_args(argv)
    device = utils.pick_device(args.device)
    precision = utils.resolve_precision(args.precision, device)
    channels_last = train.use_channels_last(args.channels_last, device, precision)
    autocast = utils.autocast_context(device, precision)
    results = {'device': str(device), 'precision': precision, 'channels_last': channels_last,
               'torch': torch.__version__, 'threads': torch.get_num_threads()}
    if not args.synthetic:
        start = time.perf_counter()
        train_set, test_set = load_split(args.data_path, train=True), load_split(args.data_path, train=False)
        results['load_seconds'] = time.perf_counter() - start
        results['load_images'] = len(train_set) + len(test_set)
    peak = matmul_peak(device, precision)
    results['matmul_peak_flops'] = peak
    rows = []
    for name, flags in RECIPES.items():
        flops = flops_per_training_image(flags, device)
        for batch_size in args.batch_sizes:
            run_args, G, D, opt_g, opt_d, scaler, lab = training_setup(flags, batch_size, device, precision, channels_last)
            train_rate = timed_rate(lambda: train.gan_step(G, D, lab, run_args, opt_g, opt_d, scaler, autocast),
                                    batch_size, device, args.windows, args.seconds)
            G.eval()

            def infer():
                with torch.no_grad(), autocast:
                    G(lab[:, :1])
            infer_rate = timed_rate(infer, batch_size, device, args.windows, args.seconds / 3)
            rows.append({'recipe': name, 'batch_size': batch_size, 'train_images_per_s': train_rate,
                         'inference_images_per_s': infer_rate, 'flops_per_train_image': flops,
                         'mfu': train_rate * flops / peak})
            print(f"  {name} batch {batch_size}: {train_rate:.0f} img/s training, {infer_rate:.0f} inference",
                  file=sys.stderr)
    results['rows'] = rows

    print(f"device {device}, precision {precision}, channels-last {'on' if channels_last else 'off'}, "
          f"torch {torch.__version__}, {results['threads']} threads")
    if 'load_seconds' in results:
        print(f"load and convert {results['load_images']} images: {results['load_seconds']:.2f} s")
    print(f"matrix-multiply peak ({precision}): {peak / 1e9:.0f} GFLOP/s")
    print(f"{'recipe':9s} {'batch':>5s} {'train img/s':>11s} {'infer img/s':>11s} {'GFLOP/img':>9s} {'MFU':>6s}")
    for r in rows:
        print(f"{r['recipe']:9s} {r['batch_size']:5d} {r['train_images_per_s']:11.0f} {r['inference_images_per_s']:11.0f} "
              f"{r['flops_per_train_image'] / 1e9:9.2f} {100 * r['mfu']:5.1f}%")
    if args.json:
        utils.write_json(args.json, results)
    return 0


if __name__ == '__main__':
    sys.exit(utils.run_cli(main))
