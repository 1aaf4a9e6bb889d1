"""Train-time augmentation as batched tensor ops: each image of a batch gets its own random flip, affine
(rotation, zoom, shift) and random erasing, on the CPU or the GPU, without DataLoader workers; on request,
the corruptions of real photos first (`fer.corruptions`), and MixUp or CutMix of the batch last."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torchvision.transforms.v2 as transforms


@dataclass(frozen=True)
class AugmentConfig:
    """Train-time augmentation; each part can be switched off to measure what it adds (`python -m fer train
    --no-flip --max-rotate-deg 0 --erase-prob 0 ...`: the train command has one option per field)."""
    flip: bool = True
    max_rotate_deg: float = 10.0
    max_scale: float = 0.1       # zoom in or out by up to 10 %
    max_translate: float = 0.1   # shift by up to 10 % of the side (0.1 of 48 px ~ a random 44-px crop's range)
    erase_prob: float = 0.25     # random erasing (Zhong et al. 2017) of one rectangle
    erase_max_area: float = 0.25
    # Added with config version 5; their defaults (off) are what earlier runs did.
    corrupt_prob: float = 0.0    # each face: one of fer.corruptions at a random severity (noise ... covered eyes)
    mixup_alpha: float = 0.0     # > 0: MixUp (Zhang et al. 2018), pairs mixed by Beta(alpha, alpha)
    cutmix_alpha: float = 0.0    # > 0: CutMix (Yun et al. 2019); with MixUp too, one of them per batch

    @property
    def mixes(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def validate(self) -> None:
        """ValueError naming the first field out of range."""
        for name, value in vars(self).items():
            if name == "flip":
                if not isinstance(value, bool):
                    raise ValueError(f"flip must be true or false, not {value!r}")
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                raise ValueError(f"{name} must be a number, not {value!r}")
        for name, low, high in (("max_rotate_deg", 0, 180), ("max_scale", 0, 0.9), ("max_translate", 0, 0.5),
                                ("erase_prob", 0, 1), ("erase_max_area", 0.02, 1), ("corrupt_prob", 0, 1),
                                ("mixup_alpha", 0, 10), ("cutmix_alpha", 0, 10)):
            if not low <= getattr(self, name) <= high:
                raise ValueError(f"{name} must be in [{low}, {high}], not {getattr(self, name)!r}")


def augment(images: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Random flip + affine + erasing on a normalized batch N x 1 x H x W, each image its own draw.

    Written as batched tensor ops (not torchvision.transforms, which draw one set of parameters per call)
    so that a whole batch is augmented in one go on the CPU or the GPU, without DataLoader workers.
    """
    n, _, h, w = images.shape
    device = images.device

    def uniform(low, high, *shape):
        return torch.rand(n, *shape, generator=generator, device=device) * (high - low) + low

    angle = uniform(-1, 1) * math.radians(cfg.max_rotate_deg)
    scale = 1 + uniform(-1, 1) * cfg.max_scale
    flip = (torch.rand(n, generator=generator, device=device) < 0.5).float() * 2 - 1 if cfg.flip \
        else torch.ones(n, device=device)
    shift = uniform(-1, 1, 2) * cfg.max_translate * 2  # affine_grid coordinates span [-1, 1]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, shift[:, 0]], 1),
                         torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1)
    grid = torch.nn.functional.affine_grid(theta, list(images.shape), align_corners=False)
    out = torch.nn.functional.grid_sample(images, grid, mode="bilinear", padding_mode="border",
                                          align_corners=False)
    if cfg.erase_prob > 0:
        area = uniform(0.02, cfg.erase_max_area)
        aspect = torch.exp(uniform(math.log(0.3), math.log(3.3)))
        eh = (torch.sqrt(area * aspect) * h).clamp(1, h)
        ew = (torch.sqrt(area / aspect) * w).clamp(1, w)
        top = uniform(0, 1) * (h - eh)
        left = uniform(0, 1) * (w - ew)
        rows = torch.arange(h, device=device).view(1, h, 1)
        cols = torch.arange(w, device=device).view(1, 1, w)
        inside = ((rows >= top.view(n, 1, 1)) & (rows < (top + eh).view(n, 1, 1)) &
                  (cols >= left.view(n, 1, 1)) & (cols < (left + ew).view(n, 1, 1)))
        chosen = (torch.rand(n, generator=generator, device=device) < cfg.erase_prob).view(n, 1, 1)
        out = out.masked_fill((inside & chosen).unsqueeze(1), 0.0)  # 0 is the mean after normalizing
    return out


def side_generator(generator: torch.Generator) -> torch.Generator:
    """A CPU generator seeded by one draw of `generator` (on any device): the corruptions and the mixing draw
    from it, so that a run's augmentation stays one reproducible stream, on every rank, across a resume."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    return torch.Generator().manual_seed(seed)


def mix(images: torch.Tensor, labels: torch.Tensor, num_classes: int, cfg: AugmentConfig,
        generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """MixUp or CutMix of a batch (torchvision's, one of them per batch when both are on): the images and
    their targets, each a mix of two classes' one-hot labels. torchvision draws from torch's global generator;
    it is seeded from `generator` inside a fork, so the run's own stream decides."""
    mixers = ([transforms.MixUp(alpha=cfg.mixup_alpha, num_classes=num_classes)] if cfg.mixup_alpha > 0 else []) \
        + ([transforms.CutMix(alpha=cfg.cutmix_alpha, num_classes=num_classes)] if cfg.cutmix_alpha > 0 else [])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        return transforms.RandomChoice(mixers)(images, labels)
