"""test.py: scoring generators on the test set, its results page, and the published generators it
scores by default. The script is loaded by conftest.command_line, under a name of its own."""
import importlib
import json
import os
import re
import sys
import sysconfig

import cv2
import numpy as np
import pytest
import torch

from core import pictures
from storage import checkpoints, published
from conftest import ROOT, command_line, run_in_process, run_train, smooth_images, train_command
from dataset import CLASS_NAMES, load_split
from models import Generator

test_cli = command_line('test')


def run(*args):
    """test.py with these flags, in this process (conftest.run_in_process)."""
    return run_in_process(test_cli.main, args)


def test_the_projects_test_py_never_takes_the_place_of_the_standard_librarys_test_package():
    """Every test module is imported (collected) before any test runs: none of them, nor anything
    they imported, may have loaded the project's test.py as `test`, the standard library's package."""
    project = os.path.realpath(os.path.join(ROOT, 'test.py'))
    loaded = sys.modules.get('test')
    assert loaded is None or os.path.realpath(getattr(loaded, '__file__', None) or '') != project
    assert os.path.realpath(test_cli.__file__) == project and test_cli.__name__ != 'test'
    # Nor may a test import it by that name later, inside a test function.
    plain_import = re.compile(r'^\s*(import\s+test\b(?!\.)|from\s+test\s+import\b)|import_module\([\'"]test[\'"]\)',
                              re.MULTILINE)
    tests = os.path.join(ROOT, 'tests')
    for name in sorted(os.listdir(tests)):
        if name.endswith('.py'):
            with open(os.path.join(tests, name), encoding='utf-8') as f:
                assert not plain_import.search(f.read()), f"tests/{name} imports the project's test.py as `test`"
    stdlib = os.path.join(sysconfig.get_paths()['stdlib'], 'test')
    if not os.path.isfile(os.path.join(stdlib, '__init__.py')):
        pytest.skip("this Python was installed without the standard library's test package")
    support = importlib.import_module('test.support')  # the standard library's, not shadowed
    assert os.path.realpath(support.__file__).startswith(os.path.realpath(stdlib) + os.sep)
    assert not _is_project_file(sys.modules['test'])


def _is_project_file(module):
    return os.path.realpath(getattr(module, '__file__', None) or '') == os.path.realpath(os.path.join(ROOT, 'test.py'))


def test_test_py_writes_a_results_page_that_matches_its_metrics(tiny_cifar, tmp_path):
    torch.manual_seed(0)
    ckpt, out = str(tmp_path / 'g.pt'), str(tmp_path / 'out')
    torch.save({'generator': Generator('batch').state_dict(), 'args': {'gen_norm': 'batch'}}, ckpt)
    r = run('--data_path', tiny_cifar, '--checkpoints', ckpt, ckpt, '--labels', 'a<b>&c', 'second',
            '--save_path', out, '--batch_size', '10', '--num_grids', '2', '--precision', 'fp32')
    assert r.returncode == 0, r.stderr
    assert 'index.html' in r.stdout
    page = open(os.path.join(out, 'index.html'), encoding='utf-8').read()
    assert 'a&lt;b&gt;&amp;c' in page and 'a<b>' not in page and 'second' in page and test_cli.BASELINE in page
    grids = sorted(f for f in os.listdir(out) if f.startswith('grid_') and f.endswith('.png'))
    assert grids == ['grid_000.png', 'grid_001.png']
    assert all(f'src="{g}"' in page for g in grids) and 'image-rendering: pixelated' in page
    metrics = json.load(open(os.path.join(out, 'metrics.json')))
    for m in [metrics['baseline']] + [metrics['checkpoints'][label] for label in ('a<b>&c', 'second')]:
        for figure in (f"{m['mean_ab_error']:.4f}", f"{m['mae']:.3f}", f"{m['psnr']:.3f}",
                       f"{100 * m['nazeri_accuracy']:.1f}%", f"{m['colorfulness']:.2f}"):
            assert f'<td>{figure}</td>' in page
    assert f"<td>{metrics['truth_colorfulness']:.2f}</td>" in page
    assert f"{metrics['images']} CIFAR-10 test images; precision fp32" in page
    assert metrics['dataset'] == 'cifar10' and metrics['image_size'] == 32
    assert set(metrics['provenance']) >= {'code', 'versions'}


def hasler_susstrunk(rgb_uint8):
    """Colourfulness (Hasler and Suesstrunk 2003) of each image, by SPEC.md's formula, averaged."""
    values = []
    for image in rgb_uint8.astype(np.float64):
        r, g, b = image[..., 0], image[..., 1], image[..., 2]
        rg, yb = r - g, (r + g) / 2 - b
        values.append(np.sqrt(rg.var() + yb.var()) + 0.3 * np.sqrt(rg.mean() ** 2 + yb.mean() ** 2))
    return float(np.mean(values))


def opencv_lab(rgb_uint8):
    """OpenCV's float Lab of each uint8 RGB image: L in [0, 100], a and b about [-127, 127]."""
    return np.stack([cv2.cvtColor(image.astype(np.float32) / 255, cv2.COLOR_RGB2Lab) for image in rgb_uint8])


def test_test_py_writes_the_scores_computed_by_hand_from_the_images_and_the_generator(tiny_cifar, tmp_path):
    """Every score in metrics.json, for a generator, for no colour (ab = 0) and the truth's
    colourfulness, recomputed here by SPEC.md's definitions: the test images read from the batch
    file, the generator run on their lightness, the prediction as the true L joined with its ab."""
    import pickle
    torch.manual_seed(3)
    G = Generator('batch').eval()
    with torch.no_grad():  # batch-norm statistics of its own, as a trained generator has
        for name, buffer in G.named_buffers():
            if 'running_mean' in name:
                buffer.normal_(0, 0.1)
    ckpt, out = str(tmp_path / 'g.pt'), tmp_path / 'out'
    torch.save(G.state_dict(), ckpt)
    r = run('--data_path', tiny_cifar, '--checkpoints', ckpt, '--labels', 'g', '--save_path', str(out),
            '--batch_size', '10', '--num_grids', '0', '--precision', 'fp32', '--classifier', 'off')
    assert r.returncode == 0, r.stderr
    metrics = json.load(open(out / 'metrics.json'))

    with open(os.path.join(tiny_cifar, 'cifar-10-batches-py', 'test_batch'), 'rb') as f:
        truth = pickle.load(f, encoding='bytes')[b'data'].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    lab = opencv_lab(truth)
    L = lab[..., :1] / 50 - 1  # network scale
    with torch.no_grad():
        predicted = G(torch.from_numpy(L).permute(0, 3, 1, 2).contiguous()).permute(0, 2, 3, 1).numpy()

    def scores(ab):
        """The measures of network-scale ab (N, 32, 32, 2) joined with the true L."""
        joined = np.concatenate([(L + 1) * 50, ab * 127], axis=-1).astype(np.float32)
        rgb = np.stack([cv2.cvtColor(image, cv2.COLOR_Lab2RGB) for image in joined])
        rgb = np.rint(np.clip(rgb, 0, 1) * 255).astype(np.uint8)
        diff = rgb.astype(np.float64) - truth
        close = (np.abs(np.rint(opencv_lab(rgb)) - np.rint(lab)) <= [2, 4.4, 4.4]).all(axis=-1)
        return {'mean_ab_error': np.abs(ab - lab[..., 1:] / 127).mean(), 'mae': np.abs(diff).mean(),
                'psnr': np.mean(10 * np.log10(255 ** 2 / (diff ** 2).mean(axis=(1, 2, 3)))),
                'nazeri_accuracy': close.mean(), 'colorfulness': hasler_susstrunk(rgb)}
    truth_colorfulness = hasler_susstrunk(truth)
    assert metrics['truth_colorfulness'] == pytest.approx(truth_colorfulness, rel=1e-12)
    assert metrics['images'] == len(truth) == 24
    for row, ab in ((metrics['checkpoints']['g'], predicted), (metrics['baseline'], np.zeros_like(predicted))):
        expected = scores(ab)
        expected['colorfulness_gap'] = abs(expected['colorfulness'] - truth_colorfulness)
        assert {key: row[key] for key in expected} == pytest.approx(expected, rel=1e-6)
    assert metrics['checkpoints']['g']['colorfulness'] > 1  # a generator that colours, unlike the baseline


def test_test_py_scores_each_class_and_the_classes_add_up_to_the_whole(tiny_cifar, tmp_path, monkeypatch, capsys):
    torch.manual_seed(0)
    ckpt, out = str(tmp_path / 'g.pt'), str(tmp_path / 'out')
    torch.save({'generator': Generator('batch').state_dict(), 'args': {'gen_norm': 'batch'}}, ckpt)
    opened = []
    monkeypatch.setattr(test_cli.webbrowser, 'open', lambda uri: opened.append(uri) or True)
    monkeypatch.setenv('DISPLAY', ':0')
    r = run('--data_path', tiny_cifar, '--checkpoints', ckpt, '--save_path', out, '--batch_size', '10',
            '--num_grids', '0', '--precision', 'fp32', '--per_class', '--show')
    assert r.returncode == 0, r.stderr
    assert opened == ['file://' + os.path.abspath(os.path.join(out, 'index.html'))]
    metrics = json.load(open(os.path.join(out, 'metrics.json')))
    classes = metrics['per_class']['g.pt']
    labels = [int(l) for l in load_split(tiny_cifar, train=False).labels]  # the test images' classes
    assert {name: m['images'] for name, m in classes.items()} == \
           {CLASS_NAMES[c]: labels.count(c) for c in set(labels)}
    for key in ('mean_ab_error', 'mae', 'colorfulness'):  # every pixel counts once: image-weighted means
        whole = sum(m[key] * m['images'] for m in classes.values()) / metrics['images']
        assert whole == pytest.approx(metrics['checkpoints']['g.pt'][key], rel=1e-6)  # fp32 sums per batch
    assert all(f'{name:12s}' in r.stdout for name in classes)  # the printed per-class rows
    assert '<h2>Per class</h2>' in open(os.path.join(out, 'index.html'), encoding='utf-8').read()
    monkeypatch.delenv('DISPLAY')
    monkeypatch.delenv('WAYLAND_DISPLAY', raising=False)
    test_cli.show_page(os.path.join(out, 'index.html'))
    assert 'no display; open file://' in capsys.readouterr().out and len(opened) == 1


def test_test_py_picks_images_by_the_stated_rule(tiny_cifar, tmp_path):
    """The rule compares the first two generators; a third is drawn beside them on the same images."""
    paths, generators = [], []
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        generators.append(Generator('batch').eval())
        paths.append(str(tmp_path / f'g{seed}.pt'))
        torch.save(generators[-1].state_dict(), paths[-1])
    out = str(tmp_path / 'out')
    r = run('--data_path', tiny_cifar, '--checkpoints', *paths, '--labels', 'bn', 'sn', 'third', '--save_path', out,
            '--batch_size', '10', '--num_grids', '0', '--precision', 'fp32', '--pick', '3')
    assert r.returncode == 0, r.stderr
    picks = json.load(open(os.path.join(out, 'metrics.json')))['picks']
    # The rule, computed another way: the whole test set in one batch, per-image errors sorted by hand.
    test_set = load_split(tiny_cifar, train=False)
    _, lab = next(test_set.batches(len(test_set)))
    with torch.no_grad():
        err = [(G(lab[:, :1]) - lab[:, 1:]).abs().mean(dim=(1, 2, 3)).tolist() for G in generators[:2]]
    order = lambda key: sorted(range(len(key)), key=lambda i: -key[i])[:3]  # noqa: E731
    assert picks['bn better']['test_images'] == order([b - a for a, b in zip(*err)])
    assert picks['sn better']['test_images'] == order([a - b for a, b in zip(*err)])
    assert picks['both struggle']['test_images'] == order([min(a, b) for a, b in zip(*err)])
    page = open(os.path.join(out, 'index.html'), encoding='utf-8').read()
    assert '<h2>Picked by rule</h2>' in page and 'min(error(A), error(B))' in page
    for pick in picks.values():
        picture = cv2.imread(os.path.join(out, pick['picture']))
        assert picture is not None and f'src="{pick["picture"]}"' in page
    shapes = {cv2.imread(os.path.join(out, p['picture'])).shape for p in picks.values()}
    # three pictures of 3 rows and 5 columns (original, grayscale and the three generators), as a
    # grid of that many images of the test set's size is drawn
    drawn = pictures.image_grid([np.zeros((5, 32, 32, 3), np.uint8)] * 3, border=6, scale=1.6,
                                column_labels=['original', 'grayscale', 'bn', 'sn', 'third'])
    assert shapes == {drawn.shape}
    r = run('--data_path', tiny_cifar, '--checkpoints', paths[0], '--pick', '3')
    assert r.returncode == 2 and '--pick compares the first two checkpoints, and 1 was given' in r.stderr


def constant_generator(ab):
    """A reference-layout generator whose every pixel is the colour `ab` (network scale): its last
    layer's weights zero, its bias tanh's inverse of `ab`."""
    torch.manual_seed(0)
    G = Generator('batch')
    with torch.no_grad():
        G.final.model[0].weight.zero_()
        G.final.model[0].bias.copy_(torch.atanh(torch.as_tensor(ab, dtype=torch.float32)))
    return G.state_dict()


@pytest.fixture
def two_generators_server(tmp_path, tiny_cifar):
    """A local server for the published-weights download, serving two different generators in the
    reference's layout: bn.pt paints every pixel the test images' median colour, sn.pt paints
    none (ab = 0). The median is the constant nearest the truth in mean |ab error|, so bn.pt's
    error is below sn.pt's, which is the grey baseline's."""
    import functools
    import http.server
    import threading

    from conftest import QuietFileHandler
    folder = tmp_path / 'two_served'
    folder.mkdir()
    ab = load_split(tiny_cifar, train=False).lab[..., 1:].reshape(-1, 2)
    median = ab.median(dim=0).values
    assert median.abs().max() > 0.01  # a colour, not grey
    torch.save(constant_generator(median), folder / 'bn.pt')
    torch.save(constant_generator([0.0, 0.0]), folder / 'sn.pt')
    handler = functools.partial(QuietFileHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{server.server_port}', folder
    server.shutdown()


def test_the_published_generators_are_fetched_once_and_scored_side_by_side(two_generators_server, tiny_cifar, tmp_path,
                                                                          monkeypatch):
    url, served_folder = two_generators_server
    served = (('batch-norm recipe', f'{url}/bn.pt'), ('spectral-norm recipe', f'{url}/sn.pt'))
    monkeypatch.setattr(published, 'PUBLISHED_GENERATORS', served)
    cache, out = tmp_path / 'cache', tmp_path / 'out'
    argv = ['--data_path', tiny_cifar, '--weights_cache', str(cache), '--save_path', str(out), '--num_grids', '0',
            '--precision', 'fp32', '--classifier', 'off']
    r = run(*argv)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(cache)) == ['bn.pt', 'sn.pt']
    for name in ('bn.pt', 'sn.pt'):  # each fetched as served
        assert (cache / name).read_bytes() == (served_folder / name).read_bytes(), name
    metrics = json.load(open(out / 'metrics.json'))
    assert set(metrics['checkpoints']) == {'batch-norm recipe', 'spectral-norm recipe'}
    median, grey = metrics['checkpoints']['batch-norm recipe'], metrics['checkpoints']['spectral-norm recipe']
    # each row is its own generator's: the grey one scores as the baseline, the median colour's
    # error is lower and its colours more vivid
    assert {k: v for k, v in grey.items() if k != 'path'} == metrics['baseline']
    assert median['mean_ab_error'] < grey['mean_ab_error'] and median['colorfulness'] > grey['colorfulness'] + 1
    # once fetched, they come from the cache: a dead server does not matter
    monkeypatch.setattr(published, 'PUBLISHED_GENERATORS', tuple((label, 'http://127.0.0.1:9/' + url.rsplit('/', 1)[1])
                                                                  for label, url in served))
    assert run(*argv).returncode == 0
    assert json.load(open(out / 'metrics.json'))['checkpoints'] == metrics['checkpoints']


def test_offline_test_py_ends_at_once_with_one_line(tiny_cifar, tmp_path, monkeypatch):
    monkeypatch.setattr(published, 'PUBLISHED_GENERATORS',
                        (('a', 'http://127.0.0.1:9/a.pt'), ('b', 'http://127.0.0.1:9/b.pt')))
    r = run('--data_path', tiny_cifar, '--weights_cache', str(tmp_path / 'cache'))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert 'could not fetch the reference' in r.stderr and os.listdir(tmp_path / 'cache') == []


def test_test_py_scores_a_folder_per_class_at_the_models_size(tiny_folder, tmp_path):
    from storage import checkpoints
    from models import build_generator
    torch.manual_seed(0)
    path = str(tmp_path / 'g64.safetensors')
    checkpoints.save_generator_weights(path, build_generator(64).state_dict(), checkpoints.generator_config({'image_size': 64}))
    out = tmp_path / 'out'
    r = run('--dataset', 'folder', '--data_path', tiny_folder, '--checkpoints', path, '--save_path', str(out),
            '--num_grids', '1', '--precision', 'fp32', '--num_workers', '0', '--per_class')
    assert r.returncode == 0, r.stderr
    metrics = json.load(open(out / 'metrics.json'))
    assert metrics['images'] == 8 and metrics['image_size'] == 64 and metrics['dataset'] == 'folder'
    assert set(metrics['per_class']['g64.safetensors']) == {'a', 'b'}
    assert sum(c['images'] for c in metrics['per_class']['g64.safetensors'].values()) == 8
    assert cv2.imread(str(out / 'grid_000.png')) is not None
    assert re.search(r'^a +\d', r.stdout, re.M) and re.search(r'^b +\d', r.stdout, re.M)


def test_test_py_scores_colour_gap_semantic_accuracy_and_classifier_fd_for_every_row(tiny_cifar, tmp_path):
    """Each generator, the grey images and the true colours get ΔCF, semantic accuracy and
    classifier FD, overall and per class, printed and in metrics.json; the truth's FD is 0 and its
    ΔCF 0; a grey row's ΔCF is the truth's colourfulness; the classifier's accuracy on the truth is
    what classifier.top1 gives on the same images."""
    from metrics import classifier
    torch.manual_seed(0)
    ckpt, out, judge_path = str(tmp_path / 'g.pt'), str(tmp_path / 'out'), str(tmp_path / 'c.safetensors')
    torch.save({'generator': Generator('batch').state_dict(), 'args': {'gen_norm': 'batch'}}, ckpt)
    classifier.save_classifier(judge_path, classifier.CifarClassifier((8, 8, 16), stem_width=8).eval(),
                              {'test_top1': '0.1', 'command': 'made by a test'})
    r = run('--data_path', tiny_cifar, '--checkpoints', ckpt, '--labels', 'g', '--save_path', out, '--batch_size',
            '10', '--num_grids', '0', '--precision', 'fp32', '--per_class', '--classifier', judge_path)
    assert r.returncode == 0, r.stderr
    header = r.stdout.splitlines()[0]
    assert all(title in header for title in ('dCF', 'sem.acc', 'clf FD'))
    metrics = json.load(open(os.path.join(out, 'metrics.json')))
    rows = {'g': metrics['checkpoints']['g'], 'grey': metrics['baseline'], 'truth': metrics['truth']}
    for row in rows.values():
        assert {'colorfulness_gap', 'semantic_accuracy', 'classifier_fd'} <= set(row)
    assert rows['truth']['colorfulness_gap'] == 0 and abs(rows['truth']['classifier_fd']) < 1e-6
    assert rows['grey']['colorfulness_gap'] == pytest.approx(metrics['truth_colorfulness'], abs=0.01)
    assert rows['grey']['classifier_fd'] > 0
    test_set = load_split(tiny_cifar, train=False)
    model, _ = classifier.load_classifier(judge_path)
    assert rows['truth']['semantic_accuracy'] == pytest.approx(classifier.top1(model, test_set.rgb, test_set.labels))
    per_class = metrics['per_class']
    assert set(per_class) == {'g', test_cli.BASELINE, test_cli.TRUTH}
    for label, by_class in per_class.items():
        for name, scores in by_class.items():
            assert {'colorfulness_gap', 'semantic_accuracy'} <= set(scores), (label, name)
    assert metrics['classifier']['command'] == 'made by a test'
    page = open(os.path.join(out, 'index.html'), encoding='utf-8').read()
    assert f"<td>{rows['g']['colorfulness_gap']:.2f}</td>" in page and 'semantic accuracy' in page


def test_the_classifier_scores_are_skipped_with_a_note_where_they_do_not_apply(tiny_folder, tmp_path):
    torch.manual_seed(0)
    ckpt, out = str(tmp_path / 'g.pt'), str(tmp_path / 'out')
    torch.save({'generator': Generator('batch').state_dict(), 'args': {'gen_norm': 'batch'}}, ckpt)
    r = run('--dataset', 'folder', '--data_path', tiny_folder, '--checkpoints', ckpt, '--save_path', out,
            '--num_grids', '0', '--precision', 'fp32', '--classifier', str(tmp_path / 'absent.safetensors'))
    assert r.returncode == 0, r.stderr
    assert "knows CIFAR-10's ten classes at 32 px only" in r.stdout
    metrics = json.load(open(os.path.join(out, 'metrics.json')))
    assert 'semantic_accuracy' not in metrics['baseline'] and 'colorfulness_gap' in metrics['baseline']


def test_test_py_scores_the_images_a_holdout_kept_out_of_training_and_refuses_a_run_that_saw_them(tiny_cifar, tmp_path):
    held_out = str(tmp_path / 'held_out')
    r = run_train(train_command(tiny_cifar, held_out, '--holdout', '16', '--max_steps', '2', '--val_batches', '1',
                                '--classifier', 'off'))
    assert r.returncode == 0, r.stderr
    assert 'training on the first 64 training images, the last 16 kept out' in r.stdout
    assert 'data: 64 training images' in r.stdout
    ckpt_path, file_path = os.path.join(held_out, 'checkpoint_ep0.pt'), os.path.join(held_out, 'generator_ep0.safetensors')
    assert torch.load(ckpt_path, weights_only=True)['args']['holdout'] == 16
    assert checkpoints.load_generator(file_path, torch.device('cpu'))[2]['holdout'] == 16
    out = str(tmp_path / 'scores')
    r = run('--data_path', tiny_cifar, '--checkpoints', ckpt_path, file_path, '--labels', 'ckpt', 'file',
            '--split', 'holdout', '--save_path', out, '--num_grids', '0', '--precision', 'fp32', '--classifier', 'off')
    assert r.returncode == 0, r.stderr
    metrics = json.load(open(os.path.join(out, 'metrics.json')))
    # exactly the last batch file's 16 images: their colourfulness recomputed from the pixels written
    assert metrics['split'] == 'holdout' and metrics['images'] == 16
    assert metrics['truth_colorfulness'] == pytest.approx(hasler_susstrunk(smooth_images(16, seed=5)), rel=1e-5)
    assert metrics['checkpoints']['ckpt']['mean_ab_error'] == pytest.approx(
        metrics['checkpoints']['file']['mean_ab_error'], abs=1e-7)
    saw_all = str(tmp_path / 'saw_all')
    assert run_train(train_command(tiny_cifar, saw_all, '--max_steps', '1', '--val_batches', '1',
                                   '--classifier', 'off')).returncode == 0
    r = run('--data_path', tiny_cifar, '--checkpoints', ckpt_path, os.path.join(saw_all, 'checkpoint_ep0.pt'),
            '--labels', 'held', 'saw', '--split', 'holdout', '--save_path', str(tmp_path / 'no'), '--classifier', 'off')
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert 'held: 16, saw: 0' in r.stderr and 'train.py --holdout N' in r.stderr


def test_train_py_s_validation_and_test_py_score_the_same_generator_and_images_alike(tiny_cifar, tmp_path):
    """train.py's validation and test.py score through metrics/evaluation.py: for the epoch's
    generator on the whole test set, log.csv's colour scores are test.py's, to the digits logged."""
    import csv
    ck = str(tmp_path / 'ck')
    r = run_train(train_command(tiny_cifar, ck, '--max_steps', '2', '--precision', 'fp32'))
    assert r.returncode == 0, r.stderr
    row = [r for r in csv.DictReader(open(os.path.join(ck, 'log.csv'))) if r['phase'] == 'val'][-1]
    out = str(tmp_path / 'test')
    r = run('--checkpoints', os.path.join(ck, 'checkpoint_ep0.pt'), '--labels', 'run', '--data_path', tiny_cifar,
            '--save_path', out, '--num_grids', '0', '--batch_size', '32', '--device', 'cpu', '--precision', 'fp32')
    assert r.returncode == 0, r.stderr
    scored = json.load(open(os.path.join(out, 'metrics.json')))['checkpoints']['run']
    assert scored['images'] == 24
    for key in ('colorfulness', 'colorfulness_gap', 'semantic_accuracy', 'classifier_fd'):
        assert float(row[key]) == round(scored[key], 4), key
