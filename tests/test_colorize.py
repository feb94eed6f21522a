import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

import colorize
import dataset
from core import pictures
from storage.checkpoints import load_generator
from core.cli import Compute, run_cli
from conftest import ROOT, OpensAFile, run_in_process, write_hostile_file
from models import Generator

FLAGS = ['--device', 'cpu', '--precision', 'fp32']


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    """The same untrained generator as a train.py checkpoint and as a bare reference-layout state dict."""
    folder = tmp_path_factory.mktemp('checkpoints')
    torch.manual_seed(0)
    G = Generator('batch')
    full, bare = str(folder / 'checkpoint.pt'), str(folder / 'bare.pt')
    torch.save({'generator': G.state_dict(), 'args': {'gen_norm': 'batch'}}, full)
    torch.save(G.state_dict(), bare)
    return full, bare


def scene(width, height, seed, depth=np.uint8):
    """A photo-like BGR picture: colour gradients, a few hard-edged shapes, a little noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    corners = rng.uniform(0, 1, (3, 3)).astype(np.float32)
    image = corners[0] + np.multiply.outer(x / width, corners[1] - corners[0]) + \
        np.multiply.outer(y / height, corners[2] - corners[0])
    for _ in range(6):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.05, 0.25) * height
        image[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.uniform(0, 1, 3)
    image += rng.normal(0, 0.01, image.shape).astype(np.float32)
    return np.rint(np.clip(image, 0, 1) * np.iinfo(depth).max).astype(depth)


def lightness8(image):
    """L in levels of 255 by OpenCV's 8-bit conversion (16-bit pictures rounded to 8 bits first)."""
    if image.dtype == np.uint16:
        image = np.rint(image / 257).astype(np.uint8)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_BGR2Lab)[..., 0].astype(int)


def lightness_float(image):
    """L in levels of 255 by OpenCV's float conversion of 8-bit pixels, rounded."""
    return np.rint(cv2.cvtColor(image.astype(np.float32) / 255, cv2.COLOR_BGR2Lab)[..., 0] * 2.55)


def chroma8(image):
    if image.dtype == np.uint16:
        image = np.rint(image / 257).astype(np.uint8)
    return np.abs(cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_BGR2Lab)[..., 1:].astype(int) - 128)


def test_a_mixed_folder_is_colorized_keeping_size_lightness_depth_and_alpha(checkpoints, tmp_path):
    inputs, out = tmp_path / 'in', tmp_path / 'out'
    inputs.mkdir()
    pictures = {
        'photo.jpg': scene(1920, 1080, seed=1),
        'gray.png': cv2.cvtColor(scene(640, 480, seed=2), cv2.COLOR_BGR2GRAY),
        'deep.png': scene(96, 64, seed=3, depth=np.uint16),
        'alpha.png': np.dstack([scene(80, 60, seed=4), np.tile(np.linspace(0, 255, 80).astype(np.uint8), (60, 1))]),
    }
    for name, image in pictures.items():
        assert cv2.imwrite(str(inputs / name), image)
    (inputs / 'bad.png').write_bytes(np.random.default_rng(0).bytes(4000))

    r = subprocess.run([sys.executable, 'colorize.py', '--checkpoint', checkpoints[0], str(inputs),
                        '--output', str(out), *FLAGS], cwd=ROOT, capture_output=True, text=True, timeout=300)

    assert r.returncode == 1, r.stderr
    reports = [line for line in r.stderr.splitlines() if 'bad.png' in line]
    assert reports == [f"colorize.py: skipped {inputs / 'bad.png'}: cannot be read as an image"]
    assert 'colorized 4 of 5 pictures' in r.stdout
    assert sorted(os.listdir(out)) == sorted(pictures)  # no temporary files left behind
    umask = os.umask(0)
    os.umask(umask)
    for name in pictures:
        before = cv2.imread(str(inputs / name), cv2.IMREAD_UNCHANGED)  # as decoded: JPEG is lossy
        after = cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED)
        assert after.shape[:2] == before.shape[:2], name
        assert after.dtype == before.dtype, name
        assert os.stat(out / name).st_mode & 0o777 == 0o666 & ~umask, name  # not the temporary file's 0600
        change = np.abs(lightness8(after) - lightness8(before))
        if name.endswith('.jpg'):
            # JPEG re-quantizes what it stores, even at quality 100 with full-resolution colour: a
            # few percent of the pixels move by 2 or 3 levels (the exact pixels are checked below).
            assert (change <= 1).mean() > 0.95 and change.max() <= 4, name
        else:
            assert change.max() <= 1, name
        assert chroma8(after).max() >= 10, f"{name}: no colour was added"
    assert cv2.imread(str(out / 'gray.png'), cv2.IMREAD_UNCHANGED).shape[2] == 3
    with_alpha = cv2.imread(str(out / 'alpha.png'), cv2.IMREAD_UNCHANGED)
    assert with_alpha.shape[2] == 4 and np.array_equal(with_alpha[..., 3], pictures['alpha.png'][..., 3])

    # The pixels handed to the JPEG encoder keep the lightness within one level everywhere.
    photo = str(inputs / 'photo.jpg')
    picture = colorize.read_picture(photo, keep_original=False)
    G, _, _ = load_generator(checkpoints[0], torch.device('cpu'))
    ab = colorize.predict_ab(G, [picture], Compute(torch.device('cpu'), 'fp32'))[0]
    exact = colorize.stored(picture, colorize.colorize(picture, ab))
    assert np.abs(lightness8(exact) - lightness8(cv2.imread(photo))).max() <= 1
    assert np.abs(exact.astype(int) - cv2.imread(str(out / 'photo.jpg'))).max() <= 4


def small_folder(folder):
    folder.mkdir()
    cv2.imwrite(str(folder / 'colour.png'), scene(48, 40, seed=5))
    cv2.imwrite(str(folder / 'gray.bmp'), cv2.cvtColor(scene(40, 32, seed=6), cv2.COLOR_BGR2GRAY))
    return str(folder)


def test_a_bare_state_dict_colorizes_as_the_checkpoint_holding_it(checkpoints, tmp_path):
    inputs = small_folder(tmp_path / 'in')
    for ck, out in zip(checkpoints, ('a', 'b')):
        assert colorize.main(['--checkpoint', ck, inputs, '--output', str(tmp_path / out), *FLAGS]) == 0
    for name in ('colour.png', 'gray.bmp'):
        a = cv2.imread(str(tmp_path / 'a' / name), cv2.IMREAD_UNCHANGED)
        b = cv2.imread(str(tmp_path / 'b' / name), cv2.IMREAD_UNCHANGED)
        assert a is not None and np.array_equal(a, b)


def test_a_mid_epoch_checkpoint_is_recalibrated_on_the_images_its_run_trained_on_not_those_it_held_out(
        tiny_cifar, tmp_path, monkeypatch):
    from core import calibration
    torch.manual_seed(0)
    ck = str(tmp_path / 'checkpoint_step5.pt')
    torch.save({'generator': Generator('batch').state_dict(), 'generator_exact_statistics': False,
                'args': {'gen_norm': 'batch', 'image_size': 32, 'seed': 0, 'holdout': 16}}, ck)
    recalibrated_on = []
    recalibrate = calibration.recalibrate_generator
    monkeypatch.setattr(calibration, 'recalibrate_generator',
                        lambda G, images, *rest: recalibrated_on.append(images) or recalibrate(G, images, *rest))
    assert colorize.main(['--checkpoint', ck, small_folder(tmp_path / 'in'), '--output', str(tmp_path / 'out'),
                          '--data_path', tiny_cifar, *FLAGS]) == 0
    [images] = recalibrated_on
    assert len(images) == 80 - 16  # the tiny set's first 64 training images
    assert torch.equal(images.lab, dataset.load_split(tiny_cifar, train=True).lab[:64])


def test_compare_writes_input_grayscale_and_colorized_side_by_side(checkpoints, tmp_path):
    inputs = small_folder(tmp_path / 'in')
    out = tmp_path / 'out'
    assert colorize.main(['--checkpoint', checkpoints[0], os.path.join(inputs, 'colour.png'),
                          '--output', str(out), '--compare', *FLAGS]) == 0
    assert sorted(os.listdir(out)) == ['colour.png', 'colour_compare.png']
    source = cv2.imread(os.path.join(inputs, 'colour.png'))
    result = cv2.imread(str(out / 'colour.png'))
    picture = cv2.imread(str(out / 'colour_compare.png'))
    h, w = source.shape[:2]
    assert picture.shape == (h, 3 * w + 2 * 6, 3)
    original, gap1, gray, gap2, colour = np.split(picture, [w, w + 6, 2 * w + 6, 2 * w + 12], axis=1)
    assert (gap1 == 255).all() and (gap2 == 255).all()
    assert np.array_equal(original, source)
    assert (gray == gray[..., :1]).all()
    # Measured with the float conversion: OpenCV's 8-bit one is itself off by up to 1.5 levels,
    # which a pure gray cannot be nudged toward.
    assert np.abs(lightness_float(gray) - lightness_float(source)).max() <= 1
    assert np.array_equal(colour, result)


@pytest.mark.parametrize('problem, words', [
    ('no_checkpoint', 'missing.pt does not exist'),
    ('empty_folder', 'no input images found'),
    ('output_is_a_file', '--output .* cannot be written'),
])
def test_bad_setups_end_with_one_line_and_exit_code_2(problem, words, checkpoints, tmp_path, capsys):
    inputs = small_folder(tmp_path / 'in')
    ck, output = checkpoints[0], str(tmp_path / 'out')
    if problem == 'no_checkpoint':
        ck = str(tmp_path / 'missing.pt')
    elif problem == 'empty_folder':
        inputs = str(tmp_path / 'empty')
        os.mkdir(inputs)
    else:
        open(output, 'w').close()
    assert run_cli(colorize.main, ['--checkpoint', ck, inputs, '--output', output, *FLAGS]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and re.search(words, lines[0]), lines


def test_a_failed_write_is_reported_and_the_others_are_still_written(checkpoints, tmp_path, monkeypatch, capsys):
    inputs, out = small_folder(tmp_path / 'in'), tmp_path / 'out'
    atomic_write = pictures.atomic_write  # how colorize.py writes its pictures (pictures.write_encoded)

    def disk_full_for_colour(path, write_fn, mode='wb'):
        if os.path.basename(path) == 'colour.png':
            raise OSError(28, 'No space left on device')
        atomic_write(path, write_fn, mode)
    monkeypatch.setattr(pictures, 'atomic_write', disk_full_for_colour)
    assert colorize.main(['--checkpoint', checkpoints[0], inputs, '--output', str(out), *FLAGS]) == 1
    assert os.listdir(out) == ['gray.bmp']
    assert f"skipped {os.path.join(inputs, 'colour.png')}: could not write its output (No space left on device)" \
        in capsys.readouterr().err


@pytest.fixture(scope='module')
def model_64(tmp_path_factory):
    """An untrained 64-pixel (Nazeri) generator as a generator file, its statistics made distinct."""
    from storage import checkpoints as checkpoint_files
    from models import build_generator
    torch.manual_seed(1)
    G = build_generator(64, 'batch', 0.5)
    with torch.no_grad():
        for name, buffer in G.named_buffers():
            if 'running_var' in name:
                buffer.uniform_(0.5, 1.5)
    path = str(tmp_path_factory.mktemp('model64') / 'generator_ep0.safetensors')
    checkpoint_files.save_generator_weights(path, G.state_dict(), checkpoint_files.generator_config({'image_size': 64}))
    return path


@pytest.mark.parametrize('predict_at', ['model', 'photo'])
def test_a_64_pixel_model_colorizes_pictures_of_any_size_keeping_size_and_lightness(model_64, predict_at, tmp_path):
    photos = tmp_path / 'photos'
    photos.mkdir()
    for name, (w, h) in {'wide.png': (301, 97), 'tall.jpg': (50, 180), 'tiny.png': (7, 5)}.items():
        cv2.imwrite(str(photos / name), scene(w, h, seed=w))
    out = tmp_path / 'out'
    assert run_cli(colorize.main, [str(photos), '--checkpoint', model_64, '--output', str(out),
                                   '--predict_at', predict_at, '--max_side', '128', *FLAGS]) == 0
    for name in ('wide.png', 'tall.jpg', 'tiny.png'):
        original, colored = cv2.imread(str(photos / name)), cv2.imread(str(out / name))
        assert colored.shape == original.shape
        tolerance = 3 if name.endswith('.jpg') else 1  # JPEG re-quantizes what it stores
        assert np.abs(lightness_float(colored) - lightness_float(original)).max() <= tolerance, name
        assert chroma8(colored).mean() > 0.5  # colour was added


@pytest.mark.parametrize('gain', [1.0, 1.5])
def test_the_colours_are_the_generators_at_its_own_size_scaled_up_to_the_picture(model_64, tmp_path, gain):
    """A picture larger than the model's 64 pixels: the ab of the written file, read back, is the
    generator's ab for the picture's lightness shrunk to 64x64 (pixel areas averaged), times
    --chroma_gain and kept in [-1, 1], scaled up to the picture's size (bicubic) and joined with
    its full-resolution L; within the 8-bit file's rounding, wherever RGB can show that colour
    (elsewhere colorize.py keeps a share of it)."""
    width, height = 200, 150
    photo, out = tmp_path / 'photo.png', tmp_path / 'out'
    picture = scene(width, height, seed=11)
    cv2.imwrite(str(photo), picture)
    assert run_cli(colorize.main, [str(photo), '--checkpoint', model_64, '--output', str(out), *FLAGS,
                                   '--chroma_gain', str(gain)]) == 0
    written = cv2.imread(str(out / 'photo.png'))
    assert written.shape == picture.shape

    L = cv2.cvtColor(picture.astype(np.float32) / 255, cv2.COLOR_BGR2Lab)[..., 0]
    small = cv2.resize(L, (64, 64), interpolation=cv2.INTER_AREA) / 50 - 1
    G, _, _ = load_generator(model_64, 'cpu')
    with torch.no_grad():
        ab_small = G(torch.from_numpy(small)[None, None]).numpy()[0].transpose(1, 2, 0)
    ab_small = np.clip(ab_small * gain, -1, 1)
    ab = np.clip(cv2.resize(ab_small, (width, height), interpolation=cv2.INTER_CUBIC), -1, 1) * 127
    got = cv2.cvtColor(written.astype(np.float32) / 255, cv2.COLOR_BGR2Lab)[..., 1:]
    shown = cv2.cvtColor(np.dstack([L, ab]).astype(np.float32), cv2.COLOR_Lab2BGR)
    inside = ((shown > 0.02) & (shown < 0.98)).all(axis=2)  # within RGB's gamut, with a margin
    assert inside.mean() > 0.5 and np.abs(ab[inside]).max() > 20  # most of the picture, in colour
    error = np.abs(got - ab)[inside]
    assert error.max() < 3 and error.mean() < 0.75, (error.max(), error.mean())


def test_the_network_runs_at_the_models_size_or_the_photos_rounded_and_capped(model_64):
    G, _, _ = load_generator(model_64, 'cpu')
    assert colorize.network_size(G, 97, 301, 'model', 1024) == (64, 64)
    assert colorize.network_size(G, 97, 301, 'photo', 1024) == (96, 288)  # multiples of 32
    assert colorize.network_size(G, 970, 3010, 'photo', 1024) == (320, 1024)  # the longer side capped
    assert colorize.network_size(G, 5, 7, 'photo', 1024) == (32, 32)
    reference = Generator('batch')
    assert colorize.network_size(reference, 970, 3010, 'photo', 1024) == (32, 32)  # the 32x32 networks take 32 only


@pytest.mark.parametrize('writer', ['torch.save', 'pickle'])
def test_a_checkpoint_that_would_run_code_is_refused_in_one_line_and_runs_none(writer, tmp_path):
    marker, evil = tmp_path / 'code_ran', tmp_path / 'evil.pt'
    hostile = {'generator': OpensAFile(str(marker)), 'args': {'gen_norm': 'batch'}}
    write_hostile_file(evil, hostile, writer)
    picture = tmp_path / 'photo.png'
    cv2.imwrite(str(picture), scene(48, 40, seed=7))
    r = run_in_process(colorize.main, [str(picture), '--checkpoint', str(evil), '--output', str(tmp_path / 'out'),
                                       *FLAGS])
    assert not marker.exists(), 'the checkpoint ran code'
    assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(evil) in lines[0] and 'could run code' in lines[0], lines
    assert not (tmp_path / 'out').exists()


def test_a_vivid_run_s_chosen_decoding_travels_to_colorize_test_and_export_without_a_flag(tiny_cifar, tmp_path):
    """--recipe vivid (a distribution head with a holdout) chooses its temperature on the held-out
    images; its generator file paints at it in colorize.py with no --temperature, saying so in one
    line, test.py reports it and where it came from, and export.py keeps it."""
    import json

    import export
    from conftest import command_line, run_train, train_command
    from storage.checkpoints import load_checkpoint
    ck = str(tmp_path / 'ck')
    # the tiny data set's 80 training images cannot spare the recipe's 2,000: a flag beside it wins
    r = run_train(train_command(tiny_cifar, ck, '--recipe', 'vivid', '--holdout', '16', '--max_steps', '20',
                                '--val_batches', '1'))
    assert r.returncode == 0, r.stderr
    chosen = json.load(open(os.path.join(ck, 'decoding.json')))
    assert [s['temperature'] for s in chosen['settings']] == [0.1, 0.2, 0.3, 0.38, 0.5, 0.7, 1.0]
    assert chosen['source'].startswith('chosen on the last 16 training images (held out)')
    # 20 steps of 8 of the 64 training images: epochs 0, 1 and 2, each ending with its choice
    assert len(re.findall(r"\[epoch \d decoding\] temperature", r.stdout)) == 3
    assert re.search(rf"\[epoch 2 decoding\] temperature {chosen['temperature']:g} chosen on the 16 held-out", r.stdout)
    generator = os.path.join(ck, 'generator_ep2.safetensors')
    saved = load_checkpoint(generator)
    assert saved['decoding']['temperature'] == chosen['temperature']
    assert float(saved['generator']['final.temperature']) == pytest.approx(chosen['temperature'])
    assert load_checkpoint(os.path.join(ck, 'checkpoint_ep2.pt'))['decoding']['temperature'] == chosen['temperature']

    inputs = tmp_path / 'in'
    inputs.mkdir()
    for i in range(2):
        cv2.imwrite(str(inputs / f'p{i}.png'), scene(48, 40, seed=i))

    def painted(name, *flags):
        r = run_in_process(colorize.main, [str(inputs), '--checkpoint', generator, '--output', str(tmp_path / name),
                                           *FLAGS, *flags])
        assert r.returncode == 0, r.stderr
        return r.stdout, [cv2.imread(str(tmp_path / name / f'p{i}.png')) for i in range(2)]
    said, by_itself = painted('auto')
    lines = [line for line in said.splitlines() if line.startswith('decoding at')]
    assert lines == [f"decoding at temperature {chosen['temperature']:g}: {chosen['source']}"]
    _, by_flag = painted('flag', '--temperature', str(chosen['temperature']))
    assert all(np.array_equal(a, b) for a, b in zip(by_itself, by_flag))
    other = 1.0 if chosen['temperature'] != 1.0 else 0.1
    said, elsewhere = painted('other', '--temperature', str(other))
    assert not all(np.array_equal(a, b) for a, b in zip(by_itself, elsewhere))
    assert f"decoding at temperature {other:g}: --temperature on the command line" in said

    test_cli = command_line('test')
    r = run_in_process(test_cli.main, ['--checkpoints', generator, '--labels', 'head', '--data_path', tiny_cifar,
                                       '--save_path', str(tmp_path / 'test'), '--num_grids', '0', *FLAGS])
    assert r.returncode == 0, r.stderr
    used = json.load(open(tmp_path / 'test' / 'metrics.json'))['decoding']['head']
    assert used == {'temperature': chosen['temperature'], 'blend': None, 'source': chosen['source']}
    assert chosen['source'] in open(tmp_path / 'test' / 'index.html').read()

    folder = str(tmp_path / 'shared')
    assert run_in_process(export.main, [os.path.join(ck, 'checkpoint_ep2.pt'), '--folder', folder]).returncode == 0
    assert json.load(open(os.path.join(folder, 'config.json')))['decoding']['temperature'] == chosen['temperature']
    assert load_checkpoint(os.path.join(folder, 'model.safetensors'))['decoding'] == saved['decoding']
