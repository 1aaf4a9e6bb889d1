"""The two ResNet50s: torchvision's resnet50 with a 1-channel stem for 48-px faces and 7 outputs.

`resnet50` is the plain network; `resnet50_dropout` puts Dropout(p) after every activation, as the first
version of this project did. `head_dropout` adds dropout before the classifier of either.
"""
from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, fields

from torch import nn
from torchvision.models import resnet50

from .errors import ConfigError
from .preprocess import CLASSES, IMAGE_SIZE

ARCHS = ("resnet50", "resnet50_dropout")
# How the network reads a 48-px face before layer1, and the size layer1 sees:
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
    image_size: int = IMAGE_SIZE

    def __post_init__(self):
        for name, allowed in (("arch", ARCHS), ("stem", STEMS), ("norm", NORMS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"unknown {name} {getattr(self, name)!r} (expected one of {', '.join(allowed)})")
        for name in ("dropout", "head_dropout"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0 <= value < 1:
                raise ConfigError(f"{name} must be a number in [0, 1), not {value!r}")
        if self.arch == "resnet50" and self.dropout:
            raise ConfigError("dropout after every activation is the resnet50_dropout model; "
                              "use head_dropout for the plain resnet50")
        for name, expected in (("num_classes", len(CLASSES)), ("image_size", IMAGE_SIZE)):
            value = getattr(self, name)
            if type(value) is not int or value != expected:  # noqa: E721 - 7.0, True and "7" are not 7
                raise ConfigError(f"{name} must be {expected} for FER-2013's faces and classes, not {value!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ModelConfig":
        if not isinstance(values, dict):
            raise ConfigError(f"a model config is a JSON object, not {type(values).__name__}")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def build_model(cfg: ModelConfig) -> nn.Module:
    norm_layer = (lambda channels: nn.GroupNorm(32, channels)) if cfg.norm == "group" else None
    model = resnet50(weights=None, num_classes=cfg.num_classes, norm_layer=norm_layer)
    if cfg.stem == "cifar":
        model.conv1 = nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1, bias=False)
    else:
        model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    if cfg.stem in ("no_maxpool", "cifar"):
        model.maxpool = nn.Identity()
    if cfg.arch == "resnet50_dropout" and cfg.dropout > 0:
        _dropout_after_activations(model, cfg.dropout)
    if cfg.head_dropout > 0:
        model.fc = nn.Sequential(nn.Dropout(cfg.head_dropout), model.fc)
    # Zero the last BN of each residual branch so every block starts as the identity (Goyal et al. 2017):
    # deep nets trained from scratch in few epochs converge faster this way.
    for module in model.modules():
        if hasattr(module, "bn3"):
            nn.init.zeros_(module.bn3.weight)
    return model


def _dropout_after_activations(model: nn.Module, p: float) -> None:
    # torchvision's Bottleneck calls its one `relu` module three times, so wrapping each ReLU module
    # puts dropout after all 49 activations of the network (the stem's and 3 in each of 16 blocks).
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(parent, name, nn.Sequential(nn.ReLU(inplace=True), nn.Dropout(p)))
