"""The choice of a distribution head's decoding (metrics/decoding.py): the rule, each setting's
scores from one pass against the generator decoding at it, and where the decoding in use came
from."""
import numpy as np
import pytest
import torch

import models
from dataset import LabImages
from metrics import decoding, scores
from core import pictures


def setting(t, gap, accuracy, fd, error):
    return {'temperature': t, 'blend': None, 'colorfulness_gap': gap, 'semantic_accuracy': accuracy,
            'classifier_fd': fd, 'mean_ab_error': error}


def test_the_rule_takes_the_most_accurate_setting_within_the_gap_else_the_smallest_gap():
    settings = [setting(0.1, 1.0, 0.80, 2.0, 0.09), setting(0.2, 2.5, 0.83, 1.9, 0.08),
                setting(0.3, 2.9, 0.83, 1.8, 0.08), setting(0.5, 8.0, 0.86, 1.5, 0.07)]
    # 0.5 is the most accurate but leaves too much of the gap; 0.2 and 0.3 tie on accuracy, 0.3's FD is lower
    assert decoding.choose(settings, 3.0)[0]['temperature'] == 0.3
    assert decoding.choose(settings, 2.0)[0]['temperature'] == 0.1
    assert decoding.choose(settings, 10.0)[0]['temperature'] == 0.5
    chosen, why = decoding.choose(settings, 0.5)
    assert chosen['temperature'] == 0.1 and 'the smallest gap' in why


def test_without_a_scoring_classifier_the_rule_is_the_smallest_gap():
    settings = [{'temperature': t, 'blend': None, 'colorfulness_gap': gap, 'mean_ab_error': err}
                for t, gap, err in ((0.1, 2.0, 0.09), (0.2, 0.5, 0.10), (0.5, 2.9, 0.07))]
    chosen, why = decoding.choose(settings, 3.0, judged=False)
    assert chosen['temperature'] == 0.2 and 'smallest' in why
    # judged, the same three would go by error among those within the gap
    assert decoding.choose(settings, 3.0)[0]['temperature'] == 0.5


def classify_generator(n_bins=12, both=False, seed=0):
    torch.manual_seed(seed)
    G = models.build_generator(32, 'batch', 0.0, 'both' if both else 'classify', n_bins)
    centres = torch.rand(n_bins, 2, generator=torch.Generator().manual_seed(seed)) * 1.2 - 0.6
    models.set_decoding(G, 0.38, 0.5, centres)
    return G.eval()


def small_images(n=10, seed=2):
    rng = np.random.default_rng(seed)
    return LabImages(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n))


@pytest.mark.parametrize('both', [False, True])
def test_each_setting_scores_what_the_generator_paints_when_set_to_it(both):
    G, images = classify_generator(both=both), small_images()
    settings = decoding.settings_of(G, temperatures=(0.1, 1.0), blends=[0.25, 0.75] if both else None)
    assert [w for _, w in settings] == ([0.25, 0.75, 0.25, 0.75] if both else [None, None])
    scored = decoding.score_settings(G, images, settings, 'cpu', torch.autocast('cpu', enabled=False), batch_size=4)
    lab = images.lab.permute(0, 3, 1, 2)
    for (temperature, blend), found in zip(settings, scored):
        models.set_decoding(G, temperature, blend)
        with torch.no_grad():
            rgb = pictures.network_to_rgb(lab[:, :1], G(lab[:, :1]))
        assert found['colorfulness'] == pytest.approx(float(scores.colorfulness(rgb).mean()), rel=1e-6)
        assert (found['temperature'], found['blend']) == (temperature, blend)
    assert scored[0]['colorfulness'] > scored[-1]['colorfulness']  # colder, more saturated


def test_the_decoding_in_use_says_where_it_came_from():
    G = classify_generator()
    chosen = {'temperature': 0.2, 'blend': None, 'source': 'chosen on the last 16 training images (held out)'}
    models.set_decoding(G, 0.2)  # the run's choice, in the file's buffers
    used = decoding.in_use(G, {'decoding': chosen})
    assert used == {'temperature': 0.2, 'blend': None, 'source': chosen['source']}
    used = decoding.in_use(G, {'decoding': chosen}, temperature=0.5)
    assert used['temperature'] == 0.5 and float(G.final.temperature) == pytest.approx(0.5)
    assert used['source'].startswith('--temperature on the command line') and 'temperature 0.2' in used['source']
    assert 'chose none' in decoding.in_use(classify_generator(), {})['source']
    assert decoding.in_use(models.build_generator(32, 'batch', 0.0), {}) is None  # the reference's head
