"""The networks: U-Net generators (L -> ab) and discriminators (Lab -> real/fake logits).

At 32x32 (CIFAR-10), the reference project's pair: `Generator` and a whole-image `Discriminator`,
with blocks named as in the reference (`down1.model.0.weight`, ...), so that its published
generator weights load as they are. At 64, 128 and 256, the larger networks of Nazeri et al.'s own
(TensorFlow) code for Places365: `NazeriGenerator`, a deeper U-Net of "same"-padded convolutions,
and `PatchDiscriminator`, one score per 70x70 patch. `build_generator` and `build_discriminator`
pick the pair for an image size. `ModelConfig` is what builds a pair: train.py writes it into
every checkpoint and generator file, and what reads them builds the networks from it.
"""
import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from spectral import spectral_norm

GENERATOR_NORMS = ('batch', 'instance')
# What the generator's last layer predicts: ab itself (the reference's), a distribution over ab
# bins decoded by its annealed mean (Zhang et al. 2016), or both, blended.
AB_HEADS = ('regress', 'classify', 'both')
DEFAULT_TEMPERATURE = 0.38  # Zhang et al.'s annealed mean
DEFAULT_BLEND = 0.5  # 'both': the regression's share of the decoded ab
DISCRIMINATOR_NORMS = ('batch', 'instance', 'spectral')
IMAGE_SIZE = 32
# The reference networks first resize 32x32 to 35x35, so that a 4x4 stride-1 unpadded conv returns to 32x32.
RESIZED = 35


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """What builds the networks, and nothing about how they are trained (that is
    training/config.py's TrainConfig): the image size (which picks the pair), the two norms, the
    generator's dropout, the initialization, its ab head and the decoding of a distribution head
    (temperature, blend), and whether the generator has a class context (train.py --class_loss
    above 0). Two counts come from the training data, not from here: a distribution head's ab
    bins and the class context's classes. The defaults are train.py's."""
    image_size: int = IMAGE_SIZE
    gen_norm: str = 'batch'
    disc_norm: str = 'batch'
    gen_dropout: float = 0.5
    apply_weight_init: bool = False
    ab_head: str = 'regress'
    class_context: bool = False
    temperature: float = DEFAULT_TEMPERATURE
    blend: float = DEFAULT_BLEND

    # The fields that give the networks their layers and shapes: a checkpoint resumes only under
    # the same ones (dropout, initialization and decoding change no weight's shape).
    SHAPE_FIELDS = ('image_size', 'gen_norm', 'disc_norm', 'ab_head', 'class_context')

    @classmethod
    def from_flags(cls, flags):
        """From train.py's flags as a dict: a run's, or the `args` a checkpoint of an earlier
        release saved instead of a config (which lacks the flags added since: their defaults,
        so the 32x32 networks and the regression head)."""
        return cls(image_size=int(flags.get('image_size') or IMAGE_SIZE), gen_norm=flags.get('gen_norm', 'batch'),
                   disc_norm=flags.get('disc_norm', 'batch'), gen_dropout=float(flags.get('gen_dropout', 0.5)),
                   apply_weight_init=bool(flags.get('apply_weight_init', 0)),
                   ab_head=flags.get('ab_head', 'regress'), class_context=bool(flags.get('class_loss', 0)),
                   temperature=float(flags.get('temperature', DEFAULT_TEMPERATURE)),
                   blend=float(flags.get('blend', DEFAULT_BLEND)))

    @classmethod
    def from_dict(cls, saved):
        """From `to_dict`'s plain dict; keys of a later release's fields are left out."""
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in saved.items() if key in names})

    def to_dict(self):
        return dataclasses.asdict(self)


class Dropout(nn.Dropout):
    """nn.Dropout with its mask drawn by comparing uniform numbers: the same Bernoulli(1 - p) mask
    and 1 / (1 - p) scaling, about 5x faster to draw on CPUs than bernoulli_."""

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        keep = torch.rand_like(x, dtype=torch.float32) >= self.p  # rand_like keeps channels-last
        return x * keep.to(x.dtype) * (1.0 / (1.0 - self.p))


def _norm_layer(norm, channels):
    if norm == 'batch':
        return nn.BatchNorm2d(channels)
    if norm == 'instance':
        return nn.InstanceNorm2d(channels)
    raise ValueError(f"unknown norm {norm!r}")


class Block(nn.Module):
    def __init__(self, *layers):
        super().__init__()
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


class SameConv2d(nn.Conv2d):
    """A stride-1 4x4 convolution with TensorFlow's "same" padding: zeros, 1 before and 2 after
    in each spatial dimension, so the output has the input's size. A plain Conv2d otherwise (same
    parameters and state-dict keys; init_weights and spectral_norm treat it as one), padding
    explicitly because padding='same' warns at every call for even kernels."""

    PAD = (1, 2, 1, 2)  # (left, right, top, bottom)

    def __init__(self, c_in, c_out, kernel_size=4):
        if kernel_size != 4:
            raise ValueError(f"SameConv2d pads for a 4x4 kernel, got {kernel_size}")
        super().__init__(c_in, c_out, kernel_size, 1, 0)

    def forward(self, x):
        return super().forward(F.pad(x, self.PAD))

    def extra_repr(self):
        return super().extra_repr() + ", same-padded (1, 2, 1, 2)"


def _down(c_in, c_out, norm, stride=2, padding=1):
    """A conv block. padding='same' (stride 1 only): TensorFlow's "same" padding, by SameConv2d."""
    if padding == 'same':
        if stride != 1:
            raise ValueError("'same' padding is for stride-1 convolutions")
        conv = SameConv2d(c_in, c_out)
    else:
        conv = nn.Conv2d(c_in, c_out, 4, stride, padding)
    layers = [conv]
    if norm == 'spectral':
        spectral_norm(layers[0])
    elif norm is not None:
        layers.append(_norm_layer(norm, c_out))
    # In place after a norm only: a convolution's output may be a view that autograd forbids
    # changing in place (the matrix-product form core/convolutions.py swaps in on CPUs).
    layers.append(nn.LeakyReLU(0.2, inplace=norm not in (None, 'spectral')))
    return Block(*layers)


def _up(c_in, c_out, norm, dropout=None):
    layers = [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1), _norm_layer(norm, c_out), nn.ReLU(inplace=True)]
    if dropout is not None:  # kept at p = 0 too, so that every generator has the same layers
        layers.append(Dropout(dropout))
    return Block(*layers)


def _resize_input(x):
    return F.interpolate(x, size=(RESIZED, RESIZED), mode='bilinear', align_corners=True)


def annealed_mean(logits, centres, temperature):
    """Zhang et al.'s decoding of a distribution over ab bins: softmax(logits / T) over the bins
    (dim 1), then the expected bin centre. (N, Q, H, W) logits, (Q, 2) centres -> (N, 2, H, W).
    T = 1: the distribution's mean; T -> 0: the most likely bin's centre."""
    # Bins last: a channels-last map's dense (N, H, W, Q) view, softmax and product without copies.
    p = torch.softmax(logits.float().permute(0, 2, 3, 1) / temperature, dim=-1)
    return (p @ centres.float()).permute(0, 3, 1, 2)


class ColourDistributionHead(nn.Module):
    """The generator's last layer as a classifier over Q ab bins (`--ab_head classify`): a 1x1
    conv to Q logits, decoded by the annealed mean; with `regress` (`--ab_head both`) also the
    reference's regression layer, the two blended. The bins' centres (network-scale ab), the
    temperature and the blend are buffers: a generator file carries what decodes it."""

    def __init__(self, c_in, n_bins, regress=False):
        super().__init__()
        self.logits = nn.Conv2d(c_in, n_bins, 1, 1, 0)
        self.register_buffer('centres', torch.zeros(n_bins, 2))
        self.register_buffer('temperature', torch.tensor(DEFAULT_TEMPERATURE))
        self.register_buffer('blend', torch.tensor(DEFAULT_BLEND))
        self.regression = Block(nn.Conv2d(c_in, 2, 1, 1, 0), nn.Tanh()) if regress else None

    def forward(self, x, with_logits=False):
        """The decoded ab; with `with_logits`, (decoded ab, logits, the regression's ab or None)."""
        logits = self.logits(x)
        ab = annealed_mean(logits, self.centres, self.temperature)
        regressed = None
        if self.regression is not None:
            regressed = self.regression(x)
            ab = blended(regressed, ab, self.blend)
        return (ab, logits, regressed) if with_logits else ab

    def decode(self, logits, regressed=None, temperature=None, blend=None):
        """The ab that `logits` (and the regression's `regressed`, with both heads) decode to at
        `temperature` and `blend` (this head's own where None): one pass, several decodings."""
        ab = annealed_mean(logits, self.centres, self.temperature if temperature is None else temperature)
        return ab if regressed is None else blended(regressed, ab, self.blend if blend is None else blend)


def blended(regressed, distribution_ab, blend):
    """`both`'s decoding: the regression's ab weighted by `blend`, the distribution's by 1 - blend."""
    return blend * regressed.float() + (1 - blend) * distribution_ab


class ClassContext(nn.Module):
    """Iizuka et al.'s global features at the generator's bottleneck (`--class_loss`): the
    innermost map, averaged over its positions, through a linear layer gives a global feature
    vector, from which a second linear layer predicts the image's class (the auxiliary class
    loss) and which a 1x1 convolution fuses into every position of the map the decoder takes."""

    def __init__(self, channels, n_classes):
        super().__init__()
        self.features = nn.Sequential(nn.Linear(channels, channels), nn.ReLU())
        self.classes = nn.Linear(channels, n_classes)
        self.fuse = Block(nn.Conv2d(2 * channels, channels, 1, 1, 0), nn.ReLU())

    def forward(self, x):
        """(the map with the global features fused in, the class logits (N, n_classes))."""
        g = self.features(x.mean(dim=(2, 3)))
        fused = self.fuse(torch.cat([x, g[:, :, None, None].expand(-1, -1, *x.shape[2:])], dim=1))
        return fused, self.classes(g)


def _with_context(context, x):
    """(x with the global features fused in, class logits) where the generator has a class
    context, else (x, None)."""
    return (x, None) if context is None else context(x)


def set_decoding(G, temperature=None, blend=None, centres=None):
    """Set how a colour-distribution head decodes (each where given); a generator with the
    reference's head is left as it is. Returns whether G has a distribution head."""
    head = G.final
    if not isinstance(head, ColourDistributionHead):
        return False
    with torch.no_grad():
        for buffer, value in ((head.temperature, temperature), (head.blend, blend), (head.centres, centres)):
            if value is not None:
                buffer.copy_(torch.as_tensor(value, dtype=buffer.dtype))
    return True


def _final_layer(c_in, ab_head, ab_bins):
    if ab_head not in AB_HEADS:
        raise ValueError(f"ab head must be one of {AB_HEADS}, got {ab_head!r}")
    if ab_head == 'regress':
        return Block(nn.Conv2d(c_in, 2, 1, 1, 0), nn.Tanh())
    return ColourDistributionHead(c_in, ab_bins, regress=ab_head == 'both')


def _head_output(final, x, with_logits, class_logits=None):
    """The decoded ab; with `with_logits`, (ab, the bins' logits, the regression's ab, the class
    logits), each None where the generator lacks that part."""
    if isinstance(final, ColourDistributionHead):
        if not with_logits:
            return final(x)
        return (*final(x, True), class_logits)
    ab = final(x)
    return (ab, None, None, class_logits) if with_logits else ab


class Generator(nn.Module):
    """The reference's U-Net: (N, 1, 32, 32) L in network scale -> (N, 2, 32, 32) ab in [-1, 1].
    `dropout`: the probability of the dropout after up1 and up2 (the reference's 0.5; 0 turns it
    off)."""

    fixed_size = 32  # takes exactly 32x32 (it resizes to 35x35 first)

    def __init__(self, norm='batch', dropout=0.5, ab_head='regress', ab_bins=0, n_classes=0):
        super().__init__()
        if norm not in GENERATOR_NORMS:
            raise ValueError(f"generator norm must be one of {GENERATOR_NORMS}, got {norm!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"generator dropout must be in [0, 1), got {dropout!r}")
        self.down1 = _down(1, 64, norm, stride=1, padding=0)
        self.down2 = _down(64, 128, norm)
        self.down3 = _down(128, 256, norm)
        self.down4 = _down(256, 512, norm)
        self.down5 = _down(512, 512, norm)
        self.up1 = _up(512, 512, norm, dropout=dropout)
        self.up2 = _up(1024, 256, norm, dropout=dropout)
        self.up3 = _up(512, 128, norm)
        self.up4 = _up(256, 64, norm)
        self.final = _final_layer(128, ab_head, ab_bins)
        # Built last, so the reference's layers draw the same random initial weights.
        self.context = ClassContext(512, n_classes) if n_classes else None

    def forward(self, L, with_logits=False):
        d1 = self.down1(_resize_input(L))
        d2 = self.down2(d1)
        d3 = self.down3(d2)
        d4 = self.down4(d3)
        d5, class_logits = _with_context(self.context, self.down5(d4))
        u1 = torch.cat([self.up1(d5), d4], dim=1)
        u2 = torch.cat([self.up2(u1), d3], dim=1)
        u3 = torch.cat([self.up3(u2), d2], dim=1)
        u4 = torch.cat([self.up4(u3), d1], dim=1)
        return _head_output(self.final, u4, with_logits, class_logits)


class Discriminator(nn.Module):
    """The reference's discriminator: (N, 3, 32, 32) Lab in network scale -> (N,) raw real/fake
    scores (logits), one per image."""

    fixed_size = 32

    def __init__(self, norm='batch'):
        super().__init__()
        if norm not in DISCRIMINATOR_NORMS:
            raise ValueError(f"discriminator norm must be one of {DISCRIMINATOR_NORMS}, got {norm!r}")
        self.down1 = _down(3, 64, None, stride=1, padding=0)
        self.down2 = _down(64, 128, norm)
        self.down3 = _down(128, 256, norm)
        self.down4 = _down(256, 512, norm)
        self.final = Block(nn.Conv2d(512, 1, 4, 1, 0))

    def forward(self, lab):
        x = self.down4(self.down3(self.down2(self.down1(_resize_input(lab)))))
        return self.final(x).flatten()


NAZERI_SIZES = (64, 128, 256)


def nazeri_channels(image_size):
    """The encoder's output channels e1, e2, ... for an image side of `image_size`: one
    stride-1 layer, then stride-2 layers down to 2x2; 64 channels at the first two levels, then
    doubling up to 512 and staying there (256: 64, 64, 128, 256, 512, 512, 512, 512)."""
    if image_size not in NAZERI_SIZES:
        raise ValueError(f"Nazeri et al.'s networks are for image sizes {NAZERI_SIZES}, got {image_size!r}")
    halvings = image_size.bit_length() - 2  # image_size / 2**halvings == 2
    return [64] + [min(64 * 2 ** i, 512) for i in range(halvings)]


class NazeriGenerator(nn.Module):
    """Nazeri et al.'s U-Net for larger images: (N, 1, H, W) L in network scale -> (N, 2, H, W)
    ab in [-1, 1]. Built for `image_size` in 64, 128, 256 (the depth that takes that side down to
    2x2), and fully convolutional: any H and W that are multiples of `size_multiple`.

    Encoder e1 (4x4 stride 1, "same" padding) then 4x4 stride-2 layers, each conv -> norm ->
    LeakyReLU(0.2); decoder d1, d2, ... 4x4 stride-2 transposed convs -> norm -> ReLU, each
    concatenated with the mirrored encoder output; a 1x1 conv and tanh. Every conv keeps its bias.
    Their generator for Places365 had no dropout; here `dropout` (as in `Generator`) follows d1 and
    d2, and the layers stay there at p = 0 too, so that every generator has the same layers."""

    fixed_size = None

    def __init__(self, image_size, norm='batch', dropout=0.5, ab_head='regress', ab_bins=0, n_classes=0):
        super().__init__()
        if norm not in GENERATOR_NORMS:
            raise ValueError(f"generator norm must be one of {GENERATOR_NORMS}, got {norm!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"generator dropout must be in [0, 1), got {dropout!r}")
        channels = nazeri_channels(image_size)
        self.image_size = image_size
        self.size_multiple = 2 ** (len(channels) - 1)
        self.encoder_names = [f'e{i + 1}' for i in range(len(channels))]
        self.decoder_names = [f'd{i + 1}' for i in range(len(channels) - 1)]
        self.e1 = _down(1, channels[0], norm, stride=1, padding='same')
        for name, c_in, c_out in zip(self.encoder_names[1:], channels, channels[1:]):
            setattr(self, name, _down(c_in, c_out, norm))
        c_in = channels[-1]
        for i, name in enumerate(self.decoder_names):
            c_out = channels[-2 - i]  # that of the encoder output it is concatenated with
            setattr(self, name, _up(c_in, c_out, norm, dropout=dropout if i < 2 else None))
            c_in = 2 * c_out
        self.final = _final_layer(c_in, ab_head, ab_bins)
        self.context = ClassContext(channels[-1], n_classes) if n_classes else None

    def forward(self, L, with_logits=False):
        h, w = L.shape[-2:]
        if h % self.size_multiple or w % self.size_multiple:
            raise ValueError(f"{type(self).__name__}({self.image_size}) takes sides that are multiples of "
                             f"{self.size_multiple}, got {h}x{w}")
        skips = []
        x = L
        for name in self.encoder_names:
            x = getattr(self, name)(x)
            skips.append(x)
        skips.pop()  # the innermost output feeds d1 and is not concatenated
        x, class_logits = _with_context(self.context, x)
        for name in self.decoder_names:
            x = torch.cat([getattr(self, name)(x), skips.pop()], dim=1)
        return _head_output(self.final, x, with_logits, class_logits)


class PatchDiscriminator(nn.Module):
    """Nazeri et al.'s PatchGAN discriminator for larger images: (N, 3, H, W) Lab in network scale
    -> (N, P) raw real/fake logits, one per patch, P = (H/8) * (W/8); each sees a 70x70 patch.

    down1 (3 -> 64, stride 2, never normalized), down2 (-> 128, stride 2), down3 (-> 256,
    stride 2), down4 (-> 512, stride 1, "same"), each conv -> norm -> LeakyReLU(0.2); final
    512 -> 1, 4x4 stride 1 "same". The layer list is the reference discriminator's, so the
    parameter count is the same. With 'spectral', the convs of down2..down4 are spectrally
    normalized and nothing else normalizes."""

    fixed_size = None

    def __init__(self, norm='batch'):
        super().__init__()
        if norm not in DISCRIMINATOR_NORMS:
            raise ValueError(f"discriminator norm must be one of {DISCRIMINATOR_NORMS}, got {norm!r}")
        self.down1 = _down(3, 64, None)
        self.down2 = _down(64, 128, norm)
        self.down3 = _down(128, 256, norm)
        self.down4 = _down(256, 512, norm, stride=1, padding='same')
        self.final = Block(SameConv2d(512, 1))

    def forward(self, lab):
        x = self.down4(self.down3(self.down2(self.down1(lab))))
        return self.final(x).flatten(1)


IMAGE_SIZES = (IMAGE_SIZE,) + NAZERI_SIZES


def network_family(image_size):
    """'reference' (the reference project's pair) for 32, 'nazeri' for 64, 128 and 256."""
    if image_size == IMAGE_SIZE:
        return 'reference'
    if image_size in NAZERI_SIZES:
        return 'nazeri'
    raise ValueError(f"image size must be one of {IMAGE_SIZES}, got {image_size!r}")


def build_generator(image_size=IMAGE_SIZE, norm='batch', dropout=0.5, ab_head='regress', ab_bins=0, n_classes=0):
    """The generator for `image_size`; `n_classes` > 0 adds the class context (ClassContext)."""
    if network_family(image_size) == 'reference':
        return Generator(norm, dropout, ab_head, ab_bins, n_classes)
    return NazeriGenerator(image_size, norm, dropout, ab_head, ab_bins, n_classes)


def build_discriminator(image_size=IMAGE_SIZE, norm='batch'):
    if network_family(image_size) == 'reference':
        return Discriminator(norm)
    return PatchDiscriminator(norm)


def init_weights(model):
    """`--apply_weight_init 1`: conv weights ~ N(0, 0.02), batch-norm weights ~ N(1, 0.02) and
    biases 0. Conv biases keep their defaults, and so do spectrally normalized layers, whose scale
    the normalization removes anyway (as in the reference, where the init never reached them)."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            if 'weight' in getattr(module, 'parametrizations', {}):
                continue
            nn.init.normal_(module.weight, 0.0, 0.02)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.weight, 1.0, 0.02)
            nn.init.zeros_(module.bias)
    return model
