"""Facial-expression recognition on FER-2013 with ResNet50: data, models, training, prediction, charts."""
from .data import CLASSES, DataError, load_split, preprocess_face
from .model import ModelConfig, build_model
from .predict import predict, predict_files, predict_image
from .weights import DEFAULT_WEIGHTS, WeightsError, load_model, save_weights

__all__ = ["CLASSES", "DEFAULT_WEIGHTS", "DataError", "ModelConfig", "WeightsError", "build_model", "load_model",
           "load_split", "predict", "predict_files", "predict_image", "preprocess_face", "save_weights"]
