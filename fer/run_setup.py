"""How a training run starts: its settings and files checked before any data is read, a resumed run's stored
config taken over, the network of a fine-tuning run adopted from the weights it starts from, and the faces it
trains on and is chosen on.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from .config import RESUMABLE, TrainConfig
from .datasets import FaceSet, load_split, resolve_data_source, split_name, splits_of
from .errors import ConfigError, FerError, WeightsError, quote
from .model import ModelConfig, build_model, check_input_size, load_state
from .run_files import default_out, load_checkpoint, paths_for
from .runtime import remove_stale_temp_files
from .weights import load_network, read_metadata

# The settings that make the network; --init-from takes those not given from the weights it starts from.
MODEL_SETTINGS = ("arch", "dropout", "head_dropout", "stem", "norm", "channels", "image_size")


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
        if cfg.teacher is not None:
            check_teacher(cfg)
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


def check_teacher(cfg: TrainConfig) -> None:
    """--teacher names weights that are there, and not the file this run writes."""
    from .distill import teacher_files
    out = Path(cfg.out).resolve()
    for path in teacher_files(cfg.teacher):
        if not path.is_file():
            raise ConfigError(f"--teacher {quote(path)}: no such weights file")
        if path.resolve() == out:
            raise ConfigError(f"--teacher {quote(path)} is this run's --out: it would be replaced while it teaches")
        read_metadata(path)  # a file that is not fer weights fails here, before any data is read


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


def training_sets(cfg: TrainConfig, teacher: bool = True, device="cpu") -> tuple[FaceSet, FaceSet]:
    """The training faces and the faces that choose the model: --val-fraction of the training faces, the
    --val-split named, or the data's own selection split (PublicTest for FER-2013, val/ for a split layout).
    With --teacher (and `teacher`), the training faces carry the teacher's probabilities (fer.distill)."""
    face = cfg.model_config().face
    present = splits_of(cfg.data, face=face)
    if present and "train" not in present:  # training on all of it would train on the faces that choose the model
        raise ConfigError(f"{quote(resolve_data_source(cfg.data))} has splits ({', '.join(sorted(present))}) but no "
                          f"train/ folder: put the training faces in train/<class>/")
    train_set = load_split(cfg.data, "train" if "train" in present else "all", face=face)
    if teacher and cfg.teacher is not None:  # before any split: the teacher sees every face as loaded
        from .distill import cached_teacher_probs
        probs = cached_teacher_probs(cfg.teacher, train_set, cfg.data, paths_for(cfg.out)["teacher"], device)
        train_set = dataclasses.replace(train_set, teacher=probs)
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
