"""The networks: backbones in a registry, each reading a face (48 x 48 gray for FER-2013, or any
`fer.preprocess.FaceFormat`) into its classes (FER-2013's 7, or a data set's own).

A backbone is a name and a builder (`@register("name")`, as timm's `register_model`): the builder makes the
network for a `ModelConfig` (its classes, its face format, its options). The flagship is ResNet50: `resnet50`
is the plain network; `resnet50_dropout` is the same ResNet50 with the `dropout` option, Dropout(p) after every
activation, as the first version of this project did. Any other torchvision classification model trains by its
name (`torchvision.models.list_models()`: resnet18, convnext_tiny, efficientnet_b0, mobilenet_v3_large, ...)
without registering: built by `torchvision.models.get_model`, its first convolution made to read the face's
channels (one for gray, three for RGB), its last linear layer given the classes. `head_dropout` adds dropout
before the classifier of any of them. A new backbone is one registered builder (tests/test_registry.py shows
one) and a recipe file naming it.
"""
from __future__ import annotations

import collections
import difflib
import functools
import numbers
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Callable

from .errors import ConfigError
from .preprocess import IMAGE_SIZE, FaceFormat

if TYPE_CHECKING:  # annotations only: PyTorch is imported where it is used (the int8 path needs none)
    from torch import nn

# torch and torchvision are imported where a network is built, not here: a ModelConfig of a registered backbone
# is read and checked without them, so the int8 path (fer predict) never loads PyTorch.

# How a ResNet reads a 48-px face before layer1, and the size layer1 sees:
#   imagenet   7x7 stride-2 conv + max-pool (torchvision's own): 12 x 12, cheapest
#   no_maxpool 7x7 stride-2 conv:                                 24 x 24, ~4x the compute
#   cifar      3x3 stride-1 conv, no max-pool:                    48 x 48, ~16x the compute
#   stride1    the network's own first conv at stride 1 (any network, not only ResNets): every feature map twice
#              as wide and high as ImageNet's strides leave it, ~4x the compute. Networks built for 224 px
#              reduce a 48-px face to 2 x 2 (total stride 32); stride1 leaves 3 x 3.
STEMS = ("imagenet", "no_maxpool", "cifar", "stride1")
ANY_NETWORK_STEMS = ("imagenet", "stride1")
NORMS = ("batch", "group")
LAYERS = ("layer4", "layer3", "layer2")  # a ResNet's stages that Grad-CAM (--explain-layer) names most often


@dataclass(frozen=True)
class Backbone:
    """A registered network: its builder, and which of ModelConfig's options it takes.

    resnet: the ResNet options apply (stem, norm, zero-initialized residual branches).
    dropout: the default p of Dropout after every activation; None when the backbone does not offer it.
    """
    name: str
    build: Callable[["ModelConfig"], nn.Module]
    resnet: bool = False
    dropout: float | None = None


BACKBONES: dict[str, Backbone] = {}


def register(name: str, resnet: bool = False, dropout: float | None = None):
    """Decorator: `builder(cfg) -> nn.Module` becomes the backbone `name` (the network for cfg's classes and
    face format; build_model adds the head dropout)."""
    def decorate(builder):
        if name in BACKBONES:
            raise ValueError(f"backbone {name!r} is registered already")
        BACKBONES[name] = Backbone(name, builder, resnet, dropout)
        return builder
    return decorate


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model; stored in the weights' metadata and in checkpoints."""
    arch: str = "resnet50_dropout"  # a registered backbone, or any torchvision classification model
    dropout: float = 0.05         # after every activation, where the backbone offers it (resnet50_dropout)
    head_dropout: float = 0.0     # before the final linear layer
    stem: str = "imagenet"
    norm: str = "batch"           # batch (BatchNorm), or group (GroupNorm, 32 groups)
    num_classes: int = 7          # FER-2013's seven; a model's own classes come from its data
    image_size: int = IMAGE_SIZE  # pixels, square
    channels: int = 1             # 1 gray, 3 RGB

    def __post_init__(self):
        if not known_arch(self.arch):
            close = difflib.get_close_matches(str(self.arch), (*BACKBONES, *torchvision_archs()), 3)
            raise ConfigError(f"unknown arch {self.arch!r}: {', '.join(BACKBONES)} or a torchvision "
                              f"classification model" + (f" (did you mean {', '.join(close)}?)" if close else ""))
        for name, allowed in (("stem", STEMS), ("norm", NORMS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"unknown {name} {getattr(self, name)!r} (expected one of {', '.join(allowed)})")
        net = backbone(self.arch)
        if not net.resnet:
            if self.stem not in ANY_NETWORK_STEMS:
                raise ConfigError(f"stem {self.stem!r} is a ResNet stem; {self.arch} takes "
                                  f"{' or '.join(ANY_NETWORK_STEMS)}")
            if self.norm != "batch":
                raise ConfigError(f"norm {self.norm!r} is offered for ResNets only; {self.arch} keeps its own")
        for name in ("dropout", "head_dropout"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0 <= value < 1:
                raise ConfigError(f"{name} must be a number in [0, 1), not {value!r}")
        if net.dropout is None and self.dropout:
            offered = [b.name for b in BACKBONES.values() if b.dropout is not None]
            raise ConfigError(f"dropout after every activation is offered by {', '.join(offered)}; "
                              f"use head_dropout for {self.arch}")
        if type(self.num_classes) is not int or not 2 <= self.num_classes <= 10_000:  # noqa: E721 - 7.0 is not 7
            raise ConfigError(f"num_classes must be a whole number from 2 to 10000, not {self.num_classes!r}")
        try:
            self.face
        except ValueError as e:
            raise ConfigError(str(e)) from None

    @property
    def face(self) -> FaceFormat:
        """The face crops this network reads."""
        return FaceFormat(self.image_size, self.channels)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ModelConfig":
        if not isinstance(values, dict):
            raise ConfigError(f"a model config is a JSON object, not {type(values).__name__}")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@functools.cache
def torchvision_archs() -> tuple[str, ...]:
    """torchvision's classification models, by name."""
    import torchvision
    return tuple(torchvision.models.list_models(module=torchvision.models))


def known_arch(arch) -> bool:
    return isinstance(arch, str) and (arch in BACKBONES or arch in torchvision_archs())


def backbone(arch: str) -> Backbone:
    """The registered backbone `arch`, or torchvision's network of that name as one."""
    if arch in BACKBONES:
        return BACKBONES[arch]
    return _torchvision_backbone(arch)


@functools.cache
def _torchvision_backbone(name: str) -> Backbone:
    import torchvision
    resnet = torchvision.models.get_model_builder(name).__module__ == "torchvision.models.resnet"
    return Backbone(name, functools.partial(torchvision_network, name), resnet=resnet)


def default_dropout(arch: str) -> float:
    """The p after every activation that `arch` gets unless told (0 where it offers none)."""
    return backbone(arch).dropout or 0.0


# torchvision's networks that return auxiliary classifiers' outputs beside the logits in training mode.
AUX_LOGITS = ("googlenet", "inception_v3")


def torchvision_network(name: str, cfg: ModelConfig) -> nn.Module:
    """torchvision's network `name`, untrained, for cfg's classes and channels (and a ResNet's stem and norm)."""
    import torchvision
    from torch import nn
    options = {"aux_logits": False, "init_weights": True} if name in AUX_LOGITS else {}
    resnet = _torchvision_backbone(name).resnet
    if resnet:
        # Zero the last norm of each residual branch so every block starts as the identity (Goyal et al. 2017):
        # deep nets trained from scratch in few epochs converge faster this way.
        options["zero_init_residual"] = True
        if cfg.norm == "group":
            options["norm_layer"] = lambda channels: nn.GroupNorm(32, channels)
    model = torchvision.models.get_model(name, weights=None, num_classes=cfg.num_classes, **options)
    adapt_stem(model, cfg, resnet)
    return model


def adapt_stem(model: nn.Module, cfg: ModelConfig, resnet: bool) -> None:
    """Make a network built for 224-px RGB pictures read cfg's faces: its first convolution reads cfg's channels,
    and cfg's stem (STEMS) sets how far it shrinks them before its first stage (a ResNet's stems need its
    `maxpool`)."""
    from torch import nn
    stem_name, stem = first_conv(model)
    if resnet and cfg.stem == "cifar":
        model.set_submodule(stem_name, nn.Conv2d(cfg.channels, stem.out_channels, kernel_size=3, stride=1,
                                                 padding=1, bias=False))
    elif cfg.channels != stem.in_channels:  # the same convolution, reading gray faces instead of RGB
        model.set_submodule(stem_name, nn.Conv2d(cfg.channels, stem.out_channels, stem.kernel_size, stem.stride,
                                                 stem.padding, stem.dilation, stem.groups, stem.bias is not None,
                                                 stem.padding_mode))
    if resnet and cfg.stem in ("no_maxpool", "cifar"):
        model.maxpool = nn.Identity()
    if cfg.stem == "stride1":
        model.get_submodule(stem_name).stride = (1, 1)


@register("resnet50", resnet=True)
def resnet50(cfg: ModelConfig) -> nn.Module:
    return torchvision_network("resnet50", cfg)


# p = 0.05: after all 49 activations, 0.1 slows the first epochs of a CPU-sized run too much (a choice, not
# yet an ablation; see the README's results).
@register("resnet50_dropout", resnet=True, dropout=0.05)
def resnet50_dropout(cfg: ModelConfig) -> nn.Module:
    """ResNet50 with Dropout(cfg.dropout) after every activation."""
    model = torchvision_network("resnet50", cfg)
    if cfg.dropout > 0:
        dropout_after_activations(model, cfg.dropout)
    return model


def narrow_resnet(cfg: ModelConfig, width: int, blocks=(2, 2, 2, 2)) -> nn.Module:
    """ResNet18's design (torchvision's BasicBlocks, two a stage) at a fraction of its width: stages of width,
    2 x width, 4 x width and 8 x width channels (torchvision's resnet18 has 64, so width 32 costs about a quarter
    of its compute and parameters). The modules keep torchvision's names (conv1, bn1, maxpool, layer1-4, fc),
    so every ResNet stem, Grad-CAM's layers and the int8 export treat it as they treat resnet18. torchvision
    builds ResNets of its own widths only (BasicBlock refuses width_per_group)."""
    from torch import nn
    from torchvision.models.resnet import BasicBlock, conv1x1
    norm = (lambda channels: nn.GroupNorm(min(32, channels // 4), channels)) if cfg.norm == "group" else nn.BatchNorm2d

    def stage(cin, cout, count, stride):
        downsample = None
        if stride != 1 or cin != cout:
            downsample = nn.Sequential(conv1x1(cin, cout, stride), norm(cout))
        return nn.Sequential(BasicBlock(cin, cout, stride, downsample, norm_layer=norm),
                             *(BasicBlock(cout, cout, norm_layer=norm) for _ in range(count - 1)))

    widths = [width * 2 ** i for i in range(len(blocks))]
    layers = [(f"layer{i + 1}", stage(widths[max(i - 1, 0)], w, n, 1 if i == 0 else 2))
              for i, (w, n) in enumerate(zip(widths, blocks))]
    model = nn.Sequential(collections.OrderedDict([
        ("conv1", nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)), ("bn1", norm(width)),
        ("relu", nn.ReLU(inplace=True)), ("maxpool", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)),
        *layers, ("avgpool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()),
        ("fc", nn.Linear(widths[-1], cfg.num_classes))]))
    # torchvision's ResNet initialisation, zero_init_residual included (see torchvision_network).
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, BasicBlock):
            nn.init.zeros_(m.bn2.weight)
    adapt_stem(model, cfg, resnet=True)
    return model


# The small fast model's ResNet candidates (issue 32): plain 3x3 convolutions, which int8 treats best (the small
# pilots: resnet18 lost nothing to int8, mobilenet_v3_small's hard-swish and depthwise convolutions 6 points).
@register("resnet18_w32", resnet=True)
def resnet18_w32(cfg: ModelConfig) -> nn.Module:
    return narrow_resnet(cfg, 32)


@register("resnet18_w16", resnet=True)
def resnet18_w16(cfg: ModelConfig) -> nn.Module:
    return narrow_resnet(cfg, 16)


def build_model(cfg: ModelConfig) -> nn.Module:
    """The untrained network of a config: its backbone's, with dropout before the classifier if asked."""
    from torch import nn
    model = backbone(cfg.arch).build(cfg)
    if cfg.head_dropout > 0:
        head_name, head = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
        model.set_submodule(head_name, nn.Sequential(nn.Dropout(cfg.head_dropout), head))
    return model


def load_state(model: nn.Module, state: dict) -> None:
    """`model.load_state_dict` for tensors read from a file. A safetensors file keeps no per-module versions
    (what torch stores as `state_dict()._metadata`), and some modules read theirs (torchvision's MNASNet
    refuses a state without one): the freshly built model's own stand in where the state has none."""
    if getattr(state, "_metadata", None) is None:
        state = collections.OrderedDict(state)
        state._metadata = getattr(model.state_dict(), "_metadata", None)
    model.load_state_dict(state)


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """The convolution that reads the picture: the first Conv2d with three input channels."""
    from torch import nn
    return next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.in_channels == 3)


def check_input_size(cfg: ModelConfig) -> None:
    """ConfigError unless the network reads a face of the config's size (vit_b_16 reads 224 px only; alexnet's
    pooling leaves nothing of 48 px): one forward pass of an untrained copy, before any data is read. (Not on
    torch's meta device: some architectures' initialisation reads values there, and fails for that alone.)"""
    import torch
    try:
        with torch.no_grad():
            build_model(cfg).eval()(torch.zeros(1, *cfg.face.input_size))
    except Exception as e:  # noqa: BLE001 - each architecture words its own shape errors
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{cfg.arch} cannot read a {cfg.image_size} x {cfg.image_size} face ({first[:160]})") from None


def dropout_after_activations(model: nn.Module, p: float) -> None:
    """Dropout(p) after every ReLU module's every call."""
    from torch import nn
    # torchvision's Bottleneck calls its one `relu` module three times, so wrapping each ReLU module
    # puts dropout after all 49 activations of the network (the stem's and 3 in each of 16 blocks).
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(parent, name, nn.Sequential(nn.ReLU(inplace=True), nn.Dropout(p)))
