"""classifier.py: the scoring classifier, its safe loading, the Fréchet distance of its features,
and the shipped file's accuracy on the real CIFAR-10 test set."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from metrics import classifier
import dataset
from core.cli import UserError
from conftest import ROOT, SHARED_DATA


def gaussian_features(n, d, seed, shift=0.0):
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(n, d)) @ mixing + shift


def fd_by_the_product(a, b):
    """The same distance another way: the trace of (S_a S_b)^1/2 from the eigenvalues of the
    (non-symmetric) product itself."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    trace_root = np.sqrt(np.linalg.eigvals(cov_a @ cov_b).real.clip(0)).sum()
    return ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root


def test_frechet_distance_against_two_other_computations():
    a, b = gaussian_features(400, 16, 0), gaussian_features(300, 16, 1, shift=0.3)
    fd = classifier.frechet_distance(a, b)
    assert fd == pytest.approx(fd_by_the_product(a, b), rel=1e-6)
    linalg = pytest.importorskip('scipy.linalg')
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    by_scipy = (((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b)
                - 2 * np.trace(linalg.sqrtm(cov_a @ cov_b).real))
    assert fd == pytest.approx(by_scipy, rel=1e-6)


def test_frechet_distance_of_a_set_with_itself_is_zero_and_a_shift_adds_its_square():
    a = gaussian_features(500, 32, 2)
    assert abs(classifier.frechet_distance(a, a)) < 1e-8
    assert classifier.frechet_distance(a, a + 0.5) == pytest.approx(32 * 0.25, rel=1e-6)


def small_classifier(seed=0):
    torch.manual_seed(seed)
    return classifier.CifarClassifier((8, 8, 16), stem_width=8).eval()


def test_save_and_load_keep_the_network_and_its_record(tmp_path):
    model = small_classifier()
    with torch.no_grad():  # batch-norm statistics that are not the defaults, so that they must travel
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2)
    path = str(tmp_path / 'c.safetensors')
    classifier.save_classifier(path, model, {'command': 'python x', 'seed': 3, 'test_top1': '0.5'})
    loaded, metadata = classifier.load_classifier(path)
    assert metadata['command'] == 'python x' and metadata['seed'] == '3' and loaded.widths == (8, 8, 16)
    x = torch.rand(4, 3, 32, 32) * 255
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
        assert model.features(x).shape == (4, 16)


def test_a_missing_or_corrupt_classifier_is_one_line(tmp_path):
    with pytest.raises(UserError, match='missing'):
        classifier.load_classifier(str(tmp_path / 'none.safetensors'))
    path = tmp_path / 'c.safetensors'
    classifier.save_classifier(str(path), small_classifier(), {})
    whole = path.read_bytes()
    path.write_bytes(whole[:len(whole) // 2])
    with pytest.raises(UserError, match='corrupt') as e:
        classifier.load_classifier(str(path))
    assert '\n' not in str(e.value) and 'train_classifier.py' in str(e.value)


def test_translate_and_flip_gives_shifted_and_mirrored_crops_of_each_image():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    out = classifier.translate_and_flip(x, torch.Generator().manual_seed(0), max_shift=2)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode='reflect')
    for i in range(2):
        crops = [padded[i, :, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], c) or torch.equal(out[i], c.flip(-1)) for c in crops)


def test_classifier_scores_count_right_answers_and_compare_features_to_the_truth():
    model = small_classifier()
    rgb = np.random.default_rng(0).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    rgb[::2, ..., 0] //= 4  # colours the grey copies lose
    with torch.no_grad():
        for m in model.modules():  # the batch-norm statistics of these images, as training would leave them
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = None
                m.reset_running_stats()
        model.train()(classifier.rgb_batch(rgb, 'cpu'))
        model.eval()
        predicted = model(classifier.rgb_batch(rgb, 'cpu')).argmax(1).numpy()
    classes = np.arange(40) % 4
    judge = classifier.ClassifierScores(model)
    for first in (0, 25):  # two batches
        judge.add('truth', rgb[first:first + 25], classes[first:first + 25])
        judge.add('same', rgb[first:first + 25], classes[first:first + 25])
        judge.add('grey', np.repeat(rgb[first:first + 25, ..., :1], 3, -1), classes[first:first + 25])
    overall, per_class = judge.result('same')
    assert overall['semantic_accuracy'] == pytest.approx((predicted == classes).mean())
    assert abs(overall['classifier_fd']) < 1e-6 and judge.result('grey')[0]['classifier_fd'] > 1e-3
    assert sorted(per_class) == [0, 1, 2, 3]
    assert per_class[1]['semantic_accuracy'] == pytest.approx((predicted == classes)[classes == 1].mean())
    judge.forget('same')
    assert 'same' not in judge.features and 'truth' in judge.features


def test_the_training_tool_writes_a_classifier_that_loads_back(tiny_cifar, tmp_path):
    out = str(tmp_path / 'c.safetensors')
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'train_classifier.py'), '--data_path', tiny_cifar,
                        '--out', out, '--epochs', '2', '--batch_size', '16', '--seed', '1', '--device', 'cpu',
                        '--precision', 'fp32'], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    model, metadata = classifier.load_classifier(out)
    assert metadata['seed'] == '1' and metadata['epochs'] == '2' and 'train_classifier.py' in metadata['command']
    assert 0 <= float(metadata['test_top1']) <= 1 and metadata['cpu'] and metadata['train_minutes']
    rgb, labels = dataset.read_batch_file(os.path.join(tiny_cifar, dataset.CIFAR_FOLDER, 'test_batch'))
    assert classifier.top1(model, rgb, labels) == pytest.approx(float(metadata['test_top1']), abs=1e-4)


def test_the_learning_rate_rises_then_falls_to_zero():
    sys.path.insert(0, os.path.join(ROOT, 'tools'))
    import train_classifier
    rates = [train_classifier.learning_rate(1.0, s, 100) for s in range(101)]
    assert rates[0] == pytest.approx(0.1) and max(rates) == pytest.approx(1.0) and rates[100] == 0
    assert np.argmax(rates) == 20 and all(a >= b for a, b in zip(rates[20:], rates[21:]))


@pytest.mark.skipif(not os.path.isdir(SHARED_DATA), reason='the real CIFAR-10 (../shared/data) is not here')
def test_the_shipped_classifier_on_the_real_test_set():
    """At least 90% top-1 on the colour test images; the grey ones score lower; the grey images'
    features lie further from the truth's than those of the true colours with mild noise."""
    model, metadata = classifier.load_classifier()
    rgb, labels = dataset.read_batch_file(os.path.join(SHARED_DATA, dataset.CIFAR_FOLDER, 'test_batch'))
    colour = classifier.top1(model, rgb, labels)
    assert colour >= 0.90 and colour == pytest.approx(float(metadata['test_top1']), abs=0.005)
    part = slice(0, 2000)  # a fifth of the test set tells the distances apart, at a fifth of the time
    grey = np.repeat(np.rint(rgb[part] @ np.array([0.299, 0.587, 0.114]))[..., None], 3, -1).astype(np.uint8)
    noisy = np.clip(rgb[part] + np.random.default_rng(0).normal(0, 3, rgb[part].shape), 0, 255).astype(np.uint8)
    judge = classifier.ClassifierScores(model)
    for name, images in (('truth', rgb[part]), ('grey', grey), ('noisy', noisy)):
        for first in range(0, 2000, 500):
            judge.add(name, images[first:first + 500], labels[part][first:first + 500])
    grey_scores, noisy_scores = judge.result('grey')[0], judge.result('noisy')[0]
    assert grey_scores['semantic_accuracy'] < colour - 0.02  # 85.7% against 90.9% on the whole test set
    assert grey_scores['classifier_fd'] > 5 * noisy_scores['classifier_fd'] > 0


def test_loading_draws_nothing_from_the_random_generator(tmp_path):
    """train.py loads the classifier before its first step: the run must draw what it drew before."""
    path = str(tmp_path / 'c.safetensors')
    classifier.save_classifier(path, small_classifier(), {})
    torch.manual_seed(5)
    before = torch.get_rng_state()
    classifier.load_classifier(path)
    assert torch.equal(torch.get_rng_state(), before)
