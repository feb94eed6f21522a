"""The issue-39 goals from the dial runs: each head at its own colourfulness against the spectral
and batch-norm recipes' dials there (interpolated as metrics/frontier.py does), per seed and as
the mean of the seeds.

    python docs/notes/2026-12-07-confirmation/goals.py DIALS/seed0/metrics.json DIALS/seed1/metrics.json

Each metrics.json is one test.py run with the generators labelled as in the confirmation (both
published recipes, one head or both) and several --chroma_gain values (1 among them)."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..', '..'))
from metrics.frontier import at_colourfulness  # noqa: E402

HEADS = ('classify+rebalance', 'classify+rebalance (batch norm)')
DIALS = ('spectral', 'batchnorm')
KEYS = (('mean_ab_error', '{:.4f}'), ('semantic_accuracy', '{:.2%}'), ('classifier_fd', '{:.2f}'))


def curves(metrics):
    """{generator: [(gain, scores), ...]} from a dialled test.py metrics.json."""
    out = {}
    for label, scores in metrics['checkpoints'].items():
        name, gain = label.rsplit(' x', 1)
        out.setdefault(name, []).append((float(gain), scores))
    return out


def goals_of(metrics):
    """{head: {'own': scores at gain 1, dial: {key: value on that dial at the head's colourfulness}}}."""
    c = curves(metrics)
    rows = {}
    for head in (h for h in HEADS if h in c):
        own = dict(c[head])[1.0]
        rows[head] = {'own': own}
        for dial in DIALS:
            rows[head][dial] = {key: at_colourfulness(c[dial], own['colorfulness'], key) for key, _ in KEYS}
        rows[head]['undialled'] = {dial: dict(c[dial])[1.0] for dial in DIALS}
    return rows


def fmt(key, value):
    return '' if value is None else dict(KEYS)[key].format(value)


def main(paths):
    per_seed = [goals_of(json.load(open(p))) for p in paths]
    print('| head, seed | colourful | ΔCF | error: its / spectral dial | semantic acc: its / batch-norm dial '
          '| clf FD: its / batch-norm recipe (undialled) / batch-norm dial |')
    print('|---|---|---|---|---|---|')
    for head in (h for h in HEADS if all(h in rows for rows in per_seed)):
        for seed, rows in list(enumerate(per_seed)) + ([('mean', None)] if len(per_seed) > 1 else []):
            if rows is None:  # the mean of the seeds, each interpolated at its own colourfulness
                def mean(get):
                    values = [get(r[head]) for r in per_seed]
                    return None if any(v is None for v in values) else sum(values) / len(values)
                own = {k: mean(lambda r, k=k: r['own'][k]) for k in
                       ('colorfulness', 'colorfulness_gap', 'mean_ab_error', 'semantic_accuracy', 'classifier_fd')}
                spec = {k: mean(lambda r, k=k: r['spectral'][k]) for k, _ in KEYS}
                bn = {k: mean(lambda r, k=k: r['batchnorm'][k]) for k, _ in KEYS}
                bn_fd = mean(lambda r: r['undialled']['batchnorm']['classifier_fd'])
            else:
                r = rows[head]
                own, spec, bn = r['own'], r['spectral'], r['batchnorm']
                bn_fd = r['undialled']['batchnorm']['classifier_fd']
            print(f"| {head}, {seed} | {own['colorfulness']:.2f} | {own['colorfulness_gap']:.2f} | "
                  f"{fmt('mean_ab_error', own['mean_ab_error'])} / {fmt('mean_ab_error', spec['mean_ab_error'])} | "
                  f"{fmt('semantic_accuracy', own['semantic_accuracy'])} / "
                  f"{fmt('semantic_accuracy', bn['semantic_accuracy'])} | "
                  f"{fmt('classifier_fd', own['classifier_fd'])} / {fmt('classifier_fd', bn_fd)} / "
                  f"{fmt('classifier_fd', bn['classifier_fd'])} |")


if __name__ == '__main__':
    main(sys.argv[1:])
