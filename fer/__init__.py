"""Facial-expression recognition on FER-2013 with ResNet50: data, models, training, prediction, charts.

The names below are imported on first use (PEP 562), so that `python -m fer --help` and `import fer.cli`
do not load torch, torchvision and OpenCV.
"""
import importlib

_HOMES = {"load_split": "datasets", "ConfigError": "errors", "DataError": "errors", "FerError": "errors",
          "WeightsError": "errors", "ModelConfig": "model", "build_model": "model", "DEFAULT_WEIGHTS": "paths",
          "FAST_WEIGHTS": "paths",
          "predict": "photos", "predict_files": "photos", "predict_image": "photos", "CLASSES": "preprocess",
          "preprocess_face": "preprocess", "load_model": "api", "save_weights": "weights",
          "load_engine": "inference", "as_image": "images", "load": "api", "Model": "api", "ModelSpec": "spec",
          "load_network": "weights", "register": "model"}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'fer' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
