"""How the GAN trains, as a frozen dataclass: `TrainConfig`, the companion of models.ModelConfig.

train.py builds both once from its flags (training/options.py, configs_from_args) and writes them
into every checkpoint as plain dicts (`model_config`, `train_config`); a checkpoint of an earlier
release, which saved only its flags (`args`), gives them by `from_flags`.
"""
import dataclasses


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """What the GAN object needs to train, besides the networks' shapes (models.ModelConfig):

    - the losses and their weights: l1_weight, smoothing (the discriminator's real label under
      bce), adv_loss ('bce' or 'hinge'), class_loss (the class context's cross-entropy weight);
    - the learning rates and their schedule, and the averaged generator's decay;
    - the remedies that change the targets or the loss: color_enhance (1 is off; the step
      enhances the targets it is given) and rebalance (lambda, or None; the L1's pixel weights
      come from the training images, which the GAN never sees: set gan.pixel_weights to
      training.remedies.RebalanceWeights.from_training_set(images, lambda), or its step refuses
      to train; a distribution head's weights come with its ab_classes);
    - how a step runs without changing what it computes: channels_last ('auto', 'on', 'off') and
      nan_policy ('stop', 'skip');
    - seed, which draws the weights (the networks are built after torch.manual_seed(seed)), and
      the batch-norm calibration's sample.

    Left out, each with its owner: the device and precision (core.cli.Compute, where the GAN runs,
    which the same config may change between runs); the data set, its path, the batch size, the
    held-out images and the colourfulness filter (dataset.open_splits and train.py, which choose
    the batches the GAN is given); the layer forms' autotuning (training/layer_forms.py). The
    defaults are train.py's."""
    l1_weight: float = 0.99
    smoothing: float = 0.9
    adv_loss: str = 'bce'
    class_loss: float = 0.0
    base_lr_gen: float = 3e-4
    base_lr_disc: float = 6e-5
    lr_decay_rate: float = 0.1
    lr_decay_steps: float = 6e4
    ema_decay: float = 0.999
    rebalance: float = None
    color_enhance: float = 1.0
    channels_last: str = 'auto'
    nan_policy: str = 'stop'
    seed: int = 0

    @classmethod
    def from_flags(cls, flags):
        """From train.py's flags as a dict: a run's, or the `args` a checkpoint of an earlier
        release saved (a flag it lacks takes its default)."""
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in flags.items() if key in names})

    from_dict = from_flags  # to_dict's keys are the flags' names

    def to_dict(self):
        return dataclasses.asdict(self)
