import functools
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import ROOT, make_tiny_cifar, run_in_process

# The 32x32 networks' convolutions, from SPEC.md's tables: (input channels, output channels,
# kernel side, the side of the grid each weight is applied over: the output's for a
# convolution, the input's for a transposed convolution, which scatters each input pixel).
G_LAYERS = {'down1': (1, 64, 4, 32), 'down2': (64, 128, 4, 16), 'down3': (128, 256, 4, 8), 'down4': (256, 512, 4, 4),
            'down5': (512, 512, 4, 2), 'up1': (512, 512, 4, 2), 'up2': (1024, 256, 4, 4), 'up3': (512, 128, 4, 8),
            'up4': (256, 64, 4, 16), 'final': (128, 2, 1, 32)}
D_LAYERS = {'down1': (3, 64, 4, 32), 'down2': (64, 128, 4, 16), 'down3': (128, 256, 4, 8), 'down4': (256, 512, 4, 4),
            'final': (512, 1, 4, 1)}


def layer_flops(c_in, c_out, kernel, side):
    """A layer's forward FLOPs for one image: two (a multiply and an add) per weight per position."""
    return 2 * c_in * c_out * kernel * kernel * side * side


def expected_flops_per_training_image():
    """(the project's step, the same step with D's second pass on the fake batch, as the reference
    takes it) in FLOPs a training image, from the layer shapes alone. A backward pass costs a layer's
    forward twice, once for its weights' gradient and once for its input's, but the input
    gradient is skipped where nothing needs it: G's first layer (it sees L) and D's first layer
    in D's step (the real batch, the fake batch detached)."""
    G = sum(layer_flops(*shape) for shape in G_LAYERS.values())
    D = sum(layer_flops(*shape) for shape in D_LAYERS.values())
    G1, D1 = layer_flops(*G_LAYERS['down1']), layer_flops(*D_LAYERS['down1'])
    project = (G            # G on L
               + 2 * D      # D on the fake batch (for both losses) and on the real batch
               + D          # G's loss back through D to the fake batch: input gradients only, D frozen
               + 2 * G - G1  # G's backward: weights, and inputs but the first layer's
               + 2 * (2 * D - D1))  # D's loss back through its real and fake passes
    second_pass = project + D  # D scores the fake batch again for its own loss
    return project, second_pass


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
        # forward + backward of both networks, counted from the layer shapes: the spectral recipe's
        # D runs twice on the fake batch (its power iteration advances per pass)
        assert row['flops_per_train_image'] == expected_flops_per_training_image()[1]
        assert abs(row['mfu'] - row['train_images_per_s'] * row['flops_per_train_image'] / result['matmul_peak_flops']) < 1e-9
        assert row['reference_images_per_s'] > 0
        assert abs(row['ratio'] - row['train_images_per_s'] / row['reference_images_per_s']) < 1e-9
        assert row['layer_forms'].startswith('layer forms')
        # the profiler's shares (how they are classified: the tests below): copies are a part of
        # what lies outside the products and convolutions
        assert 0 <= row['copies'] <= row['outside_products'] <= 1
    assert 'MFU' in r.stdout and 'load and convert 104 images' in r.stdout
    assert 'reference img/s' in r.stdout and result['cpu'] in r.stdout


def test_the_flops_of_a_training_image_are_the_layers_multiply_adds_less_the_discriminators_second_pass():
    """bench.py's count (torch.utils.flop_counter over one step) is the count from the layer shapes,
    and the project's step (default recipe) is the same step with D's second pass on the fake batch,
    as the reference takes it, less one discriminator forward pass; the 3.67 -> 3.46 GFLOP an image
    that the README and docs/ state are these counts. (The reference's G step also computes D's
    weight gradients, one D forward's worth more: bench.py's baseline, not counted here.)"""
    import re

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import dataclasses

    import bench
    from core.cli import Compute
    from training.gan import ColorizationGAN
    project, second_pass = expected_flops_per_training_image()
    d_forward = sum(layer_flops(*shape) for shape in D_LAYERS.values())
    cpu = torch.device('cpu')
    # (the spectral recipe's count, where D must run twice: the bench.py run above)
    assert bench.flops_per_training_image(bench.RECIPES['default'], cpu) == project

    # The default recipe's step, made to score the fake batch again for D's loss as the reference
    # does, counted as bench.py counts (batch 8, fp32)
    model_config, train_config = bench.RECIPES['default']
    gan = ColorizationGAN(model_config, dataclasses.replace(train_config, channels_last='off', ema_decay=0.0),
                          Compute(cpu, 'fp32'))
    gan.scores_fake_once = False
    with FlopCounterMode(display=False) as counter:
        gan.step(torch.rand(8, 3, 32, 32) * 2 - 1, 1)
    with_second_pass = counter.get_total_flops() / 8
    assert with_second_pass == second_pass and with_second_pass - project == d_forward
    # What the README and docs/ state of it ("3.67 -> 3.46 GFLOP an image")
    folder = os.path.join(ROOT, 'docs')
    docs = [os.path.join(ROOT, 'README.md')]
    docs += [os.path.join(folder, name) for name in os.listdir(folder) if name.endswith('.md')]
    claim = re.compile(r'(\d+\.\d\d) -> (\d+\.\d\d) GFLOP (?:an|per) image')
    stated = [m.groups() for path in docs for m in claim.finditer(open(path, encoding='utf-8').read())]
    assert stated and set(stated) == {(f'{second_pass / 1e9:.2f}', f'{project / 1e9:.2f}')}, stated


def profiled_operators(run_once):
    """The operators one call runs, as torch.profiler records them (each with its children)."""
    from torch.profiler import ProfilerActivity, profile

    import bench
    with bench.native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU]) as prof:
        run_once()
    return prof.events()


def test_the_profile_classifies_a_transposed_convolution_as_arithmetic_and_a_cast_as_a_copy():
    """By the operators' names, not their times: on CPUs the transposed convolution's arithmetic
    runs inside aten::_convolution itself (no convolution operator below it), which bench.py
    counts as arithmetic; a cast runs in aten::copy_, which it counts as a copy, outside."""
    import torch

    import bench
    layer = torch.nn.ConvTranspose2d(16, 8, 4, 2, 1)
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        conv = profiled_operators(lambda: layer(x))
    innermost = {e.name for e in conv if 'conv' in e.name and not any('conv' in c.name for c in e.cpu_children)}
    assert innermost and innermost <= bench.PRODUCT_OPS, innermost
    assert not {e.name for e in conv if 'conv' not in e.name} & bench.PRODUCT_OPS  # allocations, layout copies
    big = torch.randn(4, 8)
    cast = {e.name for e in profiled_operators(lambda: big.to(torch.float64))}
    assert 'aten::copy_' in cast and not cast & bench.PRODUCT_OPS


def test_the_profiles_shares_are_self_times_summed_by_operator_name(monkeypatch):
    """step_profile's arithmetic on a profile of known self times: products and convolutions
    (forward and backward) are the step's work, every other operator its overhead, aten::copy_ the
    copies among it."""
    import types

    import torch.profiler

    import bench
    times = {'aten::mkldnn_convolution': 50.0, 'aten::_convolution': 10.0, 'aten::convolution_backward': 15.0,
             'aten::addmm': 5.0, 'aten::copy_': 8.0, 'aten::relu': 7.0, 'aten::empty': 5.0}

    class RecordedProfile:
        def __init__(self, activities):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def key_averages(self):
            return [types.SimpleNamespace(key=k, self_cpu_time_total=t) for k, t in times.items()]
    monkeypatch.setattr(torch.profiler, 'profile', RecordedProfile)
    calls = []
    shares = bench.step_profile(lambda: calls.append(1), steps=3)
    assert len(calls) == 3
    assert shares == pytest.approx({'outside_products': (8 + 7 + 5) / 100, 'copies': 8 / 100})


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


def test_the_class_context_adds_its_three_layers_forward_and_backward_to_a_training_images_flops():
    """bench.py's `class` recipe (the spectral one with --class_loss): per image, on the 2x2x512
    bottleneck, a 512 -> 512 linear layer, a 512 -> 10 one, a 1x1 convolution 1024 -> 512 at 4
    positions, each a multiply-add (2 FLOPs) per weight and position, forward, and twice that backward
    (the gradients of the input and of the weights)."""
    import torch

    import bench
    cpu = torch.device('cpu')
    added = bench.flops_per_training_image(bench.RECIPES['class'], cpu) - \
        bench.flops_per_training_image(bench.RECIPES['spectral'], cpu)
    assert added == 3 * 2 * (512 * 512 + 512 * 10 + 4 * 1024 * 512)


def test_the_recipes_timed_are_the_configs_train_py_makes_of_their_flags():
    """bench.py builds its GANs from configs, never from train.py's command line; these are the
    configs train.py would build from the same recipes' flags (tools/ab_steps.py passes the flags)."""
    import bench
    from training.options import configs_from_args, parse_training_args
    assert set(bench.RECIPES) == set(bench.RECIPE_FLAGS)
    for name, flags in bench.RECIPE_FLAGS.items():
        assert bench.RECIPES[name] == configs_from_args(parse_training_args(flags)), name
