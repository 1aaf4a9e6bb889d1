"""Distillation (Hinton et al. 2015): a network learns from a teacher's probabilities as well as the labels.

The teacher is any weights file or ensemble list (`--teacher trained_models/ensemble.txt`). Its probabilities
for every training face are computed once, before the first epoch, as the mean over the face and its mirror
image (the augmentation flips faces at random, and an expression's label does not change with a mirror),
each member with its own temperature, as `fer predict` averages an ensemble. They are kept beside the run's
checkpoint, keyed by the teacher's files and the faces, so a resumed run reads them instead of spending
minutes again. Precomputed targets do not follow the crop, rotation and erasing of each augmented view:
the approximation the issue chose for its cost (an online teacher would triple a CPU epoch).

The loss, for student logits z, label y, teacher probabilities p and temperature T:
    (1 - w) * CE(z, y) + w * T^2 * KL(p^(1/T) (renormalized) || softmax(z / T))
T^2 keeps the soft term's gradients at the scale of the hard one's as T changes (Hinton et al., section 2).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from .datasets import FaceSet, load_split
from .errors import ConfigError, quote
from .runtime import atomic_write


def distillation_loss(logits: torch.Tensor, target: torch.Tensor, teacher: torch.Tensor, weight: float,
                      temperature: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """Hinton's loss. target: labels (N) or a distribution per face (N x classes: FER+'s votes); teacher:
    the teacher's probabilities N x classes."""
    hard = F.cross_entropy(logits, target, label_smoothing=label_smoothing)
    soft_teacher = F.softmax(teacher.clamp_min(1e-12).log() / temperature, dim=1)
    soft = F.kl_div(F.log_softmax(logits.float() / temperature, dim=1), soft_teacher, reduction="batchmean")
    return (1 - weight) * hard + weight * temperature ** 2 * soft


def teacher_files(teacher) -> list[Path]:
    """The weights files a --teacher names: one file, or the members of an ensemble list."""
    from .ensemble import expand_weights
    return expand_weights([teacher])


def fingerprint(teacher, faces: FaceSet) -> str:
    """What the cached probabilities depend on: the teacher's bytes, the faces' pixels and labels."""
    digest = hashlib.sha256()
    for path in teacher_files(teacher):
        with open(path, "rb") as f:
            digest.update(hashlib.file_digest(f, "sha256").digest())
    digest.update(faces.images.numpy().tobytes())
    digest.update(faces.labels.numpy().tobytes())
    return digest.hexdigest()


def teacher_probs(teacher, faces: FaceSet, data, device="cpu") -> torch.Tensor:
    """The teacher's probabilities N x len(faces.classes) for `faces` (a split of `data` as loaded, in the
    student's face format), face and mirror averaged. A teacher that reads another face format (size,
    channels) reads the same split of `data` in its own."""
    from .inference import face_of, load_engines, predict_probs
    engines = load_engines(teacher_files(teacher), "torch" if torch.device(device).type == "cuda" else "auto",
                           device)
    classes = engines[0].classes
    missing = [c for c in faces.classes if c not in classes]
    if missing:
        raise ConfigError(f"--teacher {quote(teacher)} does not know the class {missing[0]!r} of the training "
                          f"faces (its classes: {', '.join(classes)})")
    own = faces
    if face_of(engines) != faces.face:
        own = load_split(data, faces.split, face=face_of(engines)).in_classes(faces.classes)
        if not torch.equal(own.labels, faces.labels):
            raise ConfigError(f"--teacher {quote(teacher)} reads {face_of(engines)} faces, and the training faces "
                              f"read in its format do not line up with this run's")
    probs = (predict_probs(engines, own.images, temperature=None)
             + predict_probs(engines, own.images.flip(2), temperature=None)) / 2
    probs = probs[:, [classes.index(c) for c in faces.classes]]  # the student's classes, in its order
    return probs / probs.sum(1, keepdim=True)


def cached_teacher_probs(teacher, faces: FaceSet, data, cache: Path, device="cpu", log=print) -> torch.Tensor:
    """teacher_probs, read from `cache` when it was computed from the same teacher files and faces, else
    computed and written there (atomically: a killed run leaves no half file)."""
    key = fingerprint(teacher, faces)
    if cache.is_file():
        try:
            with safe_open(str(cache), framework="pt") as f:
                if (f.metadata() or {}).get("key") == key:
                    probs = f.get_tensor("probs")
                    if probs.shape == (len(faces), len(faces.classes)):
                        log(f"teacher: its probabilities for {len(faces)} faces read from {cache}")
                        return probs
        except (SafetensorError, OSError):
            pass  # unreadable: computed again below
    log(f"teacher: {quote(teacher)} labels {len(faces)} training faces and their mirror images ...")
    probs = teacher_probs(teacher, faces, data, device)
    agree = (probs.argmax(1) == faces.labels).float().mean().item()
    log(f"teacher: agrees with {agree:.2%} of the training labels; kept in {cache}")
    with atomic_write(cache) as tmp:
        Path(tmp).write_bytes(save({"probs": probs.float().contiguous()}, metadata={"key": key}))
    return probs
