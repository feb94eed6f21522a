"""Training over several processes: the same experiment as one process, computed in two Gloo
processes started here (train.py under torchrun is exercised in tests/test_train.py)."""
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from storage import checkpoints
from training import distributed
from core.cli import Compute
from conftest import lab_batch
from training.gan import ColorizationGAN
from training.options import configs_from_args, parse_training_args


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run_in_two_processes(worker, *args):
    """Run worker(procs, *args) in 2 Gloo processes; returns what the first one returned, with
    the second's under the key 'second process' where it returned a dict."""
    with torch.multiprocessing.get_context('spawn').Manager() as manager:
        results = manager.dict()
        mp.spawn(_entry, args=(worker, free_port(), results, args), nprocs=2, join=True)
        first = results[0]
        if isinstance(first, dict):
            first['second process'] = results[1]
        return first


def _entry(rank, worker, port, results, args):
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=2)
    try:
        results[rank] = worker(distributed.Processes(rank, 2, rank), *args)
    finally:
        dist.destroy_process_group()


def _both_worker(procs, x, upstream, cases, lab, checkpoint):
    return {'batchnorm': _batchnorm_worker(procs, x, upstream), 'step': _step_worker(procs, cases, lab),
            'resume': _resume_worker(procs, checkpoint)}


def one_process_checkpoint(path):
    """A mid-epoch checkpoint as one process writes it (step 7, batch 2 of epoch 0) of a run with
    --seed 5, holding other weights than a GAN built with --seed 5 starts with."""
    args = parse_training_args(['--seed', '5', '--channels_last', 'off'])
    gan = ColorizationGAN(*configs_from_args(parse_training_args(['--seed', '1', '--channels_last', 'off'])))
    checkpoints.save_checkpoint(path, checkpoints.training_checkpoint(
        gan, epoch=0, batches_done=2, step=7, flags=vars(args), rng_states=[torch.manual_seed(123).get_state()],
        layer_forms=None))
    return path


def _resume_worker(procs, checkpoint):
    args = parse_training_args(['--seed', '5', '--channels_last', 'off'])
    # as train.py builds it: other weights than the checkpoint's
    gan = ColorizationGAN(*configs_from_args(args), procs=procs)
    ckpt = torch.load(checkpoint, weights_only=True)
    differed = not all(torch.equal(v, ckpt['generator_train'][k]) for k, v in gan.G.state_dict().items())
    position = checkpoints.restore_training(ckpt, checkpoint, gan)
    distributed.restore_random_state(ckpt, procs, args.seed)
    expected_rng = ckpt['rng'] if procs.is_main else \
        torch.Generator().manual_seed(distributed.process_seed(5, procs.rank, 7)).get_state()
    return {'position': position, 'differed': differed,
            'weights': all(torch.equal(v, ckpt['generator_train'][k]) for k, v in gan.G.state_dict().items()),
            'rng': torch.equal(torch.get_rng_state(), expected_rng)}


@pytest.fixture(scope='module')
def two_process_results(tmp_path_factory):
    """What two Gloo processes compute, for the tests below: started once (a start costs seconds)."""
    checkpoint = one_process_checkpoint(str(tmp_path_factory.mktemp('resume') / 'checkpoint_step7.pt'))
    torch.manual_seed(0)
    x = torch.randn(6, 3, 4, 4, dtype=torch.float64) * 3 + 1
    upstream = torch.randn(6, 3, 4, 4, dtype=torch.float64)
    # no dropout and no averaged generator: the step of two processes compares with one's
    cases = [parse_training_args(['--gen_dropout', '0', '--ema_decay', '0', '--channels_last', 'off',
                                  '--disc_norm', norm]) for norm in ('batch', 'spectral')]
    lab = lab_batch(3).double()
    got = run_in_two_processes(_both_worker, x, upstream, cases, lab, checkpoint)
    return {'batchnorm': (x, upstream, got['batchnorm']), 'step': (cases, lab, got['step']), 'resume': got['resume'],
            'second process': got['second process']}


def test_processes_share_every_batch_in_consecutive_parts_that_differ_by_at_most_one():
    batch = torch.arange(11)
    parts = [distributed.Processes(rank, 3).share(batch) for rank in range(3)]
    assert [len(p) for p in parts] == [4, 4, 3]
    assert torch.equal(torch.cat(parts), batch)
    assert distributed.Processes().share(batch) is batch


def _batchnorm_worker(procs, x, upstream):
    bn = distributed.synchronize_batchnorm(nn.Sequential(nn.BatchNorm2d(3).double()))
    part = procs.share(x).clone().requires_grad_()
    y = bn(part)
    (y * procs.share(upstream)).sum().backward()
    return {'y': y.detach(), 'grad_x': part.grad, 'grad_w': bn[0].weight.grad, 'grad_b': bn[0].bias.grad,
            'running_mean': bn[0].running_mean, 'running_var': bn[0].running_var}


def test_synchronized_batch_norm_computes_batch_norm_of_the_whole_global_batch(two_process_results):
    x, upstream, first = two_process_results['batchnorm']
    second = two_process_results['second process']['batchnorm']
    bn = nn.BatchNorm2d(3).double()
    whole = x.clone().requires_grad_()
    y = bn(whole)
    (y * upstream).sum().backward()
    for got, part in ((first, slice(0, 3)), (second, slice(3, 6))):
        torch.testing.assert_close(got['y'], y[part].detach(), rtol=0, atol=1e-12)
        torch.testing.assert_close(got['grad_x'], whole.grad[part], rtol=0, atol=1e-12)
        torch.testing.assert_close(got['running_mean'], bn.running_mean, rtol=0, atol=1e-12)
        torch.testing.assert_close(got['running_var'], bn.running_var, rtol=0, atol=1e-12)
    # Each process's loss is the sum over its own part, and each holds its own part of the
    # parameter gradients (DistributedDataParallel then reduces them): their sum is the whole batch's.
    for key, whole_grad in (('grad_w', bn.weight.grad), ('grad_b', bn.bias.grad)):
        torch.testing.assert_close(first[key] + second[key], whole_grad, rtol=0, atol=1e-12)


def _step_worker(procs, cases, lab):
    results = []
    for args in cases:
        gan = gan_in_fp64(args, procs)
        gan.distribute()  # batch norm over both processes, DistributedDataParallel
        sums = gan.step(procs.share(lab), 1, len(lab))
        results.append({'sums': procs.sum_(sums), 'G': grads(gan.G), 'D': grads(gan.D),
                        'D_buffers': dict(gan.D.named_buffers())})
    return results


def gan_in_fp64(args, procs=None):
    """The GAN of `args` (seeded by its --seed) in fp64, with plain SGD for its optimizers."""
    gan = ColorizationGAN(*configs_from_args(args), Compute(torch.device('cpu'), 'fp32'), procs)
    gan.G.double(), gan.D.double()
    gan.opt_g, gan.opt_d = (torch.optim.SGD(net.parameters(), lr=0.1) for net in (gan.G, gan.D))
    return gan


def grads(model):
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def test_a_step_in_two_processes_computes_the_gradients_of_one_process(two_process_results):
    """In fp64, so that only real differences show: the global batch split in two uneven parts
    (2 + 1 images), batch norm over both, losses weighted by each part's size; with the
    batch-norm and the spectral-norm discriminator."""
    cases, lab, everything = two_process_results['step']
    for args, got in zip(cases, everything):
        gan = gan_in_fp64(args)
        sums = gan.step(lab, 1)
        torch.testing.assert_close(got['sums'], sums, rtol=1e-6, atol=1e-9)
        for name, model in (('G', gan.G), ('D', gan.D)):
            expected = grads(model)
            # relative to the network's largest gradient: biases that batch norm cancels get pure rounding noise
            scale = max(g.abs().max().item() for g in expected.values())
            for key, grad in expected.items():
                assert (got[name][key] - grad).abs().max().item() <= 1e-7 * scale, f"{args.disc_norm}: {name}.{key}"
        for key, buffer in gan.D.named_buffers():
            torch.testing.assert_close(got['D_buffers'][key].double(), buffer.double(), rtol=1e-6, atol=1e-9)


def test_two_processes_resume_a_one_process_checkpoint(two_process_results):
    """A 1-process checkpoint under torchrun: both processes take its weights and position; the
    first continues its random stream, the second starts its own, derived from (seed, rank, step)."""
    for got in (two_process_results['resume'], two_process_results['second process']['resume']):
        assert got['position'] == (0, 2, 7)
        assert got['differed'] and got['weights'] and got['rng']


def test_under_nccl_the_stop_flag_is_agreed_on_the_host_without_waiting_for_the_gpu(monkeypatch):
    """train.py agrees on its stop flag after every step: under NCCL a GPU tensor read back would
    make every step wait for the device, so the flag goes through a Gloo group of CPU tensors."""
    host_group = object()
    reduced = []

    def all_reduce(tensor, op=None, group=None):
        reduced.append((tensor.device.type, group))
        tensor.fill_(130)  # another process's signal
    monkeypatch.setenv('WORLD_SIZE', '2'), monkeypatch.setenv('RANK', '0')
    monkeypatch.setattr(dist, 'init_process_group', lambda backend, **kwargs: None)
    monkeypatch.setattr(dist, 'new_group', lambda backend=None, **kwargs: host_group if backend == 'gloo' else None)
    monkeypatch.setattr(dist, 'get_backend', lambda group=None: 'gloo' if group is host_group else 'nccl')
    monkeypatch.setattr(dist, 'all_reduce', all_reduce)
    monkeypatch.setattr(torch.cuda, 'set_device', lambda device: None)
    monkeypatch.setattr(torch.cuda, 'current_device', lambda: pytest.fail('the stop flag went to the GPU'))
    procs = distributed.Processes.from_environment('cuda')
    assert procs.max(0) == 130
    assert reduced == [('cpu', host_group)]
