"""The GAN under training and what its run needs: the GAN object with its step, losses and state
(gan), train.py's flags and recipes (options), the optimizers' layouts (optimizers), the NaN
policy's watch (nan_watch), the layer-form choice (layer_forms), the remedies for grey
colorizations (remedies), a colour-distribution head's bins, targets and loss (ab_classes),
several processes under torchrun (distributed), TensorBoard files (runlog).

Layer 2: may import core/, metrics/, storage/ and the top-level models.py, dataset.py, utils.py,
spectral.py; never a command.
"""
