"""What a model is, in one place: `ModelSpec`, from the recipe that trains it to the weights that store it and
the engines that run it (as Hugging Face's `config.json` with its `id2label`, or timm's `pretrained_cfg`).

A spec holds the network to build (`fer.model.ModelConfig`: backbone, its options, the face format), the names
of its outputs in order, its temperature (1 until calibrated), and how a face crop is normalized. It is what a
weights file's metadata stores (`to_metadata`, read back and checked by `from_metadata`), what
`fer.weights.load_network` returns beside the network, and what every engine carries (`engine.spec`): the
command line, the gallery, the video and the charts read a model's classes and face format from it, never from
a default.

SPEC_VERSION counts the layouts of the metadata. Version 0 is every file written before the spec had a
version (the first shipped `resnet50_dropout`, with `public_acc`, and the CPU flagship): all of them load, and
tests/data/weights_headers keeps the metadata of each shipped one.
"""
from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass, field, replace

from .model import ModelConfig
from .preprocess import NORM_MEAN, NORM_STD, FaceFormat

FORMAT = "fer-weights/1"
SPEC_VERSION = 1
# A temperature outside this range is not a calibration but a broken file (0 divides, < 0 inverts).
TEMPERATURE_RANGE = (0.05, 20.0)
SPEC_KEYS = ("format", "spec_version", "config", "classes", "input_size", "normalization", "temperature")


@dataclass(frozen=True)
class Normalization:
    """How a face crop becomes the network's input: histogram-equalized, then (x / 255 - mean) / std."""
    mean: float = NORM_MEAN
    std: float = NORM_STD
    equalize_hist: bool = True

    def __post_init__(self):
        if not is_number(self.mean) or not is_number(self.std) or not math.isclose(self.mean, NORM_MEAN) \
                or not math.isclose(self.std, NORM_STD) or self.equalize_hist is not True:
            raise ValueError(f"normalization (mean {self.mean!r}, std {self.std!r}, equalized "
                             f"{self.equalize_hist!r}) is not this code's (mean {NORM_MEAN}, std {NORM_STD:.4f}, "
                             f"equalized)")


@dataclass(frozen=True)
class ModelSpec:
    """A model's identity: the network, its classes, its temperature, its normalization."""
    network: ModelConfig
    classes: tuple[str, ...]
    temperature: float = 1.0
    normalization: Normalization = field(default_factory=Normalization)
    version: int = SPEC_VERSION  # the layout it was read from (written: always SPEC_VERSION)

    def __post_init__(self):
        if not isinstance(self.network, ModelConfig):
            raise TypeError(f"a spec's network is a ModelConfig, not {type(self.network).__name__}")
        classes = self.classes
        if isinstance(classes, str) or not isinstance(classes, (list, tuple)) \
                or not all(isinstance(c, str) and c.strip() for c in classes) or len(set(classes)) != len(classes):
            raise ValueError(f"classes {str(classes)[:80]!r} are not a list of distinct names")
        unprintable = next((c for c in classes if not c.isprintable()), None)
        if unprintable is not None:  # names reach terminals, HTML and drawn photos: no escapes or line breaks
            raise ValueError(f"the class name {unprintable[:40]!r} holds control characters")
        object.__setattr__(self, "classes", tuple(classes))
        if len(classes) != self.network.num_classes:
            raise ValueError(f"{len(classes)} class names for a model with {self.network.num_classes} outputs")
        t = self.temperature
        if not is_number(t) or not TEMPERATURE_RANGE[0] <= t <= TEMPERATURE_RANGE[1]:
            raise ValueError(f"temperature {t!r} is not a number in {list(TEMPERATURE_RANGE)}")

    @property
    def face(self) -> FaceFormat:
        """The face crops the network reads."""
        return self.network.face

    @property
    def arch(self) -> str:
        return self.network.arch

    def calibrated(self, temperature: float) -> "ModelSpec":
        return replace(self, temperature=float(temperature))

    def to_metadata(self) -> dict[str, str]:
        """The spec as safetensors metadata (string values, JSON-encoded)."""
        norm = self.normalization
        return {"format": FORMAT, "spec_version": json.dumps(SPEC_VERSION),
                "config": json.dumps(self.network.to_dict()), "classes": json.dumps(list(self.classes)),
                "input_size": json.dumps(self.face.input_size),
                "normalization": json.dumps({"mean": norm.mean, "std": norm.std, "equalize_hist": norm.equalize_hist}),
                "temperature": json.dumps(self.temperature)}

    @classmethod
    def from_metadata(cls, meta: dict) -> "ModelSpec":
        """The spec of a weights file's metadata (JSON values decoded), of any version so far; ValueError or
        fer.errors.ConfigError naming what is wrong."""
        version = meta.get("spec_version", 0)
        if type(version) is not int or version < 0:  # noqa: E721 - True and 1.0 are not versions
            raise ValueError(f"spec_version {version!r} is not a whole number >= 0")
        if version > SPEC_VERSION:
            raise ValueError(f"its spec is version {version}, from a newer fer than this one (version "
                             f"{SPEC_VERSION}): upgrade fer to use it")
        if not isinstance(meta.get("config"), dict):
            raise ValueError("'config' is not a JSON object")
        norm = meta.get("normalization")
        if not isinstance(norm, dict):
            raise ValueError(f"normalization {norm!r} is not a JSON object")
        # Version 0 stored equalize_hist from the start; what it did is what it stored.
        spec = cls(network=ModelConfig.from_dict(meta["config"]), classes=meta.get("classes"), version=version,
                   temperature=meta.get("temperature", 1.0),
                   normalization=Normalization(norm.get("mean"), norm.get("std"), norm.get("equalize_hist", True)))
        if meta.get("input_size") != spec.face.input_size:
            raise ValueError(f"input_size {meta.get('input_size')!r} is not its config's {spec.face.input_size}")
        return spec


def is_number(value) -> bool:
    """A finite real number, not a bool (metadata, checkpoints)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def common_spec(specs) -> ModelSpec:
    """The first of several models' specs, checked to read the same faces into the same classes (an ensemble
    averages like with like); ValueError otherwise."""
    specs = list(specs)
    if not specs:
        raise ValueError("no model")
    classes = {s.classes for s in specs}
    if len(classes) > 1:
        raise ValueError(f"an ensemble's members must have the same classes: {' vs '.join(map(str, classes))}")
    faces = {s.face for s in specs}
    if len(faces) > 1:
        raise ValueError(f"an ensemble's members must read the same faces: {' vs '.join(map(str, faces))}")
    return specs[0]
