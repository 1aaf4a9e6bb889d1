"""The ensemble: the shipped models named in trained_models/ensemble.txt (one file name a line), not
whatever happens to lie in the folder."""
from __future__ import annotations

from pathlib import Path

from .errors import WeightsError, quote
from .paths import ENSEMBLE_MANIFEST

ENSEMBLE_CHOICE = "ensemble (trained_models/ensemble.txt)"


def ensemble_members(models_dir=None) -> list[Path]:
    """The weights files the manifest names, in its order; [] when there is no manifest."""
    manifest = Path(models_dir) / ENSEMBLE_MANIFEST.name if models_dir is not None else ENSEMBLE_MANIFEST
    if not manifest.is_file():
        return []
    names = [line.split("#")[0].strip() for line in manifest.read_text().splitlines()]
    paths = [manifest.parent / name for name in names if name]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise WeightsError(f"{quote(manifest)} names {quote(missing[0].name)}, which is not there")
    return paths
