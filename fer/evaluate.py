"""Scoring a model (or an ensemble) on a split: accuracy, loss, per-class recall and confusion matrix."""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from .datasets import FaceSet
from .calibrate import expected_calibration_error
from .inference import classes_of, predict_probs


def metrics(probs: torch.Tensor, labels: torch.Tensor, classes) -> dict:
    """Accuracy, loss, calibration error, per-class recall and confusion matrix (rows: true class, columns:
    predicted)."""
    predicted = probs.argmax(1)
    k = len(classes)
    confusion = torch.bincount(labels * k + predicted, minlength=k * k).view(k, k)
    per_class_total = confusion.sum(1)
    recall = {c: (confusion[i, i] / per_class_total[i]).item() if per_class_total[i] else None
              for i, c in enumerate(classes)}
    loss = F.nll_loss(probs.clamp_min(1e-12).log(), labels).item()
    return {"accuracy": (predicted == labels).float().mean().item(), "loss": loss, "n": len(labels),
            "ece": expected_calibration_error(probs, labels) if len(labels) else None,
            "per_class": recall, "confusion": confusion.tolist()}


def evaluate(models, faces: FaceSet, tta: bool = False, batch_size: int = 256) -> dict:
    """Metrics of the probabilities predict gives, in the models' classes (the faces' labels mapped to them by
    name): each model's own temperature applied (1 where it has none), so that an ensemble averages calibrated
    probabilities (a temperature does not change one model's top class, but it weighs an ensemble's members),
    and the calibration error is the one users see."""
    classes = classes_of(models)
    faces = faces.in_classes(classes)
    start = time.perf_counter()
    probs = predict_probs(models, faces.images, tta=tta, batch_size=batch_size, temperature=None)
    seconds = time.perf_counter() - start
    result = metrics(probs, faces.labels, classes)
    result["images_per_second"] = len(faces) / seconds if seconds > 0 else None
    return result
