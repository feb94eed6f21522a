import contextlib
import copy
import functools
import http.server
import importlib.machinery
import importlib.util
import io
import os
import pickle
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading

if os.environ.get('PYTEST_XDIST_WORKER'):  # one thread per worker (pytest_configure): set before numpy and torch load
    os.environ['OMP_NUM_THREADS'] = '1'

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(ROOT, '..', 'shared', 'data')


def _keep_the_standard_librarys_test_package():
    """The project has a test.py at its top level, where the tests import its modules from (and
    where `python -m pytest` run in it looks first): there, a plain `import test`, by a test or
    by anything the tests run, would find the project's script instead of the standard library's
    `test` package. Loading the standard library's package under its name first makes every
    `import test` get it, whatever is on sys.path; the scripts are loaded by command_line()."""
    loaded = sys.modules.get('test')
    if loaded is not None and not _is_the_project_test_py(loaded):
        return
    spec = importlib.machinery.PathFinder.find_spec('test', [sysconfig.get_paths()['stdlib']])
    if spec is None:  # a Python installed without its test package: nothing to keep
        sys.modules.pop('test', None)
        return
    package = importlib.util.module_from_spec(spec)
    sys.modules['test'] = package
    spec.loader.exec_module(package)


def _is_the_project_test_py(module):
    path = getattr(module, '__file__', None)
    return bool(path) and os.path.realpath(path) == os.path.realpath(os.path.join(ROOT, 'test.py'))


_keep_the_standard_librarys_test_package()
sys.path.insert(0, ROOT)


def command_line(name):
    """The project's script `name`.py (test, train, colorize, ..., or tools/NAME) as a module named
    'colorization_{name}_cli', loaded from its file: a name no other module has, so that
    test.py never takes the place of the standard library's `test` package. Loaded once."""
    module_name = f"colorization_{name.replace('/', '_')}_cli"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, os.path.join(ROOT, f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def pytest_configure(config):
    """Temporary folders in memory where the machine has /dev/shm: the tests write checkpoints of
    300 MB by the dozen, and their fsync to disk would be a large part of the suite's time.
    Under pytest-xdist (`-n 2`) each worker is one thread, it and the processes it starts: two
    workers then share two cores, and the single-threaded parts of the tests (start-ups, imports,
    serializing checkpoints) overlap instead of waiting for each other."""
    config.addinivalue_line('markers', 'gpu: needs a CUDA device (tests/test_gpu.py); skipped where there is none')
    if hasattr(config, 'workerinput'):
        # xdist gives each worker a folder under the controller's --basetemp (in memory, below)
        if str(config.option.basetemp or '').startswith('/dev/shm/'):
            config.memory_basetemp = config.option.basetemp
    elif config.option.basetemp is None and os.access('/dev/shm', os.W_OK):
        config.option.basetemp = tempfile.mkdtemp(prefix='colorization-tests-', dir='/dev/shm')
        config.memory_basetemp = config.option.basetemp


def pytest_unconfigure(config):
    if getattr(config, 'memory_basetemp', None):
        shutil.rmtree(config.memory_basetemp, ignore_errors=True)


@pytest.fixture(autouse=True)
def _layer_forms_cache_of_its_own(tmp_path_factory, monkeypatch):
    """Each test's runs store their layer forms in a cache of the test's own (beside its tmp_path,
    not in it), never in the user's."""
    folder = tmp_path_factory.mktemp('layer_forms_cache', numbered=True)
    monkeypatch.setenv('COLORIZATION_LAYER_FORMS_CACHE', str(folder / 'layer_forms.json'))


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


def lab_batch(n, seed=5):
    """n smooth images as a (n, 3, 32, 32) Lab batch in network scale, as the networks see them."""
    import torch

    from core.pictures import rgb_to_lab
    lab = torch.from_numpy(rgb_to_lab(smooth_images(n, seed=seed), network_scale=True))
    return lab.permute(0, 3, 1, 2).contiguous()


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


def make_tiny_folder(root, size=64, train_images=24, val_images=8):
    """A folder data set: smooth photographs of `size` pixels (a little wider than tall, so
    that resizing and cropping matter) in two class folders under train/ and val/."""
    import cv2
    for split, n, seed in (('train', train_images, 1), ('val', val_images, 2)):
        for i, rgb in enumerate(smooth_images(n, seed)):
            folder = os.path.join(root, split, 'ab'[i % 2])
            os.makedirs(folder, exist_ok=True)
            picture = cv2.resize(rgb, (size + size // 4, size), interpolation=cv2.INTER_CUBIC)
            cv2.imwrite(os.path.join(folder, f'{i:03d}.png'), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    return root


@pytest.fixture
def tiny_folder(tmp_path):
    """A folder data set of 24 training and 8 validation photographs, 80x64, in two classes."""
    return make_tiny_folder(str(tmp_path / 'photos'))


def run_in_process(main, argv):
    """Run a command line's `main(argv)` in this process as its script would (a UserError becomes
    one line on stderr and exit code 2; argparse exits with its own code) and return a
    CompletedProcess with the exit code and what it printed: the same checks as a subprocess,
    without an interpreter start-up per run. Signals and crashes still need real processes."""
    from core.cli import run_cli
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = run_cli(main, list(argv))
        except SystemExit as e:
            code = e.code
    return subprocess.CompletedProcess(list(argv), code, out.getvalue(), err.getvalue())


def train_command(data, ck, *flags):
    """train.py on tiny data as a command line; the layer forms fixed (--autotune off) unless
    `flags` say otherwise."""
    return [sys.executable, os.path.join(ROOT, 'train.py'), '--data_path', data, '--save_path', ck,
            '--samples_path', os.path.join(ck, 'samples'), '--batch_size', '8', '--precision', 'fp32',
            '--autotune', 'off', *flags]


def run_train(command):
    """A train_command, run in this process (see run_in_process)."""
    import train
    return run_in_process(train.main, command[2:])


class QuietFileHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def weights_server(tmp_path):
    """A local HTTP server for the published-weights download: two generator state dicts in the
    reference's layout, a web page posing as weights, and a truncated file."""
    import torch

    from models import Generator
    folder = tmp_path / 'served'
    folder.mkdir()
    torch.manual_seed(0)
    state = Generator('batch').state_dict()
    torch.save(state, folder / 'bn.pt')
    torch.save(state, folder / 'sn.pt')
    (folder / 'page.pt').write_text('<!DOCTYPE html><html><body>Dropbox: sign in</body></html>')
    whole = (folder / 'bn.pt').read_bytes()
    (folder / 'cut.pt').write_bytes(whole[:len(whole) // 2])
    server = http.server.ThreadingHTTPServer(
        ('127.0.0.1', 0), functools.partial(QuietFileHandler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{server.server_port}'
    server.shutdown()


def cpu_precisions():
    """fp32 and bf16 for tests of training on a CPU; bf16 skipped where this CPU emulates it (no
    AVX512-BF16 or AMX): train.py refuses it there, and emulated, it made these tests minutes long
    (their bf16 cases run wherever a CPU or GPU has native bf16)."""
    from core.cli import cpu_has_native_bf16
    if cpu_has_native_bf16():
        return ['fp32', 'bf16']
    return ['fp32', pytest.param('bf16', marks=pytest.mark.skip(reason='this CPU emulates bf16 (train.py refuses it)'))]


def everything_a_step_changes(g):
    """Every tensor a step may change: weights, buffers, optimizer states, the averaged generator, the scaler."""
    state = {f'G.{k}': v.clone() for k, v in g.G.state_dict().items()}
    state.update({f'D.{k}': v.clone() for k, v in g.D.state_dict().items()})
    state.update({f'EMA.{k}': v.clone() for k, v in g.G_ema.state_dict().items()})
    for name, opt in (('opt_g', g.opt_g), ('opt_d', g.opt_d)):
        for i, s in opt.state_dict()['state'].items():
            state.update({f'{name}.{i}.{k}': v.clone() for k, v in s.items()})
    state['scaler'] = copy.deepcopy(g.scaler.state_dict())
    return state


def assert_unchanged(before, after):
    import torch
    assert before.keys() == after.keys()
    for key in before:
        if key == 'scaler':
            assert before[key] == after[key]
        else:
            assert torch.equal(before[key], after[key]), key


class OpensAFile:
    """Unpickled with full pickle, this object creates the file `path`: a stand-in for any code."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, 'w'))


def write_hostile_file(path, content, writer):
    """`content` (holding an OpensAFile) written to `path` by torch.save or as a raw pickle: a
    file that runs code where it is loaded with full pickle."""
    if writer == 'torch.save':
        import torch
        torch.save(content, path)
    else:
        with open(path, 'wb') as f:
            pickle.dump(content, f, protocol=2)
