"""Class probabilities for face crops: one place for the normalization, test-time augmentation, the
temperature and ensembling; only the forward pass differs between engines.

An engine carries its model's spec (`engine.spec`, fer.spec.ModelSpec: classes, face format, temperature)
and turns a normalized batch N x C x H x W (a float32 NumPy array; the spec's face format) into logits
N x classes (float32 NumPy):
  torch      the PyTorch model (on its device, bf16 autocast where the hardware runs it fast)
  onnx       ONNX Runtime, float32 (exported into the cache on first use, fer.export)
  onnx-int8  ONNX Runtime, int8 (NAME.int8.onnx beside the weights; `python -m fer export --int8`)
  auto       onnx-int8 where that file exists for these weights, else torch (README: Throughput)

Everything here but the torch engine is NumPy: the int8 path (`fer predict` with the shipped model) never
imports PyTorch, which would cost it seconds and most of a gigabyte (README: "From photo to label").
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import WeightsError, quote
from .paths import DEFAULT_WEIGHTS
from .preprocess import IMAGE_SIZE, FaceFormat, normalize
from .spec import ModelSpec, common_spec
from .weights import load_network, read_metadata

if TYPE_CHECKING:  # annotations only: PyTorch is imported where it is used (the int8 path needs none)
    import torch

# Test-time augmentation: the face, shifted by 3 px (of 48; as much of a larger face) in four directions, each
# also mirrored (10 views).
TTA_SHIFTS = ((0, 0), (3, 0), (-3, 0), (0, 3), (0, -3))
ENGINES = ("auto", "torch", "onnx", "onnx-int8")


class Engine:
    """What every engine has: a name, its model's spec, and logits(x); classes, face and temperature are the
    spec's."""
    name: str
    spec: ModelSpec

    @property
    def classes(self) -> tuple[str, ...]:
        return self.spec.classes

    @property
    def face(self) -> FaceFormat:
        return self.spec.face

    @property
    def temperature(self) -> float:
        return self.spec.temperature


class TorchEngine(Engine):
    """A PyTorch network and its spec as an engine; metadata: its weights file's, when it has one."""
    name = "torch"

    def __init__(self, model: "torch.nn.Module", spec: ModelSpec, metadata: dict | None = None):
        if not isinstance(spec, ModelSpec):
            raise TypeError(f"TorchEngine(model, spec) takes the network's ModelSpec, not {type(spec).__name__}")
        self.model, self.spec, self.metadata = model.eval(), spec, metadata or {}
        self.device = next(model.parameters()).device

    def logits(self, x: np.ndarray) -> np.ndarray:
        import torch
        from .runtime import autocast_for
        with torch.inference_mode():
            x = torch.from_numpy(x).to(self.device)
            if self.device.type == "cuda":  # channels_last pays off on tensor cores only (measured on the CPU)
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast_for(self.device):
                return self.model(x).float().cpu().numpy()


class OnnxEngine(Engine):
    """An ONNX file made from a weights file, run by ONNX Runtime on the CPU."""

    def __init__(self, onnx_path, weights, name: str = "onnx"):
        from .export import INPUT_NAME, check_onnx, ort_session
        self.session = ort_session(onnx_path)  # loaded once: the checks below read its metadata and graph
        self.onnx_metadata = check_onnx(onnx_path, weights, self.session)
        if self.session is None:
            raise WeightsError(f"ONNX Runtime cannot load {quote(onnx_path)}")
        self.name, self.path, self.input_name = name, Path(onnx_path), INPUT_NAME
        self.metadata = read_metadata(weights)  # the temperature is the weights' own, as calibrated now
        self.spec = ModelSpec.from_metadata(self.metadata)

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]


def load_engine(weights=None, engine: str = "auto", device="cpu"):
    """The engine `engine` for a weights file (default: the shipped one)."""
    from .export import export_onnx, float_onnx_path, int8_onnx_path
    weights = Path(weights) if weights is not None else DEFAULT_WEIGHTS
    if engine not in ENGINES:
        raise WeightsError(f"unknown engine '{engine}' (expected one of {', '.join(ENGINES)})")
    if engine == "auto":
        try:
            return OnnxEngine(int8_onnx_path(weights), weights, "onnx-int8")
        except WeightsError:  # no int8 model made from these weights: PyTorch (which names a bad weights file)
            engine = "torch"
    if engine == "torch":
        return TorchEngine(*load_network(weights, device), read_metadata(weights))
    if engine == "onnx":
        path = float_onnx_path(weights)
        try:
            return OnnxEngine(path, weights, "onnx")
        except WeightsError:  # not exported yet, or from other weights: export once, into the cache
            return OnnxEngine(export_onnx(weights, path), weights, "onnx")
    path = int8_onnx_path(weights)
    if not path.is_file():
        raise WeightsError(f"no int8 model for {quote(weights)} at {quote(path)}: make it with "
                           f"python -m fer export --int8 --weights {weights} --data <FER-2013>")
    return OnnxEngine(path, weights, "onnx-int8")


def as_engine(model):
    """An engine (anything with .logits and .spec) as it is; TypeError for a bare network, which carries no
    classes or face format (wrap it: TorchEngine(model, spec))."""
    if hasattr(model, "logits") and hasattr(model, "spec"):
        return model
    torch = sys.modules.get("torch")  # not imported: then `model` cannot be a torch network
    if torch is not None and isinstance(model, torch.nn.Module):
        raise TypeError("a bare network carries no spec (classes, face format): load it with fer.load() or "
                        "fer.weights.load_network(), or wrap it as fer.inference.TorchEngine(model, spec)")
    raise TypeError(f"not a model, an engine or a weights path: {type(model).__name__}")


def engines_of(models) -> list:
    """An engine, a loaded model (fer.load) or a list of them (an ensemble), as a list of engines."""
    if hasattr(models, "engines"):
        return list(models.engines)
    if isinstance(models, (list, tuple)):
        return [e for m in models for e in engines_of(m)]
    return [as_engine(models)]


def load_engines(models=None, engine: str = "auto", device="cpu") -> list:
    """An engine per member of `models`: an engine or a loaded model (fer.load) as it is; a weights path, or an
    ensemble list (NAME.txt, fer.ensemble), loaded with `engine`; None (alone or in a list), the shipped model."""
    from .ensemble import expand_weights
    engines = []
    for item in models if isinstance(models, (list, tuple)) else [models]:
        if item is None or isinstance(item, (str, os.PathLike)):
            engines += [load_engine(p, engine, device)
                        for p in (expand_weights([item]) if item is not None else [None])]
        else:
            engines += engines_of(item)
    return engines


def spec_of(models) -> ModelSpec:
    """The spec shared by a model, an engine or an ensemble's members (the first member's, checked to read the
    same faces into the same classes); WeightsError when they differ."""
    try:
        return common_spec(e.spec for e in engines_of(models))
    except ValueError as e:
        raise WeightsError(str(e)) from None


def classes_of(models) -> tuple[str, ...]:
    """The classes of a model, an engine or an ensemble; WeightsError when an ensemble's members disagree."""
    return spec_of(models).classes


def face_of(models) -> FaceFormat:
    """The face crops a model, an engine or an ensemble reads; WeightsError when an ensemble's members read
    different ones."""
    return spec_of(models).face


def _shift(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    if dy == 0 and dx == 0:
        return images
    # Replicate padding, then crop: the view a slightly moved face detector box would give.
    h, w = images.shape[-2:]
    pad = max(abs(dy), abs(dx))
    padded = np.pad(images, [(0, 0)] * (images.ndim - 2) + [(pad, pad), (pad, pad)], mode="edge")
    return padded[..., pad + dy: pad + dy + h, pad + dx: pad + dx + w]


def tta_views(tta: bool, size: int = IMAGE_SIZE) -> list[tuple[int, int, bool]]:
    """(shift down, shift right, mirrored) of each view of a face `size` pixels wide."""
    if not tta:
        return [(0, 0, False)]
    k = size / IMAGE_SIZE
    return [(round(dy * k), round(dx * k), flip) for dy, dx in TTA_SHIFTS for flip in (False, True)]


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)  # exp of at most 0: no overflow
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def predict_probs(models, images_u8, tta: bool = False, batch_size: int = 256,
                  temperature: float | None = 1.0):
    """Softmax probabilities N x classes for uint8 face crops in the models' format (N x 48 x 48 for
    FER-2013's; `face_of(models).shape` in general): a NumPy array for NumPy crops, a torch tensor (CPU) for
    a torch tensor.

    models: a model, an engine, or a list of them (an ensemble: the mean of the members' probabilities).
    temperature: divides the logits; None uses each member's own (from its metadata, 1 if uncalibrated).
    """
    members = engines_of(models)
    face = face_of(members)  # an ensemble averages like with like
    as_torch = not isinstance(images_u8, np.ndarray)
    images = images_u8.cpu().numpy() if as_torch else images_u8
    if tuple(images.shape[1:]) != face.shape:
        raise ValueError(f"face crops of shape {tuple(images.shape[1:])} for a model that reads {face} "
                         f"({face.shape}): read the data with the model's format (engine.spec.face)")
    views = tta_views(tta, face.size)
    out = []
    for start in range(0, len(images), batch_size):
        batch = normalize(images[start:start + batch_size])
        probs = 0
        for dy, dx, flip in views:
            view = _shift(batch, dy, dx)
            if flip:
                view = view[..., ::-1]
            view = np.ascontiguousarray(view, dtype=np.float32)
            for member in members:
                t = member.spec.temperature if temperature is None else temperature
                logits = np.asarray(member.logits(view), dtype=np.float32)  # np.asarray: an engine giving tensors
                probs = probs + softmax(logits / np.float32(t))
        if not np.isfinite(probs).all():  # finite but absurd weights (a negative variance, huge logits)
            raise WeightsError(f"the model gave non-finite scores (NaN or infinity) for "
                               f"{'this face' if len(images) == 1 else 'these faces'}: its weights are broken")
        out.append(probs / np.float32(len(views) * len(members)))
    result = np.concatenate(out) if out else np.empty((0, len(classes_of(members))), np.float32)
    if as_torch:
        import torch
        return torch.from_numpy(result)
    return result
