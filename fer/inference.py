"""Class probabilities for face crops: one place for the normalization, test-time augmentation, the
temperature and ensembling; only the forward pass differs between engines.

An engine turns a normalized batch N x 1 x 48 x 48 (float32, CPU) into logits N x 7 (float32, CPU):
  torch  the PyTorch model (on its device, bf16 autocast where the hardware runs it fast)
  onnx   ONNX Runtime on the CPU (fer.export makes the .onnx file; float32, or int8 with --int8)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .preprocess import CLASSES, normalize
from .runtime import autocast_for
from .weights import temperature_of

# Test-time augmentation: the face, shifted by 3 px in four directions, each also mirrored (10 views).
TTA_SHIFTS = ((0, 0), (3, 0), (-3, 0), (0, 3), (0, -3))
ENGINES = ("torch", "onnx")


class TorchEngine:
    """A PyTorch model as an engine."""
    name = "torch"

    def __init__(self, model: torch.nn.Module):
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.metadata = getattr(model, "fer_metadata", {})
        self.temperature = temperature_of(model)

    @torch.inference_mode()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device)
        if self.device.type == "cuda":  # channels_last pays off on tensor cores only (measured on the CPU)
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_for(self.device):
            return self.model(x).float().cpu()


def as_engine(model):
    """An engine for a model or an engine (anything with .logits)."""
    return model if hasattr(model, "logits") else TorchEngine(model)


def _shift(images: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    if dy == 0 and dx == 0:
        return images
    # Replicate padding, then crop: the view a slightly moved face detector box would give.
    h, w = images.shape[-2:]
    pad = max(abs(dy), abs(dx))
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    return padded[..., pad + dy: pad + dy + h, pad + dx: pad + dx + w]


def tta_views(tta: bool) -> list[tuple[int, int, bool]]:
    return [(dy, dx, flip) for dy, dx in TTA_SHIFTS for flip in (False, True)] if tta else [(0, 0, False)]


def predict_probs(models, images_u8: torch.Tensor, tta: bool = False, batch_size: int = 256,
                  temperature: float | None = 1.0) -> torch.Tensor:
    """Softmax probabilities N x classes (CPU) for uint8 face crops N x 48 x 48.

    models: a model, an engine, or a list of them (an ensemble: the mean of the members' probabilities).
    temperature: divides the logits; None uses each member's own (from its metadata, 1 if uncalibrated).
    """
    members = [as_engine(m) for m in (models if isinstance(models, (list, tuple)) else [models])]
    views = tta_views(tta)
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
        out.append(probs / (len(views) * len(members)))
    if not out:
        return torch.empty(0, len(CLASSES))
    return torch.cat(out)
