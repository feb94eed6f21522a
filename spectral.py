"""Spectral normalization (Miyato et al. 2018) as a weight parametrization.

The weight, viewed as a matrix (out_channels, rest), is divided by an estimate of its largest
singular value. The estimate comes from power iteration: one step per forward pass in training
mode, none in eval mode; the vectors u and v are buffers, so they persist in the state dict.

Written here rather than taken from torch.nn.utils.parametrizations because the estimate must stay
in fp32 under autocast (a bf16 power iteration loses the digits sigma needs) and must accept a
channels-last weight, whose matrix view is not contiguous.
"""
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize


class SpectralNorm(nn.Module):
    def __init__(self, weight, eps=1e-12, warmup_iterations=15):
        super().__init__()
        self.eps = eps
        matrix = weight.detach().reshape(weight.shape[0], -1).float()
        u = F.normalize(torch.randn(matrix.shape[0], device=weight.device), dim=0, eps=eps)
        v = F.normalize(torch.randn(matrix.shape[1], device=weight.device), dim=0, eps=eps)
        self.register_buffer('u', u)
        self.register_buffer('v', v)
        # Start from a converged estimate, so the first steps are not scaled by a random guess.
        with torch.no_grad():
            for _ in range(warmup_iterations):
                self._power_step(matrix)

    def _power_step(self, matrix):
        self.v.copy_(F.normalize(matrix.t() @ self.u.to(matrix.dtype), dim=0, eps=self.eps))
        self.u.copy_(F.normalize(matrix @ self.v.to(matrix.dtype), dim=0, eps=self.eps))

    def forward(self, weight):
        with torch.autocast(weight.device.type, enabled=False):
            wide = torch.promote_types(weight.dtype, torch.float32)  # fp32 under autocast, fp64 in fp64
            matrix = weight.to(wide).reshape(weight.shape[0], -1)
            if self.training:
                with torch.no_grad():
                    self._power_step(matrix)
            # Clones: the buffers change in place at the next training forward, and autograd
            # must see the values this forward used.
            u, v = self.u.to(wide, copy=True), self.v.to(wide, copy=True)
            sigma = torch.dot(u, matrix @ v)
            return (weight.to(wide) / sigma).to(weight.dtype)


def spectral_norm(module, name='weight'):
    """Spectrally normalize `module.<name>` in place; returns the module."""
    parametrize.register_parametrization(module, name, SpectralNorm(getattr(module, name)))
    return module


def sigma_estimate(module, name='weight'):
    """The current estimate of the largest singular value of the unnormalized weight."""
    param = module.parametrizations[name]
    sn = param[0]
    matrix = param.original.detach().float().reshape(param.original.shape[0], -1)
    return torch.dot(sn.u, matrix @ sn.v)
