"""How good a colorization is, pixel by pixel and as a whole: the measures test.py and validation
report (the classifier's measures are in classifier.py, FID in fid.py)."""
import numpy as np

from core.pictures import rgb_to_lab


def colorfulness(rgb_uint8):
    """Hasler and Suesstrunk (2003), one value per image of an (N, H, W, 3) uint8 stack."""
    rgb = rgb_uint8.astype(np.float64)
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    std = np.sqrt(rg.std(axis=(1, 2)) ** 2 + yb.std(axis=(1, 2)) ** 2)
    mean = np.sqrt(rg.mean(axis=(1, 2)) ** 2 + yb.mean(axis=(1, 2)) ** 2)
    return std + 0.3 * mean


def colorfulness_gap(colorfulness, truth_colorfulness):
    """DeltaCF (DDColor, CT2): how far a set's mean colourfulness is from the true colours' mean,
    either way; 0 is the truth's vividness, grey images score the truth's colourfulness."""
    return abs(colorfulness - truth_colorfulness)


class ColorizationScores:
    """Sums over batches the five measures of a colorization (mean |ab error| in network scale,
    MAE and PSNR of the uint8 RGB images, Nazeri accuracy, colorfulness); `result()` gives the means
    and the colourfulness gap."""

    def __init__(self):
        self.ab_error_sum = 0.0
        self.ab_values = 0
        self.abs_rgb_sum = 0.0
        self.rgb_values = 0
        self.psnr_sum = 0.0
        self.accurate_pixels = 0
        self.pixels = 0
        self.colorfulness_sum = 0.0
        self.truth_colorfulness_sum = 0.0
        self.images = 0

    def add(self, ab_pred, ab_true, rgb_pred, rgb_true):
        """ab as network-scale tensors (N, 2, H, W); rgb as uint8 arrays (N, H, W, 3)."""
        self.ab_error_sum += (ab_pred.float() - ab_true.float()).abs().sum().item()
        self.ab_values += ab_true.numel()
        diff = rgb_pred.astype(np.float64) - rgb_true.astype(np.float64)
        self.abs_rgb_sum += np.abs(diff).sum()
        self.rgb_values += diff.size
        mse = (diff ** 2).mean(axis=(1, 2, 3))
        self.psnr_sum += (10.0 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))).sum()
        lab_diff = np.abs(np.rint(rgb_to_lab(rgb_pred)) - np.rint(rgb_to_lab(rgb_true)))
        close = (lab_diff[..., 0] <= 2) & (lab_diff[..., 1] <= 4.4) & (lab_diff[..., 2] <= 4.4)
        self.accurate_pixels += int(close.sum())
        self.pixels += close.size
        self.colorfulness_sum += colorfulness(rgb_pred).sum()
        self.truth_colorfulness_sum += colorfulness(rgb_true).sum()
        self.images += len(rgb_true)

    def result(self):
        return {
            'mean_ab_error': self.ab_error_sum / self.ab_values,
            'mae': self.abs_rgb_sum / self.rgb_values,
            'psnr': self.psnr_sum / self.images,
            'nazeri_accuracy': self.accurate_pixels / self.pixels,
            'colorfulness': self.colorfulness_sum / self.images,
            'truth_colorfulness': self.truth_colorfulness_sum / self.images,
            'colorfulness_gap': colorfulness_gap(self.colorfulness_sum / self.images,
                                                 self.truth_colorfulness_sum / self.images),
            'images': self.images,
        }
