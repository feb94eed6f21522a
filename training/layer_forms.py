"""Which form each two-form layer of a run's networks takes (core/convolutions.py): the choice a
resumed checkpoint saved, else the one stored for this machine and settings in the user's cache,
else measured at start-up on a CPU (and stored), and set on the networks.

Which form wins a close race is timing noise, and two forms round differently: a choice measured
afresh by every run would make two runs of the same command two different runs. So the first run
on a machine measures and stores its choice, keyed by all that decides it (the CPU and its
instruction set, torch, the precision, the memory format, each process's share of a batch and the
networks' layer shapes), and later runs with the same key take it.

Imports core/, utils and torch; the GAN (training/gan.py) is handed in.
"""
import hashlib
import json
import os
import sys
import time

import torch

import utils
from core import convolutions
from core.cli import cpu_description, first_line

# Layer forms are timed on at most this many images, so the measurement stays within seconds.
AUTOTUNE_IMAGES = 32
CACHE_ENV = 'COLORIZATION_LAYER_FORMS_CACHE'
CACHE_VERSION = 1


def default_cache_path():
    """$COLORIZATION_LAYER_FORMS_CACHE, else colorization/layer_forms.json in the user's cache
    folder ($XDG_CACHE_HOME, else ~/.cache)."""
    if os.environ.get(CACHE_ENV):
        return os.environ[CACHE_ENV]
    cache_home = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return os.path.join(cache_home, 'colorization', 'layer_forms.json')


def networks_signature(gan):
    """A short hash of the two-form layers' names and weight shapes in both networks."""
    shapes = [(key, name, list(layer.weight.shape), layer.stride, layer.padding)
              for key, model in (('generator', gan.G), ('discriminator', gan.D))
              for name, layer in sorted(convolutions.two_form_layers(model).items())]
    return hashlib.sha256(json.dumps(shapes).encode()).hexdigest()[:16]


class StoredChoices:
    """The cache file: {'version': 1, 'choices': {key: record}}, written whole (atomic rename),
    so that two runs writing it at once leave one of their files, never a torn one. A file that
    cannot be read or written is one warning and a fresh measurement, never a failed run; a file
    that is not a cache is left as it is."""

    def __init__(self, path):
        self.path = path
        self.choices, self.writable = {}, True
        try:
            with open(path) as f:
                data = json.load(f)
            if not (isinstance(data, dict) and data.get('version') == CACHE_VERSION
                    and isinstance(data.get('choices'), dict)):
                raise ValueError('not a layer-form cache of this version')
            self.choices = data['choices']
        except (FileNotFoundError, NotADirectoryError):
            pass  # nothing stored yet
        except (OSError, ValueError) as e:
            self.writable = False  # what is there may be someone's file: never overwritten
            warn(f"the layer-form cache {path} cannot be read ({first_line(getattr(e, 'strerror', None) or e)}); "
                 f"measuring afresh, storing nothing (delete it, or name another with --layer_forms_cache)")

    def get(self, key, gan):
        record = self.choices.get(key)
        return record if fits(record, gan) else None

    def put(self, key, record):
        """Store `record` under `key`; whether it was stored."""
        if not self.writable:
            return False
        choices = dict(self.choices, **{key: record})
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            utils.write_json(self.path, {'version': CACHE_VERSION, 'choices': choices})
        except OSError as e:
            warn(f"the layer-form cache {self.path} cannot be written "
                 f"({first_line(e.strerror or e)}); the choice is kept in this run's checkpoints only")
            return False
        return True


def fits(record, gan):
    """Whether a stored record names a form for exactly the two-form layers of `gan`'s networks."""
    if not isinstance(record, dict):
        return False
    for key, model in (('generator', gan.G), ('discriminator', gan.D)):
        forms = record.get(key)
        if not isinstance(forms, dict) or set(forms) != set(convolutions.two_form_layers(model)) \
                or not set(forms.values()) <= set(convolutions.FORMS):
            return False
    return True


def warn(message):
    print(f"warning: {message}", file=sys.stderr, flush=True)


def choose_layer_forms(gan, batch_size, autotune='on', cache_path=None, saved=None):
    """The form each two-form layer of `gan`'s networks runs in, for global batches of
    `batch_size` images: the choice `saved` in a checkpoint when it was measured for the same
    machine and settings, else the one stored in the cache `cache_path` (--layer_forms_cache;
    None: default_cache_path()) for the same key, else measured now and stored (`autotune`
    'remeasure': measured now whatever is saved or stored; 'off': the fixed defaults). Returns
    the record to save (None where nothing was chosen: GPUs, --autotune off) and a line that says
    what was chosen and where it came from. Under torchrun the first process chooses and all take its choice, so that every
    process computes the same way."""
    device, precision, procs = gan.compute.device, gan.compute.precision, gan.procs
    if device.type != 'cpu' or autotune == 'off':
        return None, "layer forms: the fixed defaults (--autotune off, or not a CPU)"
    setting = {'machine': cpu_description(), 'torch': str(torch.__version__), 'precision': precision,
               'channels_last': gan.channels_last, 'batch_size': batch_size, 'processes': procs.world_size}
    remeasure = autotune == 'remeasure'
    if saved and not remeasure and all(saved.get(k, 1 if k == 'processes' else None) == v for k, v in setting.items()):
        record, how = saved, 'from the checkpoint, measured on this machine'
    elif not procs.is_main:
        record, how = None, 'chosen by the first process'
    else:
        path = cache_path or default_cache_path()
        stored = StoredChoices(path)
        cache_key = json.dumps(dict(setting, batch_share=batch_size // procs.world_size,
                              networks=networks_signature(gan)), sort_keys=True)
        record = None if remeasure else stored.get(cache_key, gan)
        how = f'from the layer-form cache {path}'
    if procs.is_main and record is None:
        started = time.time()
        n = min(batch_size // procs.world_size, AUTOTUNE_IMAGES)  # this process's part of a batch
        record = dict(setting)
        # A generator of its own: the run's random state must not depend on whether it measured.
        images = torch.Generator().manual_seed(0)
        for key, model, channels in (('generator', gan.G, 1), ('discriminator', gan.D, 3)):
            size = gan.model_config.image_size
            sample = torch.randn(n, channels, size, size, generator=images).contiguous(
                memory_format=gan.memory_format)
            chosen = convolutions.choose_forms(model, sample, gan.compute.autocast)
            record[key] = {name: form for name, (form, _, _) in chosen.items()}
        seconds = time.time() - started
        how = f'measured in {seconds:.1f} s' + (f', stored in {path}' if stored.put(cache_key, record) else '')
    record = procs.broadcast(record)
    dtype = torch.bfloat16 if precision == 'bf16' else torch.float32
    for key, models_ in (('generator', (gan.G, gan.G_ema)), ('discriminator', (gan.D,))):
        for model in models_:
            if model is not None:
                convolutions.set_forms(model, record[key], dtype)
    products = [f"{'G' if key == 'generator' else 'D'}.{name.split('.')[0]}"
                for key in ('generator', 'discriminator') for name, form in record[key].items() if form == 'matmul']
    return record, f"layer forms ({how}): {', '.join(products) or 'none'} as matrix products, the rest the library's"
