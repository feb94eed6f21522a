"""Draw the training curves of one or several train.py runs on one chart.

The panels are curves.py's: the training losses against the step, and the validation's mean
|ab error|, colourfulness, colourfulness gap, semantic accuracy and classifier FD against the
epoch. train.py draws --save_path/curves.png of its own run after each epoch; run this by hand on
running or finished runs to compare them.
"""
import os
import sys

from core.cli import OneLineArgumentParser, run_cli
from metrics.curves import draw_runs


def parse_args(argv=None):
    p = OneLineArgumentParser(prog='plot.py', description=__doc__.split('\n\n')[0])
    p.add_argument('--save_path', nargs='+', default=['./checkpoints'], metavar='RUN',
                   help="train.py's --save_path of each run: reads log.csv (and steps.csv) there (default: ./checkpoints)")
    p.add_argument('--labels', nargs='+', metavar='LABEL',
                   help='a name per run for the legend (default: the folder names)')
    p.add_argument('--out', help='the picture to write (default: RUN/curves.png for one run; '
                                 'curves_LABEL1_LABEL2.png in the current folder for several)')
    args = p.parse_args(argv)
    if args.labels and len(args.labels) != len(args.save_path):
        p.error(f"--labels gives {len(args.labels)} names for {len(args.save_path)} runs: give one per --save_path")
    return args


def main(argv=None):
    args = parse_args(argv)
    labels = args.labels or [os.path.basename(os.path.normpath(p)) for p in args.save_path]
    if args.out:
        out = args.out
    elif len(args.save_path) == 1:
        out = os.path.join(args.save_path[0], 'curves.png')
    else:
        out = 'curves_' + '_'.join(''.join(c if c.isalnum() or c in '-.' else '-' for c in label)
                                   for label in labels) + '.png'
    print(f"wrote {draw_runs(args.save_path, labels, out)}")
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
