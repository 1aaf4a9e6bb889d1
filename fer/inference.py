"""Class probabilities for face crops: one place for the normalization, test-time augmentation, the
temperature and ensembling; only the forward pass differs between engines.

An engine turns a normalized batch N x C x H x W (float32, CPU; 1 x 48 x 48 for FER-2013's models, the
model's FaceFormat in general) into logits N x classes (float32, CPU):
  torch      the PyTorch model (on its device, bf16 autocast where the hardware runs it fast)
  onnx       ONNX Runtime, float32 (exported into the cache on first use, fer.export)
  onnx-int8  ONNX Runtime, int8 (NAME.int8.onnx beside the weights; `python -m fer export --int8`)
  auto       onnx-int8 where that file exists for these weights, else torch (README: Throughput)
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F

from .errors import WeightsError, quote
from .paths import DEFAULT_WEIGHTS
from .model import ModelConfig
from .preprocess import CLASSES, IMAGE_SIZE, FaceFormat, normalize
from .runtime import autocast_for
from .weights import classes_of_model, face_of_model, load_model, read_metadata, temperature_of

# Test-time augmentation: the face, shifted by 3 px (of 48; as much of a larger face) in four directions, each
# also mirrored (10 views).
TTA_SHIFTS = ((0, 0), (3, 0), (-3, 0), (0, 3), (0, -3))
ENGINES = ("auto", "torch", "onnx", "onnx-int8")


class TorchEngine:
    """A PyTorch model as an engine."""
    name = "torch"

    def __init__(self, model: torch.nn.Module):
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.metadata = getattr(model, "fer_metadata", {})
        self.classes = classes_of_model(model)
        self.face = face_of_model(model)
        self.temperature = temperature_of(model)

    @torch.inference_mode()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device)
        if self.device.type == "cuda":  # channels_last pays off on tensor cores only (measured on the CPU)
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_for(self.device):
            return self.model(x).float().cpu()


class OnnxEngine:
    """An ONNX file made from a weights file, run by ONNX Runtime on the CPU."""

    def __init__(self, onnx_path, weights, name: str = "onnx"):
        import onnxruntime as ort
        from .export import INPUT_NAME, check_onnx
        self.onnx_metadata = check_onnx(onnx_path, weights)
        self.name, self.path, self.input_name = name, Path(onnx_path), INPUT_NAME
        self.metadata = read_metadata(weights)  # the temperature is the weights' own, as calibrated now
        self.classes = tuple(self.metadata["classes"])
        self.face = ModelConfig.from_dict(self.metadata["config"]).face
        self.temperature = float(self.metadata.get("temperature", 1.0))
        try:
            self.session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - ONNX Runtime raises its own kinds for broken graphs
            raise WeightsError(f"ONNX Runtime cannot load {quote(onnx_path)} ({type(e).__name__})") from None

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {self.input_name: x.numpy()})[0]).float()


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
        return TorchEngine(load_model(weights, device))
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
    """An engine for a model or an engine (anything with .logits)."""
    return model if hasattr(model, "logits") else TorchEngine(model)


def engines_of(models) -> list:
    """A model, an engine or a list of them (an ensemble), as a list of engines."""
    return [as_engine(m) for m in (models if isinstance(models, (list, tuple)) else [models])]


def load_engines(models=None, engine: str = "auto") -> list:
    """An engine per member of `models`: a model or an engine as it is; a weights path, or an ensemble list
    (NAME.txt, fer.ensemble), loaded with `engine`; None (alone or in a list), the shipped model."""
    from .ensemble import expand_weights
    engines = []
    for item in models if isinstance(models, (list, tuple)) else [models]:
        if item is None or isinstance(item, (str, os.PathLike)):
            engines += [load_engine(p, engine) for p in (expand_weights([item]) if item is not None else [None])]
        else:
            engines.append(as_engine(item))
    return engines


def classes_of(models) -> tuple[str, ...]:
    """The classes of a model, an engine or an ensemble; WeightsError when an ensemble's members disagree."""
    members = engines_of(models)
    classes = {tuple(getattr(m, "classes", CLASSES)) for m in members}  # an engine of one's own: FER-2013's
    if len(classes) > 1:
        raise WeightsError(f"an ensemble's members must have the same classes: {' vs '.join(map(str, classes))}")
    return classes.pop()


def face_of(models) -> FaceFormat:
    """The face crops a model, an engine or an ensemble reads; WeightsError when an ensemble's members read
    different ones."""
    members = engines_of(models)
    faces = {getattr(m, "face", FaceFormat()) for m in members}
    if len(faces) > 1:
        raise WeightsError(f"an ensemble's members must read the same faces: {' vs '.join(map(str, faces))}")
    return faces.pop()


def _shift(images: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    if dy == 0 and dx == 0:
        return images
    # Replicate padding, then crop: the view a slightly moved face detector box would give.
    h, w = images.shape[-2:]
    pad = max(abs(dy), abs(dx))
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    return padded[..., pad + dy: pad + dy + h, pad + dx: pad + dx + w]


def tta_views(tta: bool, size: int = IMAGE_SIZE) -> list[tuple[int, int, bool]]:
    """(shift down, shift right, mirrored) of each view of a face `size` pixels wide."""
    if not tta:
        return [(0, 0, False)]
    k = size / IMAGE_SIZE
    return [(round(dy * k), round(dx * k), flip) for dy, dx in TTA_SHIFTS for flip in (False, True)]


def predict_probs(models, images_u8: torch.Tensor, tta: bool = False, batch_size: int = 256,
                  temperature: float | None = 1.0) -> torch.Tensor:
    """Softmax probabilities N x classes (CPU) for uint8 face crops in the models' format (N x 48 x 48 for
    FER-2013's; `face_of(models).shape` in general).

    models: a model, an engine, or a list of them (an ensemble: the mean of the members' probabilities).
    temperature: divides the logits; None uses each member's own (from its metadata, 1 if uncalibrated).
    """
    members = engines_of(models)
    classes_of(members)  # an ensemble averages like with like
    face = face_of(members)
    if tuple(images_u8.shape[1:]) != face.shape:
        raise ValueError(f"face crops of shape {tuple(images_u8.shape[1:])} for a model that reads {face} "
                         f"({face.shape}): read the data with the model's format (fer.weights.face_of_model)")
    views = tta_views(tta, face.size)
    out = []
    for start in range(0, len(images_u8), batch_size):
        batch = normalize(images_u8[start:start + batch_size].cpu())
        probs = 0
        for dy, dx, flip in views:
            view = _shift(batch, dy, dx)
            if flip:
                view = view.flip(-1)
            for member in members:
                t = member.temperature if temperature is None else temperature
                probs = probs + F.softmax(member.logits(view.contiguous()) / t, dim=1)
        if not torch.isfinite(probs).all():  # finite but absurd weights (a negative variance, huge logits)
            raise WeightsError(f"the model gave non-finite scores (NaN or infinity) for "
                               f"{'this face' if len(images_u8) == 1 else 'these faces'}: its weights are broken")
        out.append(probs / (len(views) * len(members)))
    if not out:
        return torch.empty(0, len(classes_of(members)))
    return torch.cat(out)
