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
How a run starts (checks, --resume, --init-from, its faces) is fer/run_setup.py; its files, fer/run_files.py.
"""
from __future__ import annotations

import dataclasses
import math
import random
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from .augment import augment, mix, side_generator
from .config import TrainConfig
from .corruptions import corrupt_randomly
from .datasets import split_name
from .distill import distillation_loss
from .errors import ConfigError, FerError, WeightsError, one_line, quote
from .evaluate import evaluate
from .inference import TorchEngine
from .model import build_model, load_state
from .preprocess import normalize
from .run_files import (check_optimizer_state, check_writable, log_epoch, open_tensorboard, paths_for,
                        save_checkpoint, snapshot_path, write_history)
from .run_setup import init_from, prepare_run, training_sets
from .distributed import Dist, init_distributed
from .runtime import autocast_for, machine_description
from .spec import ModelSpec
from .weights import save_weights

# Imported by name from fer.train since the first version (notebook 02, benchmarks, users' scripts).
from .run_files import HISTORY_FIELDS, default_out, load_checkpoint, tensorboard_dir  # noqa: E402
from .run_setup import adopt_network  # noqa: E402

__all__ = ["train", "train_one_epoch", "train_step", "make_optimizer", "lr_at", "paths_for", "snapshot_path", "prepare_run",
           "training_sets", "HISTORY_FIELDS", "default_out", "load_checkpoint", "tensorboard_dir", "adopt_network"]


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
               votes: torch.Tensor | None = None, teacher: torch.Tensor | None = None):
    """One optimizer step on a normalized, augmented batch; returns the logits and the loss (detached).
    votes: each face's distribution of annotators' votes (FER+), the target instead of its one label.
    teacher: each face's probabilities from the run's teacher (fer.distill), learned from beside the target.
    The throughput benchmark times this same function."""
    x = x.contiguous(memory_format=torch.channels_last)
    target = y if votes is None else votes
    with autocast_for(device, cfg.amp):
        logits = model(x)
        if teacher is None:
            loss = F.cross_entropy(logits, target, label_smoothing=cfg.label_smoothing)
        else:
            loss = distillation_loss(logits, target, teacher, cfg.distill_weight, cfg.distill_temperature,
                                     cfg.label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if ema is not None:
        ema.update_parameters(model)
    return logits.detach(), loss.detach()


def train_one_epoch(model, optimizer, images_u8, labels, cfg: TrainConfig, state: dict, generator,
                    device, ema=None, dist: Dist = Dist(), votes: torch.Tensor | None = None,
                    num_classes: int | None = None, teacher: torch.Tensor | None = None) -> dict:
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
        t = teacher[index] if teacher is not None else None
        if cfg.augment.mixes:  # the targets become mixes of two labels (FER+'s votes are refused with mixing)
            x, v = mix(x, y, num_classes or int(labels.max()) + 1, cfg.augment, side_generator(generator))
        if dist.enabled:
            part = len(index) // dist.world
            mine = slice(dist.rank * part, (dist.rank + 1) * part)
            x, y, v, t = x[mine], y[mine], *(u[mine] if u is not None else None for u in (v, t))
        logits, loss = train_step(model, optimizer, x, y, cfg, device, ema, v, t)
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

    train_set, val_set = training_sets(cfg, device=device)
    train_set, val_set = train_set.subset(cfg.subset, cfg.seed), val_set.subset(cfg.val_subset, cfg.seed)
    images_u8, labels = train_set.images.to(device), train_set.labels.to(device)
    teacher = train_set.teacher.to(device) if train_set.teacher is not None else None
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
        + (f"; distilling from {cfg.teacher} (weight {cfg.distill_weight:g}, temperature "
           f"{cfg.distill_temperature:g})" if teacher is not None else "") + f"; weights -> {cfg.out}")
    writer = open_tensorboard(cfg, state["epoch"]) if dist.rank == 0 else None
    wrote_weights, val_name = False, split_name(val_set.split)
    while state["epoch"] < cfg.epochs:
        epoch_start = time.perf_counter()
        stats = train_one_epoch(step_model, optimizer, images_u8, labels, cfg, state, generator, device, ema,
                                dist, votes, len(train_set.classes), teacher)
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
