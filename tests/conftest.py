import contextlib
import io
import os
import pickle
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SHARED_DATA = os.path.join(ROOT, '..', 'shared', 'data')


def pytest_configure(config):
    """Temporary folders in memory where the machine has /dev/shm: the tests write checkpoints of
    300 MB by the dozen, and their fsync to disk would be a large part of the suite's time."""
    if config.option.basetemp is None and os.access('/dev/shm', os.W_OK) and not hasattr(config, 'workerinput'):
        config.option.basetemp = tempfile.mkdtemp(prefix='colorization-tests-', dir='/dev/shm')
        config.memory_basetemp = config.option.basetemp


def pytest_unconfigure(config):
    if getattr(config, 'memory_basetemp', None):
        shutil.rmtree(config.memory_basetemp, ignore_errors=True)


@pytest.fixture(autouse=True)
def _free_memory_after_each_test(request):
    """In memory, a test's folder is removed as soon as it ends (pytest would keep them all)."""
    in_memory = getattr(request.config, 'memory_basetemp', None) and 'tmp_path' in request.fixturenames
    folder = request.getfixturevalue('tmp_path') if in_memory else None
    yield
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


def smooth_images(n, seed):
    """n 32x32 RGB uint8 images of smooth color gradients: structured enough to be learnable."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:32, 0:32] / 31.0
    images = []
    for _ in range(n):
        c0, c1, c2 = rng.uniform(0, 255, (3, 3))
        img = c0 + np.multiply.outer(x, c1 - c0) + np.multiply.outer(y, c2 - c0) * 0.5
        images.append(np.clip(img, 0, 255))
    return np.stack(images).astype(np.uint8)


def write_cifar_batch(path, rgb, labels=None):
    """Write (N, 32, 32, 3) uint8 images in the official CIFAR-10 python batch format."""
    data = np.ascontiguousarray(rgb.transpose(0, 3, 1, 2).reshape(len(rgb), -1))
    labels = list(range(len(rgb))) if labels is None else labels
    batch = {b'batch_label': b'tiny', b'labels': [int(l) % 10 for l in labels], b'data': data,
             b'filenames': [f'img_{i}.png'.encode() for i in range(len(rgb))]}
    with open(path, 'wb') as f:
        pickle.dump(batch, f, protocol=2)


def make_tiny_cifar(root, per_batch=16, test_images=24):
    folder = os.path.join(root, 'cifar-10-batches-py')
    os.makedirs(folder, exist_ok=True)
    for i in range(1, 6):
        write_cifar_batch(os.path.join(folder, f'data_batch_{i}'), smooth_images(per_batch, seed=i))
    write_cifar_batch(os.path.join(folder, 'test_batch'), smooth_images(test_images, seed=99))
    return folder


@pytest.fixture
def tiny_cifar(tmp_path):
    """A data_path holding a CIFAR-format folder of 5 x 16 training and 24 test images."""
    make_tiny_cifar(str(tmp_path / 'data'))
    return str(tmp_path / 'data')


def run_in_process(main, argv):
    """Run a command line's `main(argv)` in this process as its script would (a UserError becomes
    one line on stderr and exit code 2; argparse exits with its own code) and return a
    CompletedProcess with the exit code and what it printed: the same checks as a subprocess,
    without an interpreter start-up per run. Signals and crashes still need real processes."""
    import utils
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = utils.run_cli(main, list(argv))
        except SystemExit as e:
            code = e.code
    return subprocess.CompletedProcess(list(argv), code, out.getvalue(), err.getvalue())
