"""Looking at the data set: counts per class and split, pixel statistics, blank and duplicate faces."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .datasets import FaceSet, load_split, split_name, splits_of


def load_splits(source=None) -> dict[str, FaceSet]:
    """Every split of a data set (FER-2013's train, public, private; a split layout's train, val, test), or
    the whole of a data set without splits."""
    present = splits_of(source)
    order = [s for s in ("train", "val", "public", "private", "test") if s in present]
    return {split: load_split(source, split) for split in order} or {"all": load_split(source, "all")}


def class_count_table(splits: dict[str, FaceSet]) -> pd.DataFrame:
    """classes x splits, with a total row and each class's share of the first split (the training set)."""
    table = pd.DataFrame({split_name(s): faces.class_counts() for s, faces in splits.items()}).fillna(0).astype(int)
    table.loc["total"] = table.sum()
    first = table.columns[0]
    share = "train share" if first == split_name("train") else f"{first} share"
    table[share] = (table[first] / table.loc["total", first]).round(3)
    return table


def pixel_stats(splits: dict[str, FaceSet]) -> pd.DataFrame:
    """Mean and standard deviation of the (equalized) pixels, per split and class, on a 0-255 scale."""
    rows = []
    for split, faces in splits.items():
        pixels = faces.images.float()
        for i, name in enumerate(faces.classes):
            chosen = pixels[faces.labels == i]
            rows.append({"split": split_name(split), "class": name, "mean": chosen.mean().item(),
                         "std": chosen.std().item()})
    return pd.DataFrame(rows).pivot(index="class", columns="split", values=["mean", "std"]).round(1)


def blank_faces(faces: FaceSet, max_std: float = 3.0) -> np.ndarray:
    """Indices of images with (almost) one grey level: FER-2013 holds a few blank frames, not faces."""
    std = faces.images.float().flatten(1).std(1)
    return torch.nonzero(std <= max_std).flatten().numpy()


def near_duplicates(images: torch.Tensor, size: int = 8) -> list[np.ndarray]:
    """Groups of indices whose images share an average hash (downscaled to size x size, above/below mean).

    A cheap, standard way to find images that are the same face up to small pixel changes."""
    gray = images.float() if images.dim() == 3 else images.float().mean(-1)  # an RGB face hashed by its lightness
    small = torch.nn.functional.adaptive_avg_pool2d(gray.unsqueeze(1), size).flatten(1)
    bits = (small > small.mean(1, keepdim=True)).numpy()
    hashes = np.packbits(bits, axis=1)
    _, inverse, counts = np.unique(hashes, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    # Flat images hash to all-zero and are counted as blank instead.
    flat = np.flatnonzero(~bits.any(1) | bits.all(1))
    groups = [np.flatnonzero(inverse == g) for g in np.flatnonzero(counts > 1)]
    return [g for g in groups if not np.isin(g, flat).all()]


def duplicates_across(a: FaceSet, b: FaceSet) -> int:
    """How many images of b have an exact pixel copy in a (leakage between splits)."""
    seen = {img.tobytes() for img in a.images.numpy()}
    return sum(img.tobytes() in seen for img in b.images.numpy())


def class_weights(train: FaceSet) -> pd.Series:
    """Inverse-frequency weights normalised to mean 1: what a weighted loss would use."""
    counts = np.array(list(train.class_counts().values()), dtype=float)
    weights = counts.sum() / (len(counts) * counts)
    return pd.Series(weights.round(2), index=train.classes, name="weight")
