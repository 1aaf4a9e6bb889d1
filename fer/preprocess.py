"""The one preprocessing: how a face crop becomes what the network reads, in training, evaluation and
prediction alike. The class order, the input size and the normalization are defined here and nowhere else.

FER-2013's shared training copy is histogram-equalized, while real photos (and the raw test copy) are not:
every face crop is therefore equalized with `cv2.equalizeHist`, so that both meet the network the same way.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch

CLASSES = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
IMAGE_SIZE = 48
# Equalized pixels are close to uniform on [0, 1]: mean 1/2, standard deviation 1/sqrt(12).
NORM_MEAN = 0.5
NORM_STD = 1 / math.sqrt(12)


def preprocess_face(gray: np.ndarray) -> np.ndarray:
    """A gray face crop of any size as the network's input: 48 x 48 uint8, histogram-equalized."""
    if gray.shape != (IMAGE_SIZE, IMAGE_SIZE):
        shrinking = gray.shape[0] > IMAGE_SIZE or gray.shape[1] > IMAGE_SIZE
        gray = cv2.resize(gray, (IMAGE_SIZE, IMAGE_SIZE),
                          interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return cv2.equalizeHist(np.ascontiguousarray(gray, dtype=np.uint8))


def normalize(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 N x 48 x 48 (any device) -> float N x 1 x 48 x 48, normalized like training."""
    return ((images_u8.float() / 255.0 - NORM_MEAN) / NORM_STD).unsqueeze(1)
