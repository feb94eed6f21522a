"""Time the training step of two commits side by side: their steps alternate, window by window.

`python tools/ab_steps.py OLD NEW [--recipe default|spectral] [--batch_size 32] [--precision auto]
[--windows 6] [--steps 10]` checks both commits out (git worktree), starts one worker process per
commit, each building the recipe's GAN its own commit's way on the same synthetic images, and then asks them in
turn (A, B, A, B, ...) to run a window of steps; only one works at a time, so neither slows the
other, and a drift in the machine's speed reaches both alike. It prints each one's median images
per second and the ratio NEW / OLD. The previous release (before gan.py) is driven through
train.py's own build_networks and train_step.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from bench import RECIPE_FLAGS as RECIPES  # the flags are this checkout's; both commits parse them

# Run inside each checkout: build the step, then serve "N" (run N steps) with the seconds taken.
WORKER = r'''
import os, sys, time, itertools
sys.path.insert(0, os.getcwd())
import torch
batch_size, precision, recipe = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
import bench
images = bench.synthetic_images(max(2048, 4 * batch_size))
if os.path.exists('gan.py') or os.path.exists('training/gan.py'):
    if os.path.exists('gan.py'):  # the flat layout, before the packages
        from cli import Compute
        from gan import ColorizationGAN
        from options import parse_training_args
    else:
        from core.cli import Compute
        from training.gan import ColorizationGAN
        from training.options import parse_training_args
    args = parse_training_args(['--batch_size', str(batch_size), '--precision', precision, *recipe])
    compute = Compute.from_flags(args)
    try:  # since the configs (issue 40): the GAN takes them, not the flags
        from training.options import configs_from_args
    except ImportError:
        gan = ColorizationGAN(args, compute)
    else:
        gan = ColorizationGAN(*configs_from_args(args), compute)
    if hasattr(gan, 'choose_layer_forms'):
        forms = gan.choose_layer_forms()[1]
    else:
        from training.layer_forms import choose_layer_forms
        try:
            forms = choose_layer_forms(gan, args.batch_size, args.autotune, args.layer_forms_cache)[1]
        except TypeError:  # before the configs: it read the flags off the GAN
            forms = choose_layer_forms(gan)[1]
    batches = bench.endless_batches(images, batch_size, compute.device, gan.memory_format)
    step = lambda n: gan.step(next(batches), n)
else:
    import copy, train, utils
    args = train.parse_args(['--batch_size', str(batch_size), '--precision', precision, *recipe])
    device = utils.pick_device(args.device)
    precision = utils.resolve_precision(args.precision, device)
    channels_last = train.use_channels_last(args.channels_last, device)
    torch.manual_seed(0)
    G, D, opt_g, opt_d = train.build_networks(args, device, channels_last)
    G_ema = copy.deepcopy(G).requires_grad_(False)
    forms = train.choose_layer_forms(G, D, G_ema, args, device, precision, channels_last)[1]
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    autocast = utils.autocast_context(device, precision)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    batches = bench.endless_batches(images, batch_size, device, memory_format)
    step = lambda n: train.train_step(G, D, G_ema, opt_g, opt_d, scaler, next(batches), n, args, autocast)
counter = itertools.count(1)
for _ in range(3):
    step(next(counter))
print('ready ' + forms, flush=True)
for line in sys.stdin:
    n = int(line)
    start = time.perf_counter()
    for _ in range(n):
        step(next(counter))
    print(time.perf_counter() - start, flush=True)
'''


def checkout(commit, folder):
    subprocess.run(['git', '-C', ROOT, 'worktree', 'add', '--detach', folder, commit], check=True,
                   capture_output=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('old'), p.add_argument('new')
    p.add_argument('--recipe', choices=('default', 'spectral'), default='default',
                   help="train.py's flags of the default run or of the reference's spectral-norm recipe")
    p.add_argument('--batch_size', type=int, default=32)
    p.add_argument('--precision', default='auto')
    p.add_argument('--windows', type=int, default=6)
    p.add_argument('--steps', type=int, default=10, help='steps per window')
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix='ab-steps-') as tmp:
        workers = {}
        try:
            for name, commit in (('OLD', args.old), ('NEW', args.new)):
                folder = os.path.join(tmp, name)
                checkout(commit, folder)
                workers[name] = subprocess.Popen([sys.executable, '-c', WORKER, str(args.batch_size), args.precision,
                                                  *RECIPES[args.recipe]],
                                                 cwd=folder, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                print(f"{name} {commit}: {workers[name].stdout.readline().strip()}", flush=True)
            rates = {name: [] for name in workers}
            for _ in range(args.windows):
                for name, worker in workers.items():
                    worker.stdin.write(f"{args.steps}\n")
                    worker.stdin.flush()
                    seconds = float(worker.stdout.readline())
                    rates[name].append(args.steps * args.batch_size / seconds)
            for name, r in rates.items():
                print(f"{name}: median {statistics.median(r):.1f} img/s (windows: {', '.join(f'{x:.1f}' for x in r)})")
            print(f"ratio NEW / OLD: {statistics.median(rates['NEW']) / statistics.median(rates['OLD']):.2f}x")
        finally:
            for worker in workers.values():
                worker.kill()
            for name in ('OLD', 'NEW'):
                subprocess.run(['git', '-C', ROOT, 'worktree', 'remove', '--force', os.path.join(tmp, name)],
                               capture_output=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
