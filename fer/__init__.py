"""Facial-expression recognition on FER-2013 with ResNet50: data, models, training, prediction, charts."""
from .datasets import load_split
from .errors import ConfigError, DataError, FerError, WeightsError
from .model import ModelConfig, build_model
from .paths import DEFAULT_WEIGHTS
from .predict import predict, predict_files, predict_image
from .preprocess import CLASSES, preprocess_face
from .weights import load_model, save_weights

__all__ = ["CLASSES", "DEFAULT_WEIGHTS", "ConfigError", "DataError", "FerError", "ModelConfig", "WeightsError",
           "build_model", "load_model", "load_split", "predict", "predict_files", "predict_image",
           "preprocess_face", "save_weights"]
