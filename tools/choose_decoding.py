"""Choose how a colour-distribution generator decodes (its temperature, and its blend where it has
both heads) on training images its run kept out, never on the test set.

    python train.py --recipe spectral --ab_head classify --rebalance 0.5 --holdout 2000 ...
    python tools/choose_decoding.py --checkpoint runs/classify/checkpoint_ep0.pt --data_path ../shared/data \\
        --temperatures 0.1 0.2 0.3 0.38 0.5 1 --save_path runs/classify/decoding

Each setting is scored by test.py on the held-out images (`test.py --split holdout`: the last N
training images that train.py --holdout N kept out), one subprocess per setting (test.py is a
command line: nothing of it is imported here), into SAVE_PATH/T<t>_W<w>/metrics.json. The rule is
metrics/decoding.py's, the one train.py applies by itself at each epoch's end of such a run: of
the settings whose colourfulness gap (ΔCF) is at most --max_gap, the one with the highest
semantic accuracy, then the lowest classifier FD, then the lowest mean |ab error|; where none
comes that close, or no classifier judged, the one with the smallest gap. This tool is for other
temperatures and blends than train.py tries. SAVE_PATH/decoding.md holds every setting's
scores, the rule and the choice; decoding.json the same as data. The scoring classifier trained
on every CIFAR-10 training image, these held-out ones too, so its two measures here are higher
(semantic accuracy) and lower (FD) than on the test set: they rank the settings, nothing more.
"""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import utils  # noqa: E402
from core.cli import OneLineArgumentParser, UserError, number_in, run_cli  # noqa: E402
from metrics import decoding  # noqa: E402
from metrics.measures import measures_of  # noqa: E402
from storage import checkpoints  # noqa: E402

DEFAULT_TEMPERATURES = decoding.TEMPERATURES
# The measures in decoding.md, in this order: the rule's, with colourfulness beside its gap.
MEASURES = measures_of('colorfulness', 'colorfulness_gap', 'mean_ab_error', 'semantic_accuracy', 'classifier_fd')


def parse_args(argv=None):
    p = OneLineArgumentParser(prog='tools/choose_decoding.py', description=__doc__.split('\n\n')[0])
    p.add_argument('--checkpoint', required=True, metavar='CK',
                   help='a train.py checkpoint or generator file of a run with --ab_head classify or both and '
                        '--holdout N')
    p.add_argument('--dataset', choices=('cifar10', 'folder'), default='cifar10', help='as test.py\'s (default: cifar10)')
    p.add_argument('--data_path', default='./data', help="as test.py's (default: ./data)")
    p.add_argument('--temperatures', type=number_in(float, 0, None, low_open=True), nargs='+',
                   default=list(DEFAULT_TEMPERATURES), metavar='T',
                   help=f"the temperatures tried (default: {' '.join(map(str, DEFAULT_TEMPERATURES))})")
    p.add_argument('--blends', type=number_in(float, 0, 1), nargs='+', default=None, metavar='W',
                   help="for a generator with both heads, the blends tried (default: the one its file decodes at)")
    p.add_argument('--max_gap', type=number_in(float, 0), default=3.0,
                   help="the colourfulness gap a setting may leave (the issue's goal: 3) (default: 3)")
    p.add_argument('--save_path', default='decoding', help='where the scores and decoding.md go (default: decoding)')
    p.add_argument('--device', default='auto', help="as test.py's (default: auto)")
    p.add_argument('--precision', default='auto', help="as test.py's (default: auto)")
    return p.parse_args(argv)


def head_of(path):
    """The generator's ab head ('regress', 'classify' or 'both'), read from its file."""
    _, config, _ = checkpoints.generator_state(checkpoints.load_checkpoint(path), path)
    return config.get('ab_head', 'regress')


def score_setting(args, temperature, blend):
    """test.py on the held-out images at one decoding: its scores for the generator."""
    name = decoding.setting_name(temperature, blend)
    folder = os.path.join(args.save_path, name)
    command = [sys.executable, os.path.join(ROOT, 'test.py'), '--checkpoints', args.checkpoint, '--labels', name,
               '--split', 'holdout', '--dataset', args.dataset, '--data_path', args.data_path, '--num_grids', '0',
               '--temperature', str(temperature), '--save_path', folder, '--device', args.device,
               '--precision', args.precision] + ([] if blend is None else ['--blend', str(blend)])
    print(f"{name}: scoring the held-out images", flush=True)
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise UserError(f"test.py failed at {name}: {lines[-1] if lines else f'exit {done.returncode}'}")
    with open(os.path.join(folder, 'metrics.json')) as f:
        metrics = json.load(f)
    return dict(metrics['checkpoints'][name], temperature=temperature, blend=blend), metrics


def decoding_table(checkpoint, settings, chosen, why, truth, images, command):
    shown = [m for m in MEASURES if all(m.key in s for s in settings)]
    lines = [f"Decodings of {checkpoint} on {images} held-out training images "
             f"(the truth's colourfulness {truth:.2f}).", '',
             '| temperature | blend | ' + ' | '.join(m.title.replace('|', '\\|') for m in shown) + ' |',
             '|---|---|' + '---|' * len(shown)]
    for s in settings:
        mark = ' **(chosen)**' if s is chosen else ''
        lines.append(f"| {s['temperature']:g}{mark} | {'' if s['blend'] is None else format(s['blend'], 'g')} | "
                     + ' | '.join(m.text(s[m.key]) for m in shown) + ' |')
    flags = f"--temperature {chosen['temperature']:g}" + ('' if chosen['blend'] is None else f" --blend {chosen['blend']:g}")
    lines += ['', f"Chosen: `{flags}` ({why}).", '', 'Command: `' + ' '.join(command) + '`', '']
    return '\n'.join(lines), flags


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    head = head_of(args.checkpoint)
    if head == 'regress':
        raise UserError(f"{args.checkpoint} has the reference's regression head: it has no temperature or blend to "
                        f"choose (its dial is test.py --chroma_gain)")
    if args.blends and head != 'both':
        raise UserError(f"--blends is for generators with both heads, and {args.checkpoint} has --ab_head {head}")
    utils.check_writable_folder(args.save_path, '--save_path')
    blends = args.blends or [None]
    settings, metrics = [], None
    for temperature in args.temperatures:
        for blend in blends:
            scores, metrics = score_setting(args, temperature, blend)
            settings.append(scores)
    chosen, why = decoding.choose(settings, args.max_gap, judged='semantic_accuracy' in settings[0])
    command = ['python', 'tools/choose_decoding.py'] + argv
    table, flags = decoding_table(args.checkpoint, settings, chosen, why, metrics['truth_colorfulness'],
                                  metrics['images'], command)
    utils.atomic_write(os.path.join(args.save_path, 'decoding.md'), lambda f: f.write(table), mode='w')
    utils.write_json(os.path.join(args.save_path, 'decoding.json'),
                     {'settings': settings, 'chosen': {'temperature': chosen['temperature'], 'blend': chosen['blend']},
                      'rule': why, 'max_gap': args.max_gap, 'images': metrics['images'],
                      'truth_colorfulness': metrics['truth_colorfulness'], 'command': command})
    print(table)
    print(f"chosen: {flags}; wrote decoding.md and decoding.json to {args.save_path}")
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
