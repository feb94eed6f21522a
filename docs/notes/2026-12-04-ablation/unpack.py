"""Unpack the carried .xz CIFAR-10 batches into .gpu_cifar/cifar-10-batches-py (kept while the machine is warm)."""
import glob, lzma, os, shutil, sys
dst = '/tmp/gpu_cifar/cifar-10-batches-py'
os.makedirs(dst, exist_ok=True)
for src in sorted(glob.glob('.gpu_full/*.xz')):
    target = os.path.join(dst, os.path.basename(src)[:-3])
    if not os.path.isfile(target):
        with lzma.open(src) as f, open(target + '.tmp', 'wb') as g:
            shutil.copyfileobj(f, g)
        os.replace(target + '.tmp', target)
if os.path.isfile('.gpu_full/batches.meta'):
    shutil.copy('.gpu_full/batches.meta', dst)
print('have:', sorted(os.listdir(dst)))
