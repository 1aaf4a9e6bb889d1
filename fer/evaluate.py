"""Class probabilities for batches of face crops (optionally with test-time augmentation), and metrics."""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from .data import CLASSES, FaceSet, normalize

# Test-time augmentation: the face, shifted by 3 px in four directions, each also mirrored (10 views).
TTA_SHIFTS = ((0, 0), (3, 0), (-3, 0), (0, 3), (0, -3))


def _shift(images: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    if dy == 0 and dx == 0:
        return images
    # Replicate padding, then crop: the view a slightly moved face detector box would give.
    h, w = images.shape[-2:]
    pad = max(abs(dy), abs(dx))
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    return padded[..., pad + dy: pad + dy + h, pad + dx: pad + dx + w]


def autocast_for(device: torch.device, enabled: bool = True):
    """bf16 autocast where the hardware runs it fast (CUDA, CPUs with AMX/AVX512-BF16), else off."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=enabled)
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled and cpu_has_fast_bf16())


def cpu_has_fast_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@torch.inference_mode()
def predict_probs(model, images_u8: torch.Tensor, tta: bool = False, batch_size: int = 256,
                  device: torch.device | str | None = None, temperature: float = 1.0) -> torch.Tensor:
    """Softmax probabilities N x classes (on the CPU) for uint8 face crops N x 48 x 48."""
    models = model if isinstance(model, (list, tuple)) else [model]
    device = torch.device(device) if device is not None else next(models[0].parameters()).device
    for m in models:
        m.eval()
    views = [(dy, dx, flip) for dy, dx in TTA_SHIFTS for flip in (False, True)] if tta else [(0, 0, False)]
    out = []
    for start in range(0, len(images_u8), batch_size):
        batch = normalize(images_u8[start:start + batch_size].to(device))
        batch = batch.contiguous(memory_format=torch.channels_last)
        probs = 0
        for dy, dx, flip in views:
            view = _shift(batch, dy, dx)
            if flip:
                view = view.flip(-1)
            for m in models:
                with autocast_for(device):
                    logits = m(view)
                probs = probs + F.softmax(logits.float() / temperature, dim=1)
        out.append((probs / (len(views) * len(models))).cpu())
    if not out:
        return torch.empty(0, len(CLASSES))
    return torch.cat(out)


def metrics(probs: torch.Tensor, labels: torch.Tensor) -> dict:
    """Accuracy, loss, per-class recall and confusion matrix (rows: true class, columns: predicted)."""
    predicted = probs.argmax(1)
    k = len(CLASSES)
    confusion = torch.bincount(labels * k + predicted, minlength=k * k).view(k, k)
    per_class_total = confusion.sum(1)
    recall = {c: (confusion[i, i] / per_class_total[i]).item() if per_class_total[i] else None
              for i, c in enumerate(CLASSES)}
    loss = F.nll_loss(probs.clamp_min(1e-12).log(), labels).item()
    return {"accuracy": (predicted == labels).float().mean().item(), "loss": loss, "n": len(labels),
            "per_class": recall, "confusion": confusion.tolist()}


def evaluate(model, faces: FaceSet, tta: bool = False, batch_size: int = 256, device=None) -> dict:
    start = time.perf_counter()
    probs = predict_probs(model, faces.images, tta=tta, batch_size=batch_size, device=device)
    seconds = time.perf_counter() - start
    result = metrics(probs, faces.labels)
    result["images_per_second"] = len(faces) / seconds if seconds > 0 else None
    return result
