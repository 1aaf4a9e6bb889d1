"""Weights as safetensors, with everything needed to use them in the metadata. Nothing is unpickled.

Every field of the metadata is checked against what this code can use before anything is built, and every
tensor against the model's shapes and for finite values: a tampered or foreign file is refused in one line.
"""
from __future__ import annotations

import json
import math
import numbers
import subprocess
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from .errors import ConfigError, WeightsError, one_line, quote
from .model import ModelConfig, build_model, load_state
from .paths import DEFAULT_WEIGHTS, REPO_ROOT
from .preprocess import CLASSES, NORM_MEAN, NORM_STD, FaceFormat
from .runtime import atomic_write

FORMAT = "fer-weights/1"
# A temperature outside this range is not a calibration but a broken file (0 divides, < 0 inverts).
TEMPERATURE_RANGE = (0.05, 20.0)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def save_weights(model: torch.nn.Module, cfg: ModelConfig, path, dtype=torch.float16, classes=CLASSES,
                 **info) -> Path:
    """Write the model's weights (float16 by default) and its metadata atomically.

    classes: the names of the model's outputs, in order (the data's; FER-2013's by default).
    info: extra metadata such as val_acc, val_split or epoch; values are stored as JSON.
    """
    if len(classes) != cfg.num_classes:
        raise ValueError(f"{len(classes)} class names for a model with {cfg.num_classes} outputs")
    path = Path(path)
    state = {k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    broken = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:  # never write a file that load_model would refuse
        raise WeightsError(f"the weights hold values that are NaN or do not fit {str(dtype).removeprefix('torch.')} "
                           f"({len(broken)} tensors, e.g. {broken[0]}): {quote(path)} not written")
    metadata = {"format": FORMAT, "config": json.dumps(cfg.to_dict()), "classes": json.dumps(list(classes)),
                "input_size": json.dumps(cfg.face.input_size),
                "normalization": json.dumps({"mean": NORM_MEAN, "std": NORM_STD, "equalize_hist": True}),
                "commit": git_commit()}
    metadata.update({k: json.dumps(v) for k, v in info.items()})
    with atomic_write(path) as tmp:
        write_safetensors(tmp, state, metadata)
    return path


def write_safetensors(path: Path, tensors: dict, metadata: dict) -> None:
    """Serialized in memory and written by us, into atomic_write's temp file: safetensors' own save_file goes
    through a hidden temp file of its own, which a kill -9 would leave behind where nothing cleans it."""
    Path(path).write_bytes(save(tensors, metadata=metadata))


def update_metadata(path, out=None, **values) -> None:
    """Set metadata fields (JSON values) of a weights file, tensors untouched, atomically; into a copy at `out`
    when given."""
    path = Path(path)
    read_metadata(path)
    with safe_open(str(path), framework="pt") as f:
        metadata = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    metadata.update({k: json.dumps(v) for k, v in values.items()})
    with atomic_write(Path(out) if out is not None else path) as tmp:
        write_safetensors(tmp, tensors, metadata)


def read_metadata(path) -> dict:
    """The checked metadata of one of our weights files, JSON values decoded; WeightsError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"no weights file at {quote(path)}")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{quote(path)} is not a safetensors weights file ({one_line(e)})") from None
    if raw.get("format") != FORMAT:
        raise WeightsError(f"{quote(path)} is a safetensors file but not fer weights (no '{FORMAT}' metadata)")
    meta = {}
    for key, value in raw.items():
        try:
            meta[key] = json.loads(value)
        except json.JSONDecodeError:
            meta[key] = value
        except RecursionError:
            raise WeightsError(f"{quote(path)} has bad metadata: its '{key}' is nested too deeply") from None
    if "public_acc" in meta and "val_acc" not in meta:  # written before the selection split was a setting
        meta["val_acc"], meta["val_split"] = meta.pop("public_acc"), "public"
    meta.setdefault("val_split", "public")
    try:
        _check_metadata(meta)
    except (ConfigError, TypeError, ValueError) as e:
        raise WeightsError(f"{quote(path)} has bad metadata: {one_line(e)}") from None
    return meta


def _check_metadata(meta: dict) -> None:
    classes = meta.get("classes")
    if not isinstance(classes, list) or not all(isinstance(c, str) and c.strip() for c in classes) \
            or len(set(classes)) != len(classes):
        raise ValueError(f"classes {str(classes)[:80]!r} are not a list of distinct names")
    unprintable = next((c for c in classes if not c.isprintable()), None)
    if unprintable is not None:  # names reach terminals, HTML and drawn photos: no escapes or line breaks
        raise ValueError(f"the class name {unprintable[:40]!r} holds control characters")
    if not isinstance(meta.get("config"), dict):
        raise ValueError("'config' is not a JSON object")
    cfg = ModelConfig.from_dict(meta["config"])
    if len(classes) != cfg.num_classes:
        raise ValueError(f"{len(classes)} class names for a model with {cfg.num_classes} outputs")
    if meta.get("input_size") != cfg.face.input_size:
        raise ValueError(f"input_size {meta.get('input_size')!r} is not its config's {cfg.face.input_size}")
    norm = meta.get("normalization")
    if not isinstance(norm, dict) or not is_number(norm.get("mean")) or not is_number(norm.get("std")) \
            or not math.isclose(norm["mean"], NORM_MEAN) or not math.isclose(norm["std"], NORM_STD):
        raise ValueError(f"normalization {norm!r} is not this code's (mean {NORM_MEAN}, std {NORM_STD:.4f})")
    if "temperature" in meta:
        t = meta["temperature"]
        if not is_number(t) or not TEMPERATURE_RANGE[0] <= t <= TEMPERATURE_RANGE[1]:
            raise ValueError(f"temperature {t!r} is not a number in {list(TEMPERATURE_RANGE)}")
    if "val_acc" in meta and not (is_number(meta["val_acc"]) and 0 <= meta["val_acc"] <= 1):
        raise ValueError(f"val_acc {meta['val_acc']!r} is not a number in [0, 1]")


def is_number(value) -> bool:
    """A finite real number, not a bool (metadata, checkpoints)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def load_model(path=None, device="cpu") -> torch.nn.Module:
    """Load weights (default: the shipped model) in float32, in eval mode, on `device`.

    `model.fer_config` is its ModelConfig, `model.fer_classes` its classes, `model.fer_metadata` the metadata,
    `model.fer_path` the file.
    """
    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    meta = read_metadata(path)
    cfg = ModelConfig.from_dict(meta["config"])
    model = build_model(cfg)
    expected = model.state_dict()
    with safe_open(str(path), framework="pt", device="cpu") as f:
        names = set(f.keys())
        wrong = sorted(k for k in expected if k not in names or tuple(f.get_slice(k).get_shape()) != expected[k].shape)
        if wrong or names != expected.keys():
            extra = len(names - expected.keys())
            raise WeightsError(f"{quote(path)} does not match its {cfg.arch} config ({len(wrong)} tensors missing "
                               f"or of another shape, {extra} unexpected)")
        state = {k: f.get_tensor(k) for k in names}
    broken = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        raise WeightsError(f"{quote(path)} holds NaN or infinite values ({len(broken)} tensors, e.g. {broken[0]})")
    load_state(model, {k: v.to(expected[k].dtype) for k, v in state.items()})
    model.fer_config = cfg
    model.fer_classes = tuple(meta["classes"])
    model.fer_metadata = meta
    model.fer_path = path
    return model.to(device).eval()


def classes_of_model(model) -> tuple[str, ...]:
    """A model's class names: from its weights' metadata, FER-2013's for a model built in code."""
    return tuple(getattr(model, "fer_classes", CLASSES))


def face_of_model(model) -> FaceFormat:
    """The face crops a model reads: from its config, FER-2013's 48 x 48 gray for a model built in code."""
    config = getattr(model, "fer_config", None)
    return config.face if config is not None else FaceFormat()


def temperature_of(model) -> float:
    return float(getattr(model, "fer_metadata", {}).get("temperature", 1.0))
