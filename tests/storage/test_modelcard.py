"""A model folder's description (storage/modelcard.py): config.json from a checkpoint's options,
and the model card's header, sections and score table (the end-to-end folder: tests/test_export.py)."""
import pytest

from metrics.measures import MEASURES
from storage import modelcard

ARCH = {'gen_norm': 'batch', 'gen_dropout': 0.5, 'image_size': 32, 'network': 'reference'}
RUN_ARGS = {'dataset': 'cifar10', 'batch_size': 32, 'max_epoch': 100, 'smoothing': 1.0, 'l1_weight': 0.985,
            'disc_norm': 'spectral', 'seed': 3, 'save_path': '/somewhere', 'num_workers': 4}


def test_config_records_the_recipe_flags_and_nothing_of_where_it_ran():
    config = modelcard.folder_config(ARCH, RUN_ARGS, {'epoch': 7, 'step': 1234, 'provenance': {'code': {}}})
    assert config['training'] == {k: RUN_ARGS[k] for k in ('dataset', 'batch_size', 'max_epoch', 'smoothing',
                                                            'l1_weight', 'disc_norm')}
    assert (config['epoch'], config['step'], config['seed']) == (7, 1234, 3)
    assert config['architecture'] == ARCH and config['exact_statistics'] is True


def test_the_card_has_its_header_sections_and_every_score_given():
    config = modelcard.folder_config(ARCH, RUN_ARGS, {'epoch': 7, 'step': 1234})
    metrics = {'images': 10000, 'precision': 'fp32', 'truth_colorfulness': 33.2,
               'checkpoints': {'g': {'mae': 12.3456, 'psnr': 21.234, 'semantic_accuracy': 0.8543}},
               'baseline': {'mae': 20.5, 'psnr': 19.0}}
    card = modelcard.model_card(config, metrics, MEASURES)
    assert card.startswith('---\nlibrary_name: colorization-gan\n')
    assert card.index('## What it is') < card.index('## Training') < card.index('## Scores') < card.index('## Limits')
    # as test.py's results page writes them: the same titles and formats
    assert '| MAE (lower is better) | 12.346 | 20.500 |' in card
    assert '| PSNR dB (higher is better) | 21.234 | 19.000 |' in card
    assert "| semantic accuracy (higher is better) | 85.4% |  |" in card
    assert '- MAE: mean absolute difference of the uint8 RGB images (0-255)' in card
    assert 'FID' not in card  # not scored, so not listed
    with pytest.raises(ValueError, match='measures'):
        modelcard.model_card(config, metrics)
    assert 'On 10000 CIFAR-10 test images' in card and '33.20' in card
    assert '`--disc_norm spectral`' in card and 'epoch 7, step 1234, seed 3' in card


def test_an_unscored_card_says_how_to_score_it_and_a_folder_model_how_to_test_it():
    config = modelcard.folder_config(dict(ARCH, image_size=128, network='nazeri'), dict(RUN_ARGS, dataset='folder'), {})
    card = modelcard.model_card(config)
    assert 'Not scored' in card and '--metrics' in card
    assert '--dataset folder --data_path ROOT' in card and '128x128' in card and 'thumbnails' not in card
