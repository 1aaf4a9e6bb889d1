"""Do the Grad-CAM maps mean something, and are they where the evidence is? Three checks over a
split's face crops (PublicTest by default).

1. Model randomization (Adebayo et al. 2018): the maps of the trained model against those of the same network
   with random weights. Reported: the mean Spearman rank correlation of the two maps of each face (near 0:
   the maps depend on what the model learned; near 1: they would show the input's edges whatever the model).
2. Occlusion: the predicted class's probability before and after masking 10 % of the crop's pixels (set to
   the mean grey): the most salient 10 % of its own map, against the most salient 10 % of another face's map
   (a region of the same kind of shape at an unrelated place), and against 10 % scattered random pixels.
   Evidence that the map is right: its own region costs the most.
3. Placement. (a) The centre of mass of the map against that of a plain input-gradient saliency map of the
   same class, inside the square the stage's cells span (pixels 0-40 for layer2 of the imagenet stem; past
   the last cell the map holds that cell's value, which would weigh the right and bottom edges): a map drawn
   where the evidence is sits near it. (b) Mirror: the map of the mirrored face, mirrored back, against the
   face's own map: the mean Pearson correlation without a shift, and the horizontal shift (pixels) that
   maximizes it. On a 48-px face the mirrored face's cells fall on other pixels (7, 15, ... 47 of the
   original for layer2) and the held band changes sides, so even a right placement does not give shift 0;
   what to compare is the same numbers for another placement.

    python benchmarks/explain_sanity.py ../shared/data/fer2013.zip [--layers layer2 layer4] [--n 3589]
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import torch

from fer.datasets import load_split
from fer.explain import default_layer, grad_cam, stage_grids, stage_strides
from fer.inference import predict_probs
from fer.model import LAYERS, build_model
from fer.preprocess import normalize
from fer.api import load
from fer.inference import TorchEngine

MASKED_SHARE = 0.10
MEAN_GREY = 128  # 0 after normalization


def top_pixels(cams: np.ndarray, share: float) -> np.ndarray:
    flat = cams.reshape(len(cams), -1)
    mask = np.zeros_like(flat, dtype=bool)
    np.put_along_axis(mask, np.argsort(-flat, axis=1)[:, :int(share * flat.shape[1])], True, axis=1)
    return mask.reshape(cams.shape)


def probability_after(model, images: torch.Tensor, masks: np.ndarray, classes: np.ndarray) -> np.ndarray:
    masked = images.clone()
    masked[torch.from_numpy(masks)] = MEAN_GREY
    return predict_probs(model, masked).numpy()[np.arange(len(classes)), classes]


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho: Pearson's correlation of the ranks (ties share their mean rank)."""
    if a.std() == 0 or b.std() == 0:  # a flat map ranks nothing: no agreement
        return 0.0
    return float(np.corrcoef(pd.Series(a.ravel()).rank(), pd.Series(b.ravel()).rank())[0, 1])


def mean_correlation(a: np.ndarray, b: np.ndarray) -> float:
    a = a.reshape(len(a), -1) - a.reshape(len(a), -1).mean(1, keepdims=True)
    b = b.reshape(len(b), -1) - b.reshape(len(b), -1).mean(1, keepdims=True)
    denominator = np.sqrt((a ** 2).sum(1) * (b ** 2).sum(1))
    return float(np.mean(np.where(denominator > 0, (a * b).sum(1) / np.maximum(denominator, 1e-12), 0.0)))


def centre_of_mass(maps: np.ndarray) -> np.ndarray:
    """N x 2 (row, column) of N non-negative maps."""
    weights = maps / np.maximum(maps.sum(axis=(1, 2), keepdims=True), 1e-12)
    index = np.arange(maps.shape[-1])
    return np.stack([(weights.sum(2) * index).sum(1), (weights.sum(1) * index).sum(1)], 1)


def saliency_check(model, faces, cams: np.ndarray, predicted: np.ndarray, layer: str) -> dict:
    x = normalize(faces.images).requires_grad_(True)
    model.network.eval()
    logits = model.network(x)
    logits.gather(1, torch.from_numpy(predicted)[:, None]).sum().backward()
    saliency = x.grad[:, 0].abs().numpy()
    network, face = model.network, model.spec.face
    span = stage_strides(network, face)[layer] * (stage_grids(network, face)[layer] - 1) + 1  # pixels the cells span
    offset = centre_of_mass(cams[:, :span, :span]) - centre_of_mass(saliency[:, :span, :span])
    return {"centre_minus_saliency_centre_px_right": round(float(offset[:, 1].mean()), 2),
            "centre_minus_saliency_centre_px_below": round(float(offset[:, 0].mean()), 2)}


def mirror_check(model, faces, cams: np.ndarray, predicted: np.ndarray, layer: str, max_shift: int = 8) -> dict:
    mirrored, _ = grad_cam(model, faces.images.flip(-1), target=predicted, layer=layer)
    back = mirrored[:, :, ::-1]
    width = cams.shape[-1]
    by_shift = {}
    for shift in range(-max_shift, max_shift + 1):  # compare the overlapping columns only
        a = cams[:, :, max(0, shift):width + min(0, shift)]
        b = back[:, :, max(0, -shift):width + min(0, -shift)]
        by_shift[shift] = mean_correlation(a, b)
    best = max(by_shift, key=by_shift.get)
    return {"mirror_correlation": round(by_shift[0], 4), "mirror_best_shift_px": best,
            "mirror_correlation_at_best_shift": round(by_shift[best], 4)}


def check(model, faces, layer: str, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    cams, probs = grad_cam(model, faces.images, layer=layer)
    predicted = probs.argmax(1)
    before = probs[np.arange(len(predicted)), predicted]
    own = top_pixels(cams, MASKED_SHARE)
    others = own[rng.permutation(len(own))]
    scattered = np.stack([rng.permutation(m.ravel()).reshape(m.shape) for m in own])
    torch.manual_seed(seed)
    random_model = TorchEngine(build_model(model.spec.network), model.spec)
    random_cams, _ = grad_cam(random_model, faces.images, target=predicted, layer=layer)
    return {
        "layer": layer,
        "randomization_rank_correlation": round(float(np.mean([rank_correlation(a, b)
                                                                for a, b in zip(cams, random_cams)])), 4),
        "probability_drop_own_salient_10pct": round(float((before - probability_after(model, faces.images, own, predicted)).mean()), 4),
        "probability_drop_other_faces_salient_10pct": round(float((before - probability_after(model, faces.images, others, predicted)).mean()), 4),
        "probability_drop_scattered_random_10pct": round(float((before - probability_after(model, faces.images, scattered, predicted)).mean()), 4),
        **saliency_check(model, faces, cams, predicted, layer),
        **mirror_check(model, faces, cams, predicted, layer),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data")
    parser.add_argument("--split", default="public")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--layers", nargs="+", choices=LAYERS, default=None, help="default: the default and layer4")
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model = load(args.weights, engine="torch")
    faces = load_split(args.data, args.split).subset(args.n, args.seed)
    default = default_layer(model.network, model.spec.face)
    layers = args.layers or list(dict.fromkeys([default, "layer4"]))
    result = {"split": args.split, "n": len(faces), "default_layer": default,
              "checks": [check(model, faces, layer, args.seed) for layer in layers]}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
