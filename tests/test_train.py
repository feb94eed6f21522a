"""train.py end to end: what a run writes, resuming it, interrupts, kills and bad input (nothing
lost, nothing run that should not be), and train.py under torchrun against train.py in one
process, on tiny data."""
import csv
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from storage import checkpoints
from training import distributed
import train
from core.cli import Compute, UserError
from conftest import ROOT, SHARED_DATA, command_line, lab_batch, run_in_process, run_train, train_command
from models import Discriminator, Generator

test_cli = command_line('test')


def run(script, *args):
    """train.py or test.py with these flags, in this process (conftest.run_in_process); the real
    scripts run as processes in the interrupt and kill tests."""
    return run_in_process({'train.py': train.main, 'test.py': test_cli.main}[script], args)


def load(path):
    return torch.load(path, weights_only=True)


# ---------------------------------------------------------------- one run, and resuming it

def test_train_resume_and_test_end_to_end(tiny_cifar, tmp_path):
    ck, samples, out = str(tmp_path / 'ck'), str(tmp_path / 's'), str(tmp_path / 'out')
    common = ['--data_path', tiny_cifar, '--save_path', ck, '--samples_path', samples, '--batch_size', '32',
              '--save_freq', '2', '--precision', 'fp32', '--autotune', 'off']
    r = run('train.py', *common, '--max_epoch', '2', '--log_steps', '2')
    assert r.returncode == 0, r.stderr
    assert '[epoch 1 train]' in r.stdout and '[epoch 1 val  ]' in r.stdout
    assert sorted(os.listdir(ck)) == ['args.json', 'checkpoint_ep1.pt', 'curves.png', 'generator_ep1.safetensors',
                                      'log.csv', 'steps.csv', 'tensorboard']
    with open(os.path.join(ck, 'steps.csv')) as f:
        assert [row['step'] for row in csv.DictReader(f)] == ['2', '4', '6']
    with open(os.path.join(ck, 'log.csv')) as f:
        val = [row for row in csv.DictReader(f) if row['phase'] == 'val']
    assert len(val) == 2 and all(0 < float(row['colorfulness']) < 150 for row in val)
    for row in val:  # the colour scores of the recolored test images, each epoch
        assert 0 <= float(row['colorfulness_gap']) < 150 and 0 <= float(row['semantic_accuracy']) <= 1
        assert float(row['classifier_fd']) > 0
    assert 'semantic accuracy' in r.stdout and 'classifier FD' in r.stdout and 'gap' in r.stdout
    assert sorted(os.listdir(samples)) == ['epoch_000.png', 'epoch_001.png']
    ckpt = load(os.path.join(ck, 'checkpoint_ep1.pt'))
    assert ckpt['epoch'] == 1 and ckpt['step'] == 6  # 80 images in batches of 32, 32 and 16, 2 epochs
    assert ckpt['args']['batch_size'] == 32 and set(ckpt) >= {'generator', 'discriminator', 'opt_gen', 'opt_disc'}
    assert json.load(open(os.path.join(ck, 'args.json')))['save_freq'] == 2
    assert json.load(open(os.path.join(ck, 'args.json')))['gen_dropout'] == ckpt['args']['gen_dropout'] == 0.5
    assert len(open(os.path.join(ck, 'log.csv')).read().strip().splitlines()) == 1 + 4

    r = run('train.py', *common, '--max_epoch', '3', '--start_epoch', '2')
    assert r.returncode == 0, r.stderr
    resumed = load(os.path.join(ck, 'checkpoint_ep2.pt'))
    assert resumed['step'] == 9 and resumed['epoch'] == 2
    assert resumed['opt_gen']['state'][0]['step'].item() == 9  # Adam's state came along

    r = run('test.py', '--data_path', tiny_cifar, '--checkpoints', os.path.join(ck, 'checkpoint_ep1.pt'),
            os.path.join(ck, 'checkpoint_ep2.pt'), os.path.join(ck, 'generator_ep2.safetensors'),
            '--labels', 'first', 'second', 'second, shared', '--save_path', out, '--batch_size', '10',
            '--precision', 'fp32')
    assert r.returncode == 0, r.stderr
    metrics = json.load(open(os.path.join(out, 'metrics.json')))
    assert set(metrics['checkpoints']) == {'first', 'second', 'second, shared'} and metrics['images'] == 24
    shared, second = (dict(metrics['checkpoints'][k], path=None) for k in ('second, shared', 'second'))
    assert shared == second  # the same generator, alone
    assert metrics['baseline']['colorfulness'] < 0.5
    assert sorted(f for f in os.listdir(out) if f.endswith('.png')) == ['grid_000.png', 'grid_001.png']


def test_missing_data_ends_with_one_line(tmp_path, monkeypatch):
    r = run('train.py', '--data_path', str(tmp_path / 'nothing'), '--save_path', str(tmp_path / 'ck'),
            '--samples_path', str(tmp_path / 's'))
    assert r.returncode != 0 and 'Traceback' not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and 'cifar-10-batches-py' in r.stderr


def test_resuming_from_another_configuration_names_both(tiny_cifar, tmp_path):
    ck = str(tmp_path / 'ck')
    common = ['--data_path', tiny_cifar, '--save_path', ck, '--samples_path', str(tmp_path / 's'),
              '--batch_size', '16', '--max_steps', '2', '--precision', 'fp32', '--autotune', 'off']
    assert run('train.py', *common, '--disc_norm', 'spectral').returncode == 0
    before = open(os.path.join(ck, 'checkpoint_ep0.pt'), 'rb').read()
    r = run('train.py', *common, '--start_epoch', '1', '--max_epoch', '2')
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1
    assert '--disc_norm spectral' in r.stderr and '--disc_norm batch' in r.stderr
    assert open(os.path.join(ck, 'checkpoint_ep0.pt'), 'rb').read() == before


@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED_DATA, 'cifar-10-batches-py')), reason='../shared/data absent')
def test_short_run_on_real_cifar10(tmp_path):
    r = run('train.py', '--data_path', SHARED_DATA, '--save_path', str(tmp_path / 'ck'), '--samples_path',
            str(tmp_path / 's'), '--max_steps', '10', '--val_batches', '1', '--autotune', 'off')
    assert r.returncode == 0, r.stderr
    val = [l for l in r.stdout.splitlines() if l.startswith('[epoch 0 val')][0]
    l1 = float(val.split('L1 ')[1].split()[0])
    assert l1 < 0.16  # below an untrained generator's error (0.163) after 10 steps
    assert os.path.isfile(tmp_path / 's' / 'epoch_000.png')


def assert_same_checkpoint(a, b, path=''):
    """Every value of two checkpoints equal, tensors bit for bit: both networks, the averaged
    generator, the optimizers, the scaler, the random states, the layer forms, the position;
    only the options differ (each run its own folders)."""
    assert type(a) is type(b), f'{path} differs in type'
    if isinstance(a, dict):
        assert a.keys() == b.keys(), f'{path}: keys {sorted(a.keys() ^ b.keys())} in one only'
        for key in a:
            if path or key != 'args':
                assert_same_checkpoint(a[key], b[key], f'{path}.{key}' if path else str(key))
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f'{path} differs in length'
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_checkpoint(x, y, f'{path}[{i}]')
    elif torch.is_tensor(a):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), f'{path} differs'
    else:
        assert a == b, f'{path}: {a!r} != {b!r}'


def test_the_checkpoint_comparison_sees_a_lost_average_a_changed_random_state_and_a_lost_scaler():
    def checkpoint():
        torch.manual_seed(0)
        return {'generator': Generator('batch').state_dict(), 'rng': torch.get_rng_state(),
                'scaler': {'scale': 65536.0}, 'opt_gen': {'state': {0: {'exp_avg': torch.ones(3)}}},
                'args': {'save_path': 'a'}}
    a = checkpoint()
    assert_same_checkpoint(a, dict(checkpoint(), args={'save_path': 'b'}))  # the options may differ
    for key in ('generator', 'rng', 'scaler'):
        b = checkpoint()
        if key == 'generator':
            b[key]['down1.model.0.weight'].view(-1)[0] += 1
        elif key == 'rng':
            b[key][-1] += 1
        else:
            b[key] = {}
        with pytest.raises(AssertionError, match=key):
            assert_same_checkpoint(a, b)


def test_the_same_command_twice_and_a_stopped_and_resumed_run_are_the_same_run_bit_for_bit(tiny_cifar, tmp_path):
    """Default flags (--autotune on), fp32, a fixed seed: the first run measures the layer forms
    and stores them; a second run of the same command takes them from the cache without
    measuring and trains the same run; so does a run stopped mid-epoch and resumed (its forms
    from its checkpoint)."""
    straight, again, split = str(tmp_path / 'straight'), str(tmp_path / 'again'), str(tmp_path / 'split')
    flags = ['--autotune', 'on', '--batch_size', '16', '--val_batches', '1']  # 5 batches an epoch
    first = run_train(train_command(tiny_cifar, straight, '--max_epoch', '1', *flags))
    assert first.returncode == 0, first.stderr
    assert 'layer forms (measured in' in first.stdout and 'stored in' in first.stdout
    second = run_train(train_command(tiny_cifar, again, '--max_epoch', '1', *flags))
    assert second.returncode == 0, second.stderr
    forms_line = next(line for line in second.stdout.splitlines() if line.startswith('layer forms'))
    assert forms_line.startswith('layer forms (from the layer-form cache') and 'measured' not in forms_line
    # stop inside epoch 0 (3 of its 5 batches), then resume the same epoch and finish
    assert run_train(train_command(tiny_cifar, split, '--max_epoch', '1', '--max_steps', '3', *flags)).returncode == 0
    assert load(os.path.join(split, 'checkpoint_ep0.pt'))['batches_done'] == 3
    r = run_train(train_command(tiny_cifar, split, '--max_epoch', '1', '--resume', 'latest', *flags))
    assert r.returncode == 0, r.stderr
    assert 'epoch 0, batch 3, step 3' in r.stdout
    a = load(os.path.join(straight, 'checkpoint_ep0.pt'))
    assert a['step'] == 5 and a['layer_forms'] is not None
    for other in (again, split):
        assert_same_checkpoint(a, load(os.path.join(other, 'checkpoint_ep0.pt')))


def test_a_resumed_run_keeps_its_layer_forms(tiny_cifar, tmp_path):
    ck = str(tmp_path / 'ck')
    r = run_train(train_command(tiny_cifar, ck, '--max_steps', '1', '--autotune', 'on', '--val_batches', '1'))
    assert r.returncode == 0, r.stderr
    assert 'layer forms (measured in' in r.stdout
    forms = load(os.path.join(ck, 'checkpoint_ep0.pt'))['layer_forms']
    assert set(forms['generator']) == {'down4.model.0', 'down5.model.0', 'up1.model.0', 'up2.model.0'}
    assert set(forms['discriminator']) == {'down4.model.0'} and forms['precision'] == 'fp32'
    r = run_train(train_command(tiny_cifar, ck, '--max_steps', '2', '--resume', 'latest', '--autotune', 'on',
                                '--val_batches', '1'))
    assert r.returncode == 0, r.stderr
    assert 'layer forms (from the checkpoint, measured on this machine)' in r.stdout
    assert load(os.path.join(ck, 'checkpoint_ep0.pt'))['layer_forms'] == forms


# ---------------------------------------------------------------- interrupts, kills, bad input

def wait_for(predicate, seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def listing(ck):
    return os.listdir(ck) if os.path.isdir(ck) else []


def step_checkpoints(ck):
    return [n for n in listing(ck) if n.startswith('checkpoint_step')]


@pytest.mark.parametrize('sig, code', [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupt_checkpoints_mid_epoch_and_resume_continues(tiny_cifar, tmp_path, sig, code):
    ck = str(tmp_path / 'ck')
    proc = subprocess.Popen(train_command(tiny_cifar, ck, '--max_epoch', '1000', '--batch_size', '16',
                                          '--log_steps', '1'),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: os.path.exists(os.path.join(ck, 'steps.csv')))  # a first step is done: training is under way
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    saved = step_checkpoints(ck)
    assert len(saved) == 1 and 'interrupted: saved' in err and '--resume' in err
    path = os.path.join(ck, saved[0])
    ckpt = load(path)
    assert not ckpt['generator_exact_statistics']  # no recalibration on the way out
    if sig != signal.SIGINT:
        return  # the same handler: resuming is checked once
    r = run_train(train_command(tiny_cifar, ck, '--max_epoch', str(ckpt['epoch'] + 1), '--batch_size', '16',
                                '--resume', path))
    assert r.returncode == 0, r.stderr
    assert f"epoch {ckpt['epoch']}, batch {ckpt['batches_done']}" in r.stdout
    assert load(os.path.join(ck, f"checkpoint_ep{ckpt['epoch']}.pt"))['step'] > ckpt['step']


def temporary_files(ck, prefix='checkpoint_step'):
    """The temporary files of atomic writes in progress (or torn) whose file's name starts with `prefix`."""
    return {n for n in listing(ck) if n.startswith('.' + prefix) and n.endswith('.tmp')}


def stop(proc):
    """SIGSTOP `proc` and wait until its main thread, which writes the checkpoints, is stopped."""
    proc.send_signal(signal.SIGSTOP)
    assert wait_for(lambda: open(f'/proc/{proc.pid}/stat').read().rsplit(')', 1)[1].split()[0] in 'tT', 10)


def poll(proc, seen, seconds=120):
    """Call seen() every millisecond while `proc` runs; the first true value it returns, else None."""
    deadline = time.time() + seconds
    while proc.poll() is None and time.time() < deadline:
        found = seen()
        if found:
            return found
        time.sleep(0.001)
    return None


def size(path):
    """The size of a file that may be renamed away at any moment (0 then)."""
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


def kill_while_writing(proc, ck, fraction, full_size, last):
    """SIGKILL `proc` while it writes a step checkpoint, once the temporary file holds `fraction`
    of `full_size` bytes: it is stopped first, and killed only if the file is still there (a
    write that ends before the stop is let go, and the next save is the target, up to the
    checkpoint `last`). Returns the name of the temporary file it died writing."""
    while True:
        found = poll(proc, lambda: {n for n in temporary_files(ck) if size(os.path.join(ck, n)) >= fraction * full_size}
                     or last in listing(ck))
        assert isinstance(found, set), f'no temporary file of a checkpoint was seen before {last} was in place'
        stop(proc)
        still = {n for n in found if os.path.exists(os.path.join(ck, n))}
        if still:
            proc.kill()
            proc.wait()
            return still.pop()
        proc.send_signal(signal.SIGCONT)


@pytest.mark.skipif(not os.path.isdir('/proc/self'), reason='stops processes by their /proc state')
def test_sigkill_at_random_moments_always_leaves_an_intact_checkpoint(tiny_cifar, tmp_path):
    """SIGKILL at moments across the save of a step checkpoint, each run resumed by the next with
    --resume latest: halfway through writing its temporary file, the moment it is in place, and
    at a random moment after the next save began. After each kill every checkpoint on disk is
    whole and none that was whole before is lost, and the next run resumes from the newest,
    never starting afresh; the last run finishes the epoch."""
    ck = str(tmp_path / 'ck')
    rng = random.Random(0)
    every = 3  # batches of 8, 10 steps an epoch: checkpoints at steps 3, 6 and 9, then the epoch's
    flags = ['--save_steps', str(every)]
    env = dict(os.environ, PYTHONUNBUFFERED='1')  # a killed run's lines are in its output file
    runs, read_whole = [], {}

    def start():
        resume = ['--resume', 'latest'] if runs else []
        with open(tmp_path / f'run{len(runs)}.txt', 'w') as out:
            runs.append((subprocess.Popen(train_command(tiny_cifar, ck, *flags, '--max_epoch', '100', *resume),
                                          cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True, env=env),
                         out.name))
        return runs[-1][0]

    def killed(before, written=None):
        """After a kill: every checkpoint and generator file is whole (each read once), `before`
        (whole before the kill) among them; the file being written when it came is torn and not
        in place. Returns the checkpoint a resume must take: the one of the latest step."""
        for name in listing(ck):
            path = os.path.join(ck, name)
            if name.endswith(('.pt', '.safetensors')) and read_whole.get(name, (None,))[0] != os.stat(path).st_mtime_ns:
                read_whole[name] = (os.stat(path).st_mtime_ns, checkpoints.load_checkpoint(path).get('step'))
        saved = {name: step for name, (_, step) in read_whole.items() if name.endswith('.pt') and name in listing(ck)}
        assert before in saved, (before, saved)
        if written:
            assert written in listing(ck)  # the kill landed while the temporary file was there
            assert written.split('.')[1] + '.pt' not in saved
        return max(saved, key=saved.get)

    def next_save(newest):
        return f'checkpoint_step{load(os.path.join(ck, newest))["step"] + every}.pt'

    def output():
        return open(runs[-1][1]).read()[-2000:]

    def resumed(newest):
        assert f"resuming from {os.path.join(ck, newest)}: " in output(), output()

    try:
        # 1. Halfway through writing step 6's checkpoint (or, if that write ends before the
        #    process is stopped, step 9's).
        proc = start()
        assert poll(proc, lambda: 'checkpoint_step3.pt' in listing(ck)), output()
        full_size = os.path.getsize(os.path.join(ck, 'checkpoint_step3.pt'))
        newest = killed('checkpoint_step3.pt', kill_while_writing(proc, ck, 0.5, full_size, 'checkpoint_step9.pt'))
        # 2. The moment that checkpoint is in place (the resumed run saves it again).
        proc, target = start(), next_save(newest)
        assert poll(proc, lambda: target in listing(ck)), output()
        proc.kill()
        proc.wait()
        resumed(newest)
        newest = killed(newest)
        assert newest == target
        # 3. At a random moment after the next save began: in its write or after it.
        proc, target = start(), next_save(newest)
        assert poll(proc, lambda: temporary_files(ck, target)), output()
        time.sleep(rng.uniform(0, 0.3))
        proc.kill()
        proc.wait()
        resumed(newest)
        newest = killed(newest)
    finally:
        for proc, _ in runs:
            proc.kill()
            proc.wait()
    # The last run finishes the epoch from where the kill left it.
    epoch = load(os.path.join(ck, newest))['epoch']
    r = run_train(train_command(tiny_cifar, ck, *flags, '--max_epoch', str(epoch + 1), '--resume', 'latest'))
    assert r.returncode == 0, r.stderr
    assert f"resuming from {os.path.join(ck, newest)}: " in r.stdout
    assert load(os.path.join(ck, f'checkpoint_ep{epoch}.pt'))['step'] == 10 * (epoch + 1)
    assert not [n for n in listing(ck) if n.endswith('.tmp')]  # torn writes' leftovers are cleared


def test_bad_input_leaves_existing_checkpoints_byte_identical(tiny_cifar, tmp_path):
    ck = str(tmp_path / 'ck')
    assert run_train(train_command(tiny_cifar, ck, '--max_steps', '3')).returncode == 0
    path = os.path.join(ck, 'checkpoint_ep0.pt')
    before = open(path, 'rb').read()
    corrupt = tmp_path / 'corrupt'
    os.makedirs(corrupt / 'cifar-10-batches-py')
    for name in os.listdir(os.path.join(tiny_cifar, 'cifar-10-batches-py')):
        data = open(os.path.join(tiny_cifar, 'cifar-10-batches-py', name), 'rb').read()
        open(corrupt / 'cifar-10-batches-py' / name, 'wb').write(data[:len(data) // 3] if name == 'data_batch_2' else data)
    blocker = tmp_path / 'a_file'
    blocker.write_text('x')
    for flags, words in [
        (['--resume', 'latest', '--max_epoch', '0'], '--max_epoch'),
        (['--resume', 'latest', '--lr_decay_rate', '0'], '--lr_decay_rate'),
        (['--resume', 'latest', '--gen_norm', 'instance'], '--gen_norm batch'),
        (['--resume', 'latest', '--class_loss', '0.5'], '--class_loss 0 (no class context)'),
        (['--resume', 'latest', '--data_path', str(corrupt)], 'data_batch_2'),
        (['--resume', os.path.join(ck, 'nothing.pt')], 'nothing.pt'),
    ]:
        r = run_train(train_command(tiny_cifar, ck, *flags))
        assert r.returncode != 0 and 'Traceback' not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and words in r.stderr, r.stderr
        assert open(path, 'rb').read() == before
    r = run_train(train_command(tiny_cifar, str(blocker / 'ck')))
    assert r.returncode != 0 and '--save_path' in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_nan_loss_stops_with_the_step_named_or_is_skipped(tiny_cifar, tmp_path):
    ck = str(tmp_path / 'ck')
    # a learning rate this large drives the weights to inf within a few steps
    r = run_train(train_command(tiny_cifar, ck, '--base_lr_gen', '1e30', '--max_epoch', '3'))
    assert r.returncode != 0 and 'Traceback' not in r.stderr
    assert 'loss is nan' in r.stderr or 'loss is inf' in r.stderr
    assert 'at step' in r.stderr
    r = run_train(train_command(tiny_cifar, str(tmp_path / 'ck2'), '--base_lr_gen', '1e30', '--max_epoch', '1',
                                '--nan_policy', 'skip'))
    assert r.returncode == 0, r.stderr
    assert 'steps skipped' in r.stdout


def batches_trained_on(train_set, epochs, seed=3, batch_size=4):
    """The Lab batches train.train_epoch hands the GAN's step in each of `epochs`, in a run around
    it that trains nothing."""
    seen = {}

    class Recorder:
        memory_format, class_weight = torch.contiguous_format, 0.0
        nan_watch = type('NoNaNs', (), {'take_report': staticmethod(lambda: (0, None))})()

        def step(self, lab, step, global_images, classes):
            seen.setdefault(epoch, []).append(lab.clone())
            return torch.zeros(7)
    args = train.parse_args(['--seed', str(seed), '--batch_size', str(batch_size)])
    run = train.Run(args, Compute(torch.device('cpu'), 'fp32'), distributed.Processes(), Recorder(), train_set,
                    None, {}, None, {})
    for epoch in epochs:
        outcome = train.train_epoch(run, epoch, 0, type('NoSignal', (), {'signal': None})())
        assert outcome.exit_code is None
    return seen


def test_every_epoch_draws_its_own_order_and_flips_and_the_same_again_for_the_same_epoch():
    import dataset
    from conftest import smooth_images
    images = dataset.LabImages(smooth_images(12, seed=1), np.zeros(12, dtype=np.int64))
    first, again = batches_trained_on(images, [0, 1]), batches_trained_on(images, [1])
    assert len(first[0]) == len(first[1]) == 3
    assert not all(torch.equal(a, b) for a, b in zip(first[0], first[1]))
    assert all(torch.equal(a, b) for a, b in zip(first[1], again[1]))


class FirstOfTwoProcesses(distributed.Processes):
    """The first of two processes as train.open_data sees it, without a process group."""

    def __init__(self):
        super().__init__(rank=0, world_size=2, local_rank=0)

    def barrier(self):
        pass


def test_the_last_batch_is_checked_against_the_processes_on_the_images_left_by_the_colourfulness_filter(
        tiny_cifar, tmp_path):
    import dataset
    from training import remedies
    values = np.sort(remedies.colorfulness_of_images(dataset.load_split(tiny_cifar, train=True)))
    assert len(values) == 80 and values[0] < values[1]
    # 80 images: a last batch of 2 of 78, one for each process; the dullest dropped, 79: a last batch of 1
    args = train.parse_args(['--data_path', tiny_cifar, '--save_path', str(tmp_path), '--batch_size', '78',
                             '--min_colorfulness', str((values[0] + values[1]) / 2)])
    with pytest.raises(UserError, match='the last batch of each epoch holds 1 of the 79 training images'):
        train.open_data(args, FirstOfTwoProcesses(), Compute(torch.device('cpu'), 'fp32'))


# ---------------------------------------------------------------- under torchrun (2 CPU processes, Gloo)

TORCHRUN = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2']
# Runs that must compare step for step: no dropout, no averaging, fp32, fixed layer forms.
COMPARABLE = ['--gen_dropout', '0', '--precision', 'fp32', '--ema_decay', '0', '--autotune', 'off', '--seed', '3']


def comparable_flags(data, out, *extra):
    return ['--data_path', data, '--save_path', str(out / 'ck'), '--samples_path', str(out / 'samples'),
            '--batch_size', '32', '--val_batches', '1', *COMPARABLE, *extra]


def torchrun(args, **kwargs):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    return subprocess.run(TORCHRUN + [os.path.join(ROOT, 'train.py')] + args, cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240, **kwargs)


def log_rows(run_dir, name='log.csv'):
    with open(run_dir / 'ck' / name) as f:
        return list(csv.DictReader(f))


def outputs_on_a_fixed_batch(checkpoint):
    """The trained generator's and the discriminator's outputs in train mode (batch statistics)."""
    ckpt = load(checkpoint)
    G, D = Generator('batch', 0.0), Discriminator('batch')
    G.load_state_dict(ckpt['generator_train']), D.load_state_dict(ckpt['discriminator'])
    lab = lab_batch(8, seed=42)
    with torch.no_grad():
        return G.train()(lab[:, :1]), D.train()(lab)


def assert_same_run(rows_a, rows_b, rel=0.01):
    """fp32 runs whose sums are ordered differently (other process counts, thread counts or
    memory layouts) drift apart by about 1e-3 in five steps: Adam turns the rounding noise of
    gradients near zero into learning-rate-sized steps (docs/distributed.md). That the two
    processes compute the same gradients is proven in fp64 by tests/training/test_distributed.py."""
    assert [(r['epoch'], r['step'], r['phase'], r['images']) for r in rows_a] == \
           [(r['epoch'], r['step'], r['phase'], r['images']) for r in rows_b]
    for a, b in zip(rows_a, rows_b):
        for key in ('g_adv', 'g_l1', 'd_loss'):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=rel), (a['epoch'], a['phase'], key)


def assert_same_first_steps(rows_a, rows_b):
    """Each step's logged losses (steps.csv, --log_steps 1), summed over the processes. Step 1
    runs on the initial weights: the same images, split between the processes and normalized
    over the whole batch, give the same losses to the rounding of sums in another order (6
    digits, docs/distributed.md); measured 2e-6 apart, against 0.3% or more with every process
    taking the same part or with batch norm unsynchronized. Step 2 follows one Adam step, which
    moves each weight by about a learning rate in its gradient's direction: rounding turns that
    direction only where a gradient is below its noise (0.08% of the weights), wrong gradients
    turn it for many. Measured 3e-5 apart; with one process's share of the gradients dropped,
    2% to 13%."""
    assert [r['step'] for r in rows_a[:2]] == ['1', '2']
    assert [(r['epoch'], r['step'], r['images']) for r in rows_a] == \
           [(r['epoch'], r['step'], r['images']) for r in rows_b]
    for a, b, rel in zip(rows_a, rows_b, (1e-5, 1e-3)):  # steps 1 and 2
        for key in ('g_adv', 'g_l1', 'g_loss', 'd_loss'):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=rel, abs=0), (a['step'], key)


def test_two_processes_train_what_one_process_trains_and_one_process_resumes_them(tiny_cifar, tmp_path):
    two, one, two_then_one = (tmp_path / name for name in ('two', 'one', 'two_then_one'))
    r = torchrun(comparable_flags(tiny_cifar, two, '--max_steps', '3', '--save_steps', '2', '--log_steps', '1'))
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count('options: ') == 1  # only the first process prints
    assert '2 processes, 16 images each per step' in r.stdout
    r1 = run_in_process(train.main, comparable_flags(tiny_cifar, one, '--max_steps', '3', '--save_steps', '2',
                                                     '--log_steps', '1'))
    assert r1.returncode == 0, r1.stderr[-2000:]
    assert_same_first_steps(log_rows(two, 'steps.csv'), log_rows(one, 'steps.csv'))

    # One writer: each epoch logged once; the same files as one process writes.
    assert len(log_rows(two)) == 2
    assert sorted(os.listdir(two / 'ck')) == sorted(os.listdir(one / 'ck'))
    assert_same_run(log_rows(two), log_rows(one))
    g1, d1 = outputs_on_a_fixed_batch(one / 'ck' / 'checkpoint_ep0.pt')

    def assert_as_close_as_rounding_allows(checkpoint):
        # Two 1-process runs that round differently (1 or 2 threads, either memory layout) differ
        # by up to 0.18 in G's and 0.01 in D's outputs after 5 steps (docs/distributed.md); these
        # run 3. Networks that had not trained alike would differ by the outputs' whole range.
        g, d = outputs_on_a_fixed_batch(checkpoint)
        assert (g - g1).abs().max().item() < 0.3 and (d - d1).abs().max().item() < 0.1

    assert_as_close_as_rounding_allows(two / 'ck' / 'checkpoint_ep0.pt')

    # A 2-process checkpoint resumed by one process finishes as the straight runs do (the reverse:
    # test_distributed.py's resume test, and docs/distributed.md).
    r = run_in_process(train.main, comparable_flags(tiny_cifar, two_then_one, '--max_steps', '3',
                                                    '--resume', str(two / 'ck' / 'checkpoint_step2.pt')))
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'resuming from' in r.stdout and 'epoch 0, batch 2, step 2' in r.stdout
    for resumed in (two_then_one,):
        assert_same_run(log_rows(resumed)[-1:], log_rows(one)[-1:])  # the validation of the final networks
        assert_as_close_as_rounding_allows(resumed / 'ck' / 'checkpoint_ep0.pt')

    # test.py scores a 2-process checkpoint as any other.
    r = run_in_process(test_cli.main, ['--data_path', tiny_cifar, '--checkpoints', str(two / 'ck' / 'checkpoint_ep0.pt'),
                                       '--save_path', str(tmp_path / 'scores')])
    assert r.returncode == 0, r.stderr[-2000:]


def test_a_global_batch_the_processes_cannot_share_equally_is_a_one_line_error(tiny_cifar, tmp_path):
    # Refused before any collective, so a process that thinks it is one of two shows it alone.
    args = train.parse_args(comparable_flags(tiny_cifar, tmp_path, '--batch_size', '31'))
    with pytest.raises(UserError, match='--batch_size 31 is the global batch.*multiple of 2'):
        train.train(args, Compute(torch.device('cpu'), 'fp32'), distributed.Processes(rank=0, world_size=2))
    assert not os.path.exists(tmp_path / 'ck')  # nothing written


def test_ctrl_c_to_the_launcher_leaves_one_whole_checkpoint_and_no_process(tiny_cifar, tmp_path):
    args = TORCHRUN + [os.path.join(ROOT, 'train.py')] + comparable_flags(tiny_cifar, tmp_path, '--max_epoch', '100',
                                                                         '--log_steps', '1')
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    launcher = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
    first = tmp_path / 'ck' / 'steps.csv'  # written after the first step
    deadline = time.time() + 120
    while not first.exists() and time.time() < deadline:  # wait until training is under way
        time.sleep(0.5)
    assert first.exists(), 'training did not start'
    launcher.send_signal(signal.SIGINT)
    out, err = launcher.communicate(timeout=90)
    assert launcher.returncode != 0
    assert err.count('interrupted: saved') == 1  # written once, by the first process
    path = err.split('interrupted: saved ')[1].split(' (epoch')[0]
    ckpt = load(path)
    assert ckpt['step'] >= 1 and len(ckpt['rng_per_process']) == 2
    assert not [n for n in os.listdir(tmp_path / 'ck') if n.endswith('.tmp')]
    leftover = subprocess.run(['pgrep', '-f', str(tmp_path)], capture_output=True, text=True).stdout.split()
    assert leftover == []


# ---------------------------------------------------------------- folders of photographs, larger networks

def folder_command(data, ck, *flags):
    return train_command(data, ck, '--dataset', 'folder', '--image_size', '64', '--num_workers', '0',
                         '--tensorboard', 'off', *flags)


def test_a_64_pixel_folder_run_resumes_mid_epoch_bit_for_bit(tiny_folder, tmp_path):
    straight, split = str(tmp_path / 'straight'), str(tmp_path / 'split')
    fixed = ['--max_epoch', '1', '--val_batches', '1']  # 24 images: 3 batches of 8
    r = run_train(folder_command(tiny_folder, straight, *fixed))
    assert r.returncode == 0, r.stderr
    assert 'data: 24 training images and 8 test images' in r.stdout
    assert run_train(folder_command(tiny_folder, split, *fixed, '--max_steps', '1')).returncode == 0
    # resumed with decoding workers: the same images, crops and flips as decoded in the process
    r = run_train(folder_command(tiny_folder, split, *fixed, '--resume', 'latest', '--num_workers', '2'))
    assert r.returncode == 0, r.stderr
    assert 'epoch 0, batch 1, step 1' in r.stdout
    a, b = load(os.path.join(straight, 'checkpoint_ep0.pt')), load(os.path.join(split, 'checkpoint_ep0.pt'))
    assert a['step'] == b['step'] == 3 and a['args']['image_size'] == 64
    assert 'e6.model.0.weight' in a['generator_train'] and 'down4.model.0.weight' in a['discriminator']
    assert_same_checkpoint(a, b)


def test_a_resume_at_another_image_size_is_refused_in_one_line(tiny_folder, tmp_path):
    ck = str(tmp_path / 'ck')
    assert run_train(folder_command(tiny_folder, ck, '--max_steps', '1', '--val_batches', '1')).returncode == 0
    r = run_train(folder_command(tiny_folder, ck, '--max_steps', '2', '--resume', 'latest', '--image_size', '128'))
    assert r.returncode == 2
    assert '--image_size 64' in r.stderr and '--image_size 128' in r.stderr and len(r.stderr.splitlines()) == 1


def test_bad_and_odd_files_are_skipped_or_converted_and_named_in_one_line(tiny_folder, tmp_path):
    import cv2
    import numpy as np
    from PIL import Image
    folder = os.path.join(tiny_folder, 'train', 'a')
    photo = cv2.imread(os.path.join(folder, '000.png'))
    ok, jpeg = cv2.imencode('.jpg', photo)
    with open(os.path.join(folder, 'truncated.jpg'), 'wb') as f:
        f.write(jpeg.tobytes()[:len(jpeg) // 2])
    open(os.path.join(folder, 'empty.jpg'), 'wb').close()
    with open(os.path.join(folder, 'notes.png'), 'w') as f:
        f.write('not a picture\n')
    gray = cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY)
    cv2.imwrite(os.path.join(folder, 'gray.png'), cv2.merge([gray, gray, gray]))
    Image.fromarray(photo[..., ::-1]).convert('CMYK').save(os.path.join(folder, 'cmyk.jpg'))
    cv2.imwrite(os.path.join(folder, 'sixteen.png'), photo.astype(np.uint16) * 257)
    ck = str(tmp_path / 'ck')
    r = run_train(folder_command(tiny_folder, ck, '--max_epoch', '1', '--val_batches', '1', '--batch_size', '15'))
    assert r.returncode == 0, r.stderr
    assert 'data: 30 training images' in r.stdout  # every file listed; 2 epochs' worth of steps: 15 + 15
    lines = [line for line in r.stderr.splitlines() if 'skipped' in line]
    assert len(lines) == 1, r.stderr
    assert 'skipped 4 files this epoch: 3 unreadable (' in lines[0] and '1 grayscale (' in lines[0]
    assert all(name in lines[0] for name in ('truncated.jpg', 'empty.jpg', 'notes.png', 'gray.png'))
    assert 'cmyk' not in lines[0] and 'sixteen' not in lines[0]
    listed = os.path.join(ck, 'skipped_training.txt')
    assert lines[0].endswith(f'all 4 listed in {listed}')
    assert sorted(open(listed).read().split()) == sorted(
        ['unreadable', 'train/a/truncated.jpg', 'unreadable', 'train/a/empty.jpg', 'unreadable', 'train/a/notes.png',
         'grayscale', 'train/a/gray.png'])


def test_two_processes_train_and_resume_on_a_folder(tiny_folder, tmp_path):
    flags = ['--data_path', tiny_folder, '--dataset', 'folder', '--image_size', '64', '--num_workers', '0',
             '--save_path', str(tmp_path / 'ck'), '--samples_path', str(tmp_path / 's'), '--batch_size', '8',
             '--val_batches', '1', '--precision', 'fp32', '--autotune', 'off', '--tensorboard', 'off']
    r = torchrun(flags + ['--max_steps', '1', '--save_steps', '1'])
    assert r.returncode == 0, r.stderr[-3000:]
    r = torchrun(flags + ['--max_steps', '2', '--resume', 'latest'])
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'epoch 0, batch 1, step 1' in r.stdout and '2 processes, 4 images each per step' in r.stdout
    assert load(str(tmp_path / 'ck' / 'checkpoint_ep0.pt'))['step'] == 2


def test_tensorboard_holds_the_run_and_a_resumed_run_continues_it_without_repeats(tiny_cifar, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ck = str(tmp_path / 'ck')
    flags = ['--log_steps', '2', '--val_batches', '1', '--max_epoch', '2']  # 10 steps an epoch
    assert run_train(train_command(tiny_cifar, ck, '--max_steps', '12', *flags)).returncode == 0
    r = run_train(train_command(tiny_cifar, ck, '--max_steps', '16', '--resume', 'latest', *flags))
    assert r.returncode == 0, r.stderr
    events = EventAccumulator(os.path.join(ck, 'tensorboard'), size_guidance={'images': 0, 'scalars': 0})
    events.Reload()
    tags = events.Tags()
    assert {'train/g_l1', 'train/g_adv', 'train/d_loss', 'train/d_acc', 'speed/lr_gen', 'speed/images_per_s'} <= \
        set(tags['scalars'])
    assert [e.step for e in events.Scalars('train/g_l1')] == list(range(2, 17, 2))
    with open(os.path.join(ck, 'steps.csv')) as f:
        logged = {int(row['step']): float(row['g_l1']) for row in csv.DictReader(f)}
    for e in events.Scalars('train/g_l1'):
        assert e.value == pytest.approx(logged[e.step], rel=1e-6)
    assert [e.step for e in events.Scalars('val/g_l1')] == [10, 12, 16]  # epoch 0's end, the stop, the resumed stop
    assert {'val/colorfulness', 'val/colorfulness_gap', 'val/semantic_accuracy', 'val/classifier_fd',
            'val/d_acc'} <= set(tags['scalars'])
    image = events.Images('samples')[0]
    assert image.width > 3 * 32 and image.height > 3 * 32
    args = json.load(open(os.path.join(ck, 'args.json')))
    assert set(args['provenance']['versions']) == {'python', 'torch', 'torchvision', 'numpy', 'opencv'}
    assert 'commit' in args['provenance']['code'] and 'provenance' in load(os.path.join(ck, 'checkpoint_ep1.pt'))


def test_an_unwritable_tensorboard_folder_warns_once_and_training_goes_on(tiny_cifar, tmp_path):
    ck = tmp_path / 'ck'
    ck.mkdir()
    (ck / 'tensorboard').write_text('a file where the folder would go')
    r = run_train(train_command(tiny_cifar, str(ck), '--max_steps', '4', '--log_steps', '1', '--val_batches', '1'))
    assert r.returncode == 0, r.stderr
    assert len([line for line in r.stderr.splitlines() if 'TensorBoard' in line]) == 1
    assert os.path.isfile(ck / 'checkpoint_ep0.pt')


# ---------------------------------------------------------------- the class context (--class_loss)

def test_a_class_loss_run_trains_on_each_images_own_label_and_its_generator_goes_through_the_tools(
        tiny_cifar, tmp_path, monkeypatch):
    import dataset
    import export as export_cli
    from training.gan import ColorizationGAN
    seen = []
    real_step = ColorizationGAN.step

    def recording_step(self, lab, step, global_images=None, classes=None):
        seen.append((lab.clone(), classes.clone()))
        return real_step(self, lab, step, global_images, classes)
    monkeypatch.setattr(ColorizationGAN, 'step', recording_step)
    ck = str(tmp_path / 'ck')
    r = run_train(train_command(tiny_cifar, ck, '--class_loss', '0.01', '--max_steps', '3', '--val_batches', '1',
                                '--classifier', 'off'))
    assert r.returncode == 0, r.stderr
    assert '--class_loss 0.01: a class context over the 10 classes' in r.stdout
    # every image of every step came with its own label: found among the training images (flipped or not)
    train_set = dataset.load_split(tiny_cifar, train=True)
    L = train_set.lab[..., 0]
    for lab, classes in seen:
        for image, label in zip(lab[:, 0], classes.tolist()):
            match = [i for i in range(len(L)) if torch.equal(image, L[i]) or torch.equal(image, L[i].flip(1))]
            assert match and all(train_set.labels[i] == label for i in match)
    ckpt = load(os.path.join(ck, 'checkpoint_ep0.pt'))
    assert ckpt['generator']['context.classes.weight'].shape == (10, 512)
    # the generator file, test.py and export.py rebuild the class context from the tensors
    single = str(tmp_path / 'g.safetensors')
    assert run_in_process(export_cli.main, [os.path.join(ck, 'checkpoint_ep0.pt'), '--out', single]).returncode == 0
    G = checkpoints.load_generator(single, torch.device('cpu'))[0]
    assert G.context is not None and torch.equal(G.state_dict()['context.fuse.model.0.weight'],
                                                 ckpt['generator']['context.fuse.model.0.weight'])
    out = str(tmp_path / 'scores')
    r = run('test.py', '--data_path', tiny_cifar, '--checkpoints', os.path.join(ck, 'checkpoint_ep0.pt'), single,
            '--labels', 'ckpt', 'file', '--save_path', out, '--num_grids', '0', '--precision', 'fp32', '--classifier', 'off')
    assert r.returncode == 0, r.stderr
    scores = json.load(open(os.path.join(out, 'metrics.json')))['checkpoints']
    assert scores['ckpt']['mean_ab_error'] == pytest.approx(scores['file']['mean_ab_error'], abs=1e-7)


def test_a_class_loss_on_images_without_classes_is_a_one_line_error(tmp_path):
    from conftest import smooth_images
    import cv2
    photos = tmp_path / 'photos'
    for split in ('train', 'val'):  # the images straight in train/ and val/: no class subfolders
        os.makedirs(photos / split)
        for i, rgb in enumerate(smooth_images(4, seed=1)):
            cv2.imwrite(str(photos / split / f'{i}.png'), cv2.cvtColor(cv2.resize(rgb, (64, 64)), cv2.COLOR_RGB2BGR))
    r = run_train(train_command(str(photos), str(tmp_path / 'ck'), '--dataset', 'folder', '--image_size', '64',
                                '--class_loss', '0.01', '--max_steps', '1', '--num_workers', '0'))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert '--class_loss needs the training images' in r.stderr and 'train/<class>/' in r.stderr
