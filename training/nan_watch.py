"""The NaN policy's watch over each training step's losses: stop at a non-finite loss, or skip the
step and leave everything as it was (--nan_policy stop|skip).

Where both optimizers are fused and no gradient scaler runs, the check stays on the device, with
no host sync in a step: a skip reaches the fused kernels as their `found_inf`, and `watch` (one
device tensor, written in place so that a captured step keeps writing the same memory) holds
[steps skipped, the first non-finite step (0: none), its generator and discriminator losses]
until `take_report` reads it back; under stop nothing holds the step back, so it and the steps
after it, up to that read-back, are applied as computed. Elsewhere (a gradient scaler in fp16,
the unfused optimizers of MPS) the check reads the losses back each step and raises before
anything is updated.

Imports torch only; the processes (training.distributed.Processes) are handed in.
"""
import contextlib
import math

import torch


class NonFiniteLoss(ArithmeticError):
    pass


class NanWatch:
    """`models`: the networks whose buffers (batch-norm statistics, spectral-norm vectors) a
    skipped step must leave as they were; `average`: the averaged generator (or None), whose
    weights likewise; `optimizers`: both networks' Adams."""

    def __init__(self, policy, procs, models, average, optimizers, scaled, device):
        self.skipping = policy == 'skip'
        self.procs = procs
        self.models, self.average, self.optimizers = models, average, optimizers
        self.on_device = not scaled and all(opt.defaults.get('fused') for opt in optimizers)
        self.watch = torch.zeros(4, device=device)

    def snapshot(self):
        """What a skipped step restores, taken before the step: None unless skipping."""
        return [t.clone() for t in self._kept_tensors()] if self.skipping else None

    def check(self, g_loss, d_loss, step, snapshot):
        """After both losses, before any update. On the device: a device bool, true where both
        losses (summed over the processes) are finite. On the host: None, or NonFiniteLoss raised
        with the gradients dropped and the snapshot restored."""
        losses = self.procs.sum_(torch.stack([g_loss.detach().float(), d_loss.detach().float()]))
        if not self.on_device:
            self._check_on_host(losses, snapshot)
            return None
        finite = torch.isfinite(losses).all()
        w = self.watch
        if self.skipping:
            w.copy_(torch.cat([w[:1] + (~finite).float(), w[1:]]))
        else:
            first = ~finite & (w[1] == 0)
            # `step` is a number, or a device tensor holding it (a captured step reads it there)
            number = step.reshape(1).to(losses.dtype) if torch.is_tensor(step) else losses.new_full((1,), float(step))
            w.copy_(torch.where(first, torch.cat([w[:1], number, losses]), w))
        return finite

    @contextlib.contextmanager
    def updates(self, finite):
        """The optimizers' steps inside: where skipping on the device, the fused kernels leave
        weights, moments and step counts as they were where `finite` is false."""
        if finite is not None and self.skipping:
            for opt in self.optimizers:
                opt.found_inf = (~finite).float()
        try:
            yield
        finally:
            for opt in self.optimizers:
                opt.__dict__.pop('found_inf', None)

    @torch.no_grad()
    def settle(self, finite, snapshot, sums):
        """After the step: where skipping on the device and the step was not finite, the kept
        tensors back from the snapshot and the batch's sums zero. Returns the sums."""
        if finite is None or not self.skipping:
            return sums
        for t, saved in zip(self._kept_tensors(), snapshot):
            t.copy_(torch.where(finite, t, saved))
        return torch.where(finite, sums, torch.zeros_like(sums))

    def take_report(self):
        """What the device-side check saw since the last call, read back (one host sync): (steps
        skipped, NonFiniteLoss for the first non-finite step under --nan_policy stop, or None)."""
        skipped, step, g_value, d_value = self.watch.tolist()
        self.watch.zero_()
        if not step:
            return int(skipped), None
        error = self._error(g_value, d_value)
        error.step = int(step)
        return int(skipped), error

    def _check_on_host(self, losses, snapshot):
        """On every device and in every precision; under torchrun the processes summed their
        losses, so that a NaN on one stops or skips on all."""
        if bool(torch.isfinite(losses).all()):
            return
        g_value, d_value = losses.tolist()
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        if snapshot is not None:
            with torch.no_grad():
                for t, saved in zip(self._kept_tensors(), snapshot):
                    t.copy_(saved)
        raise self._error(g_value, d_value)

    def _error(self, g_value, d_value):
        name, value = ('generator', g_value) if not math.isfinite(g_value) else ('discriminator', d_value)
        return NonFiniteLoss(f"the {name} loss is {value}" + (' (summed over the processes)'
                                                             if self.procs.distributed else ''))

    def _kept_tensors(self):
        average = list(self.average.parameters()) if self.average is not None else []
        return [b for model in self.models for b in model.buffers()] + average
