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

For each recipe and batch size, on the same batches from the same random state, with cuDNN's
deterministic algorithms: train.py's step taken eagerly twice (is the eager step repeatable on
this GPU?), and a GAN that takes its first --warmup steps eagerly through the graph-ready step,
is captured, and replays the rest; every weight, buffer, Adam moment and average is compared
after the warm-up and at the end. Then, with cuDNN's default algorithms, both are timed in
alternating windows between CUDA events (the batches ready on the device, as train.py gathers
them there). Exit code 1 where a capture failed (the row says why).
"""
import json
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from cli import Compute, OneLineArgumentParser, UserError, first_line, gpu_description, number_in, run_cli  # noqa: E402
from dataset import LabImages  # noqa: E402
from gan import ColorizationGAN, ema_decay, learning_rate  # noqa: E402
from options import RECIPES, parse_training_args  # noqa: E402

BATCH_POOL = 8  # distinct batches the comparison and the timing cycle through


class GraphReadyGAN(ColorizationGAN):
    """train.py's GAN whose step takes every number that changes from step to step from a device
    tensor, filled by `prepare(step)` before the step: one capture of `step` then serves every
    step. Eagerly (prepare, then step) it computes what ColorizationGAN.step computes, bit for bit
    (tests/test_graph_step.py)."""

    def __init__(self, args, compute):
        super().__init__(args, compute)
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
        for opt, base in ((self.opt_g, self.args.base_lr_gen), (self.opt_d, self.args.base_lr_disc)):
            for group in opt.param_groups:
                group['lr'].fill_(learning_rate(base, step, self.args.lr_decay_rate, self.args.lr_decay_steps))
        self.average_rate.fill_(1.0 - ema_decay(self.args.ema_decay, step))
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
    return (GraphReadyGAN if graph_ready else ColorizationGAN)(args, compute)


def batch_pool(batch_size, device, memory_format, seed=0):
    """BATCH_POOL batches of random images, gathered and flipped on the device as train.py does."""
    n = batch_size * BATCH_POOL
    rgb = np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    images = LabImages(rgb, np.zeros(n, np.int64))
    drawn = images.batches(batch_size, shuffle=True, flip=True, generator=torch.Generator().manual_seed(seed),
                           device=device)
    return [lab.contiguous(memory_format=memory_format) for _, lab in drawn]


def state_tensors(gan):
    """Every tensor a step changes, in a fixed order, copied to the CPU."""
    tensors = [t for model in (gan.G, gan.D, gan.G_ema) if model is not None
               for t in list(model.parameters()) + list(model.buffers())]
    for opt in (gan.opt_g, gan.opt_d):
        for state in opt.state.values():
            tensors += [state[k] for k in sorted(state) if torch.is_tensor(state[k])]
    return [t.detach().to('cpu', copy=True) for t in tensors]


def compare(a, b):
    """(identical, the largest absolute difference) between two state_tensors lists."""
    if len(a) != len(b):
        return False, float('inf')
    worst = max(((x.double() - y.double()).abs().max().item() if x.numel() else 0.0) for x, y in zip(a, b))
    return all(torch.equal(x, y) for x, y in zip(a, b)), worst


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


def check(recipe, batch_size, compute, warmup, replays):
    """Train GANs on the same batches from the same random state: twice eagerly (is the eager step
    itself repeatable on this GPU?) and once through the graph; compare them after the warm-up and
    at the end. cuDNN's deterministic algorithms only, here: the default ones may add in any order."""
    deterministic = torch.backends.cudnn.deterministic
    torch.backends.cudnn.deterministic = True
    try:
        states = []
        for _ in range(2):
            eager = build(recipe, batch_size, compute, graph_ready=False)  # reseeds: the same weights and draws
            batches = batch_pool(batch_size, compute.device, eager.memory_format)
            sums = torch.zeros(7, device=compute.device)
            for step in range(1, warmup + replays + 1):
                sums += eager.step(batches[(step - 1) % len(batches)], step)
                if step == warmup:
                    after_warmup = state_tensors(eager)
            states.append((after_warmup, state_tensors(eager), sums))
            del eager
        captured = CapturedStep(build(recipe, batch_size, compute, graph_ready=True), batches, warmup)
        warm_same, warm_diff = compare(states[0][0], state_tensors(captured.gan))
        for step in range(warmup + 1, warmup + replays + 1):
            captured(step, batches[(step - 1) % len(batches)])
        end_same, end_diff = compare(states[0][1], state_tensors(captured.gan))
        repeat_same, repeat_diff = compare(states[0][1], states[1][1])
    finally:
        torch.backends.cudnn.deterministic = deterministic
    return {'eager_repeatable': repeat_same and torch.equal(states[0][2], states[1][2]),
            'eager_repeat_max_abs_diff': repeat_diff,
            'eager_ready_identical': warm_same, 'eager_ready_max_abs_diff': warm_diff,
            'graph_identical': end_same and torch.equal(states[0][2], captured.sums),
            'graph_max_abs_diff': end_diff}


def rates(recipe, batch_size, compute, warmup, windows, seconds):
    """Images per second of train.py's eager step and of the captured one, with cuDNN's default
    algorithms, the batches ready on the device (train.py gathers them there)."""
    eager = build(recipe, batch_size, compute, graph_ready=False)
    batches = batch_pool(batch_size, compute.device, eager.memory_format)
    captured = CapturedStep(build(recipe, batch_size, compute, graph_ready=True), batches, warmup)
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


def same(outcome, key):
    """'yes', or 'no (the largest difference)'."""
    if outcome[key + ('able' if key == 'eager_repeat' else '_identical')]:
        return 'yes'
    return f"no ({outcome[key + '_max_abs_diff']:.2g})"


def parse_args(argv=None):
    p = OneLineArgumentParser(prog='graph_step.py', description=__doc__.split('\n\n')[0])
    p.add_argument('--recipes', nargs='+', choices=('spectral', 'batchnorm'), default=['spectral', 'batchnorm'],
                   help="train.py's --recipe (default: both)")
    p.add_argument('--batch_sizes', type=number_in(int, 1), nargs='+', default=[32, 128], help='(default: 32 128)')
    p.add_argument('--precision', choices=('auto', 'fp32', 'bf16'), default='auto',
                   help="as train.py's (default: auto, bf16 from compute capability 8.0)")
    p.add_argument('--warmup', type=number_in(int, 1), default=3, help='eager steps before the capture (default: 3)')
    p.add_argument('--replays', type=number_in(int, 1), default=5, help='graph steps compared with eager ones (default: 5)')
    p.add_argument('--windows', type=number_in(int, 1), default=3, help='timed windows per rate (default: 3)')
    p.add_argument('--seconds', type=number_in(float, 0.1), default=3.0, help='about how long each rate is timed (default: 3)')
    p.add_argument('--json', help='also write the results there')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if not torch.cuda.is_available():
        raise UserError('this needs a CUDA GPU, and torch sees none here (torch.cuda.is_available() '
                        'is False); tests/test_graph_step.py checks its step on a CPU')
    # cuBLAS is repeatable across streams (the capture runs on its own) only with a fixed workspace.
    os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
    device = torch.device('cuda')
    flags = parse_training_args(['--device', 'cuda', '--precision', args.precision])
    compute = Compute.from_flags(flags, device)
    results = {'gpu': gpu_description(device), 'torch': torch.__version__, 'precision': compute.precision,
               'rows': []}
    print(f"{results['gpu']}, torch {torch.__version__}, {compute.precision}")
    print('recipe    batch  eager img/s  graph img/s  ratio  eager twice  ready=eager  graph=eager')
    for recipe in args.recipes:
        for batch_size in args.batch_sizes:
            row = {'recipe': recipe, 'batch_size': batch_size}
            try:
                outcome = check(recipe, batch_size, compute, args.warmup, args.replays)
                row.update(outcome)
                eager_rate, graph_rate = rates(recipe, batch_size, compute, args.warmup, args.windows, args.seconds)
            except Exception as e:  # a capture that fails is a finding: say which and go on
                row['error'] = f'{type(e).__name__}: {first_line(e)}'
                print(f'{recipe:9} {batch_size:5}  failed: {row["error"]}')
                results['rows'].append(row)
                continue
            finally:
                torch.cuda.empty_cache()
            row.update(eager_images_per_s=eager_rate, graph_images_per_s=graph_rate, ratio=graph_rate / eager_rate)
            results['rows'].append(row)
            print(f"{recipe:9} {batch_size:5} {eager_rate:12.0f} {graph_rate:12.0f} {row['ratio']:5.2f}x  "
                  f"{same(outcome, 'eager_repeat'):11}  {same(outcome, 'eager_ready'):11}  {same(outcome, 'graph')}")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=1)
    return 0 if all('error' not in row for row in results['rows']) else 1


if __name__ == '__main__':
    sys.exit(run_cli(main))
