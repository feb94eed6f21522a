import csv
import json
import os

import cv2
import pytest
import torch

import test as test_cli
import train
from conftest import SHARED_DATA, run_in_process, smooth_images
from dataset import CLASS_NAMES, load_split
from models import Discriminator, Generator
from utils import autocast_context, rgb_to_lab


def fixed_batch(n=16):
    return torch.from_numpy(rgb_to_lab(smooth_images(n, seed=5), network_scale=True)).permute(0, 3, 1, 2).contiguous()


def models_and_optimizers(args):
    torch.manual_seed(0)
    G, D = Generator(args.gen_norm), Discriminator(args.disc_norm)
    opt_g = torch.optim.Adam(G.parameters(), lr=args.base_lr_gen, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=args.base_lr_disc, betas=(0.5, 0.999))
    return G, D, opt_g, opt_d, torch.amp.GradScaler('cpu', enabled=False)


@pytest.mark.parametrize('disc_norm', ['batch', 'spectral'])
def test_a_few_steps_on_a_fixed_batch_lower_the_l1_loss(disc_norm):
    args = train.parse_args(['--disc_norm', disc_norm])
    G, D, opt_g, opt_d, scaler = models_and_optimizers(args)
    lab = fixed_batch(8)
    fp32 = autocast_context(torch.device('cpu'), 'fp32')
    l1 = [train.gan_step(G, D, lab, args, opt_g, opt_d, scaler, fp32)[1].item() / len(lab) for _ in range(10)]
    assert sum(l1[-3:]) < 0.6 * sum(l1[:3])


def test_the_generator_step_computes_no_gradients_for_the_discriminator():
    args = train.parse_args([])
    G, D, opt_g, opt_d, scaler = models_and_optimizers(args)
    grads_computed = []
    for p in D.parameters():
        p.register_hook(lambda g: grads_computed.append(1))
    train.gan_step(G, D, fixed_batch(4), args, opt_g, opt_d, scaler, autocast_context(torch.device('cpu'), 'fp32'))
    # one gradient per D parameter: the discriminator's own step, none from the generator's
    assert len(grads_computed) == len(list(D.parameters()))
    assert all(p.requires_grad for p in D.parameters())


def test_loss_values_follow_the_spec():
    args = train.parse_args(['--smoothing', '0.8', '--l1_weight', '0.9'])
    G, D, *_ = models_and_optimizers(args)
    G.eval(), D.eval()
    lab = fixed_batch(8)
    stats = train.gan_step(G, D, lab, args, autocast=autocast_context(torch.device('cpu'), 'fp32'))
    m = train.summarize(stats)
    with torch.no_grad():
        fake_ab = G(lab[:, :1])
        fake = torch.cat([lab[:, :1], fake_ab], 1)
        p_fake, p_real = torch.sigmoid(D(fake)), torch.sigmoid(D(lab))
        g_adv = -torch.log(p_fake).mean()
        l1 = (fake_ab - lab[:, 1:]).abs().mean()
        d_loss = -(0.8 * torch.log(p_real) + 0.2 * torch.log(1 - p_real)).mean() - torch.log(1 - p_fake).mean()
    assert m['g_adv'] == pytest.approx(g_adv.item(), rel=1e-4)
    assert m['g_l1'] == pytest.approx(l1.item(), rel=1e-4)
    assert m['g_loss'] == pytest.approx(0.1 * g_adv.item() + 0.9 * l1.item(), rel=1e-4)
    assert m['d_loss'] == pytest.approx(d_loss.item(), rel=1e-4)
    assert m['d_acc_real'] == pytest.approx((p_real > 0.5).float().mean().item())


def run(script, *args):
    """train.py or test.py with these flags, in this process (conftest.run_in_process); the real
    scripts run as processes in the interrupt and kill tests."""
    return run_in_process({'train.py': train.main, 'test.py': test_cli.main}[script], args)


def test_train_resume_and_test_end_to_end(tiny_cifar, tmp_path):
    ck, samples, out = str(tmp_path / 'ck'), str(tmp_path / 's'), str(tmp_path / 'out')
    common = ['--data_path', tiny_cifar, '--save_path', ck, '--samples_path', samples, '--batch_size', '32',
              '--save_freq', '2', '--precision', 'fp32', '--autotune', 'off']
    r = run('train.py', *common, '--max_epoch', '2', '--log_steps', '2')
    assert r.returncode == 0, r.stderr
    assert '[epoch 1 train]' in r.stdout and '[epoch 1 val  ]' in r.stdout
    assert sorted(os.listdir(ck)) == ['args.json', 'checkpoint_ep1.pt', 'curves.png', 'generator_ep1.safetensors',
                                      'log.csv', 'steps.csv']
    with open(os.path.join(ck, 'steps.csv')) as f:
        assert [row['step'] for row in csv.DictReader(f)] == ['2', '4', '6']
    with open(os.path.join(ck, 'log.csv')) as f:
        val = [row for row in csv.DictReader(f) if row['phase'] == 'val']
    assert len(val) == 2 and all(0 < float(row['colorfulness']) < 150 for row in val)
    assert sorted(os.listdir(samples)) == ['epoch_000.png', 'epoch_001.png']
    ckpt = torch.load(os.path.join(ck, 'checkpoint_ep1.pt'), weights_only=True)
    assert ckpt['epoch'] == 1 and ckpt['step'] == 6  # 80 images in batches of 32, 32 and 16, 2 epochs
    assert ckpt['args']['batch_size'] == 32 and set(ckpt) >= {'generator', 'discriminator', 'opt_gen', 'opt_disc'}
    assert json.load(open(os.path.join(ck, 'args.json')))['save_freq'] == 2
    assert json.load(open(os.path.join(ck, 'args.json')))['gen_dropout'] == ckpt['args']['gen_dropout'] == 0.5
    assert len(open(os.path.join(ck, 'log.csv')).read().strip().splitlines()) == 1 + 4

    r = run('train.py', *common, '--max_epoch', '3', '--start_epoch', '2')
    assert r.returncode == 0, r.stderr
    resumed = torch.load(os.path.join(ck, 'checkpoint_ep2.pt'), weights_only=True)
    assert resumed['step'] == 9 and resumed['epoch'] == 2
    assert resumed['opt_gen']['state'][0]['step'].item() == 9  # Adam's state came along

    r = run('test.py', '--data_path', tiny_cifar, '--checkpoints', os.path.join(ck, 'checkpoint_ep1.pt'),
            os.path.join(ck, 'checkpoint_ep2.pt'), os.path.join(ck, 'generator_ep2.safetensors'),
            '--labels', 'first', 'second', 'second, shared', '--save_path', out, '--batch_size', '10',
            '--precision', 'fp32')
    assert r.returncode == 0, r.stderr
    metrics = json.load(open(os.path.join(out, 'metrics.json')))
    assert set(metrics['checkpoints']) == {'first', 'second', 'second, shared'} and metrics['images'] == 24
    shared, second = (dict(metrics['checkpoints'][k], path=None) for k in ('second, shared', 'second'))
    assert shared == second  # the same generator, alone
    assert metrics['baseline']['colorfulness'] < 0.5
    assert sorted(f for f in os.listdir(out) if f.endswith('.png')) == ['grid_000.png', 'grid_001.png']


@pytest.mark.parametrize('flags, words', [
    (['--l1_weight', '1.5'], '--l1_weight'),
    (['--smoothing', '0'], '--smoothing'),
    (['--batch_size', '0'], '--batch_size'),
    (['--disc_norm', 'layer'], '--disc_norm'),
    (['--gen_dropout', '1'], '--gen_dropout'),
    (['--base_lr_gen', '-1'], '--base_lr_gen'),
    (['--start_epoch', '5', '--max_epoch', '3'], '--max_epoch'),
])
def test_a_bad_flag_ends_with_one_line(flags, words, tmp_path):
    r = run('train.py', '--save_path', str(tmp_path / 'ck'), *flags)
    assert r.returncode != 0 and 'Traceback' not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and words in r.stderr


def test_missing_data_ends_with_one_line(tmp_path, monkeypatch):
    r = run('train.py', '--data_path', str(tmp_path / 'nothing'), '--save_path', str(tmp_path / 'ck'),
            '--samples_path', str(tmp_path / 's'))
    assert r.returncode != 0 and 'Traceback' not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and 'cifar-10-batches-py' in r.stderr


def test_resuming_from_another_configuration_names_both(tiny_cifar, tmp_path):
    ck = str(tmp_path / 'ck')
    common = ['--data_path', tiny_cifar, '--save_path', ck, '--samples_path', str(tmp_path / 's'),
              '--batch_size', '16', '--max_steps', '2', '--precision', 'fp32', '--autotune', 'off']
    assert run('train.py', *common, '--disc_norm', 'spectral').returncode == 0
    before = open(os.path.join(ck, 'checkpoint_ep0.pt'), 'rb').read()
    r = run('train.py', *common, '--start_epoch', '1', '--max_epoch', '2')
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1
    assert '--disc_norm spectral' in r.stderr and '--disc_norm batch' in r.stderr
    assert open(os.path.join(ck, 'checkpoint_ep0.pt'), 'rb').read() == before


@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED_DATA, 'cifar-10-batches-py')), reason='../shared/data absent')
def test_short_run_on_real_cifar10(tmp_path):
    r = run('train.py', '--data_path', SHARED_DATA, '--save_path', str(tmp_path / 'ck'), '--samples_path',
            str(tmp_path / 's'), '--max_steps', '10', '--val_batches', '1', '--autotune', 'off')
    assert r.returncode == 0, r.stderr
    val = [l for l in r.stdout.splitlines() if l.startswith('[epoch 0 val')][0]
    l1 = float(val.split('L1 ')[1].split()[0])
    assert l1 < 0.16  # below an untrained generator's error (0.163) after 10 steps
    assert os.path.isfile(tmp_path / 's' / 'epoch_000.png')


def test_test_py_writes_a_results_page_that_matches_its_metrics(tiny_cifar, tmp_path):
    torch.manual_seed(0)
    ckpt, out = str(tmp_path / 'g.pt'), str(tmp_path / 'out')
    torch.save({'generator': Generator('batch').state_dict(), 'args': {'gen_norm': 'batch'}}, ckpt)
    r = run('test.py', '--data_path', tiny_cifar, '--checkpoints', ckpt, ckpt, '--labels', 'a<b>&c', 'second',
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


def test_test_py_scores_each_class_and_the_classes_add_up_to_the_whole(tiny_cifar, tmp_path, monkeypatch, capsys):
    torch.manual_seed(0)
    ckpt, out = str(tmp_path / 'g.pt'), str(tmp_path / 'out')
    torch.save({'generator': Generator('batch').state_dict(), 'args': {'gen_norm': 'batch'}}, ckpt)
    opened = []
    monkeypatch.setattr(test_cli.webbrowser, 'open', lambda uri: opened.append(uri) or True)
    monkeypatch.setenv('DISPLAY', ':0')
    r = run('test.py', '--data_path', tiny_cifar, '--checkpoints', ckpt, '--save_path', out, '--batch_size', '10',
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
    paths, generators = [], []
    for seed in (0, 1):
        torch.manual_seed(seed)
        generators.append(Generator('batch').eval())
        paths.append(str(tmp_path / f'g{seed}.pt'))
        torch.save(generators[-1].state_dict(), paths[-1])
    out = str(tmp_path / 'out')
    r = run('test.py', '--data_path', tiny_cifar, '--checkpoints', *paths, '--labels', 'bn', 'sn', '--save_path', out,
            '--batch_size', '10', '--num_grids', '0', '--precision', 'fp32', '--pick', '3')
    assert r.returncode == 0, r.stderr
    picks = json.load(open(os.path.join(out, 'metrics.json')))['picks']
    # The rule, computed another way: the whole test set in one batch, per-image errors sorted by hand.
    test_set = load_split(tiny_cifar, train=False)
    _, lab = next(test_set.batches(len(test_set)))
    with torch.no_grad():
        err = [(G(lab[:, :1]) - lab[:, 1:]).abs().mean(dim=(1, 2, 3)).tolist() for G in generators]
    order = lambda key: sorted(range(len(key)), key=lambda i: -key[i])[:3]  # noqa: E731
    assert picks['bn better']['test_images'] == order([b - a for a, b in zip(*err)])
    assert picks['sn better']['test_images'] == order([a - b for a, b in zip(*err)])
    assert picks['both struggle']['test_images'] == order([min(a, b) for a, b in zip(*err)])
    page = open(os.path.join(out, 'index.html'), encoding='utf-8').read()
    assert '<h2>Picked by rule</h2>' in page and 'min(error(A), error(B))' in page
    for pick in picks.values():
        picture = cv2.imread(os.path.join(out, pick['picture']))
        assert picture is not None and f'src="{pick["picture"]}"' in page
    heights = {cv2.imread(os.path.join(out, p['picture'])).shape for p in picks.values()}
    assert len(heights) == 1  # three grids of 3 rows and 4 columns alike
    r = run('test.py', '--data_path', tiny_cifar, '--checkpoints', paths[0], '--pick', '3')
    assert r.returncode == 2 and '--pick compares two checkpoints' in r.stderr
