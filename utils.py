"""What the rest shares: Lab conversion, scores, pictures, checkpoints, schedules, logging."""
import argparse
import contextlib
import csv
import json
import os
import pickle
import platform
import shutil
import sys
import tempfile
import warnings

import cv2
import numpy as np
import torch

from models import Generator


class UserError(Exception):
    """A problem with the user's input: reported in one line, never as a traceback."""


# ---------------------------------------------------------------- devices and precision

def pick_device(name='auto'):
    if name != 'auto':
        try:
            device = torch.device(name)
        except RuntimeError as e:
            raise UserError(f"--device {name!r} is not a device name ({e}); use auto, cpu, cuda or mps")
        if device.type == 'cuda' and not torch.cuda.is_available():
            raise UserError(f"--device {name} asked for, but this machine has no CUDA device; use --device cpu")
        if device.type == 'mps' and not torch.backends.mps.is_available():
            raise UserError(f"--device {name} asked for, but MPS is not available; use --device cpu")
        return device
    if torch.cuda.is_available():
        return torch.device('cuda')
    if torch.backends.mps.is_available():
        return torch.device('mps')
    return torch.device('cpu')


def cpu_has_native_bf16():
    # AMX or AVX512-BF16: bf16 matmuls run several times faster than fp32 there; elsewhere
    # bf16 on a CPU is emulated and slower, so auto keeps fp32.
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_description():
    """'AMD EPYC 7B13 (AVX2, no native bf16)': the CPU's name and the instruction set PyTorch
    uses on it, for every speed figure printed, since figures from other CPUs do not compare."""
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    name = line.split(':', 1)[1].strip()
                    break
    capability = torch.backends.cpu.get_cpu_capability()
    return f"{name} ({capability}, {'native' if cpu_has_native_bf16() else 'no native'} bf16)"


def resolve_precision(precision, device):
    """'auto' -> bf16 where the hardware runs it natively, else fp32. An explicit bf16 on a CPU
    without native bf16 is refused at once: oneDNN would emulate it about 65x slower than fp32."""
    if precision != 'auto':
        if precision == 'fp16' and device.type == 'cpu':
            raise UserError("--precision fp16 needs a GPU; on a CPU use bf16 or fp32")
        if precision == 'bf16' and device.type == 'cpu' and not cpu_has_native_bf16():
            raise UserError(f"--precision bf16: this CPU, {cpu_description()}, has no native bf16 instructions "
                            f"(AVX512-BF16 or AMX), so bf16 would be emulated, about 65x slower than fp32 "
                            f"(a training step of minutes); use --precision fp32 or auto")
        return precision
    if device.type == 'cuda' and torch.cuda.is_bf16_supported():
        return 'bf16'
    if device.type == 'cpu' and cpu_has_native_bf16():
        return 'bf16'
    return 'fp32'


def autocast_context(device, precision):
    if precision == 'fp32':
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == 'bf16' else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


# ---------------------------------------------------------------- Lab conversion
# Network scale: L/50 - 1, a/127, b/127 (SPEC.md). OpenCV's float conversion works per pixel, so
# a stack of images is handed to it as wide rows of pixels, in chunks that reuse one float buffer:
# that runs about 6x faster than one tall image of 32-pixel rows, and never holds two float copies.
_LAB_CHUNK = 4096
_NETWORK_SCALE = np.array([1 / 50, 1 / 127, 1 / 127], np.float32)


def rgb_to_lab(rgb_uint8, network_scale=False):
    """(N, H, W, 3) uint8 RGB -> (N, H, W, 3) float32 Lab (L in [0, 100]), or in network scale."""
    n, h, w, _ = rgb_uint8.shape
    pixels = np.ascontiguousarray(rgb_uint8).reshape(n, h * w, 3)
    lab = np.empty((n, h * w, 3), np.float32)
    buffer = np.empty((min(n, _LAB_CHUNK), h * w, 3), np.float32)
    for first in range(0, n, _LAB_CHUNK):
        last = min(n, first + _LAB_CHUNK)
        chunk = buffer[:last - first]
        np.multiply(pixels[first:last], np.float32(1 / 255), out=chunk)
        cv2.cvtColor(chunk, cv2.COLOR_RGB2Lab, dst=lab[first:last])
        if network_scale:
            lab[first:last] *= _NETWORK_SCALE
            lab[first:last, :, 0] -= 1.0
    return lab.reshape(n, h, w, 3)


def lab_to_rgb(lab):
    """(N, H, W, 3) float32 Lab -> (N, H, W, 3) uint8 RGB, clipped and rounded."""
    n, h, w, _ = lab.shape
    rgb = cv2.cvtColor(np.ascontiguousarray(lab, dtype=np.float32).reshape(n, h * w, 3), cv2.COLOR_Lab2RGB)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8).reshape(n, h, w, 3)


def network_to_rgb(L, ab):
    """Network-scale L (N, 1, H, W) and ab (N, 2, H, W) tensors -> (N, H, W, 3) uint8 RGB."""
    lab = torch.cat([(L.float() + 1.0) * 50.0, ab.float() * 127.0], dim=1)
    return lab_to_rgb(lab.permute(0, 2, 3, 1).cpu().numpy())


# ---------------------------------------------------------------- scores (SPEC.md, "Published results")

def colorfulness(rgb_uint8):
    """Hasler and Suesstrunk (2003), one value per image of an (N, H, W, 3) uint8 stack."""
    rgb = rgb_uint8.astype(np.float64)
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    std = np.sqrt(rg.std(axis=(1, 2)) ** 2 + yb.std(axis=(1, 2)) ** 2)
    mean = np.sqrt(rg.mean(axis=(1, 2)) ** 2 + yb.mean(axis=(1, 2)) ** 2)
    return std + 0.3 * mean


class ColorizationScores:
    """Sums over batches the five measures of SPEC.md; `result()` gives the means."""

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
            'images': self.images,
        }


# ---------------------------------------------------------------- pictures

def image_grid(rows, border=6, scale=2.2, column_labels=None):
    """Rows of equally sized uint8 RGB tiles (each (N, H, W, 3)) -> one picture, tiles separated
    and framed by `border` white pixels, scaled with nearest-neighbour; optional column titles."""
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    h, w = rows[0].shape[1:3]
    grid = np.full((n_rows * (h + border) + border, n_cols * (w + border) + border, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, tile in enumerate(row):
            y, x = border + i * (h + border), border + j * (w + border)
            grid[y:y + h, x:x + w] = tile
    grid = cv2.resize(grid, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    if column_labels:
        grid = np.concatenate([_column_header(column_labels, (w + border) * scale, border * scale, grid.shape[1]), grid])
    return grid


HEADER_FONT, HEADER_THICKNESS, HEADER_SIZES = cv2.FONT_HERSHEY_SIMPLEX, 1, (0.3, 0.26, 0.22)


def _text_width(text, size):
    return cv2.getTextSize(text, HEADER_FONT, size, HEADER_THICKNESS)[0][0]


def header_lines(label, width, max_lines=4):
    """(lines, font size) for a column title `width` pixels wide: wrapped at spaces only, at the
    largest size in HEADER_SIZES at which every word fits; at the smallest, a word that still
    does not fit is shortened and ends in '.', so no word is ever broken across lines."""
    words = label.split() or ['']
    size = next((s for s in HEADER_SIZES if all(_text_width(w, s) <= width for w in words)), HEADER_SIZES[-1])
    lines = []
    for word in (_shortened(w, size, width) for w in words):
        if lines and _text_width(lines[-1] + ' ' + word, size) <= width:
            lines[-1] += ' ' + word
        else:
            lines.append(word)
    if len(lines) > max_lines:
        lines = lines[:max_lines - 1] + [_shortened(' '.join(lines[max_lines - 1:]), size, width)]
    return lines, size


def _shortened(text, size, width):
    """`text`, cut and ended with '.' until it fits `width` pixels."""
    while _text_width(text, size) > width and len(text) > 2:
        text = text[:-2] + '.'
    return text


def _column_header(labels, column_width, offset, width):
    """White band with each label over its column (see header_lines)."""
    fitted = [header_lines(label, column_width - 3) for label in labels]
    line_h = 10
    band = np.full((line_h * max(len(lines) for lines, _ in fitted) + 6, width, 3), 255, np.uint8)
    for j, (lines, size) in enumerate(fitted):
        for k, text in enumerate(lines):
            x = int(offset + j * column_width)
            cv2.putText(band, text, (x, line_h * (k + 1)), HEADER_FONT, size, (40, 40, 40), HEADER_THICKNESS, cv2.LINE_AA)
    return band


def write_encoded(path, bgr, params=()):
    """Encode an OpenCV (BGR) image by the file's extension and write it atomically; OSError on failure."""
    ok, encoded = cv2.imencode(os.path.splitext(str(path))[1] or '.png', bgr, list(params))
    if not ok:
        raise OSError(f"OpenCV cannot encode it as {os.path.splitext(str(path))[1]}")
    atomic_write(str(path), lambda f: f.write(encoded.tobytes()))


def write_image(path, rgb_uint8):
    try:
        write_encoded(path, cv2.cvtColor(rgb_uint8, cv2.COLOR_RGB2BGR))
    except OSError as e:
        raise UserError(f"could not write the picture {path} ({e}): check that its folder is writable")


# ---------------------------------------------------------------- schedule

def learning_rate(base_lr, step, decay_rate, decay_steps):
    """Smooth exponential decay with a floor; the step counter starts at 1 (SPEC.md)."""
    return max(base_lr * decay_rate ** (step / decay_steps), 1e-6)


# ---------------------------------------------------------------- files: checkpoints, logs

def atomic_write(path, write_fn, mode='wb'):
    """Write through a temporary file in the same folder, fsync, then rename over `path`, so a
    crash at any moment leaves either the old file or the new one, never a torn one."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=folder)
    try:
        with os.fdopen(fd, mode) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes files private; these are ordinary outputs
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def remove_torn_writes(folder, prefix):
    """Delete the temporary files that atomic_write leaves when a process dies mid-write."""
    for name in os.listdir(folder):
        if name.startswith('.' + prefix) and name.endswith('.tmp'):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(folder, name))


def save_checkpoint(path, state):
    try:
        atomic_write(path, lambda f: torch.save(state, f))
    except OSError as e:
        raise UserError(f"could not save the checkpoint {path} ({e.strerror or e}); "
                        f"any earlier checkpoint there is intact: free some space or pick another --save_path")


def load_checkpoint(path):
    """Load with weights_only=True: tensors and plain data, never code. A .safetensors file (a
    generator alone) comes back shaped like a checkpoint: {'generator', 'args', 'epoch', 'step', ...}."""
    if not os.path.isfile(path):
        raise UserError(f"checkpoint {path} does not exist")
    if path.endswith('.safetensors'):
        return load_generator_weights(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # torch warns about old pickle protocols: the error below says it all
            return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError:
        raise UserError(f"checkpoint {path} is corrupt, or holds objects other than tensors and plain data "
                        f"(refused: loading them could run code); it is not a checkpoint of this tool")
    except Exception as e:
        raise UserError(f"checkpoint {path} cannot be read ({type(e).__name__}): "
                        f"it is corrupt, truncated, or not a checkpoint of this tool")


def save_generator_weights(path, state, gen_norm, gen_dropout=0.5, epoch=None, step=None, seed=0,
                           exact_statistics=True):
    """Write the generator state dict `state` to `path` (.safetensors), atomically: tensors and a
    string-to-string metadata header, no code; what model hubs share. The metadata says how to
    build the network around the tensors."""
    from safetensors.torch import save
    tensors = {name: t.detach().cpu().contiguous() for name, t in state.items()}
    metadata = {'format': 'pt', 'model': 'Nazeri et al. 2018 colorization generator (colorization-gan)',
                'gen_norm': str(gen_norm), 'gen_dropout': str(gen_dropout), 'epoch': str(epoch),
                'step': str(step), 'seed': str(seed), 'exact_statistics': str(bool(exact_statistics)).lower()}
    try:
        atomic_write(path, lambda f: f.write(save(tensors, metadata=metadata)))
    except OSError as e:
        raise UserError(f"could not write {path} ({e.strerror or e}): check that the folder is writable and has space")
    return path


def load_generator_weights(path):
    """A .safetensors generator as a checkpoint-shaped dict; a file without this tool's metadata
    (someone else's conversion) comes back as the bare state dict, whose keys tell its layout."""
    from safetensors import safe_open
    try:
        with safe_open(path, framework='pt') as f:
            metadata = f.metadata() or {}
            state = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path} cannot be read as safetensors ({reason}): it is corrupt or truncated; "
                        f"export it again with export.py")
    if 'gen_norm' not in metadata:
        return state

    def number(key, kind):
        with contextlib.suppress(KeyError, ValueError):
            return kind(metadata[key])
        return None
    return {'generator': state, 'generator_exact_statistics': metadata.get('exact_statistics') != 'false',
            'epoch': number('epoch', int), 'step': number('step', int),
            'args': {'gen_norm': metadata['gen_norm'], 'gen_dropout': number('gen_dropout', float) or 0.0,
                     'seed': number('seed', int) or 0}}


# The generators the reference published (its test.py), as (label, address).
PUBLISHED_GENERATORS = (
    ('batch-norm recipe (reference, 200 epochs)',
     'https://www.dropbox.com/s/r33ndl969q83gik/batchnorm_ep200_weigths_gen.pt'),
    ('spectral-norm recipe (reference, 100 epochs)',
     'https://www.dropbox.com/s/tccxduyqp3dj5dg/spectralnorm_ep100_weights_gen.pt'),
)


def default_weights_cache():
    return os.path.join(os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'), 'colorization-gan')


def fetch_published_generators(cache, published=None):
    """[(label, path)] of the reference's published generators (or of `published`, as (label,
    address) pairs) in `cache`, downloaded once. A download lands in a temporary folder and enters
    the cache only once it loads as a generator state dict, so the cache never holds an HTML page
    or a truncated file."""
    from torchvision.datasets.utils import download_url
    published = published or PUBLISHED_GENERATORS
    fetched = []
    for label, url in published:
        name = os.path.basename(url)
        path = os.path.join(cache, name)
        if not os.path.isfile(path):
            try:
                os.makedirs(cache, exist_ok=True)
                with tempfile.TemporaryDirectory() as folder:
                    # Dropbox answers a share address with an HTML page unless asked for the file.
                    download_url(url + ('&' if '?' in url else '?') + 'dl=1', folder, filename=name)
                    _check_generator_file(os.path.join(folder, name))
                    shutil.move(os.path.join(folder, name), path)
            except UserError as e:
                raise UserError(_unpublished(cache, published, str(e)))
            except Exception as e:
                reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise UserError(_unpublished(cache, published, f"{url}: {reason}"))
        fetched.append((label, path))
    return fetched


def _check_generator_file(path):
    with open(path, 'rb') as f:
        start = f.read(512).lstrip().lower()
    if start.startswith(b'<'):  # <!DOCTYPE html>, <html>: no pickle or zip file starts so
        raise UserError(f"{os.path.basename(path)}: the server sent a web page, not the weights")
    state = load_checkpoint(path)  # UserError for a truncated or unsafe file
    generator_state(state, os.path.basename(path))


def _unpublished(cache, published, reason):
    addresses = ' and '.join(url for _, url in published)
    names = ', '.join(os.path.basename(url) for _, url in published)
    return (f"could not fetch the reference's published generators ({reason}); they are at {addresses}: "
            f"download them into {cache} ({names}), or score your own with --checkpoints")


def write_json(path, data):
    atomic_write(path, lambda f: json.dump(data, f, indent=2, sort_keys=True), mode='w')


def append_csv_row(path, row):
    """Append the dict `row` to the CSV file `path`, under the file's own header if it has one
    (a log begun by an older version keeps its columns; values for others are dropped)."""
    try:
        with open(path, newline='') as f:
            header = next(csv.reader(f), None)
    except FileNotFoundError:
        header = None
    with open(path, 'a', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=header or list(row), extrasaction='ignore')
        if not header:
            writer.writeheader()
        writer.writerow(row)


def check_writable_folder(path, flag):
    """Create `path` if needed and prove a file can be written there, before any long work."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix='.write-test-'):
            pass
    except OSError as e:
        raise UserError(f"{flag} {path} cannot be written ({e.strerror or e}); pick a folder you can write to")


# ---------------------------------------------------------------- command lines

class OneLineArgumentParser(argparse.ArgumentParser):
    """Bad flags end with one line naming the problem (and `--help` for the rest), exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def number_in(kind, low=None, high=None, low_open=False, high_open=False):
    """An argparse type: a number of `kind` within the given bounds, with a message that names them."""
    left = '(' if low_open else '['
    right = ')' if high_open else ']'
    bounds = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"

    def parse(text):
        try:
            value = kind(float(text)) if kind is int and float(text).is_integer() else kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'a whole number' if kind is int else 'a number'}, got {text!r}")
        if (low is not None and (value < low or (low_open and value == low))) or \
                (high is not None and (value > high or (high_open and value == high))) or value != value:
            raise argparse.ArgumentTypeError(f"must be in {bounds}, got {text}")
        return value
    return parse


def run_cli(main, argv=None):
    """Run `main(argv)`; a UserError becomes one line on stderr and exit code 2."""
    try:
        return main(argv)
    except UserError as e:
        print(f"{os.path.basename(sys.argv[0])}: error: {e}", file=sys.stderr)
        return 2


# ---------------------------------------------------------------- the generator used for inference

def ema_decay(decay, step):
    """The averaging rate at `step`: warms up as (1 + step) / (10 + step), so that a short run
    averages its last few dozen steps instead of keeping the random initialization."""
    return min(decay, (1.0 + step) / (10.0 + step))


@torch.no_grad()
def ema_update(average, model, decay):
    torch._foreach_lerp_(list(average.parameters()), [p.detach() for p in model.parameters()], 1.0 - decay)


@torch.no_grad()
def recalibrate_batchnorm(model, input_batches, autocast=contextlib.nullcontext()):
    """Replace batch-norm running statistics by exact averages over `input_batches`, computed
    with the current weights and dropout off, as at test time. Momentum-averaged statistics lag
    behind weights that still move fast, which costs eval mode accuracy."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.eval()
    for m in norms:
        m.train()
    with autocast:
        for x in input_batches:
            model(x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return model.eval()


# Exact batch-norm statistics come from this many training images (a fixed sample per seed), in
# batches of RECALIBRATION_BATCH: measured within 1% of the figures of 6,400 images on every
# score (docs/performance.md), at a fraction of the time.
RECALIBRATION_IMAGES = 1024
RECALIBRATION_BATCH = 32


def recalibration_batches(train_set, seed, device, memory_format=torch.contiguous_format):
    """The L channel of a fixed, seed-determined sample of training images, in batches."""
    order = torch.Generator().manual_seed(seed)
    size = min(RECALIBRATION_BATCH, len(train_set))
    n = max(1, min(RECALIBRATION_IMAGES, len(train_set)) // size)
    batches = train_set.batches(size, shuffle=True, generator=order, device=device)
    return (lab[:, :1].contiguous(memory_format=memory_format) for _, (_, lab) in zip(range(n), batches))


def generator_state(ckpt, path):
    """(state dict, gen_norm, exact statistics?) from a train.py checkpoint or from a bare
    reference-layout state dict. A mid-epoch checkpoint's generator carries the running batch-norm
    statistics of training, not exact ones (recomputing them is left to where it is used)."""
    if isinstance(ckpt, dict) and isinstance(ckpt.get('generator'), dict):
        return ckpt['generator'], ckpt.get('args', {}).get('gen_norm', 'batch'), ckpt.get('generator_exact_statistics', True)
    if isinstance(ckpt, dict) and 'down1.model.0.weight' in ckpt and 'final.model.0.weight' in ckpt:
        # The reference's published weights: a plain state dict, our key layout.
        return ckpt, 'batch' if 'down1.model.1.running_mean' in ckpt else 'instance', True
    raise UserError(f"{path} holds no generator: expected a train.py checkpoint or a generator state dict")


def load_generator(path, device, ckpt=None):
    """(generator in eval mode on `device`, whether its batch-norm statistics are exact, the run's
    seed) from the file `path` (or from `ckpt`, already loaded from it). Where they are not exact
    (a mid-epoch checkpoint), `recalibrate_generator` with that seed recomputes them as train.py
    does at an epoch's end."""
    ckpt = load_checkpoint(path) if ckpt is None else ckpt
    state, norm, exact = generator_state(ckpt, path)
    run_args = ckpt.get('args') if isinstance(ckpt.get('args'), dict) else {}
    G = Generator(norm, run_args.get('gen_dropout', 0.5))
    try:
        G.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"{path} is not a generator of this architecture (--gen_norm {norm}): "
                        f"{str(e).strip().splitlines()[0]}")
    return G.to(device).eval(), exact, run_args.get('seed', 0)


def recalibrate_generator(G, train_set, seed, device, autocast=contextlib.nullcontext(),
                          memory_format=torch.contiguous_format):
    """Exact batch-norm statistics over the fixed sample of training images that `seed` picks."""
    return recalibrate_batchnorm(G, recalibration_batches(train_set, seed, device, memory_format), autocast)


def set_dropout(model, on):
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.train(on)
