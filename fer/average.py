"""Weight averaging (Izmailov et al. 2018, "Averaging weights leads to wider optima and better generalization"):
one model whose weights are the mean of several epochs of one run (`train --snapshots` keeps them), typically
the last ones, where the learning rate is low and the weights wander around a wide minimum.

The mean of BatchNorm's running statistics is not the statistics of the mean network: they are recomputed with
one pass over the run's training faces (un-augmented, `torch.optim.swa_utils.update_bn`). The averaged model is
then scored on the run's selection split, like every epoch of the run, so it can be compared with the run's
own best epoch and chosen only if it beats it there.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel, update_bn

from .config import TrainConfig
from .errors import ConfigError, WeightsError, quote
from .evaluate import evaluate
from .inference import TorchEngine
from .preprocess import normalize
from .spec import ModelSpec
from .weights import load_network, read_metadata, save_weights

BATCH = 256


def average_weights(paths) -> tuple[torch.nn.Module, ModelSpec, list[dict]]:
    """The mean of the weights files' parameters (float32, on the CPU; BatchNorm statistics still the first
    file's), its spec and the files' metadata; WeightsError unless they are one network with the same classes."""
    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise ConfigError("averaging needs at least two weights files (a run's snapshots: train --snapshots)")
    metas = [read_metadata(p) for p in paths]
    first = ModelSpec.from_metadata(metas[0])
    for path, meta in zip(paths[1:], metas[1:]):
        spec = ModelSpec.from_metadata(meta)
        if spec.network != first.network or spec.classes != first.classes:
            raise WeightsError(f"{quote(path)} is another network than {quote(paths[0])} (config or classes differ): "
                               f"only snapshots of one run can be averaged")
    averaged = AveragedModel(load_network(paths[0])[0])
    for path in paths[1:]:
        averaged.update_parameters(load_network(path)[0])
    return averaged.module, dataclasses.replace(first, temperature=1.0), metas  # a new network: not calibrated


def average_run(paths, out, data=None, force: bool = False) -> dict:
    """Average the snapshots, recompute BatchNorm on the run's training faces, score on its selection split and
    write the weights (float16, like every shipped file). Returns {"val_acc", "val_split", "epochs", "out"}."""
    from .runtime import check_outputs
    from .run_setup import training_sets
    out = Path(out)
    check_outputs({"--out": out}, paths)
    if out.exists() and not force:
        raise ConfigError(f"{quote(out)} already exists: choose another --out, or --force to replace it")
    model, spec, metas = average_weights(paths)
    configs = []
    for path, meta in zip(paths, metas):  # every snapshot's, so that a bad one is named
        if not isinstance(meta.get("train_config"), dict):
            raise WeightsError(f"{quote(path)} holds no training config: the run's data and splits are unknown")
        try:
            configs.append(TrainConfig.from_dict(meta["train_config"]))
        except ConfigError as e:
            raise ConfigError(f"{quote(path)}: {e}") from None
    cfg = configs[-1]
    cfg = dataclasses.replace(cfg, data=data if data is not None else cfg.data)
    train_set, val_set = training_sets(cfg, teacher=False)  # BatchNorm statistics need no teacher
    if tuple(train_set.classes) != spec.classes:
        raise ConfigError(f"the data's classes ({', '.join(train_set.classes)}) are not the snapshots' "
                          f"({', '.join(spec.classes)})")
    model.train()
    update_bn((normalize(train_set.images[i:i + BATCH]) for i in range(0, len(train_set), BATCH)), model)
    model.eval()
    accuracy = evaluate(TorchEngine(model, spec), val_set)["accuracy"]
    epochs = [m.get("epoch") for m in metas]
    save_weights(model, spec, out, val_acc=round(accuracy, 5),
                 val_split=val_set.split, epoch=epochs[-1], averaged_epochs=epochs,
                 train_seconds=metas[-1].get("train_seconds"), train_config=cfg.to_dict(),
                 device=metas[-1].get("device"))
    return {"val_acc": accuracy, "val_split": val_set.split, "epochs": epochs, "out": str(out)}
