"""Probabilities that mean what they say: temperature scaling (Guo et al. 2017) and calibration error.

The temperature is fitted on the split that chose the model (PublicTest for FER-2013, never PrivateTest, the
test split) and stored in the weights' metadata, where
`fer.photos` and the gallery pick it up.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import DataError
from .inference import predict_probs
from .spec import TEMPERATURE_RANGE
from .weights import update_metadata

ECE_BINS = 15
MIN_CALIBRATION_FACES = 100  # a temperature fitted on fewer is noise (PublicTest has 3,589)


def fit_temperature(log_probs: torch.Tensor, labels: torch.Tensor) -> float:
    """The T > 0 that minimizes the NLL of softmax(log_probs / T) on held-out data.

    log_probs may be logits or log-probabilities (of an ensemble or TTA average): both are logits up to a
    per-row constant, which softmax ignores."""
    log_t = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(log_probs / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())


def reliability_bins(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> list[dict]:
    """Equal-width confidence bins: count, mean confidence and accuracy of the top prediction in each."""
    confidence, predicted = probs.max(1)
    correct = (predicted == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    rows = []
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (confidence > low) & (confidence <= high)
        n = int(inside.sum())
        rows.append({"low": float(low), "high": float(high), "count": n,
                     "confidence": float(confidence[inside].mean()) if n else None,
                     "accuracy": float(correct[inside].mean()) if n else None})
    return rows


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> float:
    """Sum over bins of (share of samples) x |accuracy - confidence|."""
    total = len(labels)
    return sum(r["count"] / total * abs(r["accuracy"] - r["confidence"])
               for r in reliability_bins(probs, labels, bins) if r["count"])


def log_probs_of(models, images_u8: torch.Tensor, tta: bool = False) -> torch.Tensor:
    return predict_probs(models, images_u8, tta=tta, temperature=1.0).clamp_min(1e-12).log()


def write_temperature(path, temperature: float, out=None, **info) -> None:
    """Store the temperature (and what it was fitted on) in a weights file's metadata, or in a copy at `out`."""
    update_metadata(path, out, temperature=round(temperature, 4), **info)


def calibrate_engine(engine, data, split: str | None = None) -> tuple[float, str, int]:
    """Fit `engine`'s temperature on `split` of `data` (default: the split that chose it): (T, split, faces).

    Refuses what would give a temperature nobody should trust: a part of the training faces, too few faces, or
    a temperature outside the range every command accepts (a file written with it would be refused)."""
    from .datasets import SPLITS, load_split, split_name
    split = split or engine.metadata["val_split"]  # where the model was chosen, not where it is judged
    if split not in SPLITS:
        raise DataError(f"the model was chosen on {split!r}, a part of its training faces: give --split")
    selection = load_split(data, split, face=engine.spec.face).in_classes(engine.spec.classes)
    name = split_name(split)
    if len(selection) < MIN_CALIBRATION_FACES:
        raise DataError(f"{len(selection)} {name} faces are too few to fit a temperature on (at least "
                        f"{MIN_CALIBRATION_FACES})")
    temperature = fit_temperature(log_probs_of(engine, selection.images), selection.labels)
    low, high = TEMPERATURE_RANGE
    if not low <= temperature <= high:
        raise DataError(f"the temperature fitted on {len(selection)} {name} faces is {temperature:.4g}, outside "
                        f"[{low}, {high}]: the model's confidence cannot be trusted on them")
    return temperature, split, len(selection)


def calibration_report(engine, faces, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The probabilities of `faces` before and after dividing the logits by `temperature`."""
    before = log_probs_of(engine, faces.images)
    return before.softmax(1), (before / temperature).softmax(1)


def calibrate_weights(path, data, split: str | None = None, out=None, report: str | None = None,
                      chart=None) -> dict:
    """`fer calibrate`: fit the temperature of the weights at `path` on `split` of `data`, then write it into
    them (or into a copy at `out`). report: a split to measure the calibration error (ECE) on, before and after;
    chart: its reliability diagram, written there. The caller checks the outputs first (fer.cli does): nothing
    is written when the fit fails. Returns what was fitted and measured."""
    from .datasets import load_split
    from .inference import load_engine
    model = load_engine(path, "torch")
    try:
        temperature, split, _ = calibrate_engine(model, data, split)
    except DataError as error:
        raise DataError(f"{path}: {error}; it is unchanged") from None
    result = {"weights": str(path), "temperature": round(temperature, 4), "fitted_on": split}
    if report:
        faces = load_split(data, report, face=model.spec.face).in_classes(model.spec.classes)
        probs_before, probs_after = calibration_report(model, faces, temperature)
        result.update({f"{report}_ece_before": round(expected_calibration_error(probs_before, faces.labels), 4),
                       f"{report}_ece_after": round(expected_calibration_error(probs_after, faces.labels), 4)})
        if chart:
            from .charts import plot_reliability, save
            save(plot_reliability({"before": reliability_bins(probs_before, faces.labels),
                                   f"after (T = {temperature:.2f})": reliability_bins(probs_after, faces.labels)},
                                  title=f"{report}: reliability"), chart)
    write_temperature(path, temperature, out)
    return {**result, "written": str(out or path)}
