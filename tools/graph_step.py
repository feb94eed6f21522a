"""Measure train.py's training step captured whole in one CUDA graph, against the same step run
eagerly, on one GPU: whether the graph's steps equal the eager ones bit for bit, and both rates.

    python tools/graph_step.py [--recipes spectral batchnorm] [--batch_sizes 32 128] [--json OUT.json]

An eager step on a GPU is paced by its host: on an H200 at batch 32 it took 21 ms, no faster
than the reference's (docs/performance.md), while a graph launches all of a step's kernels at
once. The step (both networks, their losses, gradients and Adam updates, the averaged generator,
the NaN check, the batch's sums) is captured once; every number that changes from step to step
(learning rates, the averaging rate, the step number) is read from a device tensor that the host
fills before each replay, and the batch is copied into one fixed buffer. This is an experiment:
the graph goes into train.py only where this tool measured it on a GPU (issue 25).

For each recipe and batch size: first both rates, timed in alternating windows between CUDA
events (the batches ready on the device, as train.py gathers them there). Then, on the same
batches from the same random state, with deterministic algorithms only: the graph-ready step
taken eagerly twice (is it repeatable on this GPU?), train.py's own step (the same but for the
learning rate, which the CUDA kernel reads as a float from a tensor and as a double from a
number), and the graph after its --warmup eager steps and after its --replays replays; every
weight, buffer, Adam moment, average, the NaN watch and the batch sums are compared, and the
largest difference is named with its tensor. Exit code 1 where a capture failed (the row says
why, with the error it arose from).
"""
import json
import os
import statistics
import sys
import time
import traceback
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from core.cli import Compute, OneLineArgumentParser, UserError, first_line, gpu_description, number_in, run_cli  # noqa: E402
from dataset import LabImages  # noqa: E402
from training.gan import ColorizationGAN, ema_decay  # noqa: E402
from training.options import RECIPES, configs_from_args, parse_training_args  # noqa: E402

BATCH_POOL = 8  # distinct batches the comparison and the timing cycle through


class GraphReadyGAN(ColorizationGAN):
    """train.py's GAN whose step takes every number that changes from step to step from a device
    tensor, filled by `prepare(step)` before the step: one capture of `step` then serves every
    step. Eagerly (prepare, then step) it computes what ColorizationGAN.step computes, bit for bit
    (tests/tools/test_graph_step.py)."""

    def __init__(self, model_config, train_config, compute):
        super().__init__(model_config, train_config, compute)
        device = compute.device
        # The precision the fused Adam kernels give a number lr: double on CPUs, float on CUDA.
        lr_dtype = torch.float64 if device.type == 'cpu' else torch.float32
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group['lr'] = torch.tensor(float(group['lr']), dtype=lr_dtype, device=device)
                group['capturable'] = device.type == 'cuda'  # Adam refuses a capture otherwise
        self.average_rate = torch.zeros((), device=device)
        self.step_number = torch.zeros((), device=device)

    def prepare(self, step):
        """The host's part of step `step`, outside the graph: fills, no sync."""
        for opt, lr in self.scheduled_rates(step):
            for group in opt.param_groups:
                group['lr'].fill_(lr)
        self.average_rate.fill_(1.0 - ema_decay(self.train_config.ema_decay, step))
        self.step_number.fill_(step)

    def set_learning_rates(self, step):
        pass  # prepare() set them, in the tensors the optimizers read

    @torch.no_grad()
    def update_average(self, step):
        for average, weight in zip(self.G_ema.parameters(), self.G.parameters()):
            average.lerp_(weight.detach(), self.average_rate)

    def graph_step(self, lab):
        """The step as it is captured: every per-step number from the device."""
        return self.step(lab, self.step_number)


def build(recipe, batch_size, compute, graph_ready):
    args = parse_training_args(RECIPES[recipe] + ['--batch_size', str(batch_size), '--autotune', 'off'])
    return (GraphReadyGAN if graph_ready else ColorizationGAN)(*configs_from_args(args), compute)


def built(recipe, batch_size, compute, graph_ready):
    """(a new GAN, its batch pool)."""
    gan = build(recipe, batch_size, compute, graph_ready)
    return gan, batch_pool(batch_size, compute.device, gan.memory_format)


def batch_pool(batch_size, device, memory_format, seed=0):
    """BATCH_POOL batches of random images, gathered and flipped on the device as train.py does."""
    n = batch_size * BATCH_POOL
    rgb = np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    images = LabImages(rgb, np.zeros(n, np.int64))
    drawn = images.batches(batch_size, shuffle=True, flip=True, generator=torch.Generator().manual_seed(seed),
                           device=device)
    return [lab.contiguous(memory_format=memory_format) for _, lab in drawn]


def state_tensors(gan, sums=None):
    """Every tensor a step changes, by name, copied to the CPU: weights, buffers (batch-norm
    statistics, spectral-norm vectors) and averages, Adam's moments and step counts, the NaN
    watch, and the batch sums where given."""
    tensors = {}
    for prefix, model in (('G', gan.G), ('D', gan.D), ('G_ema', gan.G_ema)):
        if model is not None:
            tensors.update((f'{prefix}.{name}', t) for name, t in model.state_dict().items())
    for prefix, opt in (('opt_g', gan.opt_g), ('opt_d', gan.opt_d)):
        for i, state in enumerate(opt.state.values()):
            tensors.update((f'{prefix}.{i}.{key}', state[key]) for key in sorted(state) if torch.is_tensor(state[key]))
    tensors['watch'] = gan.nan_watch.watch
    if sums is not None:
        tensors['sums'] = sums
    return {name: t.detach().to('cpu', copy=True) for name, t in tensors.items()}


def compare(a, b):
    """How two state_tensors dicts differ: (identical bit for bit, the largest absolute difference,
    the name of the tensor where it is; None where identical)."""
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        return False, None, 'the states hold different tensors'
    differing = [k for k in a if not torch.equal(bits(a[k]), bits(b[k]))]
    if not differing:
        return True, 0.0, None
    gaps = {k: (a[k].double() - b[k].double()).abs().nan_to_num(nan=float('inf')).max().item() for k in differing}
    worst = max(gaps, key=gaps.get)
    return False, gaps[worst], worst


def bits(t):
    """A tensor's bytes: equal bit for bit, NaNs included."""
    return t.reshape(-1).view(torch.uint8)


class CapturedStep:
    """GraphReadyGAN's step captured in a CUDA graph, after `warmup` eager steps (the optimizers'
    states are made and the kernels chosen then, on a side stream, as a capture needs)."""

    def __init__(self, gan, batches, warmup):
        self.gan = gan
        self.lab = torch.empty_like(batches[0])
        self.sums = torch.zeros(7, device=self.lab.device)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for step in range(1, warmup + 1):
                self._host_part(step, batches[(step - 1) % len(batches)])
                self.sums += gan.graph_step(self.lab)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.step_sums = gan.graph_step(self.lab)

    def _host_part(self, step, lab):
        self.gan.prepare(step)
        self.lab.copy_(lab)

    def __call__(self, step, lab):
        self._host_part(step, lab)
        self.graph.replay()
        self.sums += self.step_sums


def eager_states(gan, batches, warmup, replays, graph_ready):
    """Steps 1 .. warmup + replays taken eagerly: the states after the warm-up and at the end."""
    sums = torch.zeros(7, device=batches[0].device)
    for step in range(1, warmup + replays + 1):
        lab = batches[(step - 1) % len(batches)]
        if graph_ready:
            gan.prepare(step)
            sums += gan.graph_step(lab)
        else:
            sums += gan.step(lab, step)
        if step == warmup:
            after_warmup = state_tensors(gan, sums)
    return after_warmup, state_tensors(gan, sums)


def check(recipe, batch_size, compute, warmup, replays):
    """GANs trained on the same batches from the same random state, with deterministic algorithms
    only (cuDNN's defaults, and the bilinear resize's backward, add in any order): the graph-ready
    step taken eagerly, twice (is it repeatable here?); train.py's own step (the same but for the
    learning rate, which the CUDA kernel reads as a float where train.py hands it a double); and
    the graph, compared after its eager warm-up and after its replays with the first."""
    deterministic = torch.backends.cudnn.deterministic, torch.are_deterministic_algorithms_enabled()
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            # build() reseeds: every GAN starts from the same weights and random state
            ready = [eager_states(*built(recipe, batch_size, compute, True), warmup, replays, True) for _ in range(2)]
            plain = eager_states(*built(recipe, batch_size, compute, False), warmup, replays, False)
            gan, batches = built(recipe, batch_size, compute, True)
            captured = CapturedStep(gan, batches, warmup)
            graph_warm = state_tensors(captured.gan, captured.sums)
            for step in range(warmup + 1, warmup + replays + 1):
                captured(step, batches[(step - 1) % len(batches)])
            graph_end = state_tensors(captured.gan, captured.sums)
    finally:
        torch.backends.cudnn.deterministic = deterministic[0]
        torch.use_deterministic_algorithms(deterministic[1])
    outcome = {}
    for key, (a, b) in (('ready_repeatable', (ready[0][1], ready[1][1])),
                        ('ready_is_train_step', (ready[0][1], plain[1])),
                        ('graph_warmup_identical', (ready[0][0], graph_warm)),
                        ('graph_identical', (ready[0][1], graph_end))):
        same, gap, where = compare(a, b)
        outcome.update({key: same, f'{key}_max_abs_diff': gap, f'{key}_worst': where})
    outcome['nondeterministic_ops'] = sorted({str(w.message).split(' does not have')[0] for w in caught
                                             if 'deterministic' in str(w.message)})
    return outcome


def rates(recipe, batch_size, compute, warmup, windows, seconds):
    """Images per second of train.py's eager step and of the captured one, with the default
    algorithms, the batches ready on the device (train.py gathers them there)."""
    eager, batches = built(recipe, batch_size, compute, False)
    captured = CapturedStep(build(recipe, batch_size, compute, True), batches, warmup)
    measured = timed({'eager': lambda step: eager.step(batches[step % len(batches)], step),
                      'graph': lambda step: captured(step, batches[step % len(batches)])},
                     batch_size, windows, seconds)
    return measured['eager'], measured['graph']


def timed(runs, batch_size, windows, seconds):
    """Median images per second of each run (name: function of the step number), windows
    alternating, each timed between CUDA events after a warm-up that sizes it."""
    calls, counters = {}, {name: 1000 for name in runs}
    for name, run in runs.items():
        for _ in range(3):
            counters[name] += 1
            run(counters[name])
        torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(5):
            counters[name] += 1
            run(counters[name])
        torch.cuda.synchronize()
        calls[name] = max(5, round(seconds / windows / ((time.perf_counter() - started) / 5)))
    rates = {name: [] for name in runs}
    for _ in range(windows):
        for name, run in runs.items():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(calls[name]):
                counters[name] += 1
                run(counters[name])
            end.record()
            end.synchronize()
            rates[name].append(calls[name] * batch_size / (start.elapsed_time(end) / 1000))
    return {name: statistics.median(r) for name, r in rates.items()}


def verdict(outcome, key):
    """'yes', or 'no: the largest difference, in which tensor'."""
    if outcome[key]:
        return 'yes'
    gap = outcome[f'{key}_max_abs_diff']
    return f"no: {gap:.2g} in {outcome[f'{key}_worst']}" if gap is not None else f"no: {outcome[f'{key}_worst']}"


def failure(error):
    """A failed capture's error in one line, with the one it arose from: a capture that fails
    inside raises again when it ends, and the first error is the cause."""
    cause = error.__context__ or error.__cause__
    line = f'{type(error).__name__}: {first_line(error)}'
    return line + (f' (from {type(cause).__name__}: {first_line(cause)})' if cause is not None else '')


def attempt(row, error_key, measure, *args):
    """measure(recipe, batch size, *args), or None where it raised: then the row keeps the error
    under `error_key`, and the traceback goes to stderr."""
    try:
        return measure(row['recipe'], row['batch_size'], *args)
    except Exception as e:
        traceback.print_exc()
        row[error_key] = failure(e)
        print(f"{row['recipe']:9} {row['batch_size']:5}  failed: {row[error_key]}")
        return None
    finally:
        torch.cuda.empty_cache()


def parse_args(argv=None):
    p = OneLineArgumentParser(prog='graph_step.py', description=__doc__.split('\n\n')[0])
    p.add_argument('--recipes', nargs='+', choices=('spectral', 'batchnorm'), default=['spectral', 'batchnorm'],
                   help="train.py's --recipe (default: both)")
    p.add_argument('--batch_sizes', type=number_in(int, 1), nargs='+', default=[32, 128], help='(default: 32 128)')
    p.add_argument('--precision', choices=('auto', 'fp32', 'bf16'), default='auto',
                   help="as train.py's (default: auto, bf16 from compute capability 8.0)")
    p.add_argument('--warmup', type=number_in(int, 1), default=3, help='eager steps before the capture (default: 3)')
    p.add_argument('--replays', type=number_in(int, 1), default=5,
                   help='graph steps compared with eager ones (default: 5)')
    p.add_argument('--windows', type=number_in(int, 1), default=3, help='timed windows per rate (default: 3)')
    p.add_argument('--seconds', type=number_in(float, 0.1), default=3.0,
                   help='about how long each rate is timed (default: 3)')
    p.add_argument('--json', help='also write the results there')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if not torch.cuda.is_available():
        raise UserError('this needs a CUDA GPU, and torch sees none here (torch.cuda.is_available() '
                        'is False); tests/tools/test_graph_step.py checks its step on a CPU')
    # cuBLAS is repeatable across streams (the capture runs on its own) only with a fixed workspace.
    os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
    device = torch.device('cuda')
    flags = parse_training_args(['--device', 'cuda', '--precision', args.precision])
    compute = Compute.from_flags(flags, device)
    rows = [{'recipe': recipe, 'batch_size': batch_size} for recipe in args.recipes for batch_size in args.batch_sizes]
    results = {'gpu': gpu_description(device), 'torch': torch.__version__, 'precision': compute.precision,
               'rows': rows}
    print(f"{results['gpu']}, torch {torch.__version__}, {compute.precision}")
    # Rates first, then the comparisons: a capture that fails may leave the process unfit for more.
    print('recipe    batch  eager img/s  graph img/s  ratio')
    for row in rows:
        measured = attempt(row, 'error', rates, compute, args.warmup, args.windows, args.seconds)
        if measured is None:
            break
        eager_rate, graph_rate = measured
        row.update(eager_images_per_s=eager_rate, graph_images_per_s=graph_rate, ratio=graph_rate / eager_rate)
        print(f"{row['recipe']:9} {row['batch_size']:5} {eager_rate:12.0f} {graph_rate:12.0f} {row['ratio']:5.2f}x")
    if not any('error' in row for row in rows):
        print('bit for bit (deterministic algorithms): the graph-ready step taken eagerly twice | it against '
              "train.py's step | the graph after its warm-up | after its replays, each against the first")
        for row in rows:
            outcome = attempt(row, 'check_error', check, compute, args.warmup, args.replays)
            if outcome is None:
                break
            row.update(outcome)
            print(f"{row['recipe']:9} {row['batch_size']:5}  " + ' | '.join(
                verdict(outcome, key) for key in ('ready_repeatable', 'ready_is_train_step', 'graph_warmup_identical',
                                                  'graph_identical')))
            if outcome['nondeterministic_ops']:
                print(f"    ops without a deterministic form: {', '.join(outcome['nondeterministic_ops'])}")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=1)
    return 0 if not any('error' in row or 'check_error' in row for row in rows) else 1


if __name__ == '__main__':
    sys.exit(run_cli(main))
