"""The layer-form choice (training/layer_forms.py): measured once per machine and settings, stored
in the user's cache and taken from it by later runs; remeasured on request; a cache that cannot be
read or written is a warning, never a failed run."""
import json
import multiprocessing
import os

import pytest
import torch

from core import convolutions
from training import layer_forms
from training.gan import ColorizationGAN
from training.options import configs_from_args, parse_training_args


def gan_of(*flags):
    """The GAN of train.py's flags, and the flags (the layer-form choice takes three of them)."""
    args = parse_training_args(['--batch_size', '4', *flags])
    return ColorizationGAN(*configs_from_args(args)), args


def choose(gan_and_flags):
    gan, args = gan_and_flags
    return layer_forms.choose_layer_forms(gan, args.batch_size, args.autotune, args.layer_forms_cache)


@pytest.fixture
def counted_measurements(monkeypatch):
    """The measurements taken (one per network), each choosing the matrix-product form everywhere,
    so that a choice taken from the cache is told apart from the defaults."""
    taken = []

    def measure(model, sample, autocast):
        taken.append(sample.shape)
        return {name: ('matmul', 1.0, 2.0) for name in convolutions.two_form_layers(model)}
    monkeypatch.setattr(convolutions, 'choose_forms', measure)
    return taken


def forms_in_use(gan):
    return {name: layer.forms.get(torch.float32) for name, layer in convolutions.two_form_layers(gan.G).items()}


def test_the_first_run_measures_and_stores_and_the_next_takes_the_stored_choice(tmp_path, counted_measurements):
    cache = str(tmp_path / 'forms.json')
    record, line = choose(gan_of('--layer_forms_cache', cache))
    assert len(counted_measurements) == 2 and f'stored in {cache}' in line and 'measured in' in line
    stored = json.load(open(cache))
    assert stored['version'] == 1 and list(stored['choices'].values()) == [record]
    key = json.loads(next(iter(stored['choices'])))
    assert {'machine', 'torch', 'precision', 'channels_last', 'batch_share', 'networks'} <= set(key)
    again = gan_of('--layer_forms_cache', cache)
    second, line = choose(again)
    assert len(counted_measurements) == 2  # nothing measured
    assert second == record and line.startswith(f'layer forms (from the layer-form cache {cache})')
    assert set(forms_in_use(again[0]).values()) == {'matmul'}


def test_another_batch_share_or_network_is_another_key(tmp_path, counted_measurements):
    cache = str(tmp_path / 'forms.json')
    choose(gan_of('--layer_forms_cache', cache))
    choose(gan_of('--layer_forms_cache', cache, '--batch_size', '8'))
    choose(gan_of('--layer_forms_cache', cache, '--image_size', '64', '--dataset', 'folder'))
    choose(gan_of('--layer_forms_cache', cache, '--disc_norm', 'spectral'))  # the same shapes
    assert len(counted_measurements) == 6 and len(json.load(open(cache))['choices']) == 3


def test_remeasure_measures_again_and_replaces_the_stored_choice(tmp_path, counted_measurements):
    cache = str(tmp_path / 'forms.json')
    choose(gan_of('--layer_forms_cache', cache))
    stored = json.load(open(cache))
    (key, record), = stored['choices'].items()
    record['generator'] = dict.fromkeys(record['generator'], 'library')
    json.dump(stored, open(cache, 'w'))
    _, line = choose(gan_of('--layer_forms_cache', cache, '--autotune', 'remeasure'))
    assert len(counted_measurements) == 4 and 'measured in' in line
    assert set(json.load(open(cache))['choices'][key]['generator'].values()) == {'matmul'}


def test_the_environment_names_the_cache_where_no_flag_does(tmp_path, monkeypatch, counted_measurements):
    monkeypatch.setenv(layer_forms.CACHE_ENV, str(tmp_path / 'from_env.json'))
    choose(gan_of())
    assert os.path.isfile(tmp_path / 'from_env.json')
    monkeypatch.delenv(layer_forms.CACHE_ENV)
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
    assert layer_forms.default_cache_path() == str(tmp_path / 'xdg' / 'colorization' / 'layer_forms.json')


@pytest.mark.parametrize('content', ['{"version": 1, "choi', 'not json at all', '{"version": 99, "choices": {}}'])
def test_a_corrupt_cache_is_one_warning_and_a_measurement_and_is_left_as_it_was(tmp_path, capsys, content,
                                                                              counted_measurements):
    cache = tmp_path / 'forms.json'
    cache.write_text(content)
    record, line = choose(gan_of('--layer_forms_cache', str(cache)))
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and err.startswith('warning: the layer-form cache') and 'cannot be read' in err
    assert len(counted_measurements) == 2 and record['generator'] and 'stored in' not in line
    assert cache.read_text() == content  # perhaps someone's file: never overwritten


def test_a_cache_that_cannot_be_written_is_one_warning_and_a_normal_run(tmp_path, capsys, counted_measurements):
    blocker = tmp_path / 'a_file'
    blocker.write_text('x')
    cache = str(blocker / 'forms.json')  # its folder is a file: cannot be created, whoever runs it
    record, line = choose(gan_of('--layer_forms_cache', cache))
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'cannot be written' in err and record['discriminator']
    assert 'stored in' not in line and blocker.read_text() == 'x'


def test_a_stored_record_for_other_layers_is_not_taken(tmp_path, counted_measurements):
    cache = str(tmp_path / 'forms.json')
    choose(gan_of('--layer_forms_cache', cache))
    stored = json.load(open(cache))
    for record in stored['choices'].values():
        record['generator'] = {'no.such.layer': 'matmul'}
    json.dump(stored, open(cache, 'w'))
    choose(gan_of('--layer_forms_cache', cache))
    assert len(counted_measurements) == 4


def store_many(path, worker):
    stored = layer_forms.StoredChoices(path)
    for i in range(30):
        stored.choices = {}  # each write its own whole file, as two runs started together would
        stored.put(f'{worker}-{i}', {'generator': {}, 'discriminator': {}, 'padding': 'x' * 20000})


def test_two_processes_writing_at_once_leave_a_whole_file(tmp_path):
    path = str(tmp_path / 'forms.json')
    context = multiprocessing.get_context('fork')
    workers = [context.Process(target=store_many, args=(path, w)) for w in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    data = json.load(open(path))  # whole: one of the writes, not a mixture
    assert data['version'] == 1 and len(data['choices']) == 1
    assert [n for n in os.listdir(tmp_path) if n.endswith('.tmp')] == []


def test_off_and_a_gpu_keep_the_fixed_defaults(tmp_path, counted_measurements):
    record, line = choose(gan_of('--autotune', 'off', '--layer_forms_cache', str(tmp_path / 'f.json')))
    assert record is None and 'fixed defaults' in line and not counted_measurements
    assert not os.path.exists(tmp_path / 'f.json')
