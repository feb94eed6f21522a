"""A run's scores against a table row's seeds: is each measure within the seed spread?

    python compare.py RUN/test/metrics.json LABEL ROWS.json NAME [OTHER_ROWS.json ...]

The row NAME of ROWS.json (tools/ablation.py's ablation.json) has two or more seeds; the spread
of a measure is max - min over them. Also printed: the largest spread of that measure over every
run with two or more seeds in all the files given, a wider yardstick where one row's seeds agree
closely by chance."""
import json
import sys

MEASURES = ('mean_ab_error', 'mae', 'psnr', 'nazeri_accuracy', 'colorfulness', 'colorfulness_gap',
            'semantic_accuracy', 'classifier_fd')
metrics_path, label, rows_path, name, *others = sys.argv[1:]
run = json.load(open(metrics_path))['checkpoints'][label]
row = json.load(open(rows_path))['runs'][name]
seeds = [s['overall'] for s in row['per_seed'].values()]
widest = {m: 0.0 for m in MEASURES}
for path in [rows_path, *others]:
    for other in json.load(open(path))['runs'].values():
        values = [s['overall'] for s in other['per_seed'].values()]
        if len(values) > 1:
            for m in MEASURES:
                widest[m] = max(widest[m], max(v[m] for v in values) - min(v[m] for v in values))
print(f"| measure | this run | seeds of {name} | their mean | distance from the mean | seed spread | "
      f"within the spread | widest seed spread, any run |")
print('|---|---|---|---|---|---|---|---|')
for m in MEASURES:
    values = [s[m] for s in seeds]
    mean, spread = sum(values) / len(values), max(values) - min(values)
    inside = min(values) <= run[m] <= max(values)
    near = abs(run[m] - mean) <= spread
    print(f"| {m} | {run[m]:.4f} | {', '.join(f'{v:.4f}' for v in values)} | {mean:.4f} | {abs(run[m] - mean):.4f} | "
          f"{spread:.4f} | {'yes' if inside else 'within one spread of the mean' if near else 'no'} | {widest[m]:.4f} |")
