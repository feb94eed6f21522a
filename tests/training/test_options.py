"""train.py's flags (options.py): a bad one ends the command line with one line naming it."""
import pytest

import train
from conftest import run_in_process
from training.options import RECIPES, parse_training_args

# The reference's two published command lines (SPEC.md), as typed there.
PUBLISHED = {
    'batchnorm': '--max_epoch=200 --smoothing=0.9 --l1_weight=0.99 --base_lr_gen=3e-4 --base_lr_disc=6e-5 '
                 '--lr_decay_steps=6e4 --disc_norm=batch --apply_weight_init=1',
    'spectral': '--max_epoch=100 --smoothing=1.0 --l1_weight=0.985 --base_lr_gen=2e-4 --base_lr_disc=2e-4 '
                '--lr_decay_steps=4e4 --disc_norm=spectral --apply_weight_init=0',
}


def without_recipe(args):
    return {k: v for k, v in vars(args).items() if k != 'recipe'}


@pytest.mark.parametrize('name', sorted(PUBLISHED))
def test_a_recipe_parses_as_its_published_command_line(name):
    by_name = parse_training_args(['--recipe', name])
    typed = parse_training_args(PUBLISHED[name].split())
    assert by_name.recipe == name and typed.recipe is None
    assert without_recipe(by_name) == without_recipe(typed)
    assert without_recipe(by_name) != without_recipe(parse_training_args([]))


@pytest.mark.parametrize('where', ['after', 'before'])
def test_a_flag_beside_a_recipe_overrides_it(where):
    flags = ['--l1_weight', '0.9', '--disc_norm', 'instance']
    argv = ['--recipe', 'spectral', *flags] if where == 'after' else [*flags, '--recipe', 'spectral']
    args = parse_training_args(argv)
    assert (args.l1_weight, args.disc_norm, args.smoothing, args.base_lr_gen) == (0.9, 'instance', 1.0, 2e-4)


def test_without_a_recipe_the_defaults_are_the_reference_and_the_remedies_are_off():
    args = parse_training_args([])
    assert args.recipe is None and (args.l1_weight, args.disc_norm, args.smoothing, args.max_epoch) == (
        0.99, 'batch', 0.9, 200)
    assert (args.color_enhance, args.rebalance, args.min_colorfulness, args.adv_loss) == (1.0, None, None, 'bce')


def test_vivid_is_the_confirmed_distribution_head_with_its_holdout_and_temperature_and_the_old_vivid_is_flags():
    base = RECIPES['batchnorm']
    assert RECIPES['vivid'][:len(base)] == base
    vivid = parse_training_args(['--recipe', 'vivid'])
    assert (vivid.ab_head, vivid.rebalance, vivid.holdout, vivid.temperature) == ('classify', 0.5, 2000, 0.38)
    assert (vivid.disc_norm, vivid.max_epoch, vivid.l1_weight, vivid.recipe) == ('batch', 200, 0.99, 'vivid')
    assert (vivid.color_enhance, vivid.min_colorfulness, vivid.adv_loss) == (1.0, None, 'bce')
    assert parse_training_args(['--recipe', 'vivid', '--holdout', '16']).holdout == 16  # a flag beside it wins
    old = parse_training_args(['--recipe', 'spectral', '--color_enhance', '1.2', '--min_colorfulness', '15'])
    assert (old.disc_norm, old.l1_weight, old.color_enhance, old.min_colorfulness, old.ab_head) == (
        'spectral', 0.985, 1.2, 15, 'regress')


@pytest.mark.parametrize('flags, words', [
    (['--l1_weight', '1.5'], '--l1_weight'),
    (['--smoothing', '0'], '--smoothing'),
    (['--batch_size', '0'], '--batch_size'),
    (['--disc_norm', 'layer'], '--disc_norm'),
    (['--gen_dropout', '1'], '--gen_dropout'),
    (['--base_lr_gen', '-1'], '--base_lr_gen'),
    (['--start_epoch', '5', '--max_epoch', '3'], '--max_epoch'),
    (['--recipe', 'fancy'], '--recipe'),
    (['--color_enhance', '0.5'], '--color_enhance'),
    (['--rebalance', '0'], '--rebalance'),
    (['--min_colorfulness', '-1'], '--min_colorfulness'),
    (['--adv_loss', 'wgan'], '--adv_loss'),
    (['--recipe', 'spectral', '--l1_weight', '2'], '--l1_weight'),
])
def test_a_bad_flag_ends_with_one_line(flags, words, tmp_path):
    r = run_in_process(train.main, ['--save_path', str(tmp_path / 'ck'), *flags])
    assert r.returncode != 0 and 'Traceback' not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and words in r.stderr


def test_the_configs_of_the_default_flags_are_the_configs_defaults_and_a_recipe_sets_its_fields():
    """configs_from_args is all the library takes of the flags: the defaults agree, and each
    recipe's flags land in the config that holds them."""
    from models import ModelConfig
    from training.config import TrainConfig
    from training.options import configs_from_args
    assert configs_from_args(parse_training_args([])) == (ModelConfig(), TrainConfig())
    model, training = configs_from_args(parse_training_args(['--recipe', 'spectral', '--class_loss', '0.25',
                                                             '--ab_head', 'both', '--seed', '7']))
    assert model == ModelConfig(disc_norm='spectral', ab_head='both', class_context=True)
    assert training == TrainConfig(smoothing=1.0, l1_weight=0.985, base_lr_gen=2e-4, base_lr_disc=2e-4,
                                   lr_decay_steps=4e4, class_loss=0.25, seed=7)
    model, _ = configs_from_args(parse_training_args(['--dataset', 'folder', '--apply_weight_init', '1']))
    assert model.image_size == 256 and model.apply_weight_init is True
