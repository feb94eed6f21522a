"""The confirmation's tables from the committed runs (NAME/seedS/metrics.json beside this file):
every measure as the mean of the seeds ± half their range, then colourfulness per class (mean
of the seeds, a class a column). Each run's row is test.py's at the decoding its run chose (a head at its
temperature), no dial turned.

    python docs/notes/2026-12-07-confirmation/table.py [RUN=LABEL ...]
"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..', '..'))
from metrics.measures import MEASURES as EVERY_MEASURE  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RUNS = {'batchnorm': 'batch norm', 'spectral': 'spectral', 'classify+rebalance': 'classify+rebalance, spectral',
        'classify+rebalance_batch_norm_': '**vivid**: classify+rebalance, batch norm'}
MEASURES = [m for m in EVERY_MEASURE if m.key != 'fid']


def runs_of(folder):
    """[metrics.json of each seed] of one run, in seed order."""
    path = os.path.join(HERE, folder)
    seeds = sorted(d for d in os.listdir(path) if d.startswith('seed')) if os.path.isdir(path) else []
    return [json.load(open(os.path.join(path, s, 'metrics.json'))) for s in seeds]


def scores(metrics):
    return next(iter(metrics['checkpoints'].values()))


def cell(measure, values):
    mean = sum(values) / len(values)
    half = (max(values) - min(values)) / 2
    text = measure.text(mean)
    return text if len(values) == 1 else f"{text} ±{measure.text(half).rstrip('%')}"


def main(argv):
    labels = dict(RUNS, **dict(a.split('=', 1) for a in argv))
    done = {folder: runs_of(folder) for folder in labels}
    done = {folder: runs for folder, runs in done.items() if runs}
    any_run = next(iter(done.values()))[0]
    print('| 10,000 test images, mean of 2 seeds ± half their range | '
          + ' | '.join(m.title.replace("|", "\\|") for m in MEASURES) + ' |')
    print('|---' * (len(MEASURES) + 1) + '|')
    rows = [('no colour (ab = 0)', [any_run['baseline']])]
    rows += [(labels[folder], [scores(m) for m in runs]) for folder, runs in done.items()]
    rows += [('ground truth', [any_run['truth']])]
    for name, seeds in rows:
        print(f'| {name} | ' + ' | '.join(
            cell(m, [s[m.key] for s in seeds]) if all(s.get(m.key) is not None for s in seeds) else ''
            for m in MEASURES) + ' |')
    classes = list(any_run['per_class']['ground truth'])
    print('\nColourfulness per class (mean of the seeds):\n')
    print('| | ' + ' | '.join(classes) + ' |')
    print('|---' * (len(classes) + 1) + '|')
    print('| truth | ' + ' | '.join(f"{any_run['per_class']['ground truth'][c]['colorfulness']:.1f}" for c in classes)
          + ' |')
    for folder, runs in done.items():
        label = next(iter(runs[0]['checkpoints']))
        means = [sum(m['per_class'][label][c]['colorfulness'] for m in runs) / len(runs) for c in classes]
        print(f'| {labels[folder]} | ' + ' | '.join(f'{v:.1f}' for v in means) + ' |')

if __name__ == '__main__':
    main(sys.argv[1:])
