"""The one preprocessing: how a face crop becomes what the network reads, in training, evaluation and
prediction alike. The class order, the input format and the normalization are defined here and nowhere else.

FER-2013's shared training copy is histogram-equalized, while real photos (and the raw test copy) are not:
every face crop is therefore equalized with `cv2.equalizeHist`, so that both meet the network the same way.
A colour crop (a model trained on RGB faces, such as RAF-DB's) is equalized on its luma (YCrCb's Y), which
evens out the light as for gray crops and leaves the colours' hue alone.

The format a model reads (`FaceFormat`: a square side and 1 or 3 channels) is part of its stored config
(`fer.model.ModelConfig.face`); FER-2013's 48 x 48 gray is the default. A crop is uint8 H x W (gray) or
H x W x 3 (RGB), as images are held everywhere else; `normalize` turns a batch into N x C x H x W.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

CLASSES = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
IMAGE_SIZE = 48
SIZE_RANGE = (16, 512)  # pixels: smaller holds no face; larger is no face crop this kit can train on
# Equalized pixels are close to uniform on [0, 1]: mean 1/2, standard deviation 1/sqrt(12).
NORM_MEAN = 0.5
NORM_STD = 1 / math.sqrt(12)


@dataclass(frozen=True)
class FaceFormat:
    """What a network reads: a square face `size` pixels wide, gray (1 channel) or RGB (3)."""
    size: int = IMAGE_SIZE
    channels: int = 1

    def __post_init__(self):
        if type(self.size) is not int or not SIZE_RANGE[0] <= self.size <= SIZE_RANGE[1]:  # noqa: E721
            raise ValueError(f"image_size must be a whole number of pixels from {SIZE_RANGE[0]} to "
                             f"{SIZE_RANGE[1]}, not {self.size!r}")
        if type(self.channels) is not int or self.channels not in (1, 3):  # noqa: E721
            raise ValueError(f"channels must be 1 (gray) or 3 (RGB), not {self.channels!r}")

    @property
    def shape(self) -> tuple[int, ...]:
        """A crop's array shape: (size, size) gray, (size, size, 3) RGB."""
        return (self.size, self.size) if self.channels == 1 else (self.size, self.size, 3)

    @property
    def input_size(self) -> list[int]:
        """The network's input per face, C x H x W (as the weights' metadata stores it)."""
        return [self.channels, self.size, self.size]

    def __str__(self) -> str:
        return f"{self.size} x {self.size} {'gray' if self.channels == 1 else 'RGB'}"


def preprocess_face(image: np.ndarray, face: FaceFormat = FaceFormat()) -> np.ndarray:
    """A face crop of any size, gray (H x W) or RGB (H x W x 3), as the network's input: `face.shape` uint8,
    histogram-equalized (an RGB crop on its luma)."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    if image.ndim == 3 and face.channels == 1:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    elif image.ndim == 2 and face.channels == 3:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[:2] != (face.size, face.size):
        shrinking = image.shape[0] > face.size or image.shape[1] > face.size
        image = cv2.resize(image, (face.size, face.size),
                           interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    if face.channels == 1:
        return cv2.equalizeHist(image)
    luma = cv2.cvtColor(image, cv2.COLOR_RGB2YCrCb)
    luma[..., 0] = cv2.equalizeHist(np.ascontiguousarray(luma[..., 0]))
    return cv2.cvtColor(luma, cv2.COLOR_YCrCb2RGB)


def normalize(images_u8):
    """uint8 crops N x H x W (gray) or N x H x W x 3 (RGB) -> float32 N x C x H x W, normalized like training:
    a torch tensor (on any device) for a torch tensor, a NumPy array for a NumPy array (the int8 path, which
    never loads PyTorch). The same float32 operations in the same order: both give the same numbers."""
    if isinstance(images_u8, np.ndarray):
        x = (images_u8.astype(np.float32) / np.float32(255.0) - np.float32(NORM_MEAN)) / np.float32(NORM_STD)
        return np.ascontiguousarray(x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2))
    x = (images_u8.float() / 255.0 - NORM_MEAN) / NORM_STD
    return x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)
