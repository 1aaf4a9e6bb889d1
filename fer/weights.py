"""Weights as safetensors, with everything needed to use them in the metadata. Nothing is unpickled."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .data import CLASSES, IMAGE_SIZE, NORM_MEAN, NORM_STD
from .model import ModelConfig, build_model

FORMAT = "fer-weights/1"
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WEIGHTS = REPO_ROOT / "trained_models" / "resnet50_dropout.safetensors"


class WeightsError(ValueError):
    """A weights file that cannot be used; the message is one line."""


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def save_weights(model: torch.nn.Module, cfg: ModelConfig, path, dtype=torch.float16, **info) -> Path:
    """Write the model's weights (float16 by default) and its metadata atomically (temp file + rename).

    info: extra metadata such as public_acc or epoch; values are stored as JSON.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    metadata = {"format": FORMAT, "config": json.dumps(cfg.to_dict()), "classes": json.dumps(CLASSES),
                "input_size": json.dumps([1, IMAGE_SIZE, IMAGE_SIZE]),
                "normalization": json.dumps({"mean": NORM_MEAN, "std": NORM_STD, "equalize_hist": True}),
                "commit": git_commit()}
    metadata.update({k: json.dumps(v) for k, v in info.items()})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(state, str(tmp), metadata=metadata)
    os.chmod(tmp, 0o644)  # safetensors creates its file private to the user
    os.replace(tmp, path)
    return path


def read_metadata(path) -> dict:
    """The metadata of one of our weights files, JSON values decoded; WeightsError if it is not ours."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"no weights file at '{path}'")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"'{path}' is not a safetensors weights file ({' '.join(str(e).split())})") from None
    if raw.get("format") != FORMAT:
        raise WeightsError(f"'{path}' is a safetensors file but not fer weights (no '{FORMAT}' metadata)")
    meta = {}
    for key, value in raw.items():
        try:
            meta[key] = json.loads(value)
        except json.JSONDecodeError:
            meta[key] = value
    if tuple(meta.get("classes", ())) != CLASSES:
        raise WeightsError(f"'{path}' was trained for classes {meta.get('classes')}, not {list(CLASSES)}")
    return meta


def load_model(path=None, device="cpu") -> torch.nn.Module:
    """Load weights (default: the shipped model) in float32, in eval mode; `model.fer_metadata` has the metadata."""
    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    meta = read_metadata(path)
    try:
        cfg = ModelConfig.from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise WeightsError(f"'{path}' has a bad model config ({e})") from None
    model = build_model(cfg)
    with safe_open(str(path), framework="pt", device="cpu") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
    expected = model.state_dict()
    wrong = [k for k in expected if k not in state or state[k].shape != expected[k].shape]
    if wrong or len(state) != len(expected):
        raise WeightsError(f"'{path}' does not match its {cfg.arch} config ({len(wrong)} tensors differ)")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    model.fer_config = cfg
    model.fer_metadata = meta
    return model.to(device).eval()
