"""The flags of a training run (train.py's command line): names, defaults, ranges and checks, and
the two configs they make (configs_from_args), which are all the library takes of them."""
import sys

from dataset import DATASETS
from models import (AB_HEADS, DEFAULT_BLEND, DEFAULT_TEMPERATURE, DISCRIMINATOR_NORMS, GENERATOR_NORMS, IMAGE_SIZES,
                    ModelConfig)
from core.cli import OneLineArgumentParser, add_compute_flags, number_in
from metrics.classifier import DEFAULT_PATH as CLASSIFIER_PATH
from storage.checkpoints import STEP_CHECKPOINTS_KEPT
from training.config import TrainConfig
from training.layer_forms import CACHE_ENV

DESCRIPTION = "Train the colorization GAN of Nazeri et al. (2018) on CIFAR-10 or on a folder of photographs."
# The two recipes the reference published, as flags; `--recipe NAME` sets them as defaults, so a
# flag given beside it still wins.
RECIPES = {
    'batchnorm': ['--max_epoch', '200', '--smoothing', '0.9', '--l1_weight', '0.99', '--base_lr_gen', '3e-4',
              '--base_lr_disc', '6e-5', '--lr_decay_steps', '6e4', '--disc_norm', 'batch', '--apply_weight_init', '1'],
    'spectral': ['--max_epoch', '100', '--smoothing', '1.0', '--l1_weight', '0.985', '--base_lr_gen', '2e-4',
                 '--base_lr_disc', '2e-4', '--lr_decay_steps', '4e4', '--disc_norm', 'spectral',
                 '--apply_weight_init', '0'],
}
# The colour-distribution recipe the 2-epoch confirmation chose (docs/notes/2026-12-07-confirmation.md):
# Zhang et al.'s distribution over ab bins, rebalanced, on the batch-norm recipe (whose discriminator
# gave the better classifier FD in every table); the last 2,000 training images held out, on which the
# run chooses its temperature at each epoch's end (the fallback, before a choice or with --holdout 0,
# is the confirmation's choice). Until 2026-12-07 vivid was the spectral recipe with
# --color_enhance 1.2 --min_colorfulness 15 (those flags still give it).
RECIPES['vivid'] = RECIPES['batchnorm'] + ['--ab_head', 'classify', '--rebalance', '0.5', '--holdout', '2000',
                                       '--temperature', '0.38']


def training_parser():
    p = OneLineArgumentParser(prog='train.py', description=DESCRIPTION)
    positive = number_in(float, 0, None, low_open=True)
    p.add_argument('--dataset', choices=DATASETS, default='cifar10',
                   help='cifar10, or folder: any folder of photographs (--data_path holding train/ and val/, or '
                        "Places365's layouts) (default: cifar10)")
    p.add_argument('--data_path', default='./data', help='where the data set is; CIFAR-10 is downloaded there if '
                                                         'missing (default: ./data)')
    p.add_argument('--image_size', type=int, choices=IMAGE_SIZES, default=None,
                   help="the images' side in pixels, which picks the networks: 32, the reference's; 64, 128 or 256, "
                        "Nazeri et al.'s U-Net and 70x70 PatchGAN (default: 32 for cifar10, 256 for folder)")
    p.add_argument('--save_path', default='./checkpoints', help='checkpoints, args.json and log.csv (default: ./checkpoints)')
    p.add_argument('--samples_path', default='samples/', help='per-epoch sample grids (default: samples/)')
    p.add_argument('--save_freq', type=number_in(int, 1), default=5, help='checkpoint every N epochs, and after the last (default: 5)')
    p.add_argument('--batch_size', type=number_in(int, 1), default=32, help='(default: 32)')
    p.add_argument('--num_workers', type=number_in(int, 0), default=4,
                   help='processes decoding a folder data set (CIFAR-10 lives in memory and needs none) (default: 4)')
    p.add_argument('--start_epoch', type=number_in(int, 0), default=0,
                   help='>0: resume from checkpoint_ep{start_epoch-1}.pt in --save_path (default: 0)')
    p.add_argument('--max_epoch', type=number_in(int, 1), default=200, help='(default: 200)')
    p.add_argument('--smoothing', type=number_in(float, 0, 1, low_open=True), default=0.9,
                   help='real label for the discriminator, in (0, 1]; 1 means no smoothing (default: 0.9)')
    p.add_argument('--l1_weight', type=number_in(float, 0, 1), default=0.99,
                   help='weight of L1 in the generator loss, in [0, 1] (default: 0.99)')
    p.add_argument('--base_lr_gen', type=positive, default=3e-4, help='(default: 3e-4)')
    p.add_argument('--base_lr_disc', type=positive, default=6e-5, help='(default: 6e-5)')
    p.add_argument('--lr_decay_rate', type=positive, default=0.1, help='(default: 0.1)')
    p.add_argument('--lr_decay_steps', type=positive, default=6e4, help='(default: 6e4)')
    p.add_argument('--gen_norm', choices=GENERATOR_NORMS, default='batch', help='(default: batch)')
    p.add_argument('--disc_norm', choices=DISCRIMINATOR_NORMS, default='batch', help='(default: batch)')
    p.add_argument('--gen_dropout', type=number_in(float, 0, 1, high_open=True), default=0.5,
                   help="dropout probability after the generator's first two decoder blocks, in [0, 1); 0 turns it "
                        "off, so that runs compare step for step (default: 0.5, the reference's)")
    p.add_argument('--apply_weight_init', type=int, choices=(0, 1), default=0,
                   help='1: N(0, 0.02) conv weights, N(1, 0.02) batch-norm weights (default: 0)')
    p.add_argument('--max_steps', type=number_in(int, 1), default=None,
                   help='stop after N optimizer steps, then validate, draw and checkpoint as at an epoch end')
    p.add_argument('--val_batches', type=number_in(int, 1), default=None,
                   help='validate on the first K test batches only (default: all)')
    add_compute_flags(p)
    p.add_argument('--tf32', choices=('on', 'off'), default='on',
                   help='on a CUDA GPU, let fp32 matrix products and convolutions round their inputs to TF32 (Ampere '
                        'and later; --precision fp32 and what autocast leaves in fp32); off: full fp32. Set '
                        'explicitly, since torch\'s defaults vary; ignored elsewhere (default: on)')
    p.add_argument('--ema_decay', type=number_in(float, 0, 1, high_open=True), default=0.999,
                   help="the generator that is validated and saved averages the trained weights with this decay, "
                        "warmed up over the first steps; 0: use the trained weights as they are (default: 0.999)")
    p.add_argument('--resume', metavar='PATH|latest',
                   help='resume from this checkpoint, or from the newest one in --save_path')
    p.add_argument('--save_steps', type=number_in(int, 1), default=None,
                   help=f'also checkpoint every N steps, keeping the newest {STEP_CHECKPOINTS_KEPT} '
                        f'(default: off)')
    p.add_argument('--log_steps', type=number_in(int, 1), default=50,
                   help="append the training losses averaged over every N steps to --save_path/steps.csv, "
                        "for plot.py's step axis (default: 50)")
    p.add_argument('--tensorboard', choices=('on', 'off'), default='on',
                   help='write TensorBoard event files into --save_path/tensorboard: the losses every --log_steps '
                        'steps, the validation scores and sample grid every epoch (default: on)')
    p.add_argument('--nan_policy', choices=('stop', 'skip'), default='stop',
                   help='on a NaN or infinite loss: stop (keeping the last good checkpoint) or skip the step, '
                        'leaving networks, optimizers and scaler as they were (default: stop)')
    p.add_argument('--channels_last', choices=('auto', 'on', 'off'), default='auto',
                   help='channels-last memory format; auto: on for CPUs, where it measurably helps (default: auto)')
    p.add_argument('--autotune', choices=('on', 'off', 'remeasure'), default='on',
                   help="on a CPU, time both forms of the layers that can run as matrix products and keep the faster "
                        "of each: measured once per machine and settings (a few seconds) and stored in the layer-form "
                        "cache, which later runs with the same CPU, torch, precision, memory format, batch share and "
                        "networks reuse, so that the same command trains the same run; a resumed run keeps its "
                        "checkpoint's choice. remeasure: measure again and replace the stored choice; off: the fixed "
                        "default forms (default: on)")
    p.add_argument('--layer_forms_cache', default=None, metavar='PATH',
                   help=f"the layer-form cache, a JSON file (default: ${CACHE_ENV} where set, else "
                        "$XDG_CACHE_HOME or ~/.cache, then colorization/layer_forms.json)")
    p.add_argument('--seed', type=int, default=0, help='seeds weights, data order, flips and dropout (default: 0)')
    p.add_argument('--classifier', default=CLASSIFIER_PATH, metavar='PATH|off',
                   help="the scoring classifier whose semantic accuracy and feature distance (classifier FD) each "
                        "epoch's validation reports, on CIFAR-10's classes at 32 px; off: none "
                        "(default: weights/cifar10_classifier.safetensors)")
    p.add_argument('--recipe', choices=tuple(RECIPES), default=None,
                   help="a named recipe's flags as defaults (flags given beside it win): batchnorm and spectral, "
                        "the reference's two published command lines; vivid, this project's: the batch-norm one with "
                        "a distribution of colours (--ab_head classify --rebalance 0.5) whose temperature the run "
                        "chooses on the last 2,000 training images it holds out (--holdout 2000; --temperature "
                        "0.38 until the first choice), the 2-epoch confirmation's choice (docs/notes) (default: "
                        "none)")
    p.add_argument('--holdout', type=number_in(int, 0, None), default=0, metavar='N',
                   help="keep the last N training images out of training: the validation split on which test.py "
                        "--split holdout and tools/choose_decoding.py choose a temperature or blend, never the "
                        "test set (default: 0, train on all)")
    add_remedy_flags(p)
    return p


def add_remedy_flags(p):
    """The remedies for grey outputs (remedies.py), each off by default. These four because each
    is one local change (the targets, the L1's weights, the training list, the adversarial loss),
    needs no pretrained network and no extra pass of either network, and each was reported to
    raise colourfulness; feature matching was left out: it needs D's inner features from every
    discriminator pass of the step, a larger change to the step."""
    p.add_argument('--color_enhance', type=number_in(float, 1, 3), default=1.0,
                   help="DDColor's colour-enhanced targets: the training images' ab scaled by F and clipped to "
                        "[-1, 1] (validation keeps the truth), in [1, 3]; 1 is off (default: 1.0)")
    p.add_argument('--rebalance', type=number_in(float, 0, 1, low_open=True), default=None, metavar='LAMBDA',
                   help="Zhang et al.'s colour rebalancing: each pixel's L1 weighted by the inverse of its ab's "
                        "smoothed frequency in the training set, mixed with uniform by LAMBDA in (0, 1] "
                        "(the paper: 0.5); 1 weighs every pixel alike; with --ab_head classify or both, the "
                        "cross-entropy's weights (default: off)")
    p.add_argument('--min_colorfulness', type=number_in(float, 0, None), default=None, metavar='C',
                   help="BigColor's filter: train without the images whose colourfulness (Hasler and Suesstrunk) "
                        "is below C (BigColor: 15), listed in --save_path/dropped_colorfulness.txt; 0 drops none, "
                        "which turns off a recipe's (default: off)")
    p.add_argument('--adv_loss', choices=('bce', 'hinge'), default='bce',
                   help="the adversarial loss: bce, the reference's (with --smoothing), or hinge (BigColor's; "
                        "--smoothing does not apply) (default: bce)")
    p.add_argument('--ab_head', choices=AB_HEADS, default='regress',
                   help="what the generator's last layer predicts: regress, ab itself under the L1 loss (the "
                        "reference's); classify, a distribution over the ab bins of 10 that the training images use "
                        "(Zhang et al. 2016: soft-encoded targets, cross-entropy in the L1's place, rebalanced where "
                        "--rebalance sets lambda), decoded by its annealed mean, which the discriminator judges; "
                        "both, the two heads and both losses, decoded as a blend (default: regress)")
    p.add_argument('--temperature', type=number_in(float, 0, None, low_open=True), default=DEFAULT_TEMPERATURE,
                   metavar='T', help="classify and both: the annealed mean's temperature, softmax(logits / T); 1 is "
                                     "the distribution's mean, towards 0 its most likely colour (default: 0.38)")
    p.add_argument('--class_loss', type=number_in(float, 0), default=0.0, metavar='W',
                   help="Iizuka et al.'s class-aware context: global features of the generator's bottleneck fused "
                        "into its decoder, and W times the cross-entropy of a class prediction made from them added "
                        "to the generator's loss (Iizuka et al.: 1/300 of their colour MSE), on the training images' "
                        "labels (CIFAR-10's classes; a folder's first subfolders); 0 is off (default: 0)")
    p.add_argument('--blend', type=number_in(float, 0, 1), default=DEFAULT_BLEND, metavar='W',
                   help="both: the regression's share of the decoded ab, the distribution's 1 - W (default: 0.5)")


def parse_training_args(argv=None):
    p = training_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # The recipe's flags first, then the command line's: argparse keeps the last value given.
    recipe = p.parse_known_args(argv)[0].recipe
    args = p.parse_args(RECIPES[recipe] + argv if recipe else argv)
    if args.image_size is None:
        args.image_size = 32 if args.dataset == 'cifar10' else 256
    if args.dataset == 'cifar10' and args.image_size != 32:
        p.error(f"--image_size {args.image_size}: CIFAR-10's images are 32x32; use --dataset folder for larger ones")
    if args.max_epoch <= args.start_epoch:
        p.error(f"--max_epoch {args.max_epoch} must be greater than --start_epoch {args.start_epoch}")
    return args


def configs_from_args(args):
    """(models.ModelConfig, training.config.TrainConfig) of parse_training_args's flags."""
    flags = vars(args)
    return ModelConfig.from_flags(flags), TrainConfig.from_flags(flags)
