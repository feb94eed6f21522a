"""Write the generator of a checkpoint alone, to share it: one safetensors file, or a model folder.

Takes a train.py checkpoint (epoch-end or mid-epoch) or a bare generator state dict such as the
reference's published weights. `--out` writes the generator's tensors with how to build it in the
file's metadata: no optimizer, no discriminator, no pickled code. `--folder` writes what a model
hub takes: model.safetensors, config.json (how to build the network and how it was trained) and
README.md, a model card. test.py and colorize.py load either wherever they take a checkpoint.
train.py writes a generator file next to each epoch checkpoint by itself (generator_ep{E}.safetensors).
"""
import json
import os
import sys

import utils
from core.cli import OneLineArgumentParser, UserError, run_cli
from metrics.measures import MEASURES
from storage import checkpoints, modelcard


def parse_args(argv=None):
    p = OneLineArgumentParser(prog='export.py', description=__doc__.split('\n\n')[0])
    p.add_argument('checkpoint', help='a train.py checkpoint (.pt), a generator .safetensors file, or a state dict')
    p.add_argument('--out', help='the .safetensors file to write (default: next to the checkpoint; '
                                 'checkpoint_epE.pt becomes generator_epE.safetensors, X.pt becomes X.safetensors)')
    p.add_argument('--folder', metavar='DIR',
                   help='write a model folder instead: DIR/model.safetensors, DIR/config.json and DIR/README.md')
    p.add_argument('--metrics', metavar='JSON',
                   help="with --folder: a test.py metrics.json whose scores go into the model card")
    p.add_argument('--overwrite', action='store_true', help='replace what exists (default: refuse)')
    args = p.parse_args(argv)
    if args.folder and args.out:
        p.error("--out and --folder are two ways to export: pick one")
    if args.metrics and not args.folder:
        p.error("--metrics goes into a model card: use it with --folder")
    return args


def default_out(checkpoint):
    folder, name = os.path.split(checkpoint)
    stem = os.path.splitext(name)[0]
    if stem.startswith('checkpoint_ep'):
        stem = 'generator_ep' + stem[len('checkpoint_ep'):]
    return os.path.join(folder, stem + '.safetensors')


def read_metrics(path):
    try:
        with open(path) as f:
            metrics = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"--metrics {path} cannot be read as JSON ({e}): pass a metrics.json that test.py wrote")
    if not isinstance(metrics, dict) or not isinstance(metrics.get('checkpoints'), dict) or not metrics['checkpoints']:
        raise UserError(f"--metrics {path} is not a test.py metrics.json (no 'checkpoints' scores)")
    return metrics


def main(argv=None):
    args = parse_args(argv)
    out = os.path.join(args.folder, 'model.safetensors') if args.folder else args.out or default_out(args.checkpoint)
    if not out.endswith('.safetensors'):
        raise UserError(f"--out {out}: the file name must end in .safetensors, which is how test.py and "
                        f"colorize.py recognize the format")
    if os.path.exists(out) and not args.overwrite:
        raise UserError(f"{out} exists: pick another {'--folder' if args.folder else '--out'}, "
                        f"or pass --overwrite to replace it")
    metrics = read_metrics(args.metrics) if args.metrics else None
    ckpt = checkpoints.load_checkpoint(args.checkpoint)
    G, exact, run_args = checkpoints.load_generator(args.checkpoint, 'cpu', ckpt)  # proves the tensors build a generator
    config = checkpoints.generator_config(run_args)
    # a previous release's checkpoint recorded its flags alone: its model config comes from them
    model_config = ckpt.get('model_config') or (checkpoints.model_config_of(ckpt).to_dict()
                                                if checkpoints.saved_flags(ckpt) else None)
    if args.folder:
        utils.check_writable_folder(args.folder, '--folder')
    # The run's data travels with the generator: a mid-epoch one's statistics are computed from it.
    checkpoints.save_generator_weights(out, G.state_dict(), config, ckpt.get('epoch'), ckpt.get('step'),
                                       run_args.get('seed', 0), exact, run_args.get('holdout', 0),
                                       run_args.get('dataset'), run_args.get('data_path'),
                                       model_config, ckpt.get('train_config'), run_args.get('decoding'))
    if args.folder:
        card_config = modelcard.folder_config(config, run_args, ckpt)
        utils.write_json(os.path.join(args.folder, 'config.json'), card_config)
        card = modelcard.model_card(card_config, metrics, MEASURES)
        utils.atomic_write(os.path.join(args.folder, 'README.md'), lambda f: f.write(card), mode='w')
    print(f"wrote {args.folder + ' (model.safetensors, config.json, README.md)' if args.folder else out} "
          f"({sum(t.numel() for t in G.state_dict().values()):,} values, --image_size {config['image_size']}, "
          f"--gen_norm {config['gen_norm']}" + ('' if exact else '; mid-epoch: test.py recomputes its batch-norm '
                                                               'statistics') + ')')
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
