import numpy as np
import pytest
import torch

from metrics import scores


def random_images(n=50, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def test_colorfulness_by_the_definition():
    gray = np.repeat(random_images(3)[..., :1], 3, axis=-1)
    assert np.allclose(scores.colorfulness(gray), 0)
    red = np.zeros((1, 4, 4, 3), np.uint8)
    red[..., 0] = 200
    # rg = 200, yb = 100, no spread: 0.3 * sqrt(200^2 + 100^2)
    assert scores.colorfulness(red)[0] == pytest.approx(0.3 * np.hypot(200, 100))


def test_scores_of_a_perfect_and_of_a_known_prediction():
    rgb = random_images(4)
    ab = torch.zeros(4, 2, 32, 32)
    perfect = scores.ColorizationScores()
    perfect.add(ab, ab, rgb, rgb)
    r = perfect.result()
    assert r['mae'] == 0 and r['nazeri_accuracy'] == 1 and r['mean_ab_error'] == 0 and r['psnr'] >= 99
    off = rgb.astype(np.int16) + 10
    shifted = np.clip(off, 0, 255).astype(np.uint8)
    s = scores.ColorizationScores()
    s.add(ab + 0.5, ab, shifted, rgb)
    r = s.result()
    diff = shifted.astype(float) - rgb
    assert r['mae'] == pytest.approx(np.abs(diff).mean())
    assert r['psnr'] == pytest.approx(np.mean(10 * np.log10(255 ** 2 / (diff ** 2).mean(axis=(1, 2, 3)))))
    assert r['mean_ab_error'] == pytest.approx(0.5)


def test_the_colourfulness_gap_is_the_distance_of_the_means_either_way():
    rgb = random_images(6)
    gray = np.repeat(rgb[..., :1], 3, axis=-1)
    ab = torch.zeros(6, 2, 32, 32)
    s = scores.ColorizationScores()
    s.add(ab, ab, gray, rgb)
    r = s.result()
    assert r['colorfulness'] == pytest.approx(0, abs=1e-9)
    assert r['colorfulness_gap'] == pytest.approx(scores.colorfulness(rgb).mean())  # grey scores the truth's CF
    louder = scores.ColorizationScores()
    louder.add(ab, ab, rgb, gray)  # the truth grey, the prediction colourful: the gap counts as well
    assert louder.result()['colorfulness_gap'] == pytest.approx(r['colorfulness_gap'])
    assert scores.colorfulness_gap(20.0, 33.5) == scores.colorfulness_gap(47.0, 33.5) == pytest.approx(13.5)
