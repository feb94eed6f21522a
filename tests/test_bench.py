import functools
import json
import os
import subprocess
import sys

import cv2
import numpy as np

from conftest import ROOT, make_tiny_cifar, run_in_process


def test_bench_reports_rates_flops_utilisation_and_the_reference_side_by_side(tmp_path, tiny_cifar, monkeypatch):
    import bench
    out = tmp_path / 'bench.json'
    # A smaller peak measurement: what is checked is how the peak enters MFU, not its value.
    monkeypatch.setattr(bench, 'matmul_peak', functools.partial(bench.matmul_peak, n=1024, calls=2))
    r = run_in_process(bench.main, ['--data_path', tiny_cifar, '--batch_sizes', '4', '--recipes', 'spectral',
                                    '--windows', '1', '--seconds', '0.2', '--baseline', '--num_workers', '1',
                                    '--autotune', 'off', '--json', str(out)])
    assert r.returncode == 0, r.stderr
    result = json.loads(out.read_text())
    assert result['load_images'] == 80 + 24
    assert [(row['recipe'], row['batch_size']) for row in result['rows']] == [('spectral', 4)]
    for row in result['rows']:
        assert row['train_images_per_s'] > 0 and row['inference_images_per_s'] > 0
        # forward + backward of both networks: about 3.7 GFLOP per image (~3.9 with the reference's count)
        assert 3.0e9 < row['flops_per_train_image'] < 4.5e9
        assert abs(row['mfu'] - row['train_images_per_s'] * row['flops_per_train_image'] / result['matmul_peak_flops']) < 1e-9
        assert row['reference_images_per_s'] > 0
        assert abs(row['ratio'] - row['train_images_per_s'] / row['reference_images_per_s']) < 1e-9
        assert row['layer_forms'].startswith('layer forms')
        # the profiler's shares: copies are a part of what lies outside the products and convolutions
        assert 0 < row['copies'] < row['outside_products'] < 1
    assert 'MFU' in r.stdout and 'load and convert 104 images' in r.stdout
    assert 'reference img/s' in r.stdout and result['cpu'] in r.stdout


def test_the_profile_counts_transposed_convolutions_as_arithmetic_and_a_cast_as_a_copy():
    """On CPUs the transposed convolution's arithmetic runs inside aten::_convolution itself."""
    import torch

    import bench
    layer = torch.nn.ConvTranspose2d(128, 64, 4, 2, 1)
    x = torch.randn(8, 128, 16, 16)
    with torch.no_grad():
        conv = bench.step_profile(lambda: layer(x), steps=2)
    big = torch.randn(64, 128, 32, 32)
    cast = bench.step_profile(lambda: big.to(torch.float64), steps=2)
    assert conv['outside_products'] < 0.5
    assert cast['outside_products'] > 0.5 and cast['copies'] > 0.5


def test_the_reference_style_data_path_decodes_what_the_project_converts_in_memory(tmp_path):
    """The baseline's per-image PNG decoding and Lab conversion gives the same Lab images as the
    project's vectorized conversion, flipped or not."""
    import torch

    import bench
    from core import pictures
    from conftest import smooth_images
    rgb = smooth_images(6, seed=3)
    bench.write_pngs(rgb, str(tmp_path))
    images = bench.ReferenceStyleImages(str(tmp_path))
    expected = torch.from_numpy(pictures.rgb_to_lab(rgb, network_scale=True)).permute(0, 3, 1, 2)
    assert len(images) == 6
    for i in range(6):
        decoded = images[i]
        assert decoded.shape == (3, 32, 32)
        assert min((decoded - e).abs().max().item() for e in (expected[i], expected[i].flip(2))) < 1e-5


CIFAR_FOLDER_TOOL = os.path.join(ROOT, 'tools', 'cifar_folder.py')


def write_tiny_folder(root, train=24, val=8, size=64, classes=('cats', 'dogs')):
    """root/train/<class>/*.png and root/val/<class>/*.png: random colour images, alternating classes."""
    rng = np.random.default_rng(0)
    for split, n in (('train', train), ('val', val)):
        for i in range(n):
            folder = os.path.join(root, split, classes[i % len(classes)])
            os.makedirs(folder, exist_ok=True)
            image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            assert cv2.imwrite(os.path.join(folder, f'{i:03d}.png'), image)
    return str(root)


def test_bench_on_a_folder_times_the_step_the_loader_per_worker_count_and_whether_it_keeps_up(tmp_path, monkeypatch):
    import bench
    data = write_tiny_folder(tmp_path / 'photos')
    out = tmp_path / 'out.json'
    # A smaller peak measurement: its value is not what is checked here.
    monkeypatch.setattr(bench, 'matmul_peak', functools.partial(bench.matmul_peak, n=1024, calls=2))
    r = run_in_process(bench.main, ['--dataset', 'folder', '--data_path', data, '--image_size', '64',
                                    '--batch_sizes', '4', '--loader_workers', '1', '2', '--seconds', '0.3',
                                    '--windows', '1', '--precision', 'fp32', '--autotune', 'off',
                                    '--json', str(out)])
    assert r.returncode == 0, r.stderr
    result = json.loads(out.read_text())
    assert (result['dataset'], result['image_size'], result['train_images']) == ('folder', 64, 24)
    assert [(row['recipe'], row['batch_size']) for row in result['rows']] == [('default', 4), ('spectral', 4)]
    for row in result['rows']:
        assert row['train_images_per_s'] > 0 and row['inference_images_per_s'] > 0
        assert row['flops_per_train_image'] > 1e9  # the 64-pixel networks, not CIFAR-10's 32-pixel pair
    assert [(e['batch_size'], e['workers']) for e in result['loader']] == [(4, 1), (4, 2)]
    assert all(e['images_per_s'] > 0 and e['images'] > 0 and e['seconds'] >= 0.3 for e in result['loader'])
    verdicts = result['keeps_up']
    assert [(v['recipe'], v['workers']) for v in verdicts] == [('default', 1), ('default', 2), ('spectral', 1),
                                                               ('spectral', 2)]
    loaded = {e['workers']: e['images_per_s'] for e in result['loader']}
    trained = {row['recipe']: row['train_images_per_s'] for row in result['rows']}
    for v in verdicts:
        assert v['loader_images_per_s'] == loaded[v['workers']] > 0
        assert v['train_images_per_s'] == trained[v['recipe']] > 0
        assert v['keeps_up'] is (v['loader_images_per_s'] >= v['train_images_per_s'])
        assert v['loaded_per_trained'] > 0
        verdict = 'keeps up' if v['keeps_up'] else 'the step waits for the data'
        assert f"{v['recipe']} batch 4, {v['workers']} worker{'s' if v['workers'] > 1 else ''}: {verdict}" in r.stdout
    assert result['cpu'] in r.stdout


def test_bench_refuses_flags_that_do_not_fit_the_data_set(tmp_path):
    import bench
    for argv, message in ((['--dataset', 'folder', '--baseline'], '--baseline'),
                          (['--image_size', '64'], "CIFAR-10's images are 32x32"),
                          (['--loader_workers', '2'], '--dataset folder')):
        r = run_in_process(bench.main, argv + ['--data_path', str(tmp_path)])
        assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def run_tool(*argv):
    return subprocess.run([sys.executable, CIFAR_FOLDER_TOOL, *argv], capture_output=True, text=True, timeout=120)


def test_cifar_folder_writes_each_split_as_class_folders_of_pngs(tmp_path):
    from dataset import CLASS_NAMES, load_split
    data = str(tmp_path / 'data')
    make_tiny_cifar(data)  # 80 training and 24 test images, labels i % 10
    out = tmp_path / 'cifar32'
    r = run_tool('--data_path', data, '--out', str(out))
    assert r.returncode == 0, r.stderr
    assert 'wrote 80 training and 24 validation images' in r.stdout
    assert sorted(os.listdir(out)) == ['train', 'val'] and not os.path.exists(str(out) + '.partial')
    for split, train in (('train', True), ('val', False)):
        source = load_split(data, train=train, download=False)
        assert sorted(os.listdir(out / split)) == sorted(CLASS_NAMES)
        counts = {name: len(os.listdir(out / split / name)) for name in CLASS_NAMES}
        assert counts == {name: int((source.labels == k).sum()) for k, name in enumerate(CLASS_NAMES)}
        for i in range(len(source)):
            path = out / split / CLASS_NAMES[source.labels[i]] / f'{i:05d}.png'
            bgr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            assert bgr.shape == (32, 32, 3) and bgr.dtype == np.uint8
            np.testing.assert_array_equal(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), source.rgb[i])

    # a folder that is not empty is refused, in one line, and left as it was
    r = run_tool('--data_path', data, '--out', str(out))
    assert r.returncode == 2 and 'not empty' in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr

    # resized, and only the first images of each split
    resized = tmp_path / 'cifar64'
    r = run_tool('--data_path', data, '--out', str(resized), '--size', '64', '--train_images', '10',
                 '--val_images', '5')
    assert r.returncode == 0, r.stderr
    for split, n in (('train', 10), ('val', 5)):
        paths = [os.path.join(folder, name) for folder, _, names in os.walk(resized / split) for name in names]
        assert len(paths) == n and len(os.listdir(resized / split)) == len(CLASS_NAMES)
        assert sorted(os.path.basename(p) for p in paths) == [f'{i:05d}.png' for i in range(n)]
        assert all(cv2.imread(p).shape == (64, 64, 3) for p in paths)
