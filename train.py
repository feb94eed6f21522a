"""Train the colorization GAN of Nazeri et al. (2018) on CIFAR-10 or on a folder of photographs.

Each step: the generator updates first (adversarial BCE + L1 on ab), then the discriminator
(BCE with one-sided label smoothing) on the same fake batch. Each epoch: a validation pass in eval
mode, a sample grid, a CSV row per pass, and a checkpoint every --save_freq epochs.
"""
import collections
import contextlib
import dataclasses
import json
import os
import signal
import sys
import threading
import time

import torch
from tqdm import tqdm

import dataset
import utils
from core import pictures
from core.cli import Compute, UserError, pick_device, run_cli
from metrics import classifier, curves, decoding
from metrics.evaluation import Evaluation
from metrics.measures import BY_KEY
from storage import checkpoints, provenance
from training import distributed, remedies
from training.gan import STAT_NAMES, ColorizationGAN, summarize
from training.ab_bins import AbPrior
from training.ab_classes import AbClasses
from training.layer_forms import choose_layer_forms
from training.nan_watch import NonFiniteLoss
from training.options import configs_from_args, parse_training_args as parse_args
from training.runlog import TensorBoardLog


@dataclasses.dataclass
class Run:
    """One training run's state besides the GAN's own: where it is, its data, and where time went."""
    args: object
    compute: Compute
    procs: distributed.Processes
    gan: ColorizationGAN
    train_set: object
    test_set: object
    layer_forms: dict
    tensorboard: TensorBoardLog
    provenance: dict
    first_epoch: int = 0
    first_batch: int = 0
    step: int = 0
    first_step: int = 0  # the step this process started from, for the closing time line
    skipped: int = 0
    spent: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    last_logged: float = 0.0  # when the last --log_steps row was written, for images/s
    judge: object = None  # classifier.ClassifierScores of the test set, or None where it does not apply
    judge_bounds: dict = None  # its scores of the true and the grey validation images, judged once
    held_out: object = None  # a distribution head's run with --holdout: the images its decoding is chosen on
    held_out_judge: object = None  # the scoring classifier's scores of those, or None

    @property
    def log_path(self):
        return os.path.join(self.args.save_path, 'log.csv')

    @property
    def steps_log_path(self):
        return os.path.join(self.args.save_path, 'steps.csv')


def main(argv=None):
    args = parse_args(argv)
    device = pick_device(args.device)
    procs = distributed.Processes.from_environment(device.type)
    try:
        # Under torchrun only the first process prints; the others print nothing but errors.
        with open(os.devnull, 'w') as quiet, contextlib.redirect_stdout(sys.stdout if procs.is_main else quiet):
            return train(args, Compute.from_flags(args, procs.device(device)), procs)
    except RuntimeError as e:
        if not (procs.distributed and distributed.lost_contact(e)):
            raise
        # Another process failed (and printed why) or was killed: one line, not a traceback.
        print(f"{os.path.basename(sys.argv[0])}: error: process {procs.rank} of {procs.world_size} lost contact "
              f"with the others ({str(e).strip().splitlines()[0][:160]}); the run is stopped: see the first "
              f"error above, then continue with --resume latest", file=sys.stderr)
        return 1
    finally:
        procs.close()


def train(args, compute, procs):
    run = set_up(args, compute, procs)
    stop = StopRequest(second_signal_interrupts=not procs.distributed)
    try:
        for epoch in range(run.first_epoch, args.max_epoch):
            start_batch = run.first_batch if epoch == run.first_epoch else 0
            outcome = train_epoch(run, epoch, start_batch, stop)
            if outcome.exit_code is not None:
                return outcome.exit_code
            stopping = bool(args.max_steps and run.step >= args.max_steps)
            end_epoch(run, epoch, outcome, stopping)
            if stopping:
                print(f"stopped after --max_steps {args.max_steps} steps")
                break
    finally:
        stop.restore()
        run.tensorboard.close()
    print(time_line(run.spent, run.step - run.first_step))
    return 0


# ---------------------------------------------------------------- set-up

def set_up(args, compute, procs):
    """Check the folders, build the GAN, resume it if asked, choose its layer forms, load the data."""
    if args.batch_size % procs.world_size:
        raise UserError(f"--batch_size {args.batch_size} is the global batch, which the {procs.world_size} "
                        f"processes must share equally: pick a multiple of {procs.world_size}")
    resume_path = procs.broadcast(find_resume_path(args) if procs.is_main else None)
    spent = collections.Counter()  # seconds per kind of work, for the closing line
    # The first process reads the checkpoint and hands it to the others, which need no access to its folder.
    ckpt = procs.broadcast(checkpoints.load_checkpoint(resume_path) if procs.is_main else None) if resume_path else None
    data = None
    if args.ab_head != 'regress' or args.class_loss:
        # the head's bins are the training images' colours, the class context's size their classes: the data first
        with timed(spent, 'data'):
            data = open_data(args, procs, compute, AbPrior.saved_in(ckpt))
    model_config, train_config = configs_from_args(args)
    gan = ColorizationGAN(model_config, train_config, compute, procs, ab_classes=data.ab_classes if data else None,
                          n_classes=count_classes(data.train_set, args) if args.class_loss else 0)
    if procs.rank > 0:  # the same weights everywhere, but each process its own dropout masks
        torch.manual_seed(distributed.process_seed(args.seed, procs.rank, 0))
    first_epoch, first_batch, step, saved_forms = args.start_epoch, 0, 0, None
    if resume_path:
        first_epoch, first_batch, step = checkpoints.restore_training(ckpt, resume_path, gan)
        distributed.restore_random_state(ckpt, procs, args.seed, compute.device)
        saved_forms = ckpt.get('layer_forms')
        print(f"resuming from {resume_path}: epoch {first_epoch}, batch {first_batch}, step {step}")
    if first_epoch >= args.max_epoch:
        raise UserError(f"the checkpoint is at epoch {first_epoch}, which --max_epoch {args.max_epoch} leaves no room for")

    run_info = dict(vars(args), device=str(compute.device), resolved_precision=compute.precision,
                    channels_last_on=gan.channels_last, processes=procs.world_size)
    print('options: ' + json.dumps(run_info, sort_keys=True))
    made_by = provenance.provenance()
    with timed(spent, 'layer forms'):
        layer_forms, forms_line = choose_layer_forms(gan, args.batch_size, args.autotune, args.layer_forms_cache,
                                                     saved_forms)
    print(forms_line)
    with timed(spent, 'data'):
        data = data or open_data(args, procs, compute, AbPrior.saved_in(ckpt))
    del ckpt
    train_set, test_set, gan.pixel_weights = data.train_set, data.test_set, data.pixel_weights
    if procs.is_main:
        utils.write_json(os.path.join(args.save_path, 'args.json'),
                         dict(run_info, layer_forms=layer_forms, provenance=made_by))
    print(f"data: {len(train_set)} training images" + (f" and {len(test_set)} test images" if test_set else '') +
          f"; device {compute.device}, precision {compute.precision}" +
          (f"; {procs.world_size} processes, {args.batch_size // procs.world_size} images each per step"
           if procs.distributed else ''))
    gan.G.train(), gan.D.train()
    gan.distribute()
    # Only the first process writes TensorBoard events; a resumed run continues its own.
    tensorboard = TensorBoardLog(os.path.join(args.save_path, 'tensorboard'),
                                 enabled=args.tensorboard == 'on' and procs.is_main,
                                 resume_step=step if resume_path else None)
    # the scoring classifier is loaded before the first step, so that a missing file stops the run at once
    judge = classifier.judge_for(args.classifier, test_set.class_names, args.image_size,
                                 compute.device)[0] if procs.is_main else None
    held_out = data.held_out if gan.ab_classes is not None else None  # where a decoding is chosen
    return Run(args, compute, procs, gan, train_set, test_set, layer_forms, tensorboard, made_by, first_epoch,
               first_batch, step, first_step=step, spent=spent, last_logged=time.time(), judge=judge,
               held_out=held_out, held_out_judge=None if held_out is None or judge is None else
               classifier.ClassifierScores(judge.model, model_metadata=judge.model_metadata))


@dataclasses.dataclass
class RunData:
    """A run's images and what it counts of them before its first step."""
    train_set: object  # with the remedies applied
    test_set: object  # the first process's only
    held_out: object  # the training images --holdout keeps out (first process), or None
    ab_classes: AbClasses = None  # --ab_head classify or both: the training images' ab bins
    pixel_weights: object = None  # --rebalance with the regression head: the L1's pixel weights


def open_data(args, procs, compute, saved_prior=None):
    """The run's RunData. `saved_prior`: the ab bins and prior a resumed run's checkpoint
    recorded (ab_bins.AbPrior), which it keeps whatever data it now sees."""
    train_set, test_set, held_out = dataset.open_splits(args.dataset, args.data_path, args.image_size, procs,
                                                        args.num_workers, args.holdout,
                                                        pin_memory=compute.device.type == 'cuda')
    train_set, pixel_weights = apply_remedies(args, procs, compute, train_set, saved_prior)
    dataset.check_last_batch(len(train_set), args.batch_size, procs.world_size)
    ab_classes = None
    if args.ab_head != 'regress':
        prior = saved_prior or AbPrior.from_training_set(train_set, args.seed, args.color_enhance)
        ab_classes = AbClasses(prior, args.rebalance, compute.device)
        print(f"--ab_head {args.ab_head}: {len(ab_classes)} ab bins of 10 in the training images"
              + (' (as the checkpoint recorded them)' if saved_prior else '')
              + (f", the cross-entropy rebalanced with lambda {args.rebalance:g}" if args.rebalance is not None else ''))
    return RunData(train_set, test_set, held_out, ab_classes, pixel_weights)


def count_classes(train_set, args):
    """--class_loss: the number of classes the training images are labelled with; refused where
    they have none."""
    if not train_set.class_names or not (train_set.labels >= 0).any():
        raise UserError(f"--class_loss needs the training images' classes, and {args.data_path} has none: put a "
                        f"folder data set's images in one subfolder per class (train/<class>/...), or leave "
                        f"--class_loss at 0")
    print(f"--class_loss {args.class_loss:g}: a class context over the {len(train_set.class_names)} classes "
          f"of the training images")
    return len(train_set.class_names)


def batch_classes(run, images, idx):
    """--class_loss: the class indices of the images `idx` of `images` on the run's device (-1 where
    an image has none, or where the test set's classes are not the training set's); else None."""
    if not run.gan.class_weight:
        return None
    if images is not run.train_set and tuple(images.class_names) != tuple(run.train_set.class_names):
        return torch.full((len(idx),), -1, device=run.compute.device)
    return torch.as_tensor(images.labels[idx.numpy()]).to(run.compute.device, non_blocking=True)


def apply_remedies(args, procs, compute, train_set, saved_prior=None):
    """--min_colorfulness (the training images kept, the dropped ones counted in one line and
    listed in a file) and --rebalance (the L1's pixel weights, from the kept images' prior or the
    checkpoint's `saved_prior`; a distribution head's weights come from training/ab_classes.py,
    both by training/ab_bins.py): (the training set, the pixel weights or None)."""
    if args.min_colorfulness is not None:
        train_set, dropped, total = remedies.drop_dull_images(train_set, args.min_colorfulness)
        list_path = os.path.join(args.save_path, 'dropped_colorfulness.txt')
        if procs.is_main:
            utils.atomic_write(list_path, lambda f: f.write(''.join(dropped)), mode='w')
        print(f"--min_colorfulness {args.min_colorfulness:g}: dropped {len(dropped)} of {total} training images; "
              f"all {len(dropped)} listed in {list_path}")
    pixel_weights = None
    if args.rebalance is not None and args.ab_head == 'regress':
        prior = saved_prior or AbPrior.from_training_set(train_set, args.seed, args.color_enhance)
        pixel_weights = remedies.RebalanceWeights(prior, args.rebalance, compute.device)
    return train_set, pixel_weights


def find_resume_path(args):
    """The checkpoint to resume from (--resume, or --start_epoch's), or None; clears torn writes."""
    utils.check_writable_folder(args.save_path, '--save_path')
    utils.check_writable_folder(args.samples_path, '--samples_path')
    checkpoints.clear_torn_writes(args.save_path)
    path = args.resume
    if args.resume == 'latest':
        path = checkpoints.newest_checkpoint(args.save_path)
    elif args.start_epoch > 0 and not args.resume:
        path = checkpoints.epoch_checkpoint_path(args.save_path, args.start_epoch - 1)
    if path and not os.path.isfile(path):
        raise UserError(f"cannot resume: {path} does not exist")
    return path


# ---------------------------------------------------------------- the steps of an epoch

@dataclasses.dataclass
class EpochOutcome:
    sums: torch.Tensor
    batches_done: int
    n_batches: int
    seconds: float
    exit_code: int = None


def train_epoch(run, epoch, start_batch, stop):
    """The epoch's steps from `start_batch` on, with step checkpoints; an interrupt saves one
    and ends the run (exit_code set)."""
    args, procs, gan = run.args, run.procs, run.gan
    # The data order depends on (seed, epoch) alone, so a resumed run sees the same batches,
    # and so does each process, which takes its part of every batch.
    order = torch.Generator().manual_seed(args.seed * 1_000_003 + epoch)
    n_batches = run.train_set.num_batches(args.batch_size)
    sums = torch.zeros(len(STAT_NAMES), device=run.compute.device)
    since_logged = torch.zeros_like(sums)
    started, saving_before = time.time(), run.spent['checkpoints']
    batches = run.train_set.batches(args.batch_size, shuffle=True, flip=True, generator=order,
                                    device=run.compute.device, start=start_batch, share=procs.share)
    bar = tqdm(batches, total=n_batches, initial=start_batch, desc=f'epoch {epoch}', dynamic_ncols=True,
               disable=not procs.is_main)
    batches_done = start_batch
    for idx, lab in bar:
        lab = lab.contiguous(memory_format=gan.memory_format)
        global_images = min(args.batch_size, len(run.train_set) - batches_done * args.batch_size)
        run.step += 1
        try:
            step_sums = gan.step(lab, run.step, global_images, batch_classes(run, run.train_set, idx))
            sums += step_sums
            since_logged += step_sums
        except NonFiniteLoss as e:
            if not skip_step(run, e, epoch):
                return EpochOutcome(sums, batches_done, n_batches, 0.0, exit_code=2)  # the first process says why
        batches_done += 1
        # Numbers come back from the device only here (every --log_steps steps), before a
        # checkpoint and at the epoch's end: a step itself never waits for the device.
        if run.step % args.log_steps == 0:
            if not check_losses(run, epoch):
                return EpochOutcome(sums, batches_done, n_batches, 0.0, exit_code=2)  # the first process says why
            log_steps(run, epoch, procs.sum_(since_logged))
            since_logged = torch.zeros_like(since_logged)
            show_progress(bar, procs.sum_(sums.clone()), started)
        signal_number = procs.max(stop.signal or 0)  # every process stops at the same step
        saving = args.save_steps and run.step % args.save_steps == 0 and batches_done < n_batches
        if (signal_number or saving) and not check_losses(run, epoch):
            return EpochOutcome(sums, batches_done, n_batches, 0.0, exit_code=2)
        if signal_number:
            bar.close()
            save_interrupted(run, epoch, batches_done, n_batches)
            return EpochOutcome(sums, batches_done, n_batches, 0.0, exit_code=128 + signal_number)
        if saving:
            save(run, checkpoints.step_checkpoint_path(args.save_path, run.step), epoch, batches_done)
            if procs.is_main:
                checkpoints.prune_step_checkpoints(args.save_path)
        if args.max_steps and run.step >= args.max_steps:
            break
    if not check_losses(run, epoch):
        return EpochOutcome(sums, batches_done, n_batches, 0.0, exit_code=2)
    show_progress(bar, procs.sum_(sums.clone()), started)
    bar.close()
    seconds = time.time() - started
    run.spent['training steps'] += seconds - (run.spent['checkpoints'] - saving_before)
    report_skipped_files(run.train_set, 'training', args.save_path)
    return EpochOutcome(procs.sum_(sums), batches_done, n_batches, seconds)


def show_progress(bar, sums, started):
    m = summarize(sums)
    bar.set_postfix_str(f"G {m['g_loss']:.4f} L1 {m['g_l1']:.4f} D {m['d_loss']:.4f} "
                        f"acc {m['d_acc']:.2f} {m['images'] / max(time.time() - started, 1e-9):.0f} img/s")


def check_losses(run, epoch):
    """The device-side NaN check's report since the last one (NanWatch.take_report): skipped
    steps are counted; a non-finite loss under --nan_policy stop ends the run as skip_step says."""
    skipped, error = run.gan.nan_watch.take_report()
    if skipped:
        run.skipped += skipped
        if run.procs.is_main:
            tqdm.write(f"by step {run.step}: {skipped} steps with a non-finite loss skipped ({run.skipped} so far)")
    return error is None or skip_step(run, error, epoch)


def skip_step(run, error, epoch):
    """--nan_policy: skip the step (True), or stop: one line from the first process, False on the others.
    `error` names its step where it was found after it (the device-side check), else it is this one."""
    step = getattr(error, 'step', run.step)
    if run.args.nan_policy == 'skip':
        run.skipped += 1
        if run.procs.is_main:
            tqdm.write(f"step {step}: {error}; step skipped ({run.skipped} so far)")
        return True
    if not run.procs.is_main:
        return False
    raise UserError(f"{error} at step {step} (epoch {epoch}); training stopped, the last good checkpoint in "
                    f"{run.args.save_path} is kept: lower the learning rates or resume from it with --nan_policy skip")


def report_skipped_files(images, split, save_path):
    """The data set's one line on the files it could not use, if any; all of them listed in
    save_path/skipped_<split>.txt, which the line names."""
    report = images.take_skip_report(os.path.join(save_path, f'skipped_{split}.txt'))
    if report:
        print(f"{split} images: {report}", file=sys.stderr)


def log_steps(run, epoch, since_logged):
    """The training losses averaged over the last --log_steps steps, in steps.csv and TensorBoard."""
    if run.procs.is_main:
        m = summarize(since_logged)
        utils.append_csv_row(run.steps_log_path, dict(epoch=epoch, step=run.step, **m))
        now = time.time()
        rates = dict(run.gan.learning_rates(), images_per_s=m['images'] / max(now - run.last_logged, 1e-9))
        run.last_logged = now
        run.tensorboard.scalars(run.step, {k: v for k, v in m.items() if k != 'images'}, 'train')
        run.tensorboard.scalars(run.step, rates, 'speed')


def save(run, path, epoch, batches_done, G_eval=None, rng_states=None, choice=None):
    """Write a training checkpoint (on the first process; every process takes part in gathering
    the random states, unless they were gathered already)."""
    rng_states = rng_states or run.procs.gather(distributed.random_states(run.compute.device))
    if run.procs.is_main:
        with timed(run.spent, 'checkpoints'):
            checkpoints.save_checkpoint(path, checkpoints.training_checkpoint(
                run.gan, epoch, batches_done, run.step, vars(run.args), [cpu for cpu, _ in rng_states], run.layer_forms,
                G_eval, run.provenance, gpu_rng_states=[gpu for _, gpu in rng_states], decoding=choice))


def save_interrupted(run, epoch, batches_done, n_batches):
    path = checkpoints.step_checkpoint_path(run.args.save_path, run.step)
    save(run, path, epoch, batches_done)
    if run.procs.is_main:
        print(f"interrupted: saved {path} (epoch {epoch}, batch {batches_done} of {n_batches}); "
              f"continue with: python train.py --save_path {run.args.save_path} --resume {path} "
              f"(and this run's other flags)", file=sys.stderr)
    run.procs.barrier()  # no process exits (which ends the run) before the checkpoint is whole


# ---------------------------------------------------------------- the end of an epoch

def end_epoch(run, epoch, outcome, stopping):
    """Validate, draw, log and checkpoint on the first process; the others wait at the barrier."""
    args, procs = run.args, run.procs
    train_m = summarize(outcome.sums)
    print(summary_line(epoch, 'train', train_m, outcome.seconds) +
          (f", {run.skipped} steps skipped" if run.skipped else ''))
    rng_states = procs.gather(distributed.random_states(run.compute.device))
    if procs.is_main:
        started = time.time()
        G_eval = run.gan.eval_generator(run.train_set)
        choice = choose_decoding(run, G_eval, epoch) if run.held_out is not None else None
        val_sums, colour_scores, grid_rows = validate(run, G_eval)
        val_seconds = time.time() - started
        run.spent['validation'] += val_seconds
        val_m = summarize(val_sums)
        print(summary_line(epoch, 'val', val_m, val_seconds))
        print(colour_line(epoch, colour_scores))
        started = time.time()
        grid_path = os.path.join(args.samples_path, f'epoch_{epoch:03d}.png')
        grid = pictures.image_grid(grid_rows, border=6, scale=2.2)
        pictures.write_image(grid_path, grid)
        logged_scores = {key: round(colour_scores[key], 4) if key in colour_scores else '' for key in COLOUR_COLUMNS}
        for phase, m, seconds, columns in (('train', train_m, outcome.seconds, dict.fromkeys(COLOUR_COLUMNS, '')),
                                           ('val', val_m, val_seconds, logged_scores)):
            utils.append_csv_row(run.log_path, dict(epoch=epoch, step=run.step, phase=phase, **m,
                                                    seconds=round(seconds, 2), skipped_steps=run.skipped,
                                                    **run.gan.learning_rates(), **columns))
        log_epoch_to_tensorboard(run, val_m, colour_scores, grid)
        # The curves are drawn while the checkpoint is written, which waits on the disk.
        curves = threading.Thread(target=draw_curves, args=(args.save_path,), daemon=True)
        curves.start()
        run.spent['pictures and log'] += time.time() - started
        try:
            if (epoch + 1) % args.save_freq == 0 or stopping or epoch == args.max_epoch - 1:
                save_epoch(run, epoch, outcome, G_eval, rng_states, grid_path, choice)
        finally:
            # Even when the save fails (a full disk): a drawing thread still running when Python
            # exits takes the process down with a C++ abort ("terminate called ...", exit 134).
            started = time.time()
            curves.join()
            run.spent['pictures and log'] += time.time() - started
    procs.barrier()


def log_epoch_to_tensorboard(run, val_m, colour_scores, grid):
    colour = {key: colour_scores[key] for key in COLOUR_COLUMNS if key in colour_scores}
    values = dict({k: v for k, v in val_m.items() if k != 'images'}, **colour)
    run.tensorboard.scalars(run.step, values, 'val')
    run.tensorboard.image('samples', grid, run.step)
    run.tensorboard.hparams(vars(run.args), {'hparam/val_g_l1': val_m['g_l1'],
                                       **{f'hparam/val_{key}': value for key, value in colour.items()}})
    run.tensorboard.flush()
    # The epoch's first --log_steps window starts after validation, not before it.
    run.last_logged = time.time()


def save_epoch(run, epoch, outcome, G_eval, rng_states, grid_path, choice=None):
    """The generator alone, then the checkpoint: a run killed between the two redoes the epoch
    and writes both. A run stopped by --max_steps inside an epoch saves it as mid-epoch, so that
    resuming continues it. `choice`: the decoding G_eval decodes at (choose_decoding), which both record."""
    args = run.args
    done = outcome.batches_done if outcome.batches_done < outcome.n_batches else 0
    path = checkpoints.epoch_checkpoint_path(args.save_path, epoch)
    with timed(run.spent, 'checkpoints'):
        weights = checkpoints.save_generator_weights(
            checkpoints.generator_weights_path(args.save_path, epoch), G_eval.state_dict(),
            checkpoints.generator_config(run.gan.model_config.to_dict()), epoch, run.step, args.seed,
            holdout=args.holdout, dataset=args.dataset, data_path=args.data_path,
            model_config=run.gan.model_config.to_dict(), train_config=run.gan.train_config.to_dict(), decoding=choice)
    save(run, path, epoch, done, G_eval, rng_states, choice)
    print(f"saved {path}, {weights} and {grid_path}")


def choose_decoding(run, G_eval, epoch):
    """A distribution head's run with --holdout: its temperature (and blend) chosen on the
    held-out training images by metrics/decoding.py's rule, set in G_eval, which validates and is
    saved with it, and written to --save_path/decoding.json; returns the record (decoding.record)."""
    args = run.args
    started = time.time()
    chosen, why, scored = decoding.choose_decoding(G_eval, run.held_out, run.compute.device, run.compute.autocast,
                                                   run.held_out_judge)
    record = decoding.record(chosen, why, scored, f"the last {args.holdout} training images (held out), "
                                                  f"at the end of epoch {epoch}")
    decoding.apply(G_eval, record)
    utils.write_json(os.path.join(args.save_path, 'decoding.json'), dict(record, epoch=epoch, step=run.step))
    run.spent['decoding'] += time.time() - started
    blend = '' if chosen['blend'] is None else f", blend {chosen['blend']:g}"
    judged = (f", semantic accuracy {100 * chosen['semantic_accuracy']:.1f}%" if 'semantic_accuracy' in chosen else '')
    print(f"[epoch {epoch} decoding] temperature {chosen['temperature']:g}{blend} chosen on the {len(run.held_out)} "
          f"held-out training images: ΔCF {chosen['colorfulness_gap']:.2f}{judged}, mean |ab error| "
          f"{chosen['mean_ab_error']:.4f} ({why}; every setting in {args.save_path}/decoding.json)")
    return record


# The validation's colour scores, as log.csv's columns (blank in training rows)
COLOUR_COLUMNS = ('colorfulness', 'colorfulness_gap', 'semantic_accuracy', 'classifier_fd')


@torch.no_grad()
def validate(run, G_eval):
    """Losses and accuracies over the test set (or its first --val_batches batches) in eval mode,
    the colour scores of the recolored images as test.py scores them (metrics/evaluation.py:
    colourfulness and its gap to the truth's, the per-pixel measures; with the scoring
    classifier, semantic accuracy and classifier FD, and the same of the grey and the true
    images, which are judged once and kept), and the sample grid rows of the first batch."""
    args, test_set, judge = run.args, run.test_set, run.judge
    sums = torch.zeros(len(STAT_NAMES), device=run.compute.device)
    grid_rows = None
    judge_bounds = judge is not None and 'truth' not in judge.features
    evaluation = Evaluation(test_set.class_names, judge, judge_truth=judge_bounds)
    total = min(test_set.num_batches(args.batch_size), args.val_batches or float('inf'))
    batches = test_set.batches(args.batch_size, device=run.compute.device, with_rgb=True)
    for i, (idx, lab, truth) in enumerate(tqdm(batches, total=total, desc='validate', leave=False, dynamic_ncols=True)):
        if i >= total:
            break
        batch_sums, fake_ab = run.gan.evaluate(G_eval, lab, batch_classes(run, test_set, idx))
        sums += batch_sums
        L = lab[:, :1]
        fake_rgb = pictures.network_to_rgb(L, fake_ab)
        gray = pictures.network_to_rgb(L, torch.zeros_like(fake_ab))
        colorizations = {'colorized': (fake_ab, fake_rgb)}
        if judge_bounds:
            colorizations['grey'] = torch.zeros_like(fake_ab), gray
        evaluation.add(lab, truth, test_set.labels[idx.numpy()], colorizations)
        if grid_rows is None:
            grid_rows = [truth[:20], gray[:20], fake_rgb[:20]]
    report_skipped_files(test_set, 'validation', args.save_path)
    colour = evaluation.result('colorized')
    if judge is not None:
        if judge_bounds:
            run.judge_bounds = {'truth': judge.result('truth')[0], 'grey': judge.result('grey')[0]}
        colour['bounds'] = run.judge_bounds
        judge.forget('colorized')
    return sums, colour, grid_rows


# ---------------------------------------------------------------- what the run prints

def summary_line(epoch, phase, m, seconds):
    return (f"[epoch {epoch} {phase:5s}] G adv {m['g_adv']:.4f}  L1 {m['g_l1']:.4f}  total {m['g_loss']:.4f} | "
            f"D loss {m['d_loss']:.4f}  acc {m['d_acc']:.3f} (real {m['d_acc_real']:.3f}, fake {m['d_acc_fake']:.3f}) | "
            f"{m['images']} images, {seconds:.0f} s, {m['images'] / max(seconds, 1e-9):.0f} img/s")


def colour_line(epoch, colour):
    """The validation's colour scores, each written as metrics/measures.py writes it, with the true
    and the grey images' beside them."""
    def text(key, scores=colour):
        return BY_KEY[key].text(scores[key])
    line = (f"[epoch {epoch} val  ] colorfulness {text('colorfulness')} (truth "
            f"{BY_KEY['colorfulness'].text(colour['truth_colorfulness'])}), gap {text('colorfulness_gap')}")
    if 'semantic_accuracy' in colour:
        truth, grey = colour['bounds']['truth'], colour['bounds']['grey']
        line += (f" | semantic accuracy {text('semantic_accuracy')} (true colours "
                 f"{text('semantic_accuracy', truth)}, grey {text('semantic_accuracy', grey)})")
        if 'classifier_fd' in colour:
            line += f" | classifier FD {text('classifier_fd')} (grey {text('classifier_fd', grey)})"
    return line


def draw_curves(save_path):
    try:
        curves.draw_curves(save_path)
    except Exception as e:  # a picture is not worth a training run
        print(f"warning: could not draw {save_path}/curves.png ({e})", file=sys.stderr)


@contextlib.contextmanager
def timed(spent, key):
    started = time.time()
    try:
        yield
    finally:
        spent[key] += time.time() - started


def time_line(spent, steps):
    """Where the time went: 'time: 111.1 s in 100 training steps; 14.2 s besides (layer forms 2.1, ...)'."""
    besides = {k: v for k, v in spent.items() if k != 'training steps'}
    details = ', '.join(f"{k} {v:.1f}" for k, v in besides.items())
    return (f"time: {spent['training steps']:.1f} s in {steps} training steps; {sum(besides.values()):.1f} s besides "
            f"({details}; Python's start-up before these not counted)")


class StopRequest:
    """Ctrl-C or SIGTERM: finish the current step, checkpoint, exit with 128 + the signal number.
    A second signal interrupts at once, except under torchrun, where a Ctrl-C reaches every
    process twice (from the terminal and from the launcher) and the launcher kills what is left
    after its shutdown timeout."""

    def __init__(self, second_signal_interrupts=True):
        self.signal = None
        self.second_signal_interrupts = second_signal_interrupts
        self.previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self.handle)

    def handle(self, signum, frame):
        self.signal = self.signal or signum
        if self.second_signal_interrupts:
            self.restore()

    def restore(self):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


if __name__ == '__main__':
    sys.exit(run_cli(main))
