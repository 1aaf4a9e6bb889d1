"""Where things are: the repository's folders and the three locations a user may move with a variable.

  FER_DATA    the data set (see fer.datasets.resolve_data_source)
  FER_CACHE   decoded data sets and exported ONNX models (default ~/.cache/fer)
  FER_RUNS    training runs started without an explicit output (default runs/ in the repository)
  FER_CHARTS  where the notebooks write their PNGs (default charts/ in the repository)
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATASET_DIR = REPO_ROOT / "dataset_1"
TRAINED_MODELS_DIR = REPO_ROOT / "trained_models"
# The CPU flagship (README, "The shipped model"); the first shipped model, resnet50_dropout, is in git history.
DEFAULT_WEIGHTS = TRAINED_MODELS_DIR / "resnet50.safetensors"
# The small fast model (README, "The small model"; --fast): a narrow ResNet18 distilled from the default.
FAST_WEIGHTS = TRAINED_MODELS_DIR / "resnet18_w16.safetensors"
# The models the README names as the ensemble, one file name a line (the gallery's and CLI's ensemble).
ENSEMBLE_MANIFEST = TRAINED_MODELS_DIR / "ensemble.txt"
CHARTS_DIR = REPO_ROOT / "charts"
PHOTOS_DIR = REPO_ROOT / "photos_to_predict"
PACKAGE_DIR = Path(__file__).resolve().parent


def cache_dir() -> Path:
    return Path(os.environ.get("FER_CACHE") or Path.home() / ".cache" / "fer")


def charts_dir() -> Path:
    return Path(os.environ.get("FER_CHARTS") or CHARTS_DIR)


def runs_dir() -> Path:
    return Path(os.environ.get("FER_RUNS") or REPO_ROOT / "runs")
