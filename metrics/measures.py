"""The measures of a colorization, defined once: each one's key in test.py's metrics.json, its
titles, how a value is written, which way is better, and what it means.

Every table of scores takes them from here: test.py's printed table and results page
(metrics/report.py), the model card (storage/modelcard.py, handed them by export.py, since storage/
never imports metrics/), and the tables of tools/choose_decoding.py and tools/ablation.py.
"""
import dataclasses

# Which way a measure is better, in words.
BETTER = {'lower': 'lower is better', 'higher': 'higher is better',
          'truth': 'closer to the ground truth is better'}


@dataclasses.dataclass(frozen=True)
class Measure:
    key: str  # in metrics.json
    title: str  # a column's heading on the results page, the model card and the tools' tables
    short: str  # the heading in the terminal's table, whose columns are narrow
    width: int  # that column's width in characters
    format: str  # one value as text
    better: str  # a key of BETTER
    meaning: str  # what it is, in one line

    def __post_init__(self):
        if self.better not in BETTER:
            raise ValueError(f"{self.key}: better must be one of {tuple(BETTER)}, got {self.better!r}")

    def text(self, value):
        return self.format.format(value)

    @property
    def which_way(self):
        return BETTER[self.better]


MEASURES = (
    Measure('mean_ab_error', 'mean |ab error|', 'mean|ab err|', 12, '{:.4f}', 'lower',
            'mean absolute error of the predicted a and b channels in network scale (/127), on the raw generator '
            'output'),
    Measure('mae', 'MAE', 'MAE', 7, '{:.3f}', 'lower', 'mean absolute difference of the uint8 RGB images (0-255)'),
    Measure('psnr', 'PSNR dB', 'PSNR dB', 7, '{:.3f}', 'higher',
            'peak signal-to-noise ratio of the uint8 RGB images, per image, then averaged'),
    Measure('nazeri_accuracy', 'Nazeri acc', 'Nazeri', 6, '{:.1%}', 'higher',
            'share of pixels whose rounded Lab values are within 2% of their range of the truth (|dL| <= 2, '
            '|da|, |db| <= 4.4)'),
    Measure('colorfulness', 'colorfulness', 'colorful', 8, '{:.2f}', 'truth',
            'Hasler and Suesstrunk (2003), per image, then averaged'),
    Measure('colorfulness_gap', 'ΔCF', 'dCF', 6, '{:.2f}', 'lower',
            "the colourfulness gap |CF(colorized) - CF(truth)| of the set's means (DDColor, CT2); grey images "
            "score the truth's colourfulness"),
    Measure('semantic_accuracy', 'semantic accuracy', 'sem.acc', 7, '{:.1%}', 'higher',
            "top-1 of the scoring classifier (trained on CIFAR-10's colour training images) on these images "
            "(Zhang et al. 2016); the ground truth's is the classifier's own, the mark to reach"),
    Measure('classifier_fd', 'classifier FD', 'clf FD', 7, '{:.2f}', 'lower',
            "Fréchet distance between the scoring classifier's penultimate features of these images and of the "
            "true colours; not FID (another network)"),
    Measure('fid', 'FID', 'FID', 7, '{:.2f}', 'lower',
            'Fréchet Inception distance to the true colour images (torchmetrics, TF-FID Inception at 299 px); '
            'compares only with FIDs of the same test set at the same size'),
)
BY_KEY = {m.key: m for m in MEASURES}


def measures_of(*keys):
    """The measures named by `keys`, in that order."""
    unknown = [key for key in keys if key not in BY_KEY]
    if unknown:
        raise KeyError(f"no measure {', '.join(unknown)}; the measures are {', '.join(BY_KEY)}")
    return tuple(BY_KEY[key] for key in keys)
