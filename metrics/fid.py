"""FID, the field's score of a set of colorizations: the Fréchet distance between the Inception-v3
pool features (2048 values) of the colorized images and of the true colour images of the same
test set (Heusel et al. 2017), through torchmetrics' FrechetInceptionDistance, which runs
torch-fidelity's port of the TF-FID Inception (the network pytorch-fid and torch-fidelity use).

Images of any size are resized to 299x299 by the library, so an FID of 32-pixel images compares
only with other FIDs of the same test set at the same size, never with published ImageNet FIDs.
The weights come from `--fid_weights PATH`, else from torch's cache (`torch.hub.get_dir()`),
where they are downloaded once on a machine with internet.
"""
import os

import numpy as np
import torch
from tqdm import tqdm

from core.cli import UserError, first_line

# torch-fidelity's release of the TF-FID Inception weights (what its own loader fetches)
WEIGHTS_URL = ('https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/'
               'weights-inception-2015-12-05-6726825d.pth')
WEIGHTS_NAME = os.path.basename(WEIGHTS_URL)
# The pool features FID is defined on; the library also offers 64, 192 and 768 (earlier layers),
# which the tests use, since the distance of 2048-value features takes minutes on a 2-core CPU.
FEATURES = 2048


def cached_weights_path():
    return os.path.join(torch.hub.get_dir(), 'checkpoints', WEIGHTS_NAME)


def weights_file(path=None):
    """The Inception weights to use: `path`, else the cached file, else downloaded into the cache.
    Offline without either, a one-line error names the file, where to get it and the flag."""
    if path:
        if not os.path.isfile(path):
            raise UserError(f"--fid_weights {path} does not exist: give the path of {WEIGHTS_NAME} "
                            f"(from {WEIGHTS_URL})")
        check_plain_weights(path)  # before any work, not after the test set is colorized
        return path
    cached = cached_weights_path()
    if os.path.isfile(cached):
        return cached
    try:
        os.makedirs(os.path.dirname(cached), exist_ok=True)
        torch.hub.download_url_to_file(WEIGHTS_URL, cached, progress=True)
    except Exception as e:
        raise UserError(f"--fid needs the Inception weights {WEIGHTS_NAME}, which are not in {cached} and could "
                        f"not be downloaded ({first_line(e)}): fetch {WEIGHTS_URL} on a machine with internet "
                        f"and pass it with --fid_weights PATH")
    return cached


def check_plain_weights(weights_path):
    """The library loads the file with full pickle; a file that loads under weights_only=True holds
    nothing but tensors and plain containers, so the library's load can then run no code."""
    try:
        torch.load(weights_path, map_location='cpu', weights_only=True)
    except Exception as e:
        raise UserError(f"--fid_weights {weights_path} is not a plain weights file ({first_line(e)}): "
                        f"use {WEIGHTS_NAME} from {WEIGHTS_URL}")


def inception_metric(weights_path, device):
    """torchmetrics' FID on `device`, keeping the true images' features across `reset()`s."""
    check_plain_weights(weights_path)
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
        metric = FrechetInceptionDistance(feature=FEATURES, reset_real_features=False,
                                          feature_extractor_weights_path=weights_path)
    except ModuleNotFoundError as e:
        raise UserError(f"--fid needs torchmetrics and torch-fidelity ({first_line(e)}): "
                        f"pip install -r requirements.txt")
    except RuntimeError as e:
        raise UserError(f"--fid_weights {weights_path} is not the FID Inception's weights ({first_line(e)}): "
                        f"use {WEIGHTS_NAME} from {WEIGHTS_URL}")
    return metric.to(device)


def _feed(metric, rgb_uint8, real, batch_size, device, desc):
    for first in tqdm(range(0, len(rgb_uint8), batch_size), desc=desc, leave=False, dynamic_ncols=True):
        batch = torch.from_numpy(np.ascontiguousarray(rgb_uint8[first:first + batch_size])).to(device)
        metric.update(batch.permute(0, 3, 1, 2), real=real)


@torch.no_grad()
def fid_scores(truth_rgb, sets, weights_path, device, batch_size=100):
    """{name: FID against `truth_rgb`} for each (N, H, W, 3) uint8 stack in `sets`; the truth's
    features are computed once."""
    metric = inception_metric(weights_path, device)
    _feed(metric, truth_rgb, True, batch_size, device, 'FID: true colours')
    fids = {}
    for name, rgb in sets.items():
        _feed(metric, rgb, False, batch_size, device, f'FID: {name}')
        fids[name] = float(metric.compute())
        metric.reset()  # the fake features only: reset_real_features=False
    return fids
