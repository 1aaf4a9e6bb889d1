"""The training settings: one dataclass, from which the command line, the checks and resuming all follow.

Each field carries its help text, its type and its allowed range beside it; `python -m fer train` builds
its options from these fields, `TrainConfig.validate` checks them in one place, every checkpoint stores
them, and `--resume` rebuilds the run from the stored ones (as nanoGPT does), refusing a changed setting
unless it is one that may change between the two halves of a run (RESUMABLE).

Stored configs carry CONFIG_VERSION. One written by an older fer loads: UPGRADES maps its renamed fields and
fills the fields added since with the value that reproduces what that version did, and says what it filled.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import numbers
import os
from dataclasses import dataclass, field, fields

from .augment import AugmentConfig
from .errors import ConfigError
from .model import NORMS, STEMS, ModelConfig, default_dropout, known_arch
from .preprocess import IMAGE_SIZE, SIZE_RANGE
from .runtime import pick_device

# Settings that may differ between a run and its --resume: they change when or where it runs, or what it
# keeps, not what it learns. The first seven are the ones a user changes on purpose (the messages name them);
# out, resume and force are how the run is found and continued.
RESUMABLE = ("epochs", "time_budget", "data", "device", "compile", "progress", "snapshots", "out", "resume", "force",
             "recipe")

AUGMENT_PREFIX = "augment_"  # argparse destinations of the augmentation options

POSITIVE = (lambda v: v > 0, "a number > 0")
NON_NEGATIVE = (lambda v: v >= 0, "a number >= 0")
FRACTION = (lambda v: 0 <= v < 1, "a number in [0, 1)")
COUNT = (lambda v: v >= 1, "a whole number >= 1")
SEED = (lambda v: 0 <= v < 2**32 - 64, "a whole number from 0 to 2**32 - 65")  # numpy's range, less the ranks'

CONFIG_VERSION = 7
# How a stored config of version v becomes one of version v + 1: fields renamed, and fields added in v + 1
# whose default is what version v did. Version 1 is every config written before configs had a version (the
# shipped weights' own): its network was called "model"; amp (bf16 autocast where fast, always on before
# the option), norm (BatchNorm), ema_decay (none) and force came in during version 1, so early ones lack them.
UPGRADES = {1: {"renamed": {"model": "arch"},
                "added": ("amp", "norm", "ema_decay", "force", "init_from")},
            # 3: the split that chooses the model became a setting (it was PublicTest: val_split None means the
            # data's own, which is PublicTest for FER-2013).
            2: {"renamed": {}, "added": ("val_split", "val_fraction", "votes")},
            # 4: faces of any size and colour (48 x 48 gray before); every epoch's weights kept on request.
            3: {"renamed": {}, "added": ("image_size", "channels", "snapshots")},
            # 5: augmentation's corrupt_prob, mixup_alpha and cutmix_alpha (fer.augment.AugmentConfig fills
            # them with their defaults, off, in a stored config that lacks them).
            4: {"renamed": {}, "added": ()},
            # 6: the recipe file a run started from (fer.recipes), a record (None: settings given one by one).
            5: {"renamed": {}, "added": ("recipe",)},
            # 7: distillation from a teacher (fer.distill; None: none, as before).
            6: {"renamed": {}, "added": ("teacher", "distill_weight", "distill_temperature")}}

def setting(default, help: str, kind=None, check=None, choices=None, flags=(), cli: bool = True):
    """A dataclass field with what the command line and the checks need to know about it."""
    kind = kind or type(default)
    return field(default=default, metadata={"help": help, "kind": kind, "check": check, "choices": choices,
                                            "flags": flags, "cli": cli})


@dataclass
class TrainConfig:
    recipe: str | None = setting(None, "start from this recipe: a name (flagship: recipes/flagship.toml) or a TOML "
                                 "file of settings; the options given change its values", kind=str)
    data: str | None = setting(None, "folder, zip or CSV (default: $FER_DATA, then dataset_1/)", kind=str)
    arch: str = setting("resnet50_dropout", "the network: resnet50, resnet50_dropout, or any torchvision "
                        "classification model by name (resnet18, convnext_tiny, efficientnet_b0, ...)",
                        check=(known_arch, "resnet50, resnet50_dropout or a torchvision classification model"),
                        flags=("--model",))
    dropout: float | None = setting(None, "p after every activation, where the network offers it "
                                    f"(resnet50_dropout; default {default_dropout('resnet50_dropout')})",
                                    kind=float, check=FRACTION)
    head_dropout: float = setting(0.0, "dropout before the classifier", check=FRACTION)
    stem: str = setting("imagenet", "how the network reads the face: no_maxpool and cifar for ResNets, stride1 "
                        "for any network (see fer/model.py)", choices=STEMS)
    norm: str = setting("batch", "group: GroupNorm instead of BatchNorm (ResNets)", choices=NORMS)
    image_size: int = setting(IMAGE_SIZE, "the faces' side in pixels: each is read (and cached) at this size "
                              "(FER-2013's are 48; RAF-DB's aligned faces 100)",
                              check=(lambda v: SIZE_RANGE[0] <= v <= SIZE_RANGE[1],
                                     f"a whole number from {SIZE_RANGE[0]} to {SIZE_RANGE[1]}"))
    channels: int = setting(1, "1: gray faces; 3: colour (RGB), for data sets in colour such as RAF-DB",
                            choices=(1, 3))
    epochs: int = setting(40, "epochs (the schedule spans them, or --time-budget)", check=COUNT)
    batch_size: int = setting(128, "images per step (the global batch under torchrun)", check=COUNT)
    optimizer: str = setting("adamw", "adamw, or sgd with Nesterov momentum", choices=("adamw", "sgd"))
    # AdamW learned faster in the first epochs on the CPU (33% vs 27% train accuracy after 120 steps); SGD
    # at 0.05 and up diverged in warm-up and at 0.02 stayed at the class prior for two epochs (measured).
    lr: float = setting(1e-3, "peak learning rate", check=POSITIVE)
    momentum: float = setting(0.9, "sgd only", check=FRACTION)
    weight_decay: float = setting(0.05, "decoupled (adamw) or L2 (sgd); not on norms and biases",
                                  check=NON_NEGATIVE)
    label_smoothing: float = setting(0.1, "cross-entropy label smoothing", check=FRACTION)
    teacher: str | None = setting(None, "distill: also learn from these weights' (or ensemble list's) probabilities "
                                  "for each training face (fer/distill.py)", kind=str)
    distill_weight: float = setting(0.5, "with --teacher: the weight of the teacher's term; 1 - it, the labels'",
                                    check=(lambda v: 0 <= v <= 1, "a number in [0, 1]"))
    distill_temperature: float = setting(1.0, "with --teacher: the softmax temperature of both sides of the "
                                         "teacher's term", check=(lambda v: 0.5 <= v <= 20, "a number in [0.5, 20]"))
    warmup: float = setting(0.05, "fraction of the run spent warming up", check=FRACTION)
    ema_decay: float = setting(0.0, "> 0: evaluate and ship an exponential moving average of the weights",
                               check=FRACTION)
    init_from: str | None = setting(None, "start from these weights (fine-tune; e.g. the shipped ones); the "
                                    "network is theirs unless --model/--stem/... say otherwise", kind=str)
    augment: AugmentConfig = field(default_factory=AugmentConfig, metadata={"cli": False, "kind": AugmentConfig})
    votes: bool = setting(True, "train on the annotators' votes where the data set has them (FER+): each face's "
                          "target is their distribution, not its majority label (Barsoum et al. 2016)")
    val_split: str | None = setting(None, "the split that chooses the model (default: the data's own: public, "
                                    "i.e. PublicTest, for FER-2013; val for a train/val/test layout)", kind=str,
                                    choices=("val", "public", "test"))
    val_fraction: float | None = setting(None, "choose the model on this fraction of the training faces instead "
                                         "(stratified, drawn with --seed; a data set without a split needs it)",
                                         kind=float, check=(lambda v: 0 < v < 1, "a number in (0, 1)"))
    subset: int | None = setting(None, "train on N images only (quick runs)", kind=int, check=COUNT)
    val_subset: int | None = setting(None, "score N of the selection split's images only each epoch (quick runs)",
                                     kind=int, check=COUNT)
    device: str = setting("auto", "auto, cpu, cuda, cuda:1 ...")
    seed: int = setting(0, "random seed (order, augmentation, dropout)", check=SEED)
    time_budget: float | None = setting(None, "seconds for the whole run; the schedule fits inside it",
                                        kind=float, check=POSITIVE)
    out: str | None = setting(None, "weights file (default: runs/<arch>/<arch>.safetensors; $FER_RUNS moves "
                              "runs/)", kind=str)
    resume: bool = setting(False, "continue the run of --out from its checkpoint")
    force: bool = setting(False, "replace an existing weights file at --out")
    compile: bool = setting(False, "torch.compile the model")
    amp: bool = setting(True, "bf16 autocast where the hardware runs it fast")
    progress: bool = setting(True, "tqdm progress bars")
    snapshots: bool = setting(False, "also keep every epoch's weights (float32) in DIR/snapshots/NAME/, to average "
                              "the last ones with `python -m fer average` (may be switched on when resuming)")

    def __post_init__(self):
        if isinstance(self.augment, dict):
            self.augment = AugmentConfig(**self.augment)

    def validate(self) -> "TrainConfig":
        """ConfigError naming the first setting of the wrong type or out of range; the model config too."""
        for f in fields(self):
            value, meta = getattr(self, f.name), f.metadata
            if value is None and f.default is None:
                continue
            if not _is_kind(value, meta["kind"]):
                raise ConfigError(f"{_flag(f)} must be {meta['kind'].__name__}, not {value!r}")
            if meta.get("choices") and value not in meta["choices"]:
                raise ConfigError(f"{_flag(f)} must be one of {', '.join(map(str, meta['choices']))}, not {value!r}")
            if meta.get("check") and not meta["check"][0](value):
                raise ConfigError(f"{_flag(f)} must be {meta['check'][1]}, not {value!r}")
        if os.environ.get("WORLD_SIZE", "1") == "1":  # under torchrun each rank takes its own GPU
            try:
                pick_device(self.device)
            except ConfigError as e:
                raise ConfigError(f"--device: {e}") from None
        try:
            self.augment.validate()
        except ValueError as e:
            raise ConfigError(f"augmentation: {e}") from None
        if self.teacher is not None and self.augment.mixes:
            raise ConfigError("--teacher gives each face its own target, which MixUp and CutMix do not mix: leave "
                              "--mixup-alpha and --cutmix-alpha at 0")
        if self.val_split is not None and self.val_fraction is not None:
            raise ConfigError("--val-split and --val-fraction each choose the selection faces: give one of them")
        self.model_config()
        return self

    def model_config(self) -> ModelConfig:
        dropout = default_dropout(self.arch) if self.dropout is None else self.dropout
        return ModelConfig(arch=self.arch, dropout=dropout, head_dropout=self.head_dropout, stem=self.stem,
                           norm=self.norm, image_size=self.image_size, channels=self.channels)

    def to_dict(self) -> dict:
        """What checkpoints and weights store: every field, and the version of this layout."""
        return {**dataclasses.asdict(self), "version": CONFIG_VERSION}

    @classmethod
    def from_settings(cls, **settings) -> "TrainConfig":
        """A config from flat settings, as a sweep or a notebook names them: TrainConfig fields, and the
        augmentation's fields (erase_prob, flip, ...) by their own names, as on the command line."""
        augment_names = {f.name for f in fields(AugmentConfig)}
        augmentation = {k: settings.pop(k) for k in list(settings) if k in augment_names}
        if augmentation:
            base = settings.pop("augment", AugmentConfig())
            base = AugmentConfig(**base) if isinstance(base, dict) else base
            settings["augment"] = dataclasses.replace(base, **augmentation)
        unknown = sorted(settings.keys() - {f.name for f in fields(cls)})
        if unknown:
            close = difflib.get_close_matches(unknown[0], [f.name for f in fields(cls)] + sorted(augment_names), 1)
            raise ConfigError(f"unknown setting {unknown[0]!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        return cls(**settings)

    @classmethod
    def from_dict(cls, values: dict, notes: list[str] | None = None) -> "TrainConfig":
        """A stored config (a checkpoint's, a weights file's), of this version or an older one (upgraded, with
        a note of what was filled in appended to `notes`); ConfigError for a missing, unknown or mistyped field."""
        if not isinstance(values, dict):
            raise ConfigError("the stored config is not a mapping")
        values, version, filled = upgrade(values)
        if filled and notes is not None:
            notes.append(f"the stored config is from an older fer (config version {version}): filled in "
                         f"{', '.join(f'{k}={values[k]!r}' for k in filled)}")
        names = {f.name for f in fields(cls)}
        missing, unknown = sorted(names - values.keys()), sorted(values.keys() - names)
        if missing or unknown:
            raise ConfigError(f"the stored config {'lacks ' + ', '.join(missing) if missing else ''}"
                              f"{' and ' if missing and unknown else ''}"
                              f"{'has unknown ' + ', '.join(unknown) if unknown else ''}")
        try:
            return cls(**values).validate()
        except TypeError as e:
            raise ConfigError(f"the stored config is malformed ({e})") from None

    def differences(self, other: "TrainConfig", only: set[str] | None = None) -> list[str]:
        """The settings (among `only`, default all) on which two configs differ, RESUMABLE ones left out."""
        return [f.name for f in fields(self) if f.name not in RESUMABLE and (only is None or f.name in only)
                and getattr(self, f.name) != getattr(other, f.name)]


def upgrade(values: dict) -> tuple[dict, int, list[str]]:
    """A stored config brought to CONFIG_VERSION (without its version key), the version it was written with,
    and the fields filled in."""
    values = dict(values)
    version = values.pop("version", 1)
    if type(version) is not int or version < 1:  # noqa: E721 - True and 2.0 are not versions
        raise ConfigError(f"the stored config's version {version!r} is not a whole number >= 1")
    if version > CONFIG_VERSION:
        raise ConfigError(f"the stored config is version {version}, from a newer fer than this one "
                          f"(version {CONFIG_VERSION}): upgrade fer to use it")
    defaults, filled = TrainConfig(), []
    for v in range(version, CONFIG_VERSION):
        for old, new in UPGRADES[v]["renamed"].items():
            if old in values and new not in values:
                values[new] = values.pop(old)
        for name in UPGRADES[v]["added"]:
            if name not in values:
                values[name] = getattr(defaults, name)
                filled.append(name)
    return values, version, filled


def _is_kind(value, kind) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool) and value == value \
            and abs(value) != float("inf")
    return isinstance(value, kind)


def _flag(f) -> str:
    return "--" + f.name.replace("_", "-")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per TrainConfig field, with its help, type, choices and default. Defaults are SUPPRESSed
    so that `config_from_args` knows which settings were given on the command line."""
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        meta = f.metadata
        if not meta.get("cli"):
            continue
        default = getattr(defaults, f.name)
        help_text = f"{meta['help']} (default: {default})" if default is not None else meta["help"]
        names = (_flag(f), *meta["flags"])
        if meta["kind"] is bool:
            parser.add_argument(*names, dest=f.name, action=argparse.BooleanOptionalAction, help=help_text,
                                default=argparse.SUPPRESS)
        else:
            parser.add_argument(*names, dest=f.name, type=meta["kind"], choices=meta["choices"],
                                help=help_text, default=argparse.SUPPRESS, metavar=None if meta["choices"] else
                                f.name.upper())
    augmentation = parser.add_argument_group("augmentation (fer.augment.AugmentConfig)")
    for f in fields(AugmentConfig):
        default, flag = getattr(defaults.augment, f.name), _flag(f)
        if isinstance(default, bool):
            augmentation.add_argument(flag, dest=AUGMENT_PREFIX + f.name, action=argparse.BooleanOptionalAction,
                                      default=argparse.SUPPRESS, help=f"(default: {default})")
        else:
            augmentation.add_argument(flag, dest=AUGMENT_PREFIX + f.name, type=float, default=argparse.SUPPRESS,
                                      metavar=f.name.upper(), help=f"(default: {default})")


def config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, set[str]]:
    """The TrainConfig of parsed `train` options (a recipe's settings, then the options given, then `--set`),
    and the names of the settings given explicitly (on --resume they must match the stored ones)."""
    from .recipes import parse_overrides, read_recipe
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    given.update({f.name: getattr(args, AUGMENT_PREFIX + f.name) for f in fields(AugmentConfig)
                  if hasattr(args, AUGMENT_PREFIX + f.name)})
    given.update(parse_overrides(getattr(args, "set", None)))
    settings = {**(read_recipe(given["recipe"]) if given.get("recipe") else {}), **given}
    augment_names = {f.name for f in fields(AugmentConfig)}
    explicit = {"augment" if k in augment_names else k for k in settings}
    return TrainConfig.from_settings(**settings), explicit
