"""Write the generator of a checkpoint alone, in the safetensors format, to share it.

Takes a train.py checkpoint (epoch-end or mid-epoch) or a bare generator state dict such as the
reference's published weights, and writes the generator's tensors with its gen_norm, epoch and
step in the file's metadata: no optimizer, no discriminator, no pickled code. test.py and
colorize.py load the result wherever they take a checkpoint. train.py writes one of these next to
each epoch checkpoint by itself (generator_ep{E}.safetensors).
"""
import os
import sys

import utils
from utils import UserError


def parse_args(argv=None):
    p = utils.OneLineArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('checkpoint', help='a train.py checkpoint (.pt) or a generator state dict')
    p.add_argument('--out', help='the .safetensors file to write (default: next to the checkpoint; '
                                 'checkpoint_epE.pt becomes generator_epE.safetensors, X.pt becomes X.safetensors)')
    p.add_argument('--overwrite', action='store_true', help='replace --out if it exists (default: refuse)')
    return p.parse_args(argv)


def default_out(checkpoint):
    folder, name = os.path.split(checkpoint)
    stem = os.path.splitext(name)[0]
    if stem.startswith('checkpoint_ep'):
        stem = 'generator_ep' + stem[len('checkpoint_ep'):]
    return os.path.join(folder, stem + '.safetensors')


def main(argv=None):
    args = parse_args(argv)
    out = args.out or default_out(args.checkpoint)
    if not out.endswith('.safetensors'):
        raise UserError(f"--out {out}: the file name must end in .safetensors, which is how test.py and "
                        f"colorize.py recognize the format")
    if os.path.exists(out) and not args.overwrite:
        raise UserError(f"{out} exists: pick another --out, or pass --overwrite to replace it")
    ckpt = utils.load_checkpoint(args.checkpoint)
    _, norm, _ = utils.generator_state(ckpt, args.checkpoint)
    G, exact, seed = utils.load_generator(args.checkpoint, 'cpu', ckpt)  # proves the tensors build a generator
    run_args = ckpt.get('args') if isinstance(ckpt.get('args'), dict) else {}
    utils.save_generator_weights(out, G.state_dict(), norm, run_args.get('gen_dropout', 0.5),
                                 ckpt.get('epoch'), ckpt.get('step'), seed, exact)
    print(f"wrote {out} ({sum(t.numel() for t in G.state_dict().values()):,} values, --gen_norm {norm}"
          + ('' if exact else '; mid-epoch: test.py recomputes its batch-norm statistics') + ')')
    return 0


if __name__ == '__main__':
    sys.exit(utils.run_cli(main))
