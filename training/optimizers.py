"""Adam laid out for the device it steps on: on CPUs the fused kernel over dense views of
channels-last weights (DenseViewAdam), elsewhere torch's Adam whose loaded moments take their
weights' layout (LaidOutAdam). The same numbers as torch.optim.Adam either way.

Imports torch only.
"""
import copy

import torch


def adam(params, lr, device, scaled=False):
    """`scaled`: a gradient scaler will inspect the gradients (fp16), through the optimizer's own
    parameters, which DenseViewAdam's views hold only inside its step: it is not used then."""
    # The fused kernel: measured 2x faster than the multi-tensor one on a CPU (docs/performance.md).
    if device.type == 'cpu' and not scaled:
        return DenseViewAdam(params, lr=lr, betas=(0.5, 0.999), fused=True)
    return LaidOutAdam(params, lr=lr, betas=(0.5, 0.999), fused=device.type == 'cuda' or None)


class LaidOutAdam(torch.optim.Adam):
    """torch.optim.Adam whose loaded moments take the layout of the weights they meet. torch's
    own loading keeps the saved strides, and its fused CUDA kernel needs a moment's strides to be
    its weight's: a checkpoint from a CPU (channels-last weights) or from another --channels_last
    would crash at the first step."""

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            for p in group['params']:
                if p not in self.state:
                    continue
                state = self.state[p]
                for key, value in state.items():
                    if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                        state[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def _channels_last_only(t):
    """A 4-D tensor laid out channels-last and not also contiguous (as a 1x1 kernel would be)."""
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def _nhwc(t):
    """The dense (N, H, W, C) view of a channels-last (N, C, H, W) tensor."""
    return t.permute(0, 2, 3, 1)


class DenseViewAdam(torch.optim.Adam):
    """Adam on the CPU's fused kernel, handed dense views of channels-last weights, gradients and
    moments. The kernel is elementwise over memory, so the numbers are the same; but it clones
    every gradient that is not contiguous, and for channels-last weights those clones were the
    largest copies of a step (docs/performance.md). The state dict holds the moments in the
    weights' own shapes and layout, as torch.optim.Adam's does. One parameter group; gradients
    are read at `step`, so no gradient scaler or closure."""

    def __init__(self, params, **kwargs):
        self.weights = list(params)
        self.viewed = [i for i, w in enumerate(self.weights) if _channels_last_only(w)]  # the weights seen as views
        views = list(self.weights)
        for i in self.viewed:
            views[i] = _nhwc(self.weights[i].detach())
        super().__init__(views, **kwargs)
        self.views = self.param_groups[0]['params']

    @torch.no_grad()
    def step(self, closure=None):
        for i in self.viewed:
            grad = self.weights[i].grad
            # The kernel reads the gradient's memory in the weight's order: same layout needed.
            self.views[i].grad = None if grad is None else _nhwc(grad.contiguous(memory_format=torch.channels_last))
        try:
            return super().step(closure)
        finally:
            for i in self.viewed:
                self.views[i].grad = None

    def zero_grad(self, set_to_none=True):
        for weight in self.weights:
            if set_to_none:
                weight.grad = None
            elif weight.grad is not None:
                weight.grad.zero_()

    def state_dict(self):
        state = super().state_dict()
        for i in self.viewed:
            if i in state['state']:
                state['state'][i] = {k: v.permute(0, 3, 1, 2) if torch.is_tensor(v) and v.dim() == 4 else v
                                     for k, v in state['state'][i].items()}
        return state

    def load_state_dict(self, state_dict):
        """Also from torch.optim.Adam's state dicts, and from runs whose weights had another layout:
        each moment is laid out as the kernel will read it."""
        state_dict = copy.copy(state_dict)
        state_dict['state'] = {i: {k: self._laid_out(v, i) if torch.is_tensor(v) and v.dim() == 4 else v
                                   for k, v in s.items()} for i, s in state_dict['state'].items()}
        super().load_state_dict(state_dict)

    def _laid_out(self, moment, i):
        view = self.views[i]
        if i in self.viewed:
            moment = _nhwc(moment)
        return moment if moment.stride() == view.stride() else torch.empty_like(view).copy_(moment)
