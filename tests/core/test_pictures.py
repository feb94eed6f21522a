import numpy as np
import torch

from core import pictures


def cie_lab_reference(rgb_uint8):
    """sRGB (D65) -> CIE Lab by the textbook formulas, independent of OpenCV."""
    c = rgb_uint8.astype(np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]])
    xyz = linear @ m.T / np.array([0.950456, 1.0, 1.088754])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    L = np.where(xyz[..., 1] > 0.008856, 116 * f[..., 1] - 16, 903.3 * xyz[..., 1])
    return np.stack([L, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def random_images(n=50, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def test_lab_conversion_agrees_with_the_cie_formulas():
    rgb = random_images(20)
    # OpenCV interpolates the gamma and cube-root curves: within half a Lab unit of the exact values
    assert np.abs(pictures.rgb_to_lab(rgb) - cie_lab_reference(rgb)).max() < 0.5


def test_lab_round_trip_restores_every_pixel_within_one_level():
    rgb = random_images(200)
    diff = np.abs(pictures.lab_to_rgb(pictures.rgb_to_lab(rgb)).astype(int) - rgb)
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99


def test_network_scale_round_trip_through_tensors():
    rgb = random_images(10, seed=1)
    lab = torch.from_numpy(pictures.rgb_to_lab(rgb, network_scale=True)).permute(0, 3, 1, 2)
    assert lab[:, 0].min() >= -1 and lab[:, 0].max() <= 1 and lab[:, 1:].abs().max() <= 1
    assert np.abs(pictures.network_to_rgb(lab[:, :1], lab[:, 1:]).astype(int) - rgb).max() <= 1
    assert torch.allclose(lab, torch.from_numpy(cie_lab_reference(rgb) / [50, 127, 127] - [1, 0, 0]).permute(0, 3, 1, 2).float(), atol=0.005)


def test_chunked_conversion_matches_one_call(monkeypatch):
    rgb = random_images(37, seed=2)
    whole = pictures.rgb_to_lab(rgb)
    monkeypatch.setattr(pictures, '_LAB_CHUNK', 5)
    assert np.array_equal(pictures.rgb_to_lab(rgb), whole)


def test_sample_grid_geometry():
    tiles = np.zeros((20, 32, 32, 3), np.uint8)
    grid = pictures.image_grid([tiles, tiles, tiles], border=6, scale=2.2)
    assert grid.shape == (round((3 * 38 + 6) * 2.2), round((20 * 38 + 6) * 2.2), 3)
    assert (grid[:13] == 255).all()  # the 6-pixel frame, scaled
    assert (grid[14:60, 14:60] == 0).all()


def test_column_titles_never_break_inside_a_word():
    width = int((32 + 6) * 1.6) - 3  # a test.py grid column
    for label in ['original', 'grayscale', 'checkpoint_ep199.pt', 'batch norm recipe, 200 epochs',
                  'spectralnorm_ep100_weights_gen.pt', 'a b c d e f g h i j k l m n o p']:
        lines, size = pictures.header_lines(label, width)
        assert 1 <= len(lines) <= 4 and size in pictures.HEADER_SIZES
        assert all(pictures._text_width(line, size) <= width for line in lines)
        words = label.split()
        for line in lines:  # each line is whole words, or one word shortened with a final '.'
            for word in line.split():
                assert word in words or (word.endswith('.') and any(w.startswith(word[:-1]) for w in words))
    assert pictures.header_lines('original', width)[0] == ['original']
    assert pictures.header_lines('grayscale', width)[0] == ['grayscale']


def test_the_chroma_gain_scales_ab_within_the_networks_range_and_a_gain_of_one_changes_nothing():
    ab = torch.tensor([[[[0.2, -0.6]], [[0.9, -0.1]]]])
    assert pictures.with_chroma_gain(ab, 1) is ab and pictures.with_chroma_gain(ab, 1.0) is ab
    assert torch.allclose(pictures.with_chroma_gain(ab, 1.5), torch.tensor([[[[0.3, -0.9]], [[1.0, -0.15]]]]))
    assert torch.equal(pictures.with_chroma_gain(ab, 0), torch.zeros_like(ab))
    as_array = pictures.with_chroma_gain(ab.numpy(), 2.0)
    assert isinstance(as_array, np.ndarray) and np.array_equal(as_array, np.clip(ab.numpy() * 2, -1, 1))
