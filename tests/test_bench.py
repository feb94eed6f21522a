import functools
import json

from conftest import run_in_process


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
        # forward + backward of both networks: about 3.7 GFLOP per image (SPEC: ~3.9 with the reference's count)
        assert 3.0e9 < row['flops_per_train_image'] < 4.5e9
        assert abs(row['mfu'] - row['train_images_per_s'] * row['flops_per_train_image'] / result['matmul_peak_flops']) < 1e-9
        assert row['reference_images_per_s'] > 0
        assert abs(row['ratio'] - row['train_images_per_s'] / row['reference_images_per_s']) < 1e-9
        assert row['layer_forms'].startswith('layer forms')
    assert 'MFU' in r.stdout and 'load and convert 104 images' in r.stdout
    assert 'reference img/s' in r.stdout and result['cpu'] in r.stdout


def test_the_reference_style_data_path_decodes_what_the_project_converts_in_memory(tmp_path):
    """The baseline's per-image PNG decoding and Lab conversion gives the same Lab images as the
    project's vectorized conversion, flipped or not."""
    import numpy as np
    import torch

    import bench
    import utils
    from conftest import smooth_images
    rgb = smooth_images(6, seed=3)
    bench.write_pngs(rgb, str(tmp_path))
    images = bench.ReferenceStyleImages(str(tmp_path))
    expected = torch.from_numpy(utils.rgb_to_lab(rgb, network_scale=True)).permute(0, 3, 1, 2)
    assert len(images) == 6
    for i in range(6):
        decoded = images[i]
        assert decoded.shape == (3, 32, 32)
        assert min((decoded - e).abs().max().item() for e in (expected[i], expected[i].flip(2))) < 1e-5
