import functools
import http.server
import importlib
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

import utils
from conftest import ROOT, run_in_process
from models import Generator
from utils import UserError


def cie_lab_reference(rgb_uint8):
    """sRGB (D65) -> CIE Lab by the textbook formulas, independent of OpenCV."""
    c = rgb_uint8.astype(np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]])
    xyz = linear @ m.T / np.array([0.950456, 1.0, 1.088754])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    L = np.where(xyz[..., 1] > 0.008856, 116 * f[..., 1] - 16, 903.3 * xyz[..., 1])
    return np.stack([L, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def random_images(n=50, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def test_lab_conversion_agrees_with_the_cie_formulas():
    rgb = random_images(20)
    # OpenCV interpolates the gamma and cube-root curves: within half a Lab unit of the exact values
    assert np.abs(utils.rgb_to_lab(rgb) - cie_lab_reference(rgb)).max() < 0.5


def test_lab_round_trip_restores_every_pixel_within_one_level():
    rgb = random_images(200)
    diff = np.abs(utils.lab_to_rgb(utils.rgb_to_lab(rgb)).astype(int) - rgb)
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99


def test_network_scale_round_trip_through_tensors():
    rgb = random_images(10, seed=1)
    lab = torch.from_numpy(utils.rgb_to_lab(rgb, network_scale=True)).permute(0, 3, 1, 2)
    assert lab[:, 0].min() >= -1 and lab[:, 0].max() <= 1 and lab[:, 1:].abs().max() <= 1
    assert np.abs(utils.network_to_rgb(lab[:, :1], lab[:, 1:]).astype(int) - rgb).max() <= 1
    assert torch.allclose(lab, torch.from_numpy(cie_lab_reference(rgb) / [50, 127, 127] - [1, 0, 0]).permute(0, 3, 1, 2).float(), atol=0.005)


def test_chunked_conversion_matches_one_call(monkeypatch):
    rgb = random_images(37, seed=2)
    whole = utils.rgb_to_lab(rgb)
    monkeypatch.setattr(utils, '_LAB_CHUNK', 5)
    assert np.array_equal(utils.rgb_to_lab(rgb), whole)


def test_learning_rate_formula():
    assert utils.learning_rate(3e-4, 1, 0.1, 6e4) == pytest.approx(3e-4 * 0.1 ** (1 / 6e4))
    assert utils.learning_rate(3e-4, 60_000, 0.1, 6e4) == pytest.approx(3e-5)
    assert utils.learning_rate(3e-4, 30_000, 0.1, 6e4) == pytest.approx(3e-4 / np.sqrt(10))
    # smooth, not staircase: every step lowers it
    assert utils.learning_rate(3e-4, 1001, 0.1, 6e4) < utils.learning_rate(3e-4, 1000, 0.1, 6e4)
    assert utils.learning_rate(3e-4, 10**7, 0.1, 6e4) == 1e-6


def test_colorfulness_by_the_definition():
    gray = np.repeat(random_images(3)[..., :1], 3, axis=-1)
    assert np.allclose(utils.colorfulness(gray), 0)
    red = np.zeros((1, 4, 4, 3), np.uint8)
    red[..., 0] = 200
    # rg = 200, yb = 100, no spread: 0.3 * sqrt(200^2 + 100^2)
    assert utils.colorfulness(red)[0] == pytest.approx(0.3 * np.hypot(200, 100))


def test_scores_of_a_perfect_and_of_a_known_prediction():
    rgb = random_images(4)
    ab = torch.zeros(4, 2, 32, 32)
    perfect = utils.ColorizationScores()
    perfect.add(ab, ab, rgb, rgb)
    r = perfect.result()
    assert r['mae'] == 0 and r['nazeri_accuracy'] == 1 and r['mean_ab_error'] == 0 and r['psnr'] >= 99
    off = rgb.astype(np.int16) + 10
    shifted = np.clip(off, 0, 255).astype(np.uint8)
    s = utils.ColorizationScores()
    s.add(ab + 0.5, ab, shifted, rgb)
    r = s.result()
    diff = shifted.astype(float) - rgb
    assert r['mae'] == pytest.approx(np.abs(diff).mean())
    assert r['psnr'] == pytest.approx(np.mean(10 * np.log10(255 ** 2 / (diff ** 2).mean(axis=(1, 2, 3)))))
    assert r['mean_ab_error'] == pytest.approx(0.5)


def test_sample_grid_geometry():
    tiles = np.zeros((20, 32, 32, 3), np.uint8)
    grid = utils.image_grid([tiles, tiles, tiles], border=6, scale=2.2)
    assert grid.shape == (round((3 * 38 + 6) * 2.2), round((20 * 38 + 6) * 2.2), 3)
    assert (grid[:13] == 255).all()  # the 6-pixel frame, scaled
    assert (grid[14:60, 14:60] == 0).all()


def test_checkpoint_save_is_atomic_and_loads_with_weights_only(tmp_path):
    path = str(tmp_path / 'ck.pt')
    utils.save_checkpoint(path, {'w': torch.arange(3), 'step': 4, 'args': {'a': 'b'}})
    assert torch.load(path, weights_only=True)['step'] == 4
    assert os.listdir(tmp_path) == ['ck.pt']

    def explode(f):
        f.write(b'partial')
        raise OSError(28, 'No space left on device')
    before = open(path, 'rb').read()
    with pytest.raises(OSError):
        utils.atomic_write(path, explode)
    assert open(path, 'rb').read() == before and os.listdir(tmp_path) == ['ck.pt']


def test_number_in_bounds():
    import argparse
    unit = utils.number_in(float, 0, 1)
    assert unit('0') == 0 and unit('1') == 1
    for bad in ['1.5', '-0.1', 'x', 'nan']:
        with pytest.raises(argparse.ArgumentTypeError):
            unit(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        utils.number_in(float, 0, 1, low_open=True)('0')
    assert utils.number_in(int, 1)('6e4') == 60000


def test_bf16_on_a_cpu_without_native_bf16_is_refused_at_once(monkeypatch):
    cpu = torch.device('cpu')
    monkeypatch.setattr(utils, 'cpu_has_native_bf16', lambda: False)
    with pytest.raises(utils.UserError, match=r'no native bf16.*65x slower.*--precision fp32 or auto'):
        utils.resolve_precision('bf16', cpu)
    assert utils.resolve_precision('auto', cpu) == 'fp32' and utils.resolve_precision('fp32', cpu) == 'fp32'
    monkeypatch.setattr(utils, 'cpu_has_native_bf16', lambda: True)
    assert utils.resolve_precision('bf16', cpu) == 'bf16' and utils.resolve_precision('auto', cpu) == 'bf16'


@pytest.mark.skipif(utils.cpu_has_native_bf16(), reason='this CPU runs bf16 natively')
@pytest.mark.parametrize('tool', ['train.py', 'test.py', 'colorize.py', 'bench.py'])
def test_every_tool_names_missing_bf16_in_one_line(tool, tmp_path):
    extra = {'test.py': ['--checkpoints', 'x.pt'], 'colorize.py': ['x.png', '--checkpoint', 'x.pt', '--output', 'o'],
             'train.py': ['--save_path', str(tmp_path / 'ck'), '--samples_path', str(tmp_path / 's')],
             'bench.py': ['--synthetic']}[tool]
    if tool == 'bench.py':
        r = subprocess.run([sys.executable, tool, '--precision', 'bf16', *extra], cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
    else:  # in this process, as the script runs it (conftest.run_in_process)
        r = run_in_process(importlib.import_module(tool[:-3]).main, ['--precision', 'bf16', *extra])
    assert r.returncode == 2 and 'Traceback' not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and 'no native bf16' in r.stderr and '--precision fp32' in r.stderr


def test_column_titles_never_break_inside_a_word():
    width = int((32 + 6) * 1.6) - 3  # a test.py grid column
    for label in ['original', 'grayscale', 'checkpoint_ep199.pt', 'batch norm recipe, 200 epochs',
                  'spectralnorm_ep100_weights_gen.pt', 'a b c d e f g h i j k l m n o p']:
        lines, size = utils.header_lines(label, width)
        assert 1 <= len(lines) <= 4 and size in utils.HEADER_SIZES
        assert all(utils._text_width(line, size) <= width for line in lines)
        words = label.split()
        for line in lines:  # each line is whole words, or one word shortened with a final '.'
            for word in line.split():
                assert word in words or (word.endswith('.') and any(w.startswith(word[:-1]) for w in words))
    assert utils.header_lines('original', width)[0] == ['original']
    assert utils.header_lines('grayscale', width)[0] == ['grayscale']


class QuietFileHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def weights_server(tmp_path):
    """A local HTTP server for the published-weights download: two generator state dicts in the
    reference's layout, a web page posing as weights, and a truncated file."""
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


def test_the_published_generators_are_fetched_once_and_scored_side_by_side(weights_server, tiny_cifar, tmp_path,
                                                                          monkeypatch):
    import test as test_cli
    published = (('batch-norm recipe', f'{weights_server}/bn.pt'), ('spectral-norm recipe', f'{weights_server}/sn.pt'))
    monkeypatch.setattr(utils, 'PUBLISHED_GENERATORS', published)
    cache, out = tmp_path / 'cache', tmp_path / 'out'
    argv = ['--data_path', tiny_cifar, '--weights_cache', str(cache), '--save_path', str(out), '--num_grids', '0',
            '--precision', 'fp32']
    r = run_in_process(test_cli.main, argv)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(cache)) == ['bn.pt', 'sn.pt']
    assert set(json.load(open(out / 'metrics.json'))['checkpoints']) == {'batch-norm recipe', 'spectral-norm recipe'}
    # once fetched, they come from the cache: a dead server does not matter
    monkeypatch.setattr(utils, 'PUBLISHED_GENERATORS', tuple((label, 'http://127.0.0.1:9/' + url.rsplit('/', 1)[1])
                                                              for label, url in published))
    assert run_in_process(test_cli.main, argv).returncode == 0


@pytest.mark.parametrize('name, words', [('page.pt', 'web page'), ('cut.pt', 'corrupt, truncated'),
                                         ('missing.pt', '404')])
def test_a_bad_answer_is_one_line_and_leaves_nothing_in_the_cache(weights_server, tmp_path, name, words):
    published = (('batch-norm recipe', f'{weights_server}/{name}'), ('spectral-norm recipe', f'{weights_server}/sn.pt'))
    cache = tmp_path / 'cache'
    with pytest.raises(UserError) as e:
        utils.fetch_published_generators(str(cache), published)
    message = str(e.value)
    assert words in message and f'{weights_server}/{name}' in message and f'{weights_server}/sn.pt' in message
    assert str(cache) in message and '--checkpoints' in message
    assert not os.path.exists(cache) or os.listdir(cache) == []


def test_offline_test_py_ends_at_once_with_one_line(tiny_cifar, tmp_path, monkeypatch):
    import test as test_cli
    monkeypatch.setattr(utils, 'PUBLISHED_GENERATORS', (('a', 'http://127.0.0.1:9/a.pt'), ('b', 'http://127.0.0.1:9/b.pt')))
    r = run_in_process(test_cli.main, ['--data_path', tiny_cifar, '--weights_cache', str(tmp_path / 'cache')])
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert 'could not fetch the reference' in r.stderr and os.listdir(tmp_path / 'cache') == []
