"""The ensemble: the shipped models named in trained_models/ensemble.txt (one file name a line, `#` comments),
not whatever happens to lie in the folder. Any such list names an ensemble: `--weights LIST.txt` (or
`--ensemble` for the shipped one) loads its members, each with its own temperature."""
from __future__ import annotations

from pathlib import Path

from .errors import WeightsError, quote
from .paths import ENSEMBLE_MANIFEST

ENSEMBLE_CHOICE = "ensemble (trained_models/ensemble.txt)"
MANIFEST_SUFFIX = ".txt"


def read_manifest(manifest) -> list[Path]:
    """The weights files a list names, in its order, relative to the list's folder; WeightsError for a list
    that cannot be read, names nothing, or names a file that is not there."""
    manifest = Path(manifest)
    try:
        text = manifest.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise WeightsError(f"cannot read the ensemble list {quote(manifest)} ({type(e).__name__})") from None
    names = [line.split("#")[0].strip() for line in text.splitlines()]
    paths = [manifest.parent / name for name in names if name]
    if not paths:
        raise WeightsError(f"the ensemble list {quote(manifest)} names no weights file")
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise WeightsError(f"{quote(manifest)} names {quote(missing[0].name)}, which is not there")
    if any(p.suffix == MANIFEST_SUFFIX for p in paths):
        raise WeightsError(f"{quote(manifest)} names another list; it names weights files only")
    return paths


def ensemble_members(models_dir=None) -> list[Path]:
    """The weights files the shipped manifest (or the one in models_dir) names; [] when there is none."""
    manifest = Path(models_dir) / ENSEMBLE_MANIFEST.name if models_dir is not None else ENSEMBLE_MANIFEST
    return read_manifest(manifest) if manifest.is_file() else []


def expand_weights(paths) -> list[Path]:
    """Weights files, each ensemble list (NAME.txt) replaced by the files it names."""
    expanded = []
    for path in map(Path, paths or []):
        expanded.extend(read_manifest(path) if path.suffix == MANIFEST_SUFFIX else [path])
    return expanded
