import os

import cv2
import numpy as np
import pytest
import torch
from safetensors import safe_open

from storage import checkpoints
import colorize
import export
from conftest import OpensAFile, command_line, run_in_process, write_hostile_file
from models import Generator

test_cli = command_line('test')


def random_generator(norm, seed):
    torch.manual_seed(seed)
    G = Generator(norm)
    with torch.no_grad():  # statistics that differ from the defaults, so that losing them shows
        for name, buffer in G.named_buffers():
            if 'running' in name:
                buffer.uniform_(0.5, 1.5)
    return G.eval()


def outputs(G):
    L = torch.linspace(-1, 1, 2 * 32 * 32).reshape(2, 1, 32, 32)
    with torch.no_grad():
        return G(L)


@pytest.mark.parametrize('norm', ['batch', 'instance'])
def test_a_reference_state_dict_exports_and_loads_back(tmp_path, norm):
    G = random_generator(norm, seed=1)
    torch.save(G.state_dict(), tmp_path / 'published.pt')
    r = run_in_process(export.main, [str(tmp_path / 'published.pt')])
    assert r.returncode == 0, r.stderr
    path = str(tmp_path / 'published.safetensors')
    with safe_open(path, framework='pt') as f:
        assert f.metadata()['gen_norm'] == norm and f.metadata()['exact_statistics'] == 'true'
        assert set(f.keys()) == set(G.state_dict())
    loaded, exact, _ = checkpoints.load_generator(path, 'cpu')
    assert exact and torch.equal(outputs(loaded), outputs(G))


def test_a_mid_epoch_checkpoint_keeps_its_place_and_asks_for_statistics(tmp_path):
    G = random_generator('batch', seed=2)
    ckpt = {'generator': G.state_dict(), 'generator_train': G.state_dict(), 'discriminator': {},
            'generator_exact_statistics': False, 'epoch': 3, 'step': 1234,
            'args': {'gen_norm': 'batch', 'gen_dropout': 0.25, 'seed': 7}}
    torch.save(ckpt, tmp_path / 'checkpoint_ep3.pt')
    r = run_in_process(export.main, [str(tmp_path / 'checkpoint_ep3.pt')])
    assert r.returncode == 0, r.stderr
    assert 'mid-epoch' in r.stdout
    loaded = checkpoints.load_checkpoint(str(tmp_path / 'generator_ep3.safetensors'))
    assert (loaded['epoch'], loaded['step'], loaded['generator_exact_statistics']) == (3, 1234, False)
    assert loaded['args'] == {'gen_norm': 'batch', 'gen_dropout': 0.25, 'seed': 7, 'image_size': 32}
    assert all(torch.equal(loaded['generator'][k], v) for k, v in G.state_dict().items())


def test_export_refuses_to_replace_a_file_or_misname_one(tmp_path):
    torch.save(random_generator('batch', seed=3).state_dict(), tmp_path / 'g.pt')
    (tmp_path / 'g.safetensors').write_bytes(b'keep me')
    for flags, words in ((['--out', str(tmp_path / 'g.safetensors')], '--overwrite'),
                         (['--out', str(tmp_path / 'g.bin')], '.safetensors')):
        r = run_in_process(export.main, [str(tmp_path / 'g.pt'), *flags])
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and words in r.stderr
    assert (tmp_path / 'g.safetensors').read_bytes() == b'keep me'
    assert run_in_process(export.main, [str(tmp_path / 'g.pt'), '--overwrite']).returncode == 0
    assert checkpoints.load_checkpoint(str(tmp_path / 'g.safetensors'))['args']['gen_norm'] == 'batch'


def test_a_truncated_safetensors_file_is_one_line_everywhere(tmp_path, tiny_cifar):
    G = random_generator('batch', seed=4)
    path = checkpoints.save_generator_weights(str(tmp_path / 'g.safetensors'), G.state_dict(),
                                             checkpoints.generator_config({'gen_norm': 'batch'}))
    data = open(path, 'rb').read()
    open(path, 'wb').write(data[:len(data) // 2])
    picture = str(tmp_path / 'bird.png')
    cv2.imwrite(picture, np.full((32, 32, 3), 128, np.uint8))
    for main, argv in ((test_cli.main, ['--data_path', tiny_cifar, '--checkpoints', path,
                                        '--save_path', str(tmp_path / 'out')]),
                       (colorize.main, [picture, '--checkpoint', path, '--output', str(tmp_path / 'c')]),
                       (export.main, [path, '--out', str(tmp_path / 'again.safetensors')])):
        r = run_in_process(main, argv)
        assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and 'g.safetensors' in r.stderr and 'safetensors' in r.stderr
    assert not os.path.exists(tmp_path / 'again.safetensors')


def yaml_header(text):
    """The metadata header of a model card, parsed: `key: value` and `key:` followed by `- item`
    lines (the subset model hubs read), refusing anything else."""
    assert text.startswith('---\n')
    header, _ = text[4:].split('\n---\n', 1)
    data, key = {}, None
    for line in header.splitlines():
        if line.startswith('- '):
            assert isinstance(data.get(key), list), line
            data[key].append(line[2:].strip())
        else:
            assert ': ' in line or line.endswith(':'), line
            key, _, value = line.partition(':')
            data[key] = value.strip() if value.strip() else []
    return data


def test_a_model_folder_holds_weights_config_and_card_and_loads_as_a_checkpoint(tiny_cifar, tmp_path):
    from conftest import run_train, train_command
    ck = str(tmp_path / 'ck')
    assert run_train(train_command(tiny_cifar, ck, '--max_steps', '2', '--val_batches', '1', '--seed', '4',
                                   '--smoothing', '0.8')).returncode == 0
    checkpoint = os.path.join(ck, 'checkpoint_ep0.pt')
    r = run_in_process(test_cli.main, ['--checkpoints', checkpoint, '--data_path', tiny_cifar, '--num_grids', '0',
                                       '--save_path', str(tmp_path / 'out'), '--precision', 'fp32'])
    assert r.returncode == 0, r.stderr
    folder = str(tmp_path / 'shared_model')
    r = run_in_process(export.main, [checkpoint, '--folder', folder, '--metrics', str(tmp_path / 'out' / 'metrics.json')])
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(folder)) == ['README.md', 'config.json', 'model.safetensors']
    import json
    config = json.load(open(os.path.join(folder, 'config.json')))
    ckpt = torch.load(checkpoint, weights_only=True)
    assert config['architecture'] == {'gen_norm': 'batch', 'gen_dropout': 0.5, 'image_size': 32, 'network': 'reference'}
    for flag, value in config['training'].items():
        assert ckpt['args'][flag] == value, flag
    assert config['training']['smoothing'] == 0.8 and config['seed'] == 4
    assert (config['epoch'], config['step']) == (ckpt['epoch'], ckpt['step'])
    assert len(config['provenance']['code']['commit'] or 'x' * 40) == 40
    card = open(os.path.join(folder, 'README.md')).read()
    header = yaml_header(card)
    assert header['library_name'] == 'colorization-gan' and header['pipeline_tag'] == 'image-to-image'
    assert {'image-colorization', 'gan'} <= set(header['tags']) and header['datasets'] == ['cifar10']
    for section in ('## What it is', '## Training', '## Scores', '## Limits', '## Use'):
        assert section in card
    metrics = json.load(open(tmp_path / 'out' / 'metrics.json'))
    assert f"{metrics['checkpoints']['checkpoint_ep0.pt']['mae']:.3f}" in card
    assert 'thumbnails' in card
    # the folder is a checkpoint for every tool
    G, _, _ = checkpoints.load_generator(folder, 'cpu')
    for name, t in G.state_dict().items():
        assert torch.equal(t, ckpt['generator'][name]), name
    r = run_in_process(test_cli.main, ['--checkpoints', folder, '--data_path', tiny_cifar, '--num_grids', '0',
                                       '--save_path', str(tmp_path / 'out2'), '--precision', 'fp32'])
    assert r.returncode == 0, r.stderr
    assert json.load(open(tmp_path / 'out2' / 'metrics.json'))['checkpoints']['shared_model']['mae'] == \
        metrics['checkpoints']['checkpoint_ep0.pt']['mae']
    photos = tmp_path / 'photos'
    photos.mkdir()
    cv2.imwrite(str(photos / 'a.png'), np.full((20, 30, 3), 90, np.uint8))
    assert run_in_process(colorize.main, ['--checkpoint', folder, str(photos), '--output', str(tmp_path / 'col'),
                                          '--precision', 'fp32']).returncode == 0


def test_an_unscored_card_says_so_and_metrics_need_a_folder(tmp_path):
    G = random_generator('batch', 0)
    path = str(tmp_path / 'g.pt')
    torch.save(G.state_dict(), path)
    assert run_in_process(export.main, [path, '--folder', str(tmp_path / 'm')]).returncode == 0
    assert 'Not scored' in open(tmp_path / 'm' / 'README.md').read()
    r = run_in_process(export.main, [path, '--metrics', 'x.json'])
    assert r.returncode == 2 and '--folder' in r.stderr
    r = run_in_process(export.main, [path, '--folder', str(tmp_path / 'm')])
    assert r.returncode == 2 and 'exists' in r.stderr


@pytest.mark.parametrize('writer', ['torch.save', 'pickle'])
def test_a_checkpoint_that_would_run_code_is_refused_in_one_line_and_runs_none(writer, tmp_path):
    marker, evil = tmp_path / 'code_ran', tmp_path / 'evil.pt'
    hostile = {'generator': OpensAFile(str(marker)), 'args': {'gen_norm': 'batch'}}
    write_hostile_file(evil, hostile, writer)
    for flags in ([], ['--folder', str(tmp_path / 'model')]):
        r = run_in_process(export.main, [str(evil), *flags])
        assert not marker.exists(), 'the checkpoint ran code'
        assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and str(evil) in lines[0] and 'could run code' in lines[0], lines
    assert not marker.exists() and sorted(os.listdir(tmp_path)) == ['evil.pt']
