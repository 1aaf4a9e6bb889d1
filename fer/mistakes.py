"""The model's mistakes on a split, laid open: its most confident errors, the pairs of classes it confuses
most, and where in the face its evidence lies on average (notebooks/06_errors)."""
from __future__ import annotations

import numpy as np


def confident_errors(probs: np.ndarray, labels: np.ndarray, classes, per_class: int = 5) -> dict[str, np.ndarray]:
    """For each true class, the indices of its wrongly labelled faces, most confident wrong answer first."""
    predicted, confidence = probs.argmax(1), probs.max(1)
    found = {}
    for i, name in enumerate(classes):
        wrong = np.flatnonzero((labels == i) & (predicted != i))
        found[name] = wrong[np.argsort(-confidence[wrong])][:per_class]
    return found


def confused_pairs(probs: np.ndarray, labels: np.ndarray, classes, top: int = 6) -> list[dict]:
    """The (true, predicted) pairs with the most faces, with the share of the true class they take."""
    predicted = probs.argmax(1)
    k = len(classes)
    counts = np.bincount(labels * k + predicted, minlength=k * k).reshape(k, k)
    totals = counts.sum(1)
    pairs = [{"true": classes[t], "predicted": classes[p], "faces": int(counts[t, p]),
              "share_of_true_class": round(counts[t, p] / max(totals[t], 1), 3)}
             for t in range(k) for p in range(k) if t != p]
    return sorted(pairs, key=lambda pair: -pair["faces"])[:top]


def pair_examples(probs: np.ndarray, labels: np.ndarray, true: str, predicted: str, classes,
                  n: int = 4) -> np.ndarray:
    """The faces of class `true` labelled `predicted`, most confident first."""
    t, p = classes.index(true), classes.index(predicted)
    chosen = np.flatnonzero((labels == t) & (probs.argmax(1) == p))
    return chosen[np.argsort(-probs[chosen, p])][:n]


def mean_maps(cams: np.ndarray, given: np.ndarray, classes) -> dict[str, np.ndarray]:
    """The mean heat map of the faces given each class (given: one class index per face)."""
    return {name: cams[given == i].mean(0) for i, name in enumerate(classes) if (given == i).any()}
