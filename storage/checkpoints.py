"""The files a run leaves and what reads them back: training checkpoints, generators alone.

Training checkpoints (`checkpoint_ep{E}.pt` after an epoch, `checkpoint_step{S}.pt` within one)
are pickles read with weights_only=True: tensors and plain data, never code. A generator alone is
a .safetensors file: tensors and a string header that says how to build the network around them.
Every file is written whole or not at all (utils.atomic_write), after checking that the disk has
room for it, so a full disk ends in one line and the previous checkpoint stays intact. Both kinds
record the run's configs (models.ModelConfig and training's TrainConfig, as plain dicts); a file
of an earlier release, which has only the run's flags (`args`), gives them from those.
"""
import contextlib
import errno
import io
import json
import os
import pickle
import shutil
import warnings

import torch

import models
from utils import atomic_write, remove_torn_writes
from core.cli import UserError, first_line
from core.convolutions import swap_in_two_form_layers

STEP_CHECKPOINTS_KEPT = 3
CHECKPOINT_PREFIXES = ('checkpoint_', 'generator_ep')


# ---------------------------------------------------------------- writing and reading files

def write_whole(path, data, what):
    """Write the bytes `data` to `path` atomically, first checking the folder's free space, so a
    full disk is one line naming the folder and the space needed, and no torn file is left."""
    folder = os.path.dirname(os.path.abspath(path))
    needed = len(data)
    with contextlib.suppress(OSError):
        free = shutil.disk_usage(folder).free
        if free < needed:
            raise _disk_full(path, folder, needed, free, what)
    try:
        atomic_write(path, lambda f: f.write(data))
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _disk_full(path, folder, needed, None, what)
        raise UserError(f"could not write the {what} {path} ({e.strerror or e}); any earlier file there is intact: "
                        f"check that the folder is writable or pick another --save_path")


def _disk_full(path, folder, needed, free, what):
    have = f"{free / 1e6:,.0f} MB free" if free is not None else "the disk filled up while writing"
    return UserError(f"the disk is full: the {what} {os.path.basename(path)} needs {needed / 1e6:,.0f} MB in {folder} "
                     f"({have}); earlier checkpoints there are intact: free some space or pick another --save_path")


def serialized(state):
    """`state` as the bytes torch.save writes. Serializing in memory first means a failing disk
    is met by a plain write, not inside torch's archive writer (which aborts the process)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getbuffer()


def save_checkpoint(path, state):
    write_whole(path, serialized(state), 'checkpoint')


def load_checkpoint(path):
    """A checkpoint as a dict. A .safetensors file (a generator alone) comes back shaped like a
    training checkpoint: {'generator', 'args', 'model_config', 'epoch', 'step', ...}; so does a
    model folder."""
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, 'model.safetensors')):
        return load_generator_weights(os.path.join(path, 'model.safetensors'))
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


# ---------------------------------------------------------------- names in a run's folder

def epoch_checkpoint_path(save_path, epoch):
    return os.path.join(save_path, f'checkpoint_ep{epoch}.pt')


def step_checkpoint_path(save_path, step):
    return os.path.join(save_path, f'checkpoint_step{step}.pt')


def generator_weights_path(save_path, epoch):
    return os.path.join(save_path, f'generator_ep{epoch}.safetensors')


def newest_checkpoint(save_path):
    """The most recently written checkpoint in `save_path` (writes are atomic, so each is whole)."""
    names = [n for n in os.listdir(save_path) if n.startswith('checkpoint_') and n.endswith('.pt')]
    if not names:
        raise UserError(f"--resume latest: no checkpoint in {save_path}; start without --resume")
    return max((os.path.join(save_path, n) for n in names), key=os.path.getmtime)


def prune_step_checkpoints(save_path):
    """Keep the newest few step checkpoints; epoch checkpoints are never removed."""
    steps = sorted((n for n in os.listdir(save_path) if n.startswith('checkpoint_step') and n.endswith('.pt')),
                   key=lambda n: int(n[len('checkpoint_step'):-3]))
    for name in steps[:-STEP_CHECKPOINTS_KEPT]:
        os.remove(os.path.join(save_path, name))


def clear_torn_writes(save_path):
    """Remove what a process killed mid-write left of a checkpoint or generator file."""
    for prefix in CHECKPOINT_PREFIXES:
        remove_torn_writes(save_path, prefix)


# ---------------------------------------------------------------- the training checkpoint

def training_checkpoint(gan, epoch, batches_done, step, flags, rng_states, layer_forms, G_eval=None,
                        provenance=None, gpu_rng_states=None, decoding=None):
    """Everything a resumed run needs, as one dict. `flags`: the run's command line as a dict
    (saved as `args`, for the record; the GAN's configs are saved as `model_config` and
    `train_config`). `G_eval`: the generator just validated, with exact batch-norm statistics;
    without it (mid-epoch saves, Ctrl-C) the generator is the averaged weights with training's
    running statistics, which loading for use recomputes. `rng_states`: every process's random
    state, the first process's first; `provenance`: what made the run (provenance.py);
    `gpu_rng_states`: every process's GPU random state, in the same order, where the run is on
    GPUs (saved as `rng_cuda`, a list even for one process); `decoding`: the decoding chosen on
    the run's held-out images, which G_eval decodes at."""
    state = gan.state_dict()
    state.update({
        'generator': G_eval.state_dict() if G_eval is not None else gan.generator_with_running_statistics(),
        'generator_exact_statistics': G_eval is not None,
        'epoch': epoch, 'batches_done': batches_done, 'step': step, 'args': dict(flags),
        'model_config': gan.model_config.to_dict(), 'train_config': gan.train_config.to_dict(),
        'rng': rng_states[0], 'rng_per_process': rng_states if len(rng_states) > 1 else None,
        'layer_forms': layer_forms, 'provenance': provenance,
    })
    if decoding:
        state['decoding'] = decoding
    if gpu_rng_states and all(t is not None for t in gpu_rng_states):
        state['rng_cuda'] = list(gpu_rng_states)
    return state


def saved_flags(ckpt):
    """The run's flags a checkpoint or generator file recorded (empty where it has none)."""
    return ckpt.get('args') if isinstance(ckpt, dict) and isinstance(ckpt.get('args'), dict) else {}


def model_config_of(ckpt):
    """The models.ModelConfig a checkpoint or generator file was trained with: its `model_config`,
    or, in a file of an earlier release, the one its flags give."""
    if isinstance(ckpt, dict) and isinstance(ckpt.get('model_config'), dict):
        return models.ModelConfig.from_dict(ckpt['model_config'])
    return models.ModelConfig.from_flags(saved_flags(ckpt))


def _as_flag(field, value):
    if field == 'class_context':
        return '--class_loss above 0 (a class context)' if value else '--class_loss 0 (no class context)'
    return f"--{field} {value}"


def check_architecture(saved, ours, path):
    """Refuse to resume a checkpoint whose networks (models.ModelConfig `saved`) have other layers
    or shapes than this run's (`ours`)."""
    clashes = [f for f in models.ModelConfig.SHAPE_FIELDS if getattr(saved, f) != getattr(ours, f)]
    if clashes:
        theirs = ' '.join(_as_flag(f, getattr(saved, f)) for f in clashes)
        this_run = ' '.join(_as_flag(f, getattr(ours, f)) for f in clashes)
        raise UserError(f"checkpoint {path} was trained with {theirs}, but this run has {this_run}; "
                        f"resume with the checkpoint's flags or start a new --save_path")


def restore_training(ckpt, path, gan):
    """Load a training checkpoint into `gan` (networks, optimizers, scaler); returns the place
    to go on from: (epoch, batches done in it, step). Its step and batch counts are of global
    batches, so a checkpoint of any number of processes resumes in any other."""
    if not isinstance(ckpt, dict) or not {'generator', 'generator_train', 'discriminator'} <= set(ckpt):
        raise UserError(f"{path} is not a training checkpoint of this tool (no generator and discriminator)")
    check_architecture(model_config_of(ckpt), gan.model_config, path)
    try:
        gan.load_state_dict(ckpt)
    except (RuntimeError, KeyError, ValueError) as e:
        raise UserError(f"checkpoint {path} does not fit this configuration ({first_line(e)}); "
                        f"resume with the flags it was trained with")
    batches_done = ckpt.get('batches_done', 0)
    if not batches_done:  # a finished epoch: go on with the next one
        return ckpt['epoch'] + 1, 0, ckpt['step']
    return ckpt['epoch'], batches_done, ckpt['step']


# ---------------------------------------------------------------- the generator alone

def generator_config(run_args):
    """What builds a generator, from a run's flags or a models.ModelConfig as a dict (whose
    fields are named as the flags; a previous release's flags lack image_size: 32; the ab head is
    named only where it is not the reference's regression): a generator file's header keys."""
    image_size = int(run_args.get('image_size') or 32)
    config = {'gen_norm': run_args.get('gen_norm', 'batch'), 'gen_dropout': float(run_args.get('gen_dropout', 0.5)),
              'image_size': image_size, 'network': models.network_family(image_size)}
    if run_args.get('ab_head', 'regress') != 'regress':
        config['ab_head'] = run_args['ab_head']
    return config


def build_generator(config, state=None):
    """The generator `config` describes; a colour-distribution head takes its number of bins, and
    a class context (train.py --class_loss) its number of classes, from the state dict it is
    built for."""
    logits = (state or {}).get('final.logits.weight')
    classes = (state or {}).get('context.classes.weight')
    # Two-form layers as in training: in bf16 on a CPU, a generator computes as it did there.
    return swap_in_two_form_layers(models.build_generator(
        config['image_size'], config['gen_norm'], config['gen_dropout'], config.get('ab_head', 'regress'),
        0 if logits is None else logits.shape[0], 0 if classes is None else classes.shape[0]))


def save_generator_weights(path, state, config, epoch=None, step=None, seed=0, exact_statistics=True, holdout=0,
                           dataset=None, data_path=None, model_config=None, train_config=None, decoding=None):
    """Write the generator state dict `state` to `path` (.safetensors): tensors and a
    string-to-string header saying how to build the network around them (`config`, see
    generator_config), where in its run it comes from, how many training images the run kept
    out (train.py --holdout, where it kept some), its training data (`dataset`, `data_path`:
    where a mid-epoch generator's batch-norm statistics are computed from), the run's configs
    (`model_config`, `train_config`: plain dicts, stored as JSON) and the decoding its run chose
    on its held-out images (`decoding`, metrics/decoding.record, as JSON; the tensors decode at
    it already)."""
    from safetensors.torch import save
    tensors = {name: t.detach().cpu().contiguous() for name, t in state.items()}
    metadata = {'format': 'pt', 'model': 'Nazeri et al. 2018 colorization generator (colorization-gan)',
                **{key: str(value) for key, value in config.items()},
                'epoch': str(epoch), 'step': str(step), 'seed': str(seed),
                'exact_statistics': str(bool(exact_statistics)).lower()}
    if holdout:
        metadata['holdout'] = str(int(holdout))
    metadata.update((key, str(value)) for key, value in (('dataset', dataset), ('data_path', data_path))
                    if value is not None)
    metadata.update((key, json.dumps(value, sort_keys=True))
                    for key, value in (('model_config', model_config), ('train_config', train_config)) if value)
    if decoding:
        metadata['decoding'] = json.dumps(decoding)
    write_whole(path, save(tensors, metadata=metadata), 'generator file')
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
        raise UserError(f"{path} cannot be read as safetensors ({first_line(e)}): it is corrupt or truncated; "
                        f"export it again with export.py")
    if 'gen_norm' not in metadata:
        return state
    decoding = None
    with contextlib.suppress(KeyError, ValueError):
        decoding = json.loads(metadata['decoding'])

    def number(key, kind, default=None):
        with contextlib.suppress(KeyError, ValueError):
            return kind(metadata[key])
        return default

    def config(key):
        with contextlib.suppress(KeyError, ValueError):
            return json.loads(metadata[key])
        return None
    configs = {key: config(key) for key in ('model_config', 'train_config')}
    return {'generator': state, **{key: value for key, value in configs.items() if isinstance(value, dict)},
            'generator_exact_statistics': metadata.get('exact_statistics') != 'false',
            'epoch': number('epoch', int), 'step': number('step', int),
            'args': {'gen_norm': metadata['gen_norm'], 'gen_dropout': number('gen_dropout', float, 0.0),
                     'seed': number('seed', int, 0), 'image_size': number('image_size', int, 32),
                     **{key: metadata[key] for key in ('dataset', 'data_path', 'ab_head') if key in metadata},
                     **({'holdout': number('holdout', int, 0)} if 'holdout' in metadata else {})},
            **({'decoding': decoding} if isinstance(decoding, dict) else {})}


def generator_state(ckpt, path):
    """(state dict, generator config, exact statistics?) from a train.py checkpoint, a generator
    file, or a bare state dict in the reference's layout (its published weights)."""
    if isinstance(ckpt, dict) and isinstance(ckpt.get('generator'), dict):
        saved = ckpt['model_config'] if isinstance(ckpt.get('model_config'), dict) else saved_flags(ckpt)
        return ckpt['generator'], generator_config(saved), ckpt.get('generator_exact_statistics', True)
    if isinstance(ckpt, dict) and 'down1.model.0.weight' in ckpt and 'final.model.0.weight' in ckpt:
        norm = 'batch' if 'down1.model.1.running_mean' in ckpt else 'instance'
        return ckpt, generator_config({'gen_norm': norm}), True
    raise UserError(f"{path} holds no generator: expected a train.py checkpoint or a generator state dict")


def load_generator(path, device, ckpt=None):
    """(generator in eval mode on `device`, whether its batch-norm statistics are exact, the
    run's flags as far as the file knows them) from the file `path` (or `ckpt`, read from it)."""
    ckpt = load_checkpoint(path) if ckpt is None else ckpt
    state, config, exact = generator_state(ckpt, path)
    G = build_generator(config, state)
    try:
        G.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"{path} is not a generator of this architecture (--image_size {config['image_size']}, "
                        f"--gen_norm {config['gen_norm']}): {first_line(e)}")
    found = dict(saved_flags(ckpt), **config)
    if isinstance(ckpt, dict) and isinstance(ckpt.get('decoding'), dict):
        found['decoding'] = ckpt['decoding']  # the decoding the run chose; G's buffers hold it
    return G.to(device).eval(), exact, found


def generator_for_use(path, compute, training_images, ckpt=None):
    """The generator of `path` ready to colorize: eval mode, exact batch-norm statistics. Where
    the file lacks them (a mid-epoch checkpoint), they are computed as train.py does at an epoch's
    end, over the training images `training_images(run_args)` returns. Returns (G, run_args)."""
    from core.calibration import recalibrate_generator
    G, exact, run_args = load_generator(path, compute.device, ckpt)
    if not exact:
        print(f"{path}: a mid-epoch checkpoint; computing its exact batch-norm statistics as train.py would")
        recalibrate_generator(G, training_images(run_args), run_args.get('seed', 0), compute.device, compute.autocast)
    return G, run_args


def set_dropout(model, on):
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.train(on)
