"""Corruptions of face crops, as real photos bring them (issue 33; the model is Hendrycks & Dietterich's
ImageNet-C, ICLR 2019): noise, blur, motion blur, JPEG, darkness and over-exposure, low resolution, low contrast,
a turned head, loose, tight and shifted detector boxes, and the eyes, the mouth or another part of the face
covered.

Each corruption takes face crops as the project stores them (uint8, N x H x W gray or N x H x W x 3 RGB) at a
severity from 1 to 5 and returns crops of the same shape and type, drawn from `generator` (the same draws for
the same state). A corruption acts on the crop **before** equalization, as a dim room or a webcam acts on the
photo before `fer.preprocess.preprocess_face` sees it; `equalize` then does what the photo path does.

Used twice: `benchmarks/robustness.py` scores a model on every corruption at every severity (FER-2013-C), and
training draws them at random (`AugmentConfig.corrupt_prob`). Built on torchvision's transforms
(`torchvision.transforms.v2.functional`), sizes given for 48-px faces and scaled to the crop's side.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from .detect import TEMPLATE

SEVERITIES = (1, 2, 3, 4, 5)
EYES_Y = float(TEMPLATE[:2, 1].mean())    # 17.8 of 48: where the eyes lie in FER-2013's crops
MOUTH_Y = float(TEMPLATE[3:, 1].mean())   # 37.1 of 48: the mouth


def _channels_first(images: torch.Tensor) -> torch.Tensor:
    return images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2)


def _channels_back(images: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return images[:, 0] if like.dim() == 3 else images.permute(0, 2, 3, 1)


def _to_u8(x: torch.Tensor) -> torch.Tensor:
    return x.round().clamp(0, 255).to(torch.uint8)


def _uniform(generator, n: int, low: float, high: float) -> torch.Tensor:
    return torch.rand(n, generator=generator) * (high - low) + low


def _sign(generator, n: int) -> torch.Tensor:
    return torch.randint(0, 2, (n,), generator=generator).float() * 2 - 1


def noise(x, severity, generator):
    sigma = (6, 12, 18, 26, 38)[severity - 1]  # grey levels
    return _to_u8(x.float() + torch.randn(x.shape, generator=generator) * sigma)


def blur(x, severity, generator):
    sigma = (0.6, 0.9, 1.2, 1.6, 2.2)[severity - 1] * x.shape[-1] / 48
    kernel = 2 * math.ceil(3 * sigma) + 1
    return _to_u8(TF.gaussian_blur(x.float(), [kernel, kernel], [sigma, sigma]))


def motion_blur(x, severity, generator):
    """A line kernel at a random angle per face: a moving head or a shaking hand."""
    length = max(3, round((3, 5, 7, 9, 12)[severity - 1] * x.shape[-1] / 48)) | 1
    out = torch.empty_like(x, dtype=torch.float32)
    angles = _uniform(generator, len(x), 0, math.pi)
    centre = length // 2
    for i, angle in enumerate(angles.tolist()):
        kernel = torch.zeros(length, length)
        for t in torch.linspace(-centre, centre, 4 * length).tolist():
            kernel[round(centre + t * math.sin(angle)), round(centre + t * math.cos(angle))] = 1
        kernel = (kernel / kernel.sum()).expand(x.shape[1], 1, length, length)
        padded = F.pad(x[i:i + 1].float(), [centre] * 4, mode="replicate")
        out[i] = F.conv2d(padded, kernel, groups=x.shape[1])[0]
    return _to_u8(out)


def jpeg(x, severity, generator):
    """Encoded and decoded by OpenCV's libjpeg (torchvision's own JPEG codec is deprecated since 0.29)."""
    quality = (60, 35, 20, 12, 6)[severity - 1]
    out = torch.empty_like(x)
    for i, face in enumerate(x.permute(0, 2, 3, 1).numpy()):  # H x W x C; a colour face is RGB, kept so
        _, encoded = cv2.imencode(".jpg", np.ascontiguousarray(face), [cv2.IMWRITE_JPEG_QUALITY, quality])
        decoded = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)
        out[i] = torch.from_numpy(decoded.reshape(face.shape)).permute(2, 0, 1)
    return out


def dark(x, severity, generator):
    """Less light: darker, and the sensor's noise shows (gain), as in a dim room."""
    factor = (0.55, 0.4, 0.28, 0.18, 0.1)[severity - 1]
    dimmed = x.float() * factor + torch.randn(x.shape, generator=generator) * (1.5 + 2 * severity) * factor
    return _to_u8(dimmed)


def bright(x, severity, generator):
    """Over-exposure: the light parts clip to white and their detail is lost."""
    factor = (1.4, 1.7, 2.0, 2.5, 3.2)[severity - 1]
    return _to_u8(x.float() * factor)


def low_resolution(x, severity, generator):
    side = x.shape[-1]
    small = max(4, round((32, 24, 18, 14, 10)[severity - 1] * side / 48))
    down = TF.resize(x.float(), [small, small], antialias=True)
    return _to_u8(TF.resize(down, [side, side], antialias=False))


def contrast(x, severity, generator):
    factor = (0.6, 0.45, 0.3, 0.2, 0.12)[severity - 1]
    mean = x.float().mean(dim=(-1, -2, -3), keepdim=True)
    return _to_u8((x.float() - mean) * factor + mean)


def _affine(x, angles, scales, shifts):
    """Each face turned (degrees), scaled and shifted (fractions of the side), edges replicated as a loose
    detector box would show more of the head and the background beside it."""
    n = len(x)
    radians = angles * math.pi / 180
    cos, sin = torch.cos(radians) / scales, torch.sin(radians) / scales
    theta = torch.stack([torch.stack([cos, -sin, shifts[:, 0] * 2], 1), torch.stack([sin, cos, shifts[:, 1] * 2], 1)], 1)
    grid = F.affine_grid(theta, [n, *x.shape[1:]], align_corners=False)
    return _to_u8(F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False))


def rotate(x, severity, generator):
    n = len(x)
    angles = (10, 20, 30, 40, 50)[severity - 1] * _sign(generator, n)
    return _affine(x, angles, torch.ones(n), torch.zeros(n, 2))


def zoom_out(x, severity, generator):
    """A loose box: the face smaller in the crop (a detector's box twice the face's at severity 5)."""
    n = len(x)
    return _affine(x, torch.zeros(n), torch.full((n,), (0.9, 0.8, 0.7, 0.6, 0.5)[severity - 1]), torch.zeros(n, 2))


def zoom_in(x, severity, generator):
    """A tight box: forehead and chin cut off."""
    n = len(x)
    return _affine(x, torch.zeros(n), torch.full((n,), (1.1, 1.2, 1.3, 1.4, 1.55)[severity - 1]), torch.zeros(n, 2))


def shift(x, severity, generator):
    """A box off the face's centre, in a random direction."""
    n = len(x)
    direction = _uniform(generator, n, 0, 2 * math.pi)
    amount = (0.04, 0.08, 0.12, 0.16, 0.21)[severity - 1]
    return _affine(x, torch.zeros(n), torch.ones(n),
                   torch.stack([torch.cos(direction), torch.sin(direction)], 1) * amount)


def _band(x, centre_y: float, height: float, fill: torch.Tensor) -> torch.Tensor:
    """A horizontal band across the face (48-px coordinates, scaled), filled with one grey per face."""
    side = x.shape[-1]
    top = max(0, round((centre_y - height / 2) * side / 48))
    bottom = min(side, round((centre_y + height / 2) * side / 48))
    out = x.clone()
    out[..., top:bottom, :] = fill.view(-1, 1, 1, 1).to(x.dtype)
    return out


def eyes_covered(x, severity, generator):
    """Sunglasses: a dark band across the eyes."""
    height = (6, 8, 10, 12, 15)[severity - 1]
    return _band(x, EYES_Y, height, _uniform(generator, len(x), 0, 60).round())


def mouth_covered(x, severity, generator):
    """A mask or a hand: a band over the mouth, reaching from the nose to the chin at severity 5."""
    height = (8, 11, 14, 18, 24)[severity - 1]
    return _band(x, MOUTH_Y + (height - 8) / 4, height, _uniform(generator, len(x), 60, 255).round())


def part_covered(x, severity, generator):
    """Any part of the face behind something: a square at a random place, of a random grey."""
    side = x.shape[-1]
    patch = round((10, 14, 18, 22, 26)[severity - 1] * side / 48)
    out = x.clone()
    tops = torch.randint(0, side - patch + 1, (len(x),), generator=generator).tolist()
    lefts = torch.randint(0, side - patch + 1, (len(x),), generator=generator).tolist()
    fills = _uniform(generator, len(x), 0, 255).round().tolist()
    for i, (top, left, fill) in enumerate(zip(tops, lefts, fills)):
        out[i, :, top:top + patch, left:left + patch] = int(fill)
    return out


CORRUPTIONS = {"noise": noise, "blur": blur, "motion_blur": motion_blur, "jpeg": jpeg, "dark": dark,
               "bright": bright, "low_resolution": low_resolution, "contrast": contrast, "rotate": rotate,
               "zoom_out": zoom_out, "zoom_in": zoom_in, "shift": shift, "eyes_covered": eyes_covered,
               "mouth_covered": mouth_covered, "part_covered": part_covered}


def corrupt(images: torch.Tensor, name: str, severity: int, generator: torch.Generator) -> torch.Tensor:
    """`images` (uint8, N x H x W or N x H x W x 3) with the corruption `name` at `severity` (1-5)."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r} (expected one of {', '.join(CORRUPTIONS)})")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be 1 to 5, not {severity!r}")
    if images.dtype != torch.uint8 or images.dim() not in (3, 4):
        raise ValueError("corruptions take uint8 faces, N x H x W or N x H x W x 3")
    if not len(images):
        return images.clone()
    corrupted = CORRUPTIONS[name](_channels_first(images.cpu()), severity, generator)  # on the CPU: JPEG is
    return _channels_back(corrupted, images).to(images.device)


def equalize(images: torch.Tensor) -> torch.Tensor:
    """Histogram equalization of each uint8 face (of a colour face, of each channel), as the training faces
    are: torchvision's, which follows PIL's (within a grey level or two of OpenCV's on faces)."""
    return _channels_back(TF.equalize(_channels_first(images).contiguous()), images)


def corrupt_randomly(images: torch.Tensor, probability: float, generator: torch.Generator,
                     names=tuple(CORRUPTIONS)) -> torch.Tensor:
    """Training augmentation: each face, with `probability`, gets one corruption of `names` at a random
    severity, and is equalized again (the faces it trains on are equalized, as every input is)."""
    n = len(images)
    chosen = torch.rand(n, generator=generator) < probability
    kinds = torch.randint(0, len(names), (n,), generator=generator)
    severities = torch.randint(1, 6, (n,), generator=generator)
    if not chosen.any():
        return images
    out = images.clone()
    for k, name in enumerate(names):
        for severity in SEVERITIES:
            index = torch.nonzero(chosen & (kinds == k) & (severities == severity)).flatten()
            if len(index):
                out[index] = corrupt(images[index], name, severity, generator)
    index = torch.nonzero(chosen).flatten()
    out[index] = equalize(out[index])
    return out
