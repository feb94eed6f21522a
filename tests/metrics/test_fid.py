"""fid.py: FID through torchmetrics with a local weights file, and the one-line errors when the
weights are missing offline or are not weights. The weights file is made here: the library's own
Inception architecture with seeded random weights (the real ones cannot be downloaded in tests).
The distances are taken on its first pool features (64 values): the 2048-value ones FID is
defined on go through the same code, but their distance takes minutes of a 2-core CPU."""
import json
import os

import numpy as np
import pytest
import torch

from metrics import fid
from core.cli import UserError
from conftest import OpensAFile, command_line, make_tiny_cifar, run_in_process, write_hostile_file


@pytest.fixture(autouse=True)
def early_features(monkeypatch):
    monkeypatch.setattr(fid, 'FEATURES', 64)


@pytest.fixture(scope='module')
def random_inception_weights(tmp_path_factory):
    from torch_fidelity import feature_extractor_inceptionv3 as inception
    path = str(tmp_path_factory.mktemp('inception') / 'random-inception.pth')
    original_load = inception.FeatureExtractorInceptionV3.load_state_dict
    inception.FeatureExtractorInceptionV3.load_state_dict = lambda self, state, *a, **k: None
    original_fetch = inception.load_state_dict_from_url
    inception.load_state_dict_from_url = lambda *a, **k: {}
    try:
        torch.manual_seed(0)
        model = inception.FeatureExtractorInceptionV3('inception-v3-compat', ['2048'])
    finally:
        inception.FeatureExtractorInceptionV3.load_state_dict = original_load
        inception.load_state_dict_from_url = original_fetch
    # Batch-norm statistics of a few images, as training leaves them: with the defaults, random
    # weights shrink the activations layer by layer to features of 1e-8.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
            m.reset_running_stats()
    with torch.no_grad():
        model.train()(torch.from_numpy(colour_images(2, seed=5)).permute(0, 3, 1, 2).contiguous())
    torch.save(model.state_dict(), path)
    return path


def colour_images(n=12, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n, 1, 1, 3))
    return np.clip(base + rng.normal(0, 25, (n, 32, 32, 3)), 0, 255).astype(np.uint8)


def test_fid_of_a_set_with_itself_is_near_zero_and_of_its_grey_copy_above(random_inception_weights):
    truth = colour_images()
    grey = np.repeat(truth.mean(axis=-1, keepdims=True).astype(np.uint8), 3, axis=-1)
    scores = fid.fid_scores(truth, {'same': truth, 'grey': grey}, random_inception_weights, torch.device('cpu'))
    assert scores['grey'] > 1e-3  # features of sensible size, so that "near 0" means something
    assert abs(scores['same']) < 1e-4 * scores['grey']


def test_test_py_scores_fid_offline_with_a_weights_file(tmp_path, random_inception_weights):
    from models import Generator
    tiny_cifar = str(tmp_path / 'data')
    make_tiny_cifar(tiny_cifar, per_batch=2, test_images=4)  # Inception costs about a second an image on a CPU
    torch.manual_seed(0)
    ckpt, out = str(tmp_path / 'g.pt'), str(tmp_path / 'out')
    torch.save({'generator': Generator('batch').state_dict(), 'args': {'gen_norm': 'batch'}}, ckpt)
    r = run_in_process(command_line('test').main, [
        '--data_path', tiny_cifar, '--checkpoints', ckpt, '--save_path', out, '--num_grids', '0',
        '--precision', 'fp32', '--fid', '--fid_weights', random_inception_weights, '--classifier', 'off'])
    assert r.returncode == 0, r.stderr
    metrics = json.load(open(os.path.join(out, 'metrics.json')))
    assert metrics['checkpoints']['g.pt']['fid'] > 0 and metrics['baseline']['fid'] > 0
    assert 'FID' in r.stdout.splitlines()[0] and metrics['fid_weights'] == random_inception_weights


def test_offline_without_weights_is_one_line_naming_the_file_and_the_flag(tiny_cifar, tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'empty-cache'))
    monkeypatch.setattr(fid, 'WEIGHTS_URL', 'http://127.0.0.1:9/' + fid.WEIGHTS_NAME)  # nothing listens there
    r = run_in_process(command_line('test').main, ['--data_path', tiny_cifar, '--checkpoints', 'whatever.pt',
                                                   '--save_path', str(tmp_path / 'out'), '--fid'])
    assert r.returncode == 2 and 'Traceback' not in r.stderr
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1 and fid.WEIGHTS_NAME in line and '--fid_weights' in line
    assert not os.path.exists(tmp_path / 'out')  # nothing was scored or written


def test_a_weights_file_that_is_not_plain_weights_is_refused(tmp_path):
    bad = tmp_path / 'bad.pth'
    bad.write_bytes(b'not a torch file')
    with pytest.raises(UserError, match='not a plain weights file'):
        fid.inception_metric(str(bad), torch.device('cpu'))
    with pytest.raises(UserError, match='does not exist'):
        fid.weights_file(str(tmp_path / 'absent.pth'))


@pytest.mark.parametrize('writer', ['torch.save', 'pickle'])
def test_test_py_refuses_fid_weights_that_would_run_code_in_one_line_and_runs_none(writer, tmp_path):
    """torchmetrics loads the weights with full pickle: test.py must refuse such a file first."""
    from models import Generator
    marker, evil = tmp_path / 'code_ran', tmp_path / 'evil-inception.pth'
    hostile = {'Conv2d_1a_3x3.conv.weight': torch.zeros(32, 3, 3, 3), 'fc.bias': OpensAFile(str(marker))}
    write_hostile_file(evil, hostile, writer)
    data = str(tmp_path / 'data')
    make_tiny_cifar(data, per_batch=2, test_images=4)
    torch.manual_seed(0)
    ckpt, out = str(tmp_path / 'g.pt'), tmp_path / 'out'
    torch.save(Generator('batch').state_dict(), ckpt)
    r = run_in_process(command_line('test').main, [
        '--data_path', data, '--checkpoints', ckpt, '--save_path', str(out), '--num_grids', '0',
        '--precision', 'fp32', '--fid', '--fid_weights', str(evil), '--classifier', 'off'])
    assert not marker.exists(), 'the weights file ran code'
    assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr
    *progress, line = r.stderr.strip().splitlines()  # the scoring's progress bar, then one line
    assert all(bar.startswith('colorize: ') for bar in progress), progress
    assert str(evil) in line and 'not a plain weights file' in line, line
    assert not (out / 'metrics.json').exists()
