"""The networks: torchvision's classification models reading a face (48 x 48 gray for FER-2013, or any
`fer.preprocess.FaceFormat`) into its classes (FER-2013's 7, or a data set's own).

The flagship is ResNet50: `resnet50` is the plain network; `resnet50_dropout` puts Dropout(p) after every
activation, as the first version of this project did. Any other torchvision classification model trains by
its name (`torchvision.models.list_models()`: resnet18, convnext_tiny, efficientnet_b0, mobilenet_v3_large,
...): built by `torchvision.models.get_model`, its first convolution made to read the face's channels (one for
gray, three for RGB), its last linear layer given the classes. `head_dropout` adds dropout before the classifier
of any of them.
"""
from __future__ import annotations

import collections
import difflib
import functools
import numbers
from dataclasses import asdict, dataclass, fields

import torch
import torchvision
from torch import nn

from .errors import ConfigError
from .preprocess import CLASSES, IMAGE_SIZE, FaceFormat

ARCHS = ("resnet50", "resnet50_dropout")  # the flagship; any name of torchvision_archs() trains as well
# How a ResNet reads a 48-px face before layer1, and the size layer1 sees (other networks keep their own):
#   imagenet   7x7 stride-2 conv + max-pool (torchvision's own): 12 x 12, cheapest
#   no_maxpool 7x7 stride-2 conv:                                 24 x 24, ~4x the compute
#   cifar      3x3 stride-1 conv, no max-pool:                    48 x 48, ~16x the compute
STEMS = ("imagenet", "no_maxpool", "cifar")
NORMS = ("batch", "group")
# p = 0.05: after all 49 activations, 0.1 slows the first epochs of a CPU-sized run too much (a choice, not
# yet an ablation; see the README's results).
DEFAULT_DROPOUT = {"resnet50": 0.0, "resnet50_dropout": 0.05}


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model; stored in the weights' metadata and in checkpoints."""
    arch: str = "resnet50_dropout"
    dropout: float = 0.05         # after every activation; resnet50_dropout only
    head_dropout: float = 0.0     # before the final linear layer
    stem: str = "imagenet"
    norm: str = "batch"           # batch (BatchNorm), or group (GroupNorm, 32 groups)
    num_classes: int = len(CLASSES)
    image_size: int = IMAGE_SIZE  # pixels, square
    channels: int = 1             # 1 gray, 3 RGB

    def __post_init__(self):
        if not known_arch(self.arch):
            close = difflib.get_close_matches(str(self.arch), (*ARCHS, *torchvision_archs()), 3)
            raise ConfigError(f"unknown arch {self.arch!r}: resnet50, resnet50_dropout or a torchvision "
                              f"classification model" + (f" (did you mean {', '.join(close)}?)" if close else ""))
        for name, allowed in (("stem", STEMS), ("norm", NORMS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"unknown {name} {getattr(self, name)!r} (expected one of {', '.join(allowed)})")
        if not is_resnet(self.arch):
            if self.stem != "imagenet":
                raise ConfigError(f"stem {self.stem!r} is a ResNet stem; {self.arch} keeps its own (stem imagenet)")
            if self.norm != "batch":
                raise ConfigError(f"norm {self.norm!r} is offered for ResNets only; {self.arch} keeps its own")
        for name in ("dropout", "head_dropout"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0 <= value < 1:
                raise ConfigError(f"{name} must be a number in [0, 1), not {value!r}")
        if self.arch != "resnet50_dropout" and self.dropout:
            raise ConfigError(f"dropout after every activation is the resnet50_dropout model; "
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
    return tuple(torchvision.models.list_models(module=torchvision.models))


def known_arch(arch) -> bool:
    return isinstance(arch, str) and (arch in ARCHS or arch in torchvision_archs())


def is_resnet(arch: str) -> bool:
    """A torchvision ResNet (resnet18 ... wide_resnet101_2): the stems, GroupNorm and zero-init apply."""
    name = "resnet50" if arch == "resnet50_dropout" else arch
    return torchvision.models.get_model_builder(name).__module__ == "torchvision.models.resnet"


# torchvision's networks that return auxiliary classifiers' outputs beside the logits in training mode.
AUX_LOGITS = ("googlenet", "inception_v3")


def build_model(cfg: ModelConfig) -> nn.Module:
    name = "resnet50" if cfg.arch == "resnet50_dropout" else cfg.arch
    options = {"aux_logits": False, "init_weights": True} if name in AUX_LOGITS else {}
    if is_resnet(name):
        # Zero the last norm of each residual branch so every block starts as the identity (Goyal et al. 2017):
        # deep nets trained from scratch in few epochs converge faster this way.
        options["zero_init_residual"] = True
        if cfg.norm == "group":
            options["norm_layer"] = lambda channels: nn.GroupNorm(32, channels)
    model = torchvision.models.get_model(name, weights=None, num_classes=cfg.num_classes, **options)
    stem_name, stem = first_conv(model)
    if is_resnet(name) and cfg.stem == "cifar":
        model.set_submodule(stem_name, nn.Conv2d(cfg.channels, stem.out_channels, kernel_size=3, stride=1,
                                                 padding=1, bias=False))
    elif cfg.channels != stem.in_channels:  # the same convolution, reading gray faces instead of RGB
        model.set_submodule(stem_name, nn.Conv2d(cfg.channels, stem.out_channels, stem.kernel_size, stem.stride,
                                                 stem.padding, stem.dilation, stem.groups, stem.bias is not None,
                                                 stem.padding_mode))
    if is_resnet(name) and cfg.stem in ("no_maxpool", "cifar"):
        model.maxpool = nn.Identity()
    if cfg.arch == "resnet50_dropout" and cfg.dropout > 0:
        _dropout_after_activations(model, cfg.dropout)
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
    return next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.in_channels == 3)


def check_input_size(cfg: ModelConfig) -> None:
    """ConfigError unless the network reads a face of the config's size (vit_b_16 reads 224 px only; alexnet's
    pooling leaves nothing of 48 px): one forward pass of an untrained copy, before any data is read. (Not on
    torch's meta device: some architectures' initialisation reads values there, and fails for that alone.)"""
    try:
        with torch.no_grad():
            build_model(cfg).eval()(torch.zeros(1, *cfg.face.input_size))
    except Exception as e:  # noqa: BLE001 - each architecture words its own shape errors
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{cfg.arch} cannot read a {cfg.image_size} x {cfg.image_size} face ({first[:160]})") from None


def _dropout_after_activations(model: nn.Module, p: float) -> None:
    # torchvision's Bottleneck calls its one `relu` module three times, so wrapping each ReLU module
    # puts dropout after all 49 activations of the network (the stem's and 3 in each of 16 blocks).
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(parent, name, nn.Sequential(nn.ReLU(inplace=True), nn.Dropout(p)))
