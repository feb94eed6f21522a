"""Copy a finished confirmation run's results into docs/notes/2026-12-07-confirmation/NAME/seedS."""
import json, os, shutil, sys
src, dst = sys.argv[1], sys.argv[2]
os.makedirs(dst, exist_ok=True)
shutil.copy(os.path.join(src, 'test', 'metrics.json'), dst)
shutil.copy(os.path.join(src, 'log.csv'), dst)
if os.path.isfile(os.path.join(src, 'decoding', 'decoding.md')):
    shutil.copy(os.path.join(src, 'decoding', 'decoding.md'), dst)
    shutil.copy(os.path.join(src, 'decoding', 'decoding.json'), dst)
m = json.load(open(os.path.join(src, 'test', 'metrics.json')))
label = next(iter(m['checkpoints']))
rows = [label, 'no color (ab=0)', 'ground truth']
classes = list(m['per_class'][label])
lines = [f"Per class, {label}: mean |ab error| / colourfulness / ΔCF / semantic accuracy / classifier FD "
         f"(10,000 test images; the grey images and the truth below)", '',
         '| class | ' + ' | '.join(rows) + ' |', '|---' * (len(rows) + 1) + '|']
def cell(s):
    f = lambda k, fmt: '' if s.get(k) is None else fmt.format(s[k])
    return ' / '.join([f('mean_ab_error', '{:.4f}'), f('colorfulness', '{:.2f}'), f('colorfulness_gap', '{:.2f}'),
                       f('semantic_accuracy', '{:.1%}'), f('classifier_fd', '{:.2f}')])
for c in classes:
    lines.append(f"| {c} | " + ' | '.join(cell(m['per_class'][r].get(c, {})) for r in rows) + ' |')
open(os.path.join(dst, 'per_class.md'), 'w').write('\n'.join(lines) + '\n')
print('collected', src, '->', dst)
