"""Training: one loop for CPU and CUDA. Train an epoch, evaluate on the selection split (PublicTest for
FER-2013), log, checkpoint.

The uint8 training set lives on the training device as one tensor and is augmented there in batches
(`fer.augment`), so there are no DataLoader workers. The learning rate follows warm-up + cosine over the
run's progress, which is the larger of steps done / steps planned and seconds used / --time-budget: a time
budget therefore compresses the whole schedule instead of cutting it off at a high rate.

Distributed: under `torchrun --nproc-per-node N -m fer train ...` every rank draws the same shuffled
order and the same augmentation for the global batch, trains on its 1/N slice in DistributedDataParallel
(NCCL on GPUs with SyncBatchNorm, gloo on CPUs), and rank 0 alone evaluates and writes files.

Files, for --out DIR/NAME.safetensors (default runs/<arch>/<arch>.safetensors):
  DIR/NAME.safetensors              the weights best on the selection split, float16, config in the metadata
  DIR/NAME.history.csv              one row per epoch
  DIR/checkpoints/NAME/last.pt      everything --resume needs, the TrainConfig included
  DIR/snapshots/NAME/epoch_NNN.safetensors  with --snapshots: every epoch's weights, float32 (`fer average`)
  DIR/tensorboard/NAME/             TensorBoard event files, when TensorBoard is installed
                                    (`tensorboard --logdir runs/` shows every run side by side)
"""
from __future__ import annotations

import csv
import dataclasses
import math
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from .augment import augment, mix, side_generator
from .config import RESUMABLE, TrainConfig
from .corruptions import corrupt_randomly
from .datasets import FaceSet, load_split, resolve_data_source, split_name, splits_of
from .errors import ConfigError, FerError, WeightsError, one_line, quote
from .evaluate import evaluate
from .inference import TorchEngine
from .model import ModelConfig, build_model, check_input_size, load_state
from .paths import runs_dir
from .preprocess import normalize
from .runtime import Dist, atomic_write, autocast_for, init_distributed, machine_description, \
    remove_stale_temp_files
from .spec import ModelSpec, is_number
from .weights import load_network, read_metadata, save_weights

HISTORY_FIELDS = ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "seconds", "images_per_second")
# History rows and weights written before the selection split was a setting call it PublicTest by name.
OLD_FIELDS = {"public_loss": "val_loss", "public_acc": "val_acc"}
# The settings that make the network; --init-from takes those not given from the weights it starts from.
MODEL_SETTINGS = ("arch", "dropout", "head_dropout", "stem", "norm", "channels", "image_size")
CHECKPOINT_FIELDS = {"model": dict, "optimizer": dict, "epoch": int, "step": int, "seconds": float,
                     "best_acc": float, "history": list, "args": dict, "rng": dict}


def default_out(arch: str) -> Path:
    return runs_dir() / arch / f"{arch}.safetensors"


def paths_for(out) -> dict[str, Path]:
    out = Path(out)
    return {"weights": out, "history": out.with_suffix(".history.csv"),
            "checkpoint": out.parent / "checkpoints" / out.stem / "last.pt"}


def snapshot_path(out, epoch: int) -> Path:
    """Where --snapshots keeps an epoch's weights."""
    out = Path(out)
    return out.parent / "snapshots" / out.stem / f"epoch_{epoch:03d}.safetensors"


def tensorboard_dir(out) -> Path:
    out = Path(out)
    return out.parent / "tensorboard" / out.stem


def lr_at(progress: float, peak: float, warmup: float) -> float:
    if progress < warmup:
        return peak * progress / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - warmup) / (1 - warmup))))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]  # norms and biases: no weight decay
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def train_step(model, optimizer, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, device, ema=None,
               votes: torch.Tensor | None = None):
    """One optimizer step on a normalized, augmented batch; returns the logits and the loss (detached).
    votes: each face's distribution of annotators' votes (FER+), the target instead of its one label.
    The throughput benchmark times this same function."""
    x = x.contiguous(memory_format=torch.channels_last)
    with autocast_for(device, cfg.amp):
        logits = model(x)
        loss = F.cross_entropy(logits, y if votes is None else votes, label_smoothing=cfg.label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if ema is not None:
        ema.update_parameters(model)
    return logits.detach(), loss.detach()


def train_one_epoch(model, optimizer, images_u8, labels, cfg: TrainConfig, state: dict, generator,
                    device, ema=None, dist: Dist = Dist(), votes: torch.Tensor | None = None,
                    num_classes: int | None = None) -> dict:
    """One pass over the shuffled training set; stops early when the run's progress reaches 1."""
    model.train()
    n = len(labels)
    steps_per_epoch = n // cfg.batch_size or 1
    total_steps = steps_per_epoch * cfg.epochs
    order = torch.randperm(n, generator=generator, device=device)
    loss_sum, correct, seen = torch.zeros((), device=device), torch.zeros((), device=device), 0
    start = time.perf_counter()
    bar = tqdm(range(steps_per_epoch), desc=f"epoch {state['epoch'] + 1}", leave=False,
               disable=not cfg.progress)
    for i in bar:
        progress = state["step"] / total_steps
        if cfg.time_budget:  # every rank must take the same decision: the slowest clock counts
            elapsed = dist.max(state["seconds"] + time.perf_counter() - start, device)
            progress = max(progress, elapsed / cfg.time_budget)
        if progress >= 1:
            break
        lr = lr_at(progress, cfg.lr, cfg.warmup)
        for group in optimizer.param_groups:
            group["lr"] = lr
        index = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
        # Every rank augments the whole global batch with the same draws and keeps its slice: the run
        # then sees exactly what one process with the same global batch would (augmenting is cheap).
        faces = images_u8[index]
        if cfg.augment.corrupt_prob > 0:
            faces = corrupt_randomly(faces, cfg.augment.corrupt_prob, side_generator(generator))
        x = augment(normalize(faces), cfg.augment, generator)
        y = labels[index]
        v = votes[index] if votes is not None else None
        if cfg.augment.mixes:  # the targets become mixes of two labels (FER+'s votes are refused with mixing)
            x, v = mix(x, y, num_classes or int(labels.max()) + 1, cfg.augment, side_generator(generator))
        if dist.enabled:
            part = len(index) // dist.world
            mine = slice(dist.rank * part, (dist.rank + 1) * part)
            x, y, v = x[mine], y[mine], (v[mine] if v is not None else None)
        logits, loss = train_step(model, optimizer, x, y, cfg, device, ema, v)
        state["step"] += 1
        loss_sum += loss * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
        if i % 20 == 0 or i == steps_per_epoch - 1:  # a sync every 20 steps: cheap, and no epoch is wasted
            check_finite(loss, state, lr)
            if cfg.progress:
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.4f}")
    seconds = dist.max(time.perf_counter() - start, device)
    state["seconds"] += seconds
    totals = dist.sum(torch.stack([loss_sum, correct, torch.tensor(float(seen), device=device)]))
    loss_sum, correct, seen = totals[0], totals[1], int(totals[2])
    return {"lr": optimizer.param_groups[0]["lr"], "train_loss": (loss_sum / max(seen, 1)).item(),
            "train_acc": (correct / max(seen, 1)).item(), "train_seconds": seconds, "images": seen,
            "images_per_second": seen / seconds if seconds > 0 else 0.0, "finished": seen == 0 or
            (cfg.time_budget is not None and state["seconds"] >= cfg.time_budget) or
            state["step"] >= total_steps}


def diverged(what: str, epoch: int, lr: float) -> FerError:
    """The one line a diverged run stops with: what earlier epochs wrote stays, nothing of this one is written.
    Checked on the loss every 20 steps, on the weights after each epoch and on the outputs when evaluating."""
    return FerError(f"training diverged in epoch {epoch} (lr {lr:.3g}): {what}; lower --lr. Nothing of this "
                    f"epoch was written")


def check_finite(loss: torch.Tensor, state: dict, lr: float) -> None:
    if not torch.isfinite(loss):
        raise diverged(f"the loss is {loss.item()} at step {state['step']}", state["epoch"] + 1, lr)


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


def prepare_run(cfg: TrainConfig, explicit: set[str] | None = None) -> tuple[TrainConfig, dict | None]:
    """Check the settings and the files of a run before any data is read.

    Returns the config to train with and the checkpoint to resume from. On --resume the checkpoint's
    stored config is the run's: settings given explicitly (all of them when `explicit` is None, as from
    Python) must agree with it, except the RESUMABLE ones, which it takes over.
    """
    cfg.validate()
    if cfg.out is None:
        cfg.out = str(default_out(cfg.arch))
    files = paths_for(cfg.out)
    if files["weights"].is_dir():
        example = quote(Path(cfg.out) / "model.safetensors")
        raise ConfigError(f"--out {quote(cfg.out)} is a folder; give a file name such as {example}")
    if files["weights"].suffix != ".safetensors":
        raise ConfigError(f"--out {quote(cfg.out)} must end in .safetensors")
    for path in files.values():
        remove_stale_temp_files(path)
    if not cfg.resume:
        if files["weights"].exists() and not cfg.force:
            try:
                meta = read_metadata(files["weights"])
                acc = meta.get("val_acc")
                what = f"a model ({split_name(meta['val_split'])} {acc:.2%})" if acc is not None else "a model"
            except FerError:
                what = "a file that is not fer weights"
            raise ConfigError(f"{quote(cfg.out)} already holds {what}: choose another --out, --resume its run, "
                              f"or --force (notebook 02: force = True) to replace it")
        # A run killed before its first best epoch leaves a history and a checkpoint but no weights.
        earlier = [files[k] for k in ("history", "checkpoint") if files[k].exists()]
        if earlier and not cfg.force:
            raise ConfigError(f"{quote(earlier[0])} belongs to an earlier run of --out {quote(cfg.out)}: --resume "
                              f"it, choose another --out, or --force (notebook 02: force = True) to start over")
        if cfg.init_from is not None:
            cfg = adopt_network(cfg, explicit)
        check_input_size(cfg.model_config())
        return cfg, None
    if not files["checkpoint"].exists():
        raise ConfigError(f"nothing to resume: no checkpoint at {quote(files['checkpoint'])}")
    checkpoint = load_checkpoint(files["checkpoint"])
    notes = []
    try:
        stored = TrainConfig.from_dict(checkpoint["args"], notes)
    except ConfigError as e:
        raise WeightsError(f"cannot resume from {quote(files['checkpoint'])}: {e}") from None
    for note in notes:
        print(f"note: {note}")
    differing = stored.differences(cfg, None if explicit is None else explicit)
    if differing:
        name = differing[0]
        may_change = ", ".join("--" + k.replace("_", "-") for k in RESUMABLE[:7])
        raise ConfigError(f"--resume: --{name.replace('_', '-')} {getattr(cfg, name)!r} differs from the "
                          f"checkpoint's {getattr(stored, name)!r}; only {may_change} may change")
    taken = {k: getattr(cfg, k) for k in RESUMABLE if explicit is None or k in explicit}
    resumed = dataclasses.replace(stored, **{**taken, "out": cfg.out, "resume": True})
    return resumed.validate(), checkpoint


def adopt_network(cfg: TrainConfig, explicit: set[str] | None) -> TrainConfig:
    """--init-from: the run's network is the weights' own, but for the model settings given explicitly (all,
    from Python), which must build a network with the weights' tensors: resnet50 and resnet50_dropout share
    them, another stem, norm or head does not."""
    source = ModelConfig.from_dict(read_metadata(cfg.init_from)["config"])
    taken = {k: getattr(source, k) for k in MODEL_SETTINGS if explicit is not None and k not in explicit}
    if "arch" not in taken and cfg.arch != source.arch:
        taken.pop("dropout", None)  # the p after every activation is the source backbone's: another has its own
    adopted = dataclasses.replace(cfg, **taken).validate()
    # the classifier may differ: a model fine-tuned to another data set's classes gets a new one
    ours = dataclasses.replace(adopted.model_config(), num_classes=source.num_classes)
    shapes = [{k: v.shape for k, v in build_model(c).state_dict().items()} for c in (source, ours)]
    if shapes[0] != shapes[1]:
        ours = adopted.model_config()
        differing = [k for k in MODEL_SETTINGS[2:] if getattr(source, k) != getattr(ours, k)] or ["arch"]
        raise ConfigError(f"--init-from {quote(cfg.init_from)} is a {source.arch} with {differing[0]} "
                          f"{getattr(source, differing[0])!r}, and its tensors do not fit this run's "
                          f"{differing[0]} {getattr(ours, differing[0])!r}: leave --{differing[0].replace('_', '-')} "
                          f"out to use the weights' own")
    return adopted


def init_from(model: torch.nn.Module, path, classes: tuple[str, ...], log=print) -> None:
    """Start from a weights file's tensors: all of them when the classes are the weights' own; all but the
    classifier's otherwise (its outputs would mean other classes), which then starts afresh."""
    source, spec = load_network(path)
    state = source.state_dict()
    if spec.classes != tuple(classes):
        own = model.state_dict()
        state = {k: v for k, v in state.items() if own[k].shape == v.shape and not _is_head(model, k)}
        log(f"note: {path} was trained for {len(spec.classes)} other classes; its classifier is not used")
        own.update(state)
        state = own
    load_state(model, state)


def _is_head(model: torch.nn.Module, key: str) -> bool:
    head = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)][-1]
    return key.startswith(head + ".")


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


def training_sets(cfg: TrainConfig) -> tuple[FaceSet, FaceSet]:
    """The training faces and the faces that choose the model: --val-fraction of the training faces, the
    --val-split named, or the data's own selection split (PublicTest for FER-2013, val/ for a split layout)."""
    face = cfg.model_config().face
    present = splits_of(cfg.data, face=face)
    if present and "train" not in present:  # training on all of it would train on the faces that choose the model
        raise ConfigError(f"{quote(resolve_data_source(cfg.data))} has splits ({', '.join(sorted(present))}) but no "
                          f"train/ folder: put the training faces in train/<class>/")
    train_set = load_split(cfg.data, "train" if "train" in present else "all", face=face)
    if cfg.val_fraction is not None:
        kept, held = train_set.split_off(cfg.val_fraction, cfg.seed)
        if not len(held) or not len(kept):
            raise ConfigError(f"--val-fraction {cfg.val_fraction:g} of {len(train_set)} training faces holds out "
                              f"{len(held)} of them: choose a fraction that leaves faces on both sides")
        return kept, held
    split = cfg.val_split or next((s for s in ("public", "val") if s in present), None)
    if split is None:
        raise ConfigError(f"{quote(train_set.source)} has no split to choose the model on ({', '.join(sorted(present)) or 'no splits'}): "
                          f"give --val-fraction 0.1 to hold out a tenth of the training faces, or --val-split")
    return train_set, load_split(cfg.data, split, face=face).in_classes(train_set.classes)


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


def train(cfg: TrainConfig, explicit: set[str] | None = None) -> dict:
    """Train, keeping the weights best on the selection split; returns the final state (history, best_acc, ...)."""
    cfg, checkpoint = prepare_run(cfg, explicit)
    dist, device = init_distributed(cfg.device, cfg.batch_size)
    files = paths_for(cfg.out)
    if dist.rank == 0:
        check_writable({**files, **({"snapshots": snapshot_path(cfg.out, 1)} if cfg.snapshots else {})})
    model_cfg = cfg.model_config()
    seed_everything(cfg.seed + dist.rank)  # dropout masks differ between ranks, as between samples
    generator = torch.Generator(device=device).manual_seed(cfg.seed)  # shared: same order and augmentation

    train_set, val_set = training_sets(cfg)
    train_set, val_set = train_set.subset(cfg.subset, cfg.seed), val_set.subset(cfg.val_subset, cfg.seed)
    images_u8, labels = train_set.images.to(device), train_set.labels.to(device)
    votes = train_set.votes.to(device) if cfg.votes and train_set.votes is not None else None
    if votes is not None and cfg.augment.mixes:
        raise ConfigError("MixUp and CutMix mix one-label targets; this data set trains on its annotators' votes: "
                          "give --no-votes, or leave --mixup-alpha and --cutmix-alpha at 0")
    model_cfg = dataclasses.replace(model_cfg, num_classes=len(train_set.classes))

    spec = ModelSpec(model_cfg, train_set.classes)  # what evaluate() reads the outputs as, and the faces it reads
    model = build_model(model_cfg)
    if cfg.init_from is not None and checkpoint is None:  # a resumed run's own weights come from its checkpoint
        init_from(model, cfg.init_from, train_set.classes, log=print if dist.rank == 0 else (lambda *a: None))
    if dist.enabled and device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device, memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg)
    state = {"epoch": 0, "step": 0, "seconds": 0.0, "best_acc": -1.0, "history": []}
    ema = None
    if cfg.ema_decay > 0:
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)

    if checkpoint is not None:
        try:
            load_state(model, checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            if ema is not None:
                ema.load_state_dict(checkpoint["ema"])
            torch.set_rng_state(checkpoint["rng"]["torch"])
            generator.set_state(checkpoint["rng"]["generator"])
        except (RuntimeError, KeyError, TypeError, ValueError) as e:
            raise WeightsError(f"cannot resume from {quote(files['checkpoint'])}: it does not fit this run "
                               f"({one_line(e)[:200]})") from None
        check_optimizer_state(optimizer, files["checkpoint"])
        state = {k: checkpoint[k] for k in ("epoch", "step", "seconds", "best_acc", "history")}
        if device.type == "cuda" and checkpoint["rng"].get("cuda"):
            torch.cuda.set_rng_state_all(checkpoint["rng"]["cuda"])
        if dist.rank == 0:
            write_history(files["history"], state["history"])  # drop rows of an epoch that was not checkpointed
            print(f"resumed from {files['checkpoint']} at epoch {state['epoch']}")

    step_model = torch.compile(model) if cfg.compile else model
    if dist.enabled:
        step_model = torch.nn.parallel.DistributedDataParallel(
            step_model, device_ids=[device.index] if device.type == "cuda" else None)
    log = print if dist.rank == 0 else (lambda *args, **kwargs: None)
    log(f"training {model_cfg.arch} (dropout {model_cfg.dropout}, stem {model_cfg.stem}) on {device}: "
        f"{len(train_set)} train, {len(val_set)} {split_name(val_set.split)} images ({model_cfg.face}), "
        f"{len(train_set.classes)} classes "
        f"({', '.join(train_set.classes)})" + (f", {dist.world} processes" if dist.enabled else "")
        + f"; weights -> {cfg.out}")
    writer = open_tensorboard(cfg, state["epoch"]) if dist.rank == 0 else None
    wrote_weights, val_name = False, split_name(val_set.split)
    while state["epoch"] < cfg.epochs:
        epoch_start = time.perf_counter()
        stats = train_one_epoch(step_model, optimizer, images_u8, labels, cfg, state, generator, device, ema,
                                dist, votes, len(train_set.classes))
        if stats["images"] == 0:  # the budget ran out at an epoch boundary: nothing new to evaluate
            break
        if not math.isfinite(stats["train_loss"]) or not all(torch.isfinite(p).all() for p in model.parameters()):
            raise diverged("the weights are no longer finite", state["epoch"] + 1, stats["lr"])
        state["epoch"] += 1
        if dist.rank != 0:  # rank 0 evaluates and writes; the others wait for its clock and go on
            state["seconds"] = dist.from_rank0(None)
            if stats["finished"]:
                break
            continue
        shipped = ema.module if ema is not None else model  # what is evaluated is what is saved
        try:
            val = evaluate(TorchEngine(shipped, spec), val_set)
        except WeightsError:  # finite weights so large that the outputs are not: diverged all the same
            raise diverged("the model's outputs are no longer finite", state["epoch"], stats["lr"]) from None
        state["seconds"] += time.perf_counter() - epoch_start - stats["train_seconds"]
        row = {"epoch": state["epoch"], "lr": round(stats["lr"], 6),
               "train_loss": round(stats["train_loss"], 5), "train_acc": round(stats["train_acc"], 5),
               "val_loss": round(val["loss"], 5), "val_acc": round(val["accuracy"], 5),
               "seconds": round(state["seconds"], 1), "images_per_second": round(stats["images_per_second"], 1)}
        state["history"].append(row)
        info = {"val_acc": round(val["accuracy"], 5), "val_split": val_set.split, "epoch": state["epoch"],
                "train_seconds": round(state["seconds"], 1), "train_config": cfg.to_dict(),
                "device": machine_description(device)}
        if val["accuracy"] > state["best_acc"]:
            state["best_acc"] = val["accuracy"]
            save_weights(shipped, spec, files["weights"], **info)
            wrote_weights = True
        if cfg.snapshots:  # float32: they are averaged, not shipped
            save_weights(shipped, spec, snapshot_path(cfg.out, state["epoch"]), torch.float32, **info)
        save_checkpoint(files["checkpoint"], model, optimizer, state, cfg, generator, ema)
        write_history(files["history"], state["history"])
        log_epoch(writer, row)
        print(f"epoch {row['epoch']}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f} | "
              f"{val_name} loss {row['val_loss']:.4f} acc {row['val_acc']:.4f} | lr {row['lr']:.4f} | "
              f"{row['images_per_second']:.0f} img/s | {row['seconds']:.0f} s", flush=True)
        dist.from_rank0(state["seconds"])
        if stats["finished"]:
            break
    if writer is not None:
        writer.close()
    if dist.enabled:
        torch.distributed.destroy_process_group()
    if wrote_weights or (checkpoint is not None and files["weights"].exists()):
        log(f"best {val_name} accuracy {state['best_acc']:.4f}; weights in {files['weights']}")
    elif dist.rank == 0:
        raise FerError(f"no epoch finished (epoch {state['epoch']} of {cfg.epochs}): no weights were written")
    return state
