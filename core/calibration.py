"""Exact batch-norm statistics for a generator that runs in eval mode.

Momentum-averaged running statistics lag behind weights that still move fast, which costs eval
mode accuracy; so the generator that is validated, saved and used gets averages computed anew,
with its final weights and dropout off, over a fixed sample of training images."""
import contextlib

import torch

# This many training images (a fixed sample per seed), in batches of RECALIBRATION_BATCH: measured
# within 1% of the figures of 6,400 images on every score (docs/performance.md), in a fraction of the time.
RECALIBRATION_IMAGES = 1024
RECALIBRATION_BATCH = 32


@torch.no_grad()
def recalibrate_batchnorm(model, input_batches, autocast=contextlib.nullcontext()):
    """Replace `model`'s batch-norm running statistics by exact averages over `input_batches`;
    returns the model in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.eval()
    for m in norms:
        m.train()
    with autocast:
        for x in input_batches:
            model(x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return model.eval()


def recalibration_batches(train_set, seed, device, memory_format=torch.contiguous_format):
    """The L channel of a fixed, seed-determined sample of training images, in batches."""
    order = torch.Generator().manual_seed(seed)
    size = min(RECALIBRATION_BATCH, len(train_set))
    n = max(1, min(RECALIBRATION_IMAGES, len(train_set)) // size)
    batches = train_set.batches(size, shuffle=True, generator=order, device=device)
    return (lab[:, :1].contiguous(memory_format=memory_format) for _, (_, lab) in zip(range(n), batches))


def recalibrate_generator(G, train_set, seed, device, autocast=contextlib.nullcontext(),
                          memory_format=torch.contiguous_format):
    """Exact batch-norm statistics over the fixed sample of training images that `seed` picks."""
    return recalibrate_batchnorm(G, recalibration_batches(train_set, seed, device, memory_format), autocast)
