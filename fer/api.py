"""The Python API, for people who do not use the command line:

    import fer
    model = fer.load()                          # the shipped model; or a weights path, or an ensemble list (.txt)
    result = model.predict("photo.jpg")         # faces with boxes, labels and probabilities
    probs = model.predict_faces(crops)          # face crops already cut: N x classes probabilities

A `Model` is the engines of one weights file or of an ensemble's members with the spec they share
(`model.spec`: classes, face format, temperature); every function of the package that takes "models" takes it.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from .inference import load_engines, predict_probs, spec_of
from .spec import ModelSpec

if TYPE_CHECKING:  # annotations only: PyTorch is imported where it is used (the int8 path needs none)
    import torch


class Model:
    """One model or an ensemble, loaded: what `fer.load()` returns."""

    def __init__(self, engines: list):
        self.engines = list(engines)
        self.spec: ModelSpec = spec_of(self.engines)  # the members read the same faces into the same classes

    @property
    def classes(self) -> tuple[str, ...]:
        return self.spec.classes

    @property
    def engine(self) -> str:
        """Which engine runs it: torch, onnx or onnx-int8 ("+"-joined for an ensemble)."""
        return "+".join(e.name for e in self.engines)

    @property
    def network(self) -> "torch.nn.Module":
        """The PyTorch network (one model loaded with engine "torch")."""
        if len(self.engines) != 1 or not hasattr(self.engines[0], "model"):
            raise AttributeError(f"a {self.engine} model has no single PyTorch network: fer.load(weights, "
                                 f"engine='torch') gives one")
        return self.engines[0].model

    @property
    def metadata(self) -> dict:
        """The weights file's metadata (one model): how it was made (val_acc, epoch, train_config, ...)."""
        if len(self.engines) != 1:
            raise AttributeError("an ensemble has a metadata dict per member: model.engines[i].metadata")
        return self.engines[0].metadata

    def predict(self, photo, tta: bool = False, whole_image: bool | None = None, **options) -> dict:
        """The faces in a photo (a path, bytes, a PIL image or an RGB/gray array) and their expressions:
        {"face_found", "engine", "faces": [{"box", "score", "landmarks", "label", "probs"}]} (see
        fer.photos.predict_image for `options`)."""
        from .photos import predict_image
        return predict_image(photo, self, tta=tta, whole_image=whole_image, **options)

    def predict_faces(self, crops, tta: bool = False) -> np.ndarray:
        """Class probabilities N x classes for face crops already cut out (no detection): a list of images or
        an array N x H x W (gray) or N x H x W x 3 (RGB), any size; each is resized to the model's face format
        and equalized, as the photo path does."""
        from .images import as_image
        from .preprocess import preprocess_face
        face = self.spec.face
        if hasattr(crops, "__array__") and np.ndim(crops) in (3, 4):  # an array or a tensor of crops
            crops = list(np.asarray(crops))
        if isinstance(crops, (str, bytes, os.PathLike)) or not len(crops):
            raise ValueError("predict_faces takes a list (or an N x H x W array) of face crops; "
                             "predict() finds the faces in a photo")
        arrays = [np.asarray(as_image(c)) if not isinstance(c, np.ndarray) else c for c in crops]
        batch = np.stack([preprocess_face(a, face) for a in arrays])
        return predict_probs(self, batch, tta=tta, temperature=None)

    def __repr__(self) -> str:
        return (f"<fer.Model {self.spec.arch} on {self.engine}: {self.spec.face} faces -> "
                f"{', '.join(self.classes)}>")


def load(weights=None, engine: str = "auto", device="cpu") -> Model:
    """A model to predict with: `weights` a weights file (default: the shipped model), an ensemble list
    (NAME.txt, one weights file a line) or a list of weights files; engine auto (int8 ONNX Runtime where the
    file exists, else PyTorch), torch, onnx or onnx-int8."""
    return Model(load_engines(weights, engine, device))


def load_model(weights=None, device="cpu") -> Model:
    """The first version's name: the model on PyTorch, `fer.load(weights, engine="torch")`."""
    return load(weights, "torch", device)
