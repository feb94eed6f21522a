"""The GAN under training and what its run needs: the GAN object with its step and state (gan),
its losses (loss), how it trains (config: TrainConfig; the networks' ModelConfig is models.py's),
train.py's flags, recipes and the configs they make (options), the optimizers' layouts
(optimizers), the NaN policy's watch (nan_watch), the layer-form choice (layer_forms), the
remedies for grey colorizations (remedies), the training images' ab bins, prior and rebalancing
weights (ab_bins), a colour-distribution head's targets over them (ab_classes),
several processes under torchrun (distributed), TensorBoard files (runlog).

Layer 2: may import core/, metrics/, storage/ and the top-level models.py, dataset.py, utils.py,
spectral.py; never a command.
"""
