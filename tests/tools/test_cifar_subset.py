"""tools/cifar_subset.py (a real CIFAR-10 subset for machines without network) and the GPU
check script that uses it (tools/gpu_check.sh)."""
import os
import subprocess
import sys

import pytest

import dataset
from conftest import ROOT, SHARED_DATA, make_tiny_cifar, run_train, train_command

TOOL = os.path.join(ROOT, 'tools', 'cifar_subset.py')


def test_the_gpu_check_script_parses():
    r = subprocess.run(['bash', '-n', os.path.join(ROOT, 'tools', 'gpu_check.sh')], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_the_subset_is_the_first_images_in_the_official_format_and_trains(tmp_path):
    source = str(tmp_path / 'src')
    make_tiny_cifar(source, per_batch=16, test_images=24)
    out = str(tmp_path / 'subset')
    r = subprocess.run([sys.executable, TOOL, '--data_path', source, '--out', out, '--train', '40', '--test', '16'],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    train, test = dataset.load_split(out, train=True, download=False), dataset.load_split(out, train=False, download=False)
    full = dataset.load_split(source, train=True, download=False)
    assert len(train) == 40 and len(test) == 16
    assert (train.rgb == full.rgb[:40]).all() and (train.labels == full.labels[:40]).all()
    ck = str(tmp_path / 'ck')
    r = run_train(train_command(out, ck, '--max_steps', '2', '--val_batches', '1', '--tensorboard', 'off'))
    assert r.returncode == 0, r.stderr
    assert os.path.isfile(os.path.join(ck, 'checkpoint_ep0.pt'))


@pytest.mark.parametrize('flags, words', [(['--train', '12000'], 'over the 40 MB limit'),
                                          (['--train', '7'], 'multiple of 5')])
def test_bad_sizes_are_one_line(tmp_path, flags, words):
    r = subprocess.run([sys.executable, TOOL, '--data_path', str(tmp_path), '--out', str(tmp_path / 'o'), *flags],
                       capture_output=True, text=True)
    assert r.returncode == 2 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED_DATA, 'cifar-10-batches-py')), reason='../shared/data absent')
def test_the_default_subset_of_the_real_data_stays_under_40_mb(tmp_path):
    r = subprocess.run([sys.executable, TOOL, '--data_path', SHARED_DATA, '--out', str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    folder = tmp_path / 'cifar-10-batches-py'
    assert sum(f.stat().st_size for f in folder.iterdir()) < 40_000_000
    assert len(dataset.load_split(str(tmp_path), train=True, download=False)) == 5000
