"""Prove that two commits train the same run, bit for bit.

    python tools/same_run.py OLD NEW [--data_path /work/shared/data] [--python PY] [--steps 20] [--keep]

OLD and NEW are any commit-ish (HEAD, HEAD~1, a hash, a branch). Each gets its own clean checkout
(`git worktree add --detach` in a temporary folder, removed at the end unless --keep), where three
recipes run: the default one, the spectral one and the distribution head's (spectral with
`--ab_head classify --rebalance 0.5`), each a short fp32 training run
(--max_steps STEPS) followed by test.py on its checkpoint. Every command runs with the checkout as
its working folder and its output in a log of its own; the run folders sit next to the checkout
and are named by the same relative path in both, so the recorded options agree.

Then, per recipe, OLD against NEW:
  checkpoint_ep0.pt          every tensor in both bit-identical (dtype, shape, bytes); keys only in
                             NEW are reported, keys only in OLD fail; other values that differ fail
                             only under training state (epoch, step, batches_done, optimizers, ...)
  generator_ep0.safetensors  every tensor identical (when both commits write one)
  log.csv                    per (epoch, phase) row, every shared column but timing, as strings
  metrics.json               identical once paths and provenance/version fields are dropped

The last line is "SAME RUN: yes" (exit 0) or "SAME RUN: no (...)" (exit 1); a failing command is
shown with the last lines of its log, and also exits 1.
"""
import argparse
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

import torch

SPECTRAL = ['--smoothing', '1.0', '--l1_weight', '0.985', '--base_lr_gen', '2e-4', '--base_lr_disc', '2e-4',
            '--lr_decay_steps', '4e4', '--disc_norm', 'spectral', '--apply_weight_init', '0']
RECIPES = {
    'default': [],
    'spectral': SPECTRAL,
    # the colour-distribution head, rebalanced (the confirmation's candidate recipe)
    'classify+rebalance': SPECTRAL + ['--ab_head', 'classify', '--rebalance', '0.5'],
}
LABEL = 'run'  # test.py's name for the checkpoint, the same on both sides so metrics.json keys agree
# Checkpoint values that hold training state: a difference under any of these keys fails.
TRAINING_STATE = {'epoch', 'step', 'batches_done', 'generator_exact_statistics', 'opt_gen', 'opt_disc',
                  'scaler', 'rng', 'rng_per_process', 'layer_forms'}
# metrics.json fields that say where or with what a run was made, not what it scored.
PROVENANCE = {'code', 'versions', 'version', 'provenance', 'commit', 'git', 'created', 'timestamp', 'host'}
SHOWN = 5  # differences listed per file
TAIL = 25  # log lines shown for a failing command


class CommandFailed(Exception):
    pass


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('old', metavar='OLD_COMMIT')
    p.add_argument('new', metavar='NEW_COMMIT')
    p.add_argument('--data_path', default='/work/shared/data', help='CIFAR-10 (default: %(default)s)')
    p.add_argument('--python', default=sys.executable, help='the Python that runs train.py and test.py '
                                                            '(default: this one, %(default)s)')
    p.add_argument('--steps', type=int, default=20, help='training steps per run (default: %(default)s)')
    p.add_argument('--keep', action='store_true', help='keep the checkouts, runs and logs')
    args = p.parse_args(argv)
    if args.steps < 1:
        p.error('--steps must be at least 1')
    args.data_path = os.path.abspath(args.data_path)
    if os.sep in args.python:  # the commands run in the checkouts: a relative path would point elsewhere
        args.python = os.path.abspath(args.python)
    return args


# ---------------------------------------------------------------- git

def git(repo, *words):
    done = subprocess.run(['git', '-C', repo, *words], capture_output=True, text=True)
    if done.returncode:
        raise CommandFailed(f"git {' '.join(words)}: {done.stderr.strip()}")
    return done.stdout.strip()


def find_repo():
    """The repository this script belongs to (or, for a copy outside any, the current folder's)."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        return git(here, 'rev-parse', '--show-toplevel')
    except CommandFailed:
        return git(os.getcwd(), 'rev-parse', '--show-toplevel')


def resolve(repo, rev):
    """(full hash, one-line description) of a commit-ish."""
    try:
        commit = git(repo, 'rev-parse', '--verify', '--quiet', f'{rev}^{{commit}}')
    except CommandFailed:
        raise CommandFailed(f"{rev!r} is not a commit of {repo}")
    return commit, git(repo, 'log', '-1', '--format=%h %s', commit)


# ---------------------------------------------------------------- the runs

def run_commands(data_path, steps):
    """[(recipe, kind, command after the Python)] with run folders relative to the checkout."""
    commands = []
    for recipe, flags in RECIPES.items():
        run = os.path.join('..', 'runs', recipe)
        commands.append((recipe, 'train', [
            'train.py', '--data_path', data_path, '--precision', 'fp32', '--autotune', 'off',
            '--max_steps', str(steps), '--val_batches', '2', '--save_freq', '1',
            '--save_path', f'{run}/ckpt', '--samples_path', f'{run}/samples', *flags]))
        commands.append((recipe, 'test', [
            'test.py', '--checkpoints', f'{run}/ckpt/checkpoint_ep0.pt', '--labels', LABEL,
            '--data_path', data_path, '--precision', 'fp32', '--num_grids', '1', '--save_path', f'{run}/out']))
    return commands


def run_logged(command, cwd, log_path):
    """Run `command` in `cwd` with its output in `log_path`; the seconds it took."""
    started = time.time()
    with open(log_path, 'w') as log:
        done = subprocess.run(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if done.returncode:
        with open(log_path, errors='replace') as log:
            tail = ''.join(log.readlines()[-TAIL:])
        raise CommandFailed(f"exit code {done.returncode} from {' '.join(command)}\n  (in {cwd}; the log "
                            f"{log_path} is kept with --keep); its last lines:\n" + tail.rstrip())
    return time.time() - started


def produce(side, repo, commit, root, args):
    """Check `commit` out under root/side and run every recipe there; {recipe: its run folder}."""
    checkout = os.path.join(root, side, 'src')
    logs = os.path.join(root, side, 'logs')
    os.makedirs(logs)
    git(repo, 'worktree', 'add', '--detach', checkout, commit)
    for recipe, kind, words in run_commands(args.data_path, args.steps):
        print(f"[{side}] {recipe:8s} {kind:5s} ...", end=' ', flush=True)
        try:
            seconds = run_logged([args.python, *words], checkout, os.path.join(logs, f'{recipe}-{kind}.log'))
        except CommandFailed:
            print('FAILED', flush=True)
            raise
        print(f"ok ({seconds:.0f} s)", flush=True)
    return {recipe: os.path.join(root, side, 'runs', recipe) for recipe in RECIPES}


def remove_checkouts(repo, root):
    for side in ('old', 'new'):
        checkout = os.path.join(root, side, 'src')
        if os.path.isdir(checkout):
            try:
                git(repo, 'worktree', 'remove', '--force', checkout)
            except CommandFailed as e:
                print(f"warning: {e}", file=sys.stderr)
    shutil.rmtree(root, ignore_errors=True)
    subprocess.run(['git', '-C', repo, 'worktree', 'prune'], capture_output=True)


# ---------------------------------------------------------------- comparisons

class Report:
    """The lines of one file's comparison and the failures among them."""

    def __init__(self, name):
        self.name, self.lines, self.failures = name, [], []

    def say(self, line):
        self.lines.append(line)

    def fail(self, why, detail=None):
        self.failures.append(why)
        if detail:
            self.lines.append(detail)

    def listing(self, title, items, failing=False):
        """One line per item, the first SHOWN of them."""
        if not items:
            return
        self.say(f"{title} ({len(items)}{', FAIL' if failing else ''}):")
        for item in items[:SHOWN]:
            self.say(f"    {item}")
        if len(items) > SHOWN:
            self.say(f"    ... and {len(items) - SHOWN} more")


def leaves(obj, path=()):
    """(key path, value) of every leaf of nested dicts, lists and tuples."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from leaves(value, path + (str(key),))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from leaves(value, path + (str(i),))
    else:
        yield path, obj


def name(path):
    return '/'.join(path) or '(top)'


def tensor_difference(a, b):
    """None if the tensors are bit-identical (dtype, shape and every byte), else what differs."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return f"{a.dtype} {tuple(a.shape)} vs {b.dtype} {tuple(b.shape)}"
    if bytes_of(a) == bytes_of(b):
        return None
    if torch.equal(a, b):
        return "equal values, different bits (signed zeros)"
    if a.is_complex():
        a, b = torch.view_as_real(a), torch.view_as_real(b)
    a, b = a.double(), b.double()
    differ = (a != b) & ~(a.isnan() & b.isnan())
    gap = (a - b)[differ].abs().nan_to_num(nan=math.inf)
    return f"max abs difference {gap.max().item():.3g}, {int(differ.sum())} of {a.numel()} values differ"


def bytes_of(t):
    return t.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes()


def same_value(a, b):
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def compare_trees(report, old, new, value_fails=None):
    """Walk two nested structures: tensors must be bit-identical; a differing other value fails
    (or, with value_fails, where value_fails(path) says so). Keys only in NEW are listed, keys
    only in OLD fail."""
    old, new = dict(leaves(old)), dict(leaves(new))
    shared = [p for p in old if p in new]
    tensors = [p for p in shared if isinstance(old[p], torch.Tensor) or isinstance(new[p], torch.Tensor)]
    tensor_diffs = []
    for p in tensors:
        a, b = old[p], new[p]
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            tensor_diffs.append(f"{name(p)}: {type(a).__name__} vs {type(b).__name__}")
        elif (why := tensor_difference(a, b)) is not None:
            tensor_diffs.append(f"{name(p)}: {why}")
    if tensors:
        report.say(f"tensors compared {len(tensors)}, identical {len(tensors) - len(tensor_diffs)}")
    report.listing('tensors that differ', tensor_diffs, failing=True)
    if tensor_diffs:
        report.fail(f"tensors differ: {len(tensor_diffs)}")
    values = [p for p in shared if p not in tensors]
    differing = [p for p in values if not same_value(old[p], new[p])]
    failing = [p for p in differing if value_fails is None or value_fails(p)]
    if values:
        report.say(f"{'other ' if tensors else ''}values compared {len(values)}, "
                   f"identical {len(values) - len(differing)}")
    shown = lambda paths: [f"{name(p)}: {old[p]!r} vs {new[p]!r}" for p in paths]  # noqa: E731
    report.listing('values that differ' + (' (training state)' if value_fails else ''), shown(failing), failing=True)
    report.listing('values that differ (not training state: ignored)', shown(p for p in differing if p not in failing))
    if failing:
        report.fail(f"values differ: {len(failing)}")
    only_old = [name(p) for p in old if p not in new]
    report.listing('only in OLD', only_old, failing=True)
    if only_old:
        report.fail(f"keys only in OLD: {len(only_old)}")
    report.listing('only in NEW (new keys, not failures)', [name(p) for p in new if p not in old])


def holds_training_state(path):
    return any(part in TRAINING_STATE for part in path)


def missing(report, old_path, new_path):
    """Fail the report if either file is missing; True then."""
    absent = [f"{side} has no {path}" for side, path in (('OLD', old_path), ('NEW', new_path))
              if not os.path.isfile(path)]
    for why in absent:
        report.fail(why, why)
    return bool(absent)


def compare_checkpoints(old_path, new_path):
    report = Report(os.path.basename(old_path))
    if not missing(report, old_path, new_path):
        old, new = (torch.load(p, map_location='cpu', weights_only=True) for p in (old_path, new_path))
        compare_trees(report, old, new, holds_training_state)
    return report


def compare_safetensors(old_path, new_path):
    """Every tensor identical, when both sides wrote the file; the metadata is shown, not judged."""
    report = Report(os.path.basename(old_path))
    exists = [os.path.isfile(p) for p in (old_path, new_path)]
    if not all(exists):
        report.say(f"not compared: {'only OLD' if exists[0] else 'only NEW' if exists[1] else 'neither'} wrote it")
        return report
    (old, old_meta), (new, new_meta) = read_safetensors(old_path), read_safetensors(new_path)
    compare_trees(report, old, new)
    metas = old_meta, new_meta
    report.listing('metadata that differs (ignored)', [f"{k}: {metas[0].get(k)!r} vs {metas[1].get(k)!r}"
                                                       for k in sorted(set(metas[0]) | set(metas[1]))
                                                       if metas[0].get(k) != metas[1].get(k)])
    return report


def read_safetensors(path):
    """({name: tensor}, metadata) of a .safetensors file."""
    from safetensors import safe_open
    with safe_open(path, framework='pt') as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}


def read_log(path):
    """{(epoch, phase, n-th such row): row} of a log.csv, and its columns."""
    with open(path, newline='') as f:
        reader = csv.DictReader(f)
        rows, seen = {}, {}
        for row in reader:
            key = (row.get('epoch'), row.get('phase'))
            seen[key] = seen.get(key, 0) + 1
            rows[key + (seen[key],)] = row
        return rows, list(reader.fieldnames or [])


def is_timing(column):
    return 'seconds' in column or column in ('time', 'elapsed')


def compare_logs(old_path, new_path):
    """Per (epoch, phase) row: every column both logs have, timing aside, equal as strings."""
    report = Report(os.path.basename(old_path))
    if missing(report, old_path, new_path):
        return report
    (old, old_columns), (new, new_columns) = read_log(old_path), read_log(new_path)
    columns = [c for c in old_columns if c in new_columns and not is_timing(c)]
    rows = [k for k in old if k in new]
    diffs = [f"epoch {k[0]} {k[1]}: {c} {old[k][c]!r} vs {new[k][c]!r}"
             for k in rows for c in columns if old[k][c] != new[k][c]]
    report.say(f"rows compared {len(rows)} ({', '.join(f'{k[0]}/{k[1]}' for k in rows)}), "
               f"columns compared {len(columns)}, values differing {len(diffs)}")
    report.listing('values that differ', diffs, failing=True)
    if diffs:
        report.fail(f"{len(diffs)} log values differ")
    unmatched = [f"OLD only: epoch {k[0]} {k[1]}" for k in old if k not in new] + \
                [f"NEW only: epoch {k[0]} {k[1]}" for k in new if k not in old]
    report.listing('rows on one side only', unmatched, failing=True)
    if unmatched:
        report.fail(f"{len(unmatched)} log rows on one side only")
    report.listing('columns on one side only (not compared)',
                   [f"OLD only: {c}" for c in old_columns if c not in new_columns] +
                   [f"NEW only: {c}" for c in new_columns if c not in old_columns])
    return report


def without_provenance(obj):
    """`obj` without path-like fields (path, *_path, *_paths) and provenance or version fields."""
    if isinstance(obj, dict):
        return {k: without_provenance(v) for k, v in obj.items()
                if not (k in ('path', 'paths') or k.endswith(('_path', '_paths')) or k in PROVENANCE)}
    if isinstance(obj, list):
        return [without_provenance(v) for v in obj]
    return obj


def read_json(path):
    with open(path) as f:
        return json.load(f)


def compare_metrics(old_path, new_path):
    report = Report(os.path.basename(old_path))
    if not missing(report, old_path, new_path):
        old, new = (without_provenance(read_json(p)) for p in (old_path, new_path))
        compare_trees(report, old, new)
    return report


def compare_recipe(old_run, new_run):
    """The reports of every file a recipe's run leaves, OLD against NEW."""
    pair = lambda *parts: (os.path.join(old_run, *parts), os.path.join(new_run, *parts))  # noqa: E731
    return [compare_checkpoints(*pair('ckpt', 'checkpoint_ep0.pt')),
            compare_safetensors(*pair('ckpt', 'generator_ep0.safetensors')),
            compare_logs(*pair('ckpt', 'log.csv')),
            compare_metrics(*pair('out', 'metrics.json'))]


# ---------------------------------------------------------------- main

def print_reports(recipe, reports):
    print(f"\n== {recipe} ==")
    for report in reports:
        verdict = 'FAIL' if report.failures else 'same'
        print(f"  {report.name}: {verdict}")
        for line in report.lines:
            print(f"    {line}")


def compare_all(old_runs, new_runs):
    """Print every recipe's reports; the failures, as 'recipe file: why'."""
    failures = []
    for recipe in RECIPES:
        reports = compare_recipe(old_runs[recipe], new_runs[recipe])
        print_reports(recipe, reports)
        failures += [f"{recipe} {r.name}: {why}" for r in reports for why in r.failures]
    return failures


def main(argv=None):
    args = parse_args(argv)
    started = time.time()
    repo = find_repo()
    (old, old_line), (new, new_line) = resolve(repo, args.old), resolve(repo, args.new)
    print(f"OLD {args.old}: {old_line}\nNEW {args.new}: {new_line}")
    root = tempfile.mkdtemp(prefix='same_run-')
    print(f"work folder {root}; python {args.python}; data {args.data_path}; {args.steps} steps per run")
    try:
        old_runs = produce('old', repo, old, root, args)
        new_runs = produce('new', repo, new, root, args)
        failures = compare_all(old_runs, new_runs)
    finally:
        if args.keep:
            print(f"\nkept: checkouts, runs and logs in {root} (remove each checkout with "
                  f"git worktree remove --force {root}/SIDE/src, SIDE old and new)")
        else:
            remove_checkouts(repo, root)
    print(f"\n({time.time() - started:.0f} s)")
    if failures:
        shown = '; '.join(failures[:3]) + (f'; and {len(failures) - 3} more' if len(failures) > 3 else '')
        print(f"SAME RUN: no ({shown})")
        return 1
    print("SAME RUN: yes")
    return 0


if __name__ == '__main__':
    try:
        sys.exit(main())
    except CommandFailed as e:
        print(f"\nerror: {e}")
        print(f"SAME RUN: no (could not finish: {str(e).splitlines()[0]})")
        sys.exit(1)
