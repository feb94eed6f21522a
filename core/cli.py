"""Command-line helpers every script shares: one-line errors, checked numbers, and the device
and precision a command runs in (the shared --device and --precision flags)."""
import argparse
import contextlib
import dataclasses
import os
import platform
import re
import sys

from utils import UserError  # noqa: F401 (where the commands import it from)


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


def first_line(error):
    """The first line of an exception's message (without terminal colour codes, which torch's
    unpickling errors carry), or its type's name where it has none."""
    text = re.sub(r'\x1b\[[0-9;]*m', '', str(error)).strip()
    return text.splitlines()[0] if text else type(error).__name__


# ---------------------------------------------------------------- device and precision

PRECISIONS = ('auto', 'fp32', 'bf16', 'fp16')


def add_compute_flags(parser):
    """The --device and --precision flags, the same in every command line."""
    parser.add_argument('--device', default='auto', help='auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps '
                                                         '(default: auto)')
    parser.add_argument('--precision', choices=PRECISIONS, default='auto',
                        help='autocast precision; auto: bf16 where the hardware runs it natively, else fp32 '
                             '(default: auto)')


def add_decoding_flags(parser, per_generator=False):
    """--temperature and --blend: how a generator with a colour-distribution head decodes
    (train.py --ab_head classify or both); the file's own values (its run's choice) where not given. With
    `per_generator`, each flag takes one value for every generator or one per generator (a list)."""
    each = ('; one value for all, or one per checkpoint in their order' if per_generator else '')
    parser.add_argument('--temperature', type=number_in(float, 0, None, low_open=True), default=None, metavar='T',
                        nargs='+' if per_generator else None,
                        help="for generators with a colour-distribution head: the annealed mean's temperature"
                             f"{each} (default: the one each generator's run chose on its held-out training "
                             "images (train.py --holdout), else the one it trained with)")
    parser.add_argument('--blend', type=number_in(float, 0, 1), default=None, metavar='W',
                        nargs='+' if per_generator else None,
                        help="for generators with both heads: the regression's share of the decoded ab"
                             f"{each} (default: as --temperature's)")


@dataclasses.dataclass(frozen=True)
class Compute:
    """Where and how a command computes: the device, the resolved precision, and its autocast."""
    device: 'torch.device'  # noqa: F821 (torch is imported where it is used: plot.py needs none of it)
    precision: str

    @property
    def autocast(self):
        return autocast_context(self.device, self.precision)

    @classmethod
    def from_flags(cls, args, device=None):
        """From --device, --precision and --tf32 (or an already chosen `device`, such as a
        torchrun process's GPU). TF32 is set here, for the whole process, on CUDA only."""
        device = device or pick_device(args.device)
        precision = resolve_precision(args.precision, device)
        set_tf32(device, getattr(args, 'tf32', 'on'))
        return cls(device, precision)


def pick_device(name='auto'):
    import torch
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
    import torch
    # AMX or AVX512-BF16: bf16 matmuls run several times faster than fp32 there; elsewhere
    # bf16 on a CPU is emulated and slower, so auto keeps fp32.
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cuda_has_native_bf16(device):
    """Compute capability 8.0 (Ampere) and later run bf16 in their tensor cores. Older GPUs (V100,
    T4) emulate it, which torch.cuda.is_bf16_supported() counts as support."""
    import torch
    return torch.cuda.get_device_capability(device) >= (8, 0)


def gpu_description(device):
    """'NVIDIA H200 (compute capability 9.0)': for speed figures and refusals."""
    import torch
    major, minor = torch.cuda.get_device_capability(device)
    return f"{torch.cuda.get_device_name(device)} (compute capability {major}.{minor})"


def set_tf32(device, choice):
    """--tf32 on|off: whether fp32 matrix products and convolutions on CUDA may round their inputs
    to TF32 (10-bit mantissa; Ampere and later). Torch's own defaults differ between the two and
    between versions, so it is always set explicitly. Not touched on other devices."""
    if device.type != 'cuda':
        return
    import torch
    precision = 'tf32' if choice == 'on' else 'ieee'
    if hasattr(torch.backends.cuda.matmul, 'fp32_precision'):  # torch 2.9 and later
        torch.backends.cuda.matmul.fp32_precision = precision
        torch.backends.cudnn.conv.fp32_precision = precision
    else:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = choice == 'on'


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
    import torch
    capability = torch.backends.cpu.get_cpu_capability()
    return f"{name} ({capability}, {'native' if cpu_has_native_bf16() else 'no native'} bf16)"


def resolve_precision(precision, device):
    """'auto' -> bf16 where the hardware runs it natively, else fp32. An explicit bf16 on a CPU
    without native bf16 is refused at once: oneDNN would emulate it about 65x slower than fp32;
    so is bf16 on a GPU older than compute capability 8.0, which emulates it too."""
    if precision != 'auto':
        if precision == 'bf16' and device.type == 'cuda' and not cuda_has_native_bf16(device):
            raise UserError(f"--precision bf16: this GPU, {gpu_description(device)}, has no native bf16 (compute "
                            f"capability 8.0, Ampere, and later have it), so bf16 would be emulated and slow; use "
                            f"--precision fp16, fp32 or auto")
        if precision == 'fp16' and device.type == 'cpu':
            raise UserError("--precision fp16 needs a GPU; on a CPU use bf16 or fp32")
        if precision == 'bf16' and device.type == 'cpu' and not cpu_has_native_bf16():
            raise UserError(f"--precision bf16: this CPU, {cpu_description()}, has no native bf16 instructions "
                            f"(AVX512-BF16 or AMX), so bf16 would be emulated, about 65x slower than fp32 "
                            f"(a training step of minutes); use --precision fp32 or auto")
        return precision
    if device.type == 'cuda' and cuda_has_native_bf16(device):
        return 'bf16'
    if device.type == 'cpu' and cpu_has_native_bf16():
        return 'bf16'
    return 'fp32'


def autocast_context(device, precision):
    if precision == 'fp32':
        return contextlib.nullcontext()
    import torch
    dtype = torch.bfloat16 if precision == 'bf16' else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
