"""One training run over several processes, as torchrun launches it: the process group, each
process's share of a global batch, batch norm over the whole global batch, and the few decisions
all processes must take together (stop, skip a step, resume from what).

Without torchrun (no WORLD_SIZE, or 1), `Processes` is a single process and every method is
the identity, so train.py has one code path.
"""
import datetime
import inspect
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


class Processes:
    """This process's place in the run: `rank` of `world_size`, `local_rank` on its machine."""

    def __init__(self, rank=0, world_size=1, local_rank=0):
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.host_group = None  # under NCCL, a Gloo group for what is agreed on every step (max)

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def distributed(self):
        return self.world_size > 1

    @classmethod
    def from_environment(cls, device_type):
        """Join the process group that torchrun describes in the environment: NCCL for CUDA (one
        GPU per process, by LOCAL_RANK), Gloo otherwise."""
        world_size = int(os.environ.get('WORLD_SIZE', 1))
        if world_size <= 1:
            return cls()
        rank, local_rank = int(os.environ['RANK']), int(os.environ.get('LOCAL_RANK', 0))
        if device_type == 'cuda':
            torch.cuda.set_device(local_rank)
        backend = 'nccl' if device_type == 'cuda' else 'gloo'
        # A long validation on the first process keeps the others waiting at a barrier.
        timeout = datetime.timedelta(hours=2)
        dist.init_process_group(backend, timeout=timeout)
        procs = cls(rank, world_size, local_rank)
        if backend == 'nccl':
            procs.host_group = dist.new_group(backend='gloo', timeout=timeout)
        return procs

    def device(self, device):
        """The device this process trains on: its own GPU under torchrun."""
        if self.distributed and device.type == 'cuda':
            return torch.device('cuda', self.local_rank)
        return device

    def share(self, tensor):
        """This process's part of a global batch: consecutive slices, sizes differing by at most one."""
        if not self.distributed:
            return tensor
        return torch.tensor_split(tensor, self.world_size)[self.rank]

    def sum_(self, tensor):
        """Sum `tensor` over all processes, in place; returns it."""
        if self.distributed:
            dist.all_reduce(tensor)
        return tensor

    def max(self, value):
        """The largest of the processes' whole numbers `value`, on every process: how they agree
        to stop at the same step when a signal reached only some of them. On the host (Gloo), as
        it runs after every step: an NCCL tensor read back would make each step wait for the GPU."""
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.host_group)
        return int(t.item())

    def broadcast(self, obj):
        """The first process's `obj`, on every process."""
        if not self.distributed:
            return obj
        holder = [obj]
        dist.broadcast_object_list(holder, src=0, device=self._collective_device())
        return holder[0]

    def gather(self, obj):
        """[obj of rank 0, rank 1, ...] on the first process, None on the others."""
        if not self.distributed:
            return [obj]
        everyone = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, everyone, dst=0)
        return everyone

    def barrier(self):
        if self.distributed:
            dist.barrier()

    def wrap(self, model):
        """`model` in DistributedDataParallel, or as it is for one process. Buffers are not
        broadcast: batch-norm statistics are synchronized by SyncBatchNorm2d, and the spectral
        norm's vectors follow weights that are identical everywhere."""
        if not self.distributed:
            return model
        device = next(model.parameters()).device
        # torch 2.14 renamed the option; older versions know only the first name.
        no_buffer_sync = ({'forward_sync_buffers': False} if 'forward_sync_buffers' in
                          inspect.signature(DistributedDataParallel.__init__).parameters else {'broadcast_buffers': False})
        return DistributedDataParallel(model, device_ids=[device] if device.type == 'cuda' else None, **no_buffer_sync)

    def close(self):
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()

    def _collective_device(self):
        return torch.device('cuda', torch.cuda.current_device()) if dist.get_backend() == 'nccl' else torch.device('cpu')


def process_seed(seed, rank, step):
    """The dropout random stream of process `rank` > 0 from `step` on (process 0 uses `seed`'s, as
    a single process does)."""
    return seed + 1_000_003 * rank + 7919 * step


def random_states(device):
    """(the CPU's random state, `device`'s where it is a GPU, else None): every generator a
    process draws from (dropout on a GPU draws from the GPU's)."""
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == 'cuda' else None


def restore_random_state(ckpt, procs, seed, device=None):
    """Each process's own dropout random state where the checkpoint has one for it (the same
    number of processes); otherwise the first process's, and fresh ones for the others. On a GPU
    the same for its generator; a checkpoint without GPU states (made on a CPU) seeds it from
    (seed, rank, step), so that the resumed run does not repeat its first step's dropout masks."""
    states = ckpt.get('rng_per_process') or [ckpt['rng']]
    if len(states) == procs.world_size or procs.is_main:
        torch.set_rng_state(states[procs.rank] if len(states) == procs.world_size else states[0])
    else:
        torch.manual_seed(process_seed(seed, procs.rank, ckpt['step']))
    if device is None or device.type != 'cuda':
        return
    gpu_states = ckpt.get('rng_cuda') or []
    if len(gpu_states) == procs.world_size or (gpu_states and procs.is_main):
        torch.cuda.set_rng_state(gpu_states[procs.rank] if len(gpu_states) == procs.world_size else gpu_states[0],
                                 device)
    else:
        torch.cuda.manual_seed(process_seed(seed, procs.rank, ckpt['step']))


def lost_contact(error):
    """Whether `error`, raised by a collective, means another process of the run is gone."""
    return isinstance(error, dist.DistError) or any(
        sign in str(error) for sign in ('Connection closed by peer', 'Connection reset', 'Broken pipe', 'Timed out'))


class _SyncBatchNorm(torch.autograd.Function):
    """Training-mode batch norm whose mean and variance are those of the whole global batch,
    summed over the processes, computed in fp32 (or wider) in two passes (mean, then squared deviations) so
    that the figures match one process's to rounding. Its backward sums the two per-channel
    gradient terms over the processes too, which makes the gradients those of the global batch."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, eps, momentum):
        wide = torch.promote_types(x.dtype, torch.float32)
        xf = x.to(wide)
        count = torch.tensor([float(xf.numel() // xf.shape[1])], dtype=wide, device=x.device)
        sums = torch.cat([xf.sum((0, 2, 3)), count])
        dist.all_reduce(sums)
        total = sums[-1]
        mean = sums[:-1] / total
        centered = xf - mean[None, :, None, None]
        squares = centered.square().sum((0, 2, 3))
        dist.all_reduce(squares)
        var = squares / total
        invstd = torch.rsqrt(var + eps)
        xhat = centered * invstd[None, :, None, None]
        with torch.no_grad():
            running_mean.lerp_(mean.to(running_mean.dtype), momentum)
            running_var.lerp_((var * total / (total - 1).clamp(min=1)).to(running_var.dtype), momentum)
        ctx.save_for_backward(xhat, weight, invstd)
        ctx.total = total
        y = xhat * weight.to(wide)[None, :, None, None] + bias.to(wide)[None, :, None, None]
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        xhat, weight, invstd = ctx.saved_tensors
        g = grad.to(xhat.dtype)
        local = torch.cat([g.sum((0, 2, 3)), (g * xhat).sum((0, 2, 3))])
        grad_bias, grad_weight = local.chunk(2)
        grad_bias, grad_weight = grad_bias.clone(), grad_weight.clone()  # this process's own, for DDP to average
        dist.all_reduce(local)
        mean_g, mean_gx = (local / ctx.total).chunk(2)
        scale = (weight.to(xhat.dtype) * invstd)[None, :, None, None]
        grad_x = scale * (g - mean_g[None, :, None, None] - xhat * mean_gx[None, :, None, None])
        return grad_x.to(grad.dtype), grad_weight.to(weight.dtype), grad_bias.to(weight.dtype), None, None, None, None


class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that, in training mode inside a process group, normalizes with the statistics
    of the global batch. Its state dict is BatchNorm2d's, so checkpoints do not depend on the
    number of processes. (torch's nn.SyncBatchNorm refuses CPU tensors, so Gloo runs need this.)"""

    def forward(self, x):
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        self.num_batches_tracked.add_(1)
        momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        return _SyncBatchNorm.apply(x, self.weight, self.bias, self.running_mean, self.running_var, self.eps, momentum)


def synchronize_batchnorm(model):
    """Turn every BatchNorm2d of `model` into a SyncBatchNorm2d holding the same parameter and
    buffer tensors, so that optimizers built over `model` keep working."""
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm2d:
            sync = SyncBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            for key in ('weight', 'bias'):
                setattr(sync, key, getattr(child, key))
            for key in ('running_mean', 'running_var', 'num_batches_tracked'):
                setattr(sync, key, getattr(child, key))
            sync.train(child.training)
            setattr(model, name, sync)
        else:
            synchronize_batchnorm(child)
    return model


def unsynchronized(model):
    """`model` with its SyncBatchNorm2d layers back to BatchNorm2d: for a copy that one process
    uses alone (exact batch-norm statistics and validation, on the first process)."""
    for module in model.modules():
        if type(module) is SyncBatchNorm2d:
            module.__class__ = nn.BatchNorm2d
    return model
