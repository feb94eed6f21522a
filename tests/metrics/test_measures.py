"""The one table of measures (metrics/measures.py): each score test.py writes has a record, and a
value is written the way every table writes it."""
import dataclasses

import numpy as np
import pytest
import torch

from metrics import measures
from metrics.measures import BY_KEY, MEASURES, Measure, measures_of
from metrics.scores import ColorizationScores


def test_every_per_pixel_score_has_a_measure_and_every_measure_a_producer():
    scores = ColorizationScores()
    ab = torch.zeros(2, 2, 4, 4)
    rgb = np.zeros((2, 4, 4, 3), np.uint8)
    scores.add(ab, ab + 0.1, rgb, rgb + 20)
    written = set(scores.result()) - {'images', 'truth_colorfulness'}  # counts and the truth's, not measures
    assert written <= set(BY_KEY)
    # the rest come from the scoring classifier (metrics/classifier.py) and FID (metrics/fid.py)
    assert set(BY_KEY) - written == {'semantic_accuracy', 'classifier_fd', 'fid'}
    assert len(BY_KEY) == len(MEASURES)


def test_a_value_is_written_by_its_measures_format():
    assert BY_KEY['mean_ab_error'].text(0.07312) == '0.0731'
    assert BY_KEY['nazeri_accuracy'].text(0.2654) == '26.5%'
    assert BY_KEY['psnr'].text(25.3512) == '25.351'
    assert all(len(m.short) <= m.width for m in MEASURES)  # the terminal's headings fit their columns


def test_which_way_is_better_is_one_of_three_and_said_in_words():
    assert BY_KEY['psnr'].which_way == 'higher is better' and BY_KEY['mae'].which_way == 'lower is better'
    assert BY_KEY['colorfulness'].which_way == 'closer to the ground truth is better'
    with pytest.raises(ValueError, match='better'):
        Measure('x', 'x', 'x', 1, '{}', 'bigger', 'x')
    with pytest.raises(dataclasses.FrozenInstanceError):
        BY_KEY['mae'].format = '{:.1f}'  # frozen: one table for everyone


def test_measures_of_keeps_the_order_asked_and_names_an_unknown_key():
    assert [m.key for m in measures_of('psnr', 'mae')] == ['psnr', 'mae']
    with pytest.raises(KeyError, match='no measure sharpness'):
        measures_of('mae', 'sharpness')
    assert measures.BETTER.keys() == {'lower', 'higher', 'truth'}
