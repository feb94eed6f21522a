"""Each run's shortfall from the vivid goals, the rule of docs/notes/2026-12-04-scores-ablation-gpu.md
("Which goals vivid met"): the sum of (ΔCF above 3) / the truth's colourfulness 33.65, (mean |ab
error| above the spectral recipe's) / the spectral recipe's, and (semantic accuracy below 85.4%) /
the 5.5 points up to the truth's 90.9%; 0 where a goal is met. Means over each run's seeds.

    python shortfall.py ABLATION.json [ABLATION.json ...]   (tools/ablation.py's; the first holds spectral)
"""
import json
import sys

files = [json.load(open(path)) for path in sys.argv[1:]]
runs = {}
for rows in files:
    for name, run in rows['runs'].items():
        if run['mean'].get('mean_ab_error') is not None:
            runs[name] = run
spectral = runs['spectral']['mean']
truth_cf = 33.65
print('| run | seeds | mean \\|ab err\\| | ΔCF | semantic acc | ΔCF part | error part | semantic part | shortfall |')
print('|---|---|---|---|---|---|---|---|---|')
for name, run in sorted(runs.items(), key=lambda item: item[0]):
    m = run['mean']
    parts = (max(0.0, m['colorfulness_gap'] - 3) / truth_cf,
             max(0.0, m['mean_ab_error'] - spectral['mean_ab_error']) / spectral['mean_ab_error'],
             max(0.0, 0.854 - m['semantic_accuracy']) / 0.055)
    print(f"| {name} | {len(run['per_seed'])} | {m['mean_ab_error']:.4f} | {m['colorfulness_gap']:.2f} | "
          f"{100 * m['semantic_accuracy']:.2f}% | {parts[0]:.3f} | {parts[1]:.3f} | {parts[2]:.3f} | **{sum(parts):.2f}** |")
