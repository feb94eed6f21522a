import json
import subprocess
import sys

from conftest import ROOT


def test_bench_reports_rates_flops_and_utilisation(tmp_path, tiny_cifar):
    out = tmp_path / 'bench.json'
    r = subprocess.run([sys.executable, 'bench.py', '--data_path', tiny_cifar, '--batch_sizes', '4',
                        '--windows', '1', '--seconds', '0.2', '--json', str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    result = json.loads(out.read_text())
    assert result['load_images'] == 80 + 24
    assert [(row['recipe'], row['batch_size']) for row in result['rows']] == [('default', 4), ('spectral', 4)]
    for row in result['rows']:
        assert row['train_images_per_s'] > 0 and row['inference_images_per_s'] > 0
        # forward + backward of both networks: about 3.7 GFLOP per image (SPEC: ~3.9 with the reference's count)
        assert 3.0e9 < row['flops_per_train_image'] < 4.5e9
        assert abs(row['mfu'] - row['train_images_per_s'] * row['flops_per_train_image'] / result['matmul_peak_flops']) < 1e-9
    assert 'MFU' in r.stdout and 'load and convert 104 images' in r.stdout
