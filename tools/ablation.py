"""Run the remedies' ablation at equal compute and collect every run's scores into one table.

    python tools/ablation.py --data_path /work/shared/data --out ablation/screen --steps 1563 --seeds 0
    python tools/ablation.py --data_path /work/shared/data --out ablation/confirm --steps 3126 --seeds 0 1 \\
        --only spectral batchnorm enhance rebalance+enhance

Each named run (RUNS: a recipe and extra flags) trains with train.py for --steps steps of 32
images per seed, in its own folder OUT/NAME/seedS, keeping the last --holdout training images
out; a run with a colour-distribution head then has its temperature chosen on those images by
tools/choose_decoding.py (OUT/NAME/seedS/decoding/), never on the test set; then test.py scores
its last epoch checkpoint (at that temperature) on the whole test set with every measure and per
class (OUT/NAME/seedS/test/metrics.json). Runs
go --parallel at a time, as subprocesses (train.py and test.py are command lines: nothing of
theirs is imported here). A run whose metrics.json exists is skipped, and one whose training was
cut short resumes from its newest checkpoint, so a killed ablation continues where it stopped.
Last: OUT/ablation.md (a markdown table, docs-ready; a measure test.py does not report is left
blank) and OUT/ablation.json.
"""
import argparse
import concurrent.futures
import glob
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from metrics.measures import BY_KEY, MEASURES as EVERY_MEASURE  # noqa: E402
from training.options import RECIPES  # noqa: E402

# The ablation list: name -> (recipe, extra flags). Each remedy alone on the spectral recipe, then
# combinations; the batch-norm recipe for reference. BigColor's learning rates ride with hinge.
RUNS = {
    'spectral': ('spectral', []),
    'batchnorm': ('batchnorm', []),
    'enhance': ('spectral', ['--color_enhance', '1.2']),
    'rebalance': ('spectral', ['--rebalance', '0.5']),
    'filter': ('spectral', ['--min_colorfulness', '15']),
    'hinge': ('spectral', ['--adv_loss', 'hinge']),
    'rebalance+enhance': ('spectral', ['--rebalance', '0.5', '--color_enhance', '1.2']),
    'rebalance+filter': ('spectral', ['--rebalance', '0.5', '--min_colorfulness', '15']),
    'enhance+filter': ('spectral', ['--color_enhance', '1.2', '--min_colorfulness', '15']),
    'rebalance+enhance+filter': ('spectral', ['--rebalance', '0.5', '--color_enhance', '1.2',
                                              '--min_colorfulness', '15']),
    'all four': ('spectral', ['--rebalance', '0.5', '--color_enhance', '1.2', '--min_colorfulness', '15',
                              '--adv_loss', 'hinge']),
    # --recipe vivid as it is now (the 2026-12-07 confirmation's choice); enhance+filter is what vivid was
    # from 2026-12-04 to 2026-12-07
    'vivid': ('vivid', []),
    # a distribution over colours instead of their median (train.py --ab_head), under either discriminator
    'classify': ('spectral', ['--ab_head', 'classify']),
    'classify+rebalance': ('spectral', ['--ab_head', 'classify', '--rebalance', '0.5']),
    'both': ('spectral', ['--ab_head', 'both']),
    'both+rebalance': ('spectral', ['--ab_head', 'both', '--rebalance', '0.5']),
    'classify (batch norm)': ('batchnorm', ['--ab_head', 'classify']),
    'classify+rebalance (batch norm)': ('batchnorm', ['--ab_head', 'classify', '--rebalance', '0.5']),
    # Iizuka et al.'s class-aware context (train.py --class_loss, their weight of 1/300)
    'class': ('spectral', ['--class_loss', '0.0033']),
    'classify+rebalance+class': ('spectral', ['--ab_head', 'classify', '--rebalance', '0.5', '--class_loss', '0.0033']),
}
# The measures in the table, in metrics/measures.py's order: all but FID, which the runs are not
# scored with; those test.py does not write are left blank.
MEASURES = tuple(m.key for m in EVERY_MEASURE if m.key != 'fid')
PER_CLASS = ('mean_ab_error', 'colorfulness')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--data_path', default='/work/shared/data', help='CIFAR-10 (default: %(default)s)')
    p.add_argument('--out', default='ablation', help='one folder per run, and the table (default: %(default)s)')
    p.add_argument('--steps', type=int, default=1563, help='training steps per run (default: 1563, one epoch of 32)')
    p.add_argument('--seeds', type=int, nargs='+', default=[0], help='(default: 0)')
    p.add_argument('--only', nargs='+', metavar='NAME', help=f"these runs only (default: all): {', '.join(RUNS)}")
    p.add_argument('--device', default='auto', help="train.py's and test.py's --device (default: auto)")
    p.add_argument('--holdout', type=int, default=2000,
                   help="training images every run keeps out (train.py --holdout), on which tools/choose_decoding.py "
                        "chooses a distribution head's temperature before test.py scores the test set; 0: none kept "
                        "out, each head scored at the temperature it trained with (default: 2000)")
    p.add_argument('--temperatures', type=float, nargs='+', default=[0.1, 0.2, 0.3, 0.38, 0.5, 1.0],
                   help="the temperatures tools/choose_decoding.py tries (default: 0.1 0.2 0.3 0.38 0.5 1)")
    p.add_argument('--parallel', type=int, default=1, help='runs at once (default: 1)')
    p.add_argument('--threads', type=int, default=None,
                   help='OMP_NUM_THREADS of each run (default: the CPU count divided by --parallel)')
    p.add_argument('--python', default=sys.executable, help='the Python that runs train.py and test.py')
    p.add_argument('--train_flags', nargs=argparse.REMAINDER, default=[],
                   help='any further train.py flags, for every run (last on the line)')
    args = p.parse_args(argv)
    unknown = [name for name in args.only or () if name not in RUNS]
    if unknown:
        p.error(f"--only {' '.join(unknown)}: no such run; the runs are: {', '.join(RUNS)}")
    if args.steps < 1 or args.parallel < 1:
        p.error('--steps and --parallel must be at least 1')
    return args


def folder_name(name):
    return re.sub(r'[^A-Za-z0-9_.+-]+', '_', name)


def run_folder(args, name, seed):
    return os.path.join(os.path.abspath(args.out), folder_name(name), f'seed{seed}')


def last_epoch_checkpoint(folder):
    found = glob.glob(os.path.join(folder, 'checkpoint_ep*.pt'))
    return max(found, key=lambda p: int(re.search(r'ep(\d+)\.pt$', p).group(1))) if found else None


def train_command(args, name, seed, folder):
    recipe, flags = RUNS[name]
    command = [args.python, os.path.join(ROOT, 'train.py'), '--data_path', args.data_path, '--save_path', folder,
               '--samples_path', os.path.join(folder, 'samples'), '--recipe', recipe, *flags,
               '--seed', str(seed), '--max_steps', str(args.steps), '--save_freq', '1', '--save_steps', '500',
               # test.py scores the whole test set; validation during training only watches
               '--val_batches', '10', '--device', args.device, '--holdout', str(args.holdout), *args.train_flags]
    if glob.glob(os.path.join(folder, 'checkpoint_*.pt')):
        command += ['--resume', 'latest']
    return command


def test_command(args, name, checkpoint, folder, decoding=()):
    return [args.python, os.path.join(ROOT, 'test.py'), '--data_path', args.data_path, '--per_class',
            '--checkpoints', checkpoint, '--labels', name, '--save_path', os.path.join(folder, 'test'),
            '--device', args.device, *decoding]


def has_distribution_head(name):
    recipe, flags = RUNS[name]
    return '--ab_head' in RECIPES[recipe] + flags


def choose_decoding_command(args, checkpoint, folder):
    return [args.python, os.path.join(ROOT, 'tools', 'choose_decoding.py'), '--checkpoint', checkpoint,
            '--data_path', args.data_path, '--save_path', os.path.join(folder, 'decoding'), '--device', args.device,
            '--temperatures', *map(str, args.temperatures)]


def chosen_decoding(folder):
    """test.py's flags for the decoding tools/choose_decoding.py chose on the held-out images."""
    with open(os.path.join(folder, 'decoding', 'decoding.json')) as f:
        chosen = json.load(f)['chosen']
    return ['--temperature', str(chosen['temperature'])] + ([] if chosen['blend'] is None else
                                                            ['--blend', str(chosen['blend'])])


def finished_training(folder, steps):
    """Whether the run's last epoch checkpoint is its last step's (a run stopped by --max_steps
    writes one at its end)."""
    checkpoint = last_epoch_checkpoint(folder)
    if not checkpoint:
        return None
    log = os.path.join(folder, 'log.csv')
    if os.path.isfile(log):
        with open(log) as f:
            rows = f.read().splitlines()
        last = rows[-1].split(',') if len(rows) > 1 else []
        header = rows[0].split(',')
        if 'step' in header and last and int(float(last[header.index('step')])) >= steps:
            return checkpoint
    return None


def one_run(args, name, seed, env):
    """Train (or resume) and score one run; returns (name, seed, metrics path or None, message)."""
    folder = run_folder(args, name, seed)
    metrics = os.path.join(folder, 'test', 'metrics.json')
    if os.path.isfile(metrics):
        return name, seed, metrics, 'done before'
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, 'ablation.log'), 'a') as log:
        checkpoint = finished_training(folder, args.steps)
        if not checkpoint:
            done = subprocess.run(train_command(args, name, seed, folder), stdout=log, stderr=subprocess.STDOUT,
                                  env=env, cwd=ROOT)
            checkpoint = finished_training(folder, args.steps) if done.returncode == 0 else None
            if not checkpoint:
                return name, seed, None, f"train.py failed (exit {done.returncode}): see {log.name}"
        decoding = []
        if has_distribution_head(name) and args.holdout:
            done = subprocess.run(choose_decoding_command(args, checkpoint, folder), stdout=log,
                                  stderr=subprocess.STDOUT, env=env, cwd=ROOT)
            if done.returncode:
                return name, seed, None, f"tools/choose_decoding.py failed (exit {done.returncode}): see {log.name}"
            decoding = chosen_decoding(folder)
        done = subprocess.run(test_command(args, name, checkpoint, folder, decoding), stdout=log,
                              stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    if done.returncode or not os.path.isfile(metrics):
        return name, seed, None, f"test.py failed (exit {done.returncode}): see {log.name}"
    return name, seed, metrics, 'trained and scored'


# ---------------------------------------------------------------- the table

def read_scores(path, label):
    with open(path) as f:
        metrics = json.load(f)
    overall = metrics.get('checkpoints', {}).get(label, {})
    per_class = metrics.get('per_class', {}).get(label, {})
    return {'overall': {m: overall.get(m) for m in MEASURES},
            'per_class': {c: {m: v.get(m) for m in MEASURES} for c, v in per_class.items()},
            'truth_colorfulness': metrics.get('truth_colorfulness'),
            # the bounds: no colour (ab = 0) and the true colours, as test.py scored them
            'grey': {m: metrics.get('baseline', {}).get(m) for m in MEASURES},
            'truth': {m: metrics.get('truth', {}).get(m) for m in MEASURES}}


def cell(value, measure):
    return '' if value is None else BY_KEY[measure].text(value)


def mean_over_seeds(results):
    """{measure: mean} over the seeds' results (None where any seed lacks it)."""
    out = {}
    for m in MEASURES:
        values = [r['overall'][m] for r in results]
        out[m] = sum(values) / len(values) if values and None not in values else None
    return out


def markdown(table, args):
    seeds = ' and '.join(str(s) for s in args.seeds)
    lines = [f"{args.steps} steps of 32 images, seed{'s' if len(args.seeds) > 1 else ''} {seeds}; "
             f"the whole CIFAR-10 test set (means over the seeds)", '',
             '| run | ' + ' | '.join(MEASURES) + ' |', '|---' * (len(MEASURES) + 1) + '|']
    truth = None
    for name, results in table.items():
        truth = truth or next((r['truth_colorfulness'] for r in results if r['truth_colorfulness']), None)
        mean = mean_over_seeds(results)
        lines.append(f"| {name} | " + ' | '.join(cell(mean[m], m) for m in MEASURES) + ' |')
    first = next((r for results in table.values() for r in results), None)
    if first:
        for title, key in (('no colour (ab = 0)', 'grey'), ('ground truth', 'truth')):
            row = first.get(key) or {}
            if key == 'truth' and row.get('colorfulness') is None:
                row = dict(row, colorfulness=truth)
            lines.append(f'| {title} | ' + ' | '.join(cell(row.get(m), m) for m in MEASURES) + ' |')
    classes = next((list(r['per_class']) for results in table.values() for r in results if r['per_class']), [])
    if classes:
        lines += ['', 'Per class, mean |ab error| / colorfulness (first seed):', '',
                  '| run | ' + ' | '.join(classes) + ' |', '|---' * (len(classes) + 1) + '|']
        for name, results in table.items():
            per = results[0]['per_class']
            lines.append(f"| {name} | " + ' | '.join(
                ' / '.join(cell(per.get(c, {}).get(m), m) for m in PER_CLASS) for c in classes) + ' |')
    return '\n'.join(lines) + '\n'


def main(argv=None):
    args = parse_args(argv)
    args.data_path = os.path.abspath(args.data_path)
    os.makedirs(args.out, exist_ok=True)
    names = args.only or list(RUNS)
    env = dict(os.environ)
    if args.threads or 'OMP_NUM_THREADS' not in env:
        env['OMP_NUM_THREADS'] = str(args.threads or max(1, (os.cpu_count() or 1) // args.parallel))
    jobs = [(name, seed) for name in names for seed in args.seeds]
    found = {}
    failed = []
    with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
        for name, seed, metrics, message in pool.map(lambda job: one_run(args, *job, env), jobs):
            print(f"{name}, seed {seed}: {message}", flush=True)
            if metrics:
                found[(name, seed)] = read_scores(metrics, name)
                if has_distribution_head(name) and args.holdout:
                    found[(name, seed)]['decoding'] = chosen_decoding(run_folder(args, name, seed))
            else:
                failed.append(f"{name} seed {seed}")
    table = {name: [found[(name, s)] for s in args.seeds if (name, s) in found] for name in names}
    table = {name: results for name, results in table.items() if results}
    with open(os.path.join(args.out, 'ablation.json'), 'w') as f:
        json.dump({'steps': args.steps, 'seeds': args.seeds, 'runs': {name: {'recipe': RUNS[name][0],
                   'flags': RUNS[name][1], 'per_seed': {str(s): found.get((name, s)) for s in args.seeds},
                   'mean': mean_over_seeds(results)} for name, results in table.items()}}, f, indent=2)
    text = markdown(table, args)
    with open(os.path.join(args.out, 'ablation.md'), 'w') as f:
        f.write(text)
    print(text + f"wrote {os.path.join(args.out, 'ablation.md')} and ablation.json")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
