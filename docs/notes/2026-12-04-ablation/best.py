"""The screened candidate nearest the vivid goals: mean |ab error| at or below the spectral
recipe's, the colourfulness gap at most 3, semantic accuracy highest; ranked by goals met, then gap."""
import json, sys
rows = json.load(open(sys.argv[1]))
runs = {n: r for n, r in rows['runs'].items() if r['mean'].get('mean_ab_error') is not None}
if 'spectral' not in runs:
    sys.exit(0)
spectral = runs['spectral']['mean']
def gap(m):
    return 99.0 if m.get('colorfulness_gap') is None else m['colorfulness_gap']
def key(name):
    m = runs[name]['mean']
    goals = (m['mean_ab_error'] <= spectral['mean_ab_error']) + (gap(m) <= 3)
    return (-goals, gap(m) + 200 * max(0.0, m['mean_ab_error'] - spectral['mean_ab_error']))
candidates = [n for n in runs if n not in ('spectral', 'batchnorm')]
print(sorted(candidates, key=key)[0] if candidates else '')
