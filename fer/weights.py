"""Weights as safetensors, with the model's spec (fer.spec.ModelSpec) and how it was made in the metadata.
Nothing is unpickled. Reading a file's metadata needs no PyTorch (the int8 path reads it without); building the
network, saving and loading tensors import it.

Every field of the metadata is checked against what this code can use before anything is built, and every
tensor against the model's shapes and for finite values: a tampered or foreign file is refused in one line.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import SafetensorError, safe_open

from .errors import ConfigError, WeightsError, one_line, quote
from .model import build_model, load_state
from .paths import DEFAULT_WEIGHTS, REPO_ROOT
from .runtime import atomic_write
from .spec import FORMAT, SPEC_KEYS, ModelSpec, is_number

if TYPE_CHECKING:  # annotations only: PyTorch is imported where it is used (the int8 path needs none)
    import torch


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def save_weights(model: "torch.nn.Module", spec: ModelSpec, path, dtype=None, **info) -> Path:
    """Write the model's weights (dtype: torch.float16 unless given) and its spec atomically.

    info: how it was made, stored beside the spec: val_acc, val_split, epoch, train_config, ... (JSON values).
    """
    import torch
    dtype = torch.float16 if dtype is None else dtype
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"save_weights takes the model's ModelSpec, not {type(spec).__name__}")
    clash = sorted(set(info) & set(SPEC_KEYS))
    if clash:
        raise ValueError(f"{clash[0]} is part of the spec, not extra metadata")
    path = Path(path)
    state = {k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    broken = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:  # never write a file that load_network would refuse
        raise WeightsError(f"the weights hold values that are NaN or do not fit {str(dtype).removeprefix('torch.')} "
                           f"({len(broken)} tensors, e.g. {broken[0]}): {quote(path)} not written")
    metadata = {**spec.to_metadata(), "commit": git_commit()}
    metadata.update({k: json.dumps(v) for k, v in info.items()})
    with atomic_write(path) as tmp:
        write_safetensors(tmp, state, metadata)
    return path


def write_safetensors(path: Path, tensors: dict, metadata: dict) -> None:
    """Serialized in memory and written by us, into atomic_write's temp file: safetensors' own save_file goes
    through a hidden temp file of its own, which a kill -9 would leave behind where nothing cleans it."""
    from safetensors.torch import save
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
        with safe_open(str(path), framework="numpy") as f:  # the header only: no tensor is read
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
    ModelSpec.from_metadata(meta)
    if "val_acc" in meta and not (is_number(meta["val_acc"]) and 0 <= meta["val_acc"] <= 1):
        raise ValueError(f"val_acc {meta['val_acc']!r} is not a number in [0, 1]")


def read_spec(path) -> ModelSpec:
    """The spec of a weights file; WeightsError for a file that is not ours or is broken."""
    return ModelSpec.from_metadata(read_metadata(path))


def load_network(path=None, device="cpu") -> tuple["torch.nn.Module", ModelSpec]:
    """The network of a weights file (default: the shipped model) in float32, in eval mode, on `device`, and
    its spec."""
    import torch
    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    spec = read_spec(path)
    model = build_model(spec.network)
    expected = model.state_dict()
    with safe_open(str(path), framework="pt", device="cpu") as f:
        names = set(f.keys())
        wrong = sorted(k for k in expected if k not in names or tuple(f.get_slice(k).get_shape()) != expected[k].shape)
        if wrong or names != expected.keys():
            extra = len(names - expected.keys())
            raise WeightsError(f"{quote(path)} does not match its {spec.arch} config ({len(wrong)} tensors missing "
                               f"or of another shape, {extra} unexpected)")
        state = {k: f.get_tensor(k) for k in names}
    broken = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        raise WeightsError(f"{quote(path)} holds NaN or infinite values ({len(broken)} tensors, e.g. {broken[0]})")
    load_state(model, {k: v.to(expected[k].dtype) for k, v in state.items()})
    return model.to(device).eval(), spec
