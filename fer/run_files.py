"""A training run's files: where each goes, the checkpoint that --resume reads, the history CSV and the
TensorBoard events (the layout is in fer/train.py's docstring).

A checkpoint is read with `torch.load(weights_only=True)` and every field checked for its type before a run
resumes from it: a truncated or foreign file is refused in one line, never half-used.
"""
from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import torch

from .config import TrainConfig
from .errors import ConfigError, WeightsError, one_line, quote
from .paths import runs_dir
from .runtime import atomic_write
from .spec import is_number

HISTORY_FIELDS = ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "seconds", "images_per_second")
# History rows and weights written before the selection split was a setting call it PublicTest by name.
OLD_FIELDS = {"public_loss": "val_loss", "public_acc": "val_acc"}
CHECKPOINT_FIELDS = {"model": dict, "optimizer": dict, "epoch": int, "step": int, "seconds": float,
                     "best_acc": float, "history": list, "args": dict, "rng": dict}


def default_out(arch: str) -> Path:
    return runs_dir() / arch / f"{arch}.safetensors"


def paths_for(out) -> dict[str, Path]:
    out = Path(out)
    return {"weights": out, "history": out.with_suffix(".history.csv"),
            "checkpoint": out.parent / "checkpoints" / out.stem / "last.pt",
            "teacher": out.parent / "checkpoints" / out.stem / "teacher.safetensors"}


def snapshot_path(out, epoch: int) -> Path:
    """Where --snapshots keeps an epoch's weights."""
    out = Path(out)
    return out.parent / "snapshots" / out.stem / f"epoch_{epoch:03d}.safetensors"


def tensorboard_dir(out) -> Path:
    out = Path(out)
    return out.parent / "tensorboard" / out.stem


def save_checkpoint(path: Path, model, optimizer, state: dict, cfg: TrainConfig, generator, ema=None) -> None:
    """Written to a temp file and renamed, so the checkpoint on disk is never half-written."""
    checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": state["epoch"],
                  "ema": ema.state_dict() if ema is not None else None,
                  "step": state["step"], "seconds": float(state["seconds"]), "best_acc": float(state["best_acc"]),
                  "history": state["history"], "args": cfg.to_dict(),
                  "rng": {"torch": torch.get_rng_state(), "generator": generator.get_state(),
                          "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}}
    with atomic_write(path) as tmp:
        torch.save(checkpoint, tmp)


def load_checkpoint(path: Path) -> dict:
    """A checkpoint whose every field has the expected type; WeightsError in one line otherwise."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for truncated or foreign files
        raise WeightsError(f"cannot resume from {quote(path)}: not a complete fer checkpoint "
                           f"({one_line(e)[:200]})") from None
    if not isinstance(checkpoint, dict) or not {"model", "optimizer", "epoch", "args"} <= checkpoint.keys():
        raise WeightsError(f"cannot resume from {quote(path)}: not a fer training checkpoint")
    for name, kind in CHECKPOINT_FIELDS.items():
        value = checkpoint.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise WeightsError(f"cannot resume from {quote(path)}: its '{name}' is "
                               f"{type(value).__name__ if name in checkpoint else 'missing'}, not {kind.__name__}")
    for row in checkpoint["history"]:  # rows of a checkpoint from before the selection split had its name
        for old, new in OLD_FIELDS.items():
            if isinstance(row, dict) and old in row and new not in row:
                row[new] = row.pop(old)
    if not all(isinstance(r, dict) and all(is_number(r.get(k)) for k in HISTORY_FIELDS)
               for r in checkpoint["history"]) or \
            not isinstance(checkpoint["rng"].get("torch"), torch.Tensor) or \
            not isinstance(checkpoint["rng"].get("generator"), torch.Tensor):
        raise WeightsError(f"cannot resume from {quote(path)}: its history or random state is malformed")
    return checkpoint


def check_optimizer_state(optimizer: torch.optim.Optimizer, path: Path) -> None:
    """The loaded optimizer's settings are numbers and its state fits its parameters: what load_state_dict
    does not check, and what would otherwise fail mid-training."""
    def bad(what):
        return WeightsError(f"cannot resume from {quote(path)}: its optimizer's {what} is malformed")
    for group in optimizer.param_groups:
        for key in ("lr", "weight_decay", "eps", "momentum"):
            if key in group and not is_number(group[key]):
                raise bad(key)
        if "betas" in group and not (isinstance(group["betas"], (tuple, list)) and len(group["betas"]) == 2
                                     and all(is_number(b) and 0 <= b < 1 for b in group["betas"])):
            raise bad("betas")
        for param in group["params"]:
            for name, value in optimizer.state.get(param, {}).items():
                if name == "step":
                    if not (is_number(value) or isinstance(value, torch.Tensor) and value.numel() == 1):
                        raise bad("step")
                elif not isinstance(value, torch.Tensor) or value.shape != param.shape:
                    raise bad(f"state '{name}'")


def write_history(path: Path, history: list[dict]) -> None:
    with atomic_write(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_FIELDS)
        writer.writeheader()
        for row in history:
            writer.writerow({k: row[k] for k in HISTORY_FIELDS})


def open_tensorboard(cfg: TrainConfig, first_epoch: int):
    """A SummaryWriter for the run's event files, or None where TensorBoard is not installed. A resumed run
    purges what an earlier stretch logged past its checkpoint; a fresh run (--force) starts a clean log."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    folder = tensorboard_dir(cfg.out)
    if first_epoch == 0:
        for old in folder.glob("events.out.tfevents.*"):
            old.unlink()
    writer = SummaryWriter(log_dir=str(folder), purge_step=first_epoch + 1 if first_epoch else None)
    if first_epoch == 0:
        writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in cfg.to_dict().items()))
    return writer


def log_epoch(writer, row: dict) -> None:
    if writer is None:
        return
    for tag, key in (("loss/train", "train_loss"), ("loss/val", "val_loss"), ("accuracy/train", "train_acc"),
                     ("accuracy/val", "val_acc"), ("lr", "lr"), ("images_per_second", "images_per_second")):
        writer.add_scalar(tag, row[key], row["epoch"])
    writer.flush()


def check_writable(files: dict[str, Path]) -> None:
    """Every file a run writes can be written: found out before the first epoch, not after it."""
    for kind, path in files.items():
        if path.is_dir():
            raise ConfigError(f"the run's {kind} file {quote(path)} is a folder")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=path.parent):
                pass
        except OSError as e:
            raise ConfigError(f"cannot write the run's {kind} into {quote(path.parent)}: "
                              f"{e.strerror or one_line(e)}") from None
