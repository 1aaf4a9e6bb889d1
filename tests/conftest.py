"""Shared fixtures: tiny generated FER-2013 data in every layout, the real zips when present, weights."""
from __future__ import annotations

import csv
import os
import zipfile
from pathlib import Path

# Under pytest-xdist each worker gets its share of the CPU's threads, before PyTorch is imported (OpenMP reads
# this once) and for every process a test starts: two workers with a thread a core each, not four threads
# contending for two cores (PyTorch's OpenMP threads slow down many times over when they compete).
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS",
                          str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))

import numpy as np  # noqa: E402 - after the thread count above
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from fer.datasets import CSV_CODE_TO_CLASS
from fer.preprocess import CLASSES

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
PORTRAITS = sorted((REPO / "photos_to_predict").glob("*.jpg"))


def pytest_addoption(parser):
    parser.addoption("--update-screenshot", action="store_true",
                     help="copy the browser test's gallery screenshot into charts/ (it is made in a temp folder)")


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    # Tests never touch the user's ~/.cache/fer.
    os.environ["FER_CACHE"] = str(tmp_path_factory.mktemp("fer-cache"))


def class_pattern(class_index: int, rng: np.random.Generator) -> np.ndarray:
    """A 48 x 48 face stand-in whose class a network can learn: a bright bar at a class-given angle."""
    yy, xx = np.mgrid[0:48, 0:48] - 23.5
    angle = np.pi * class_index / len(CLASSES)
    distance = np.abs(xx * np.sin(angle) - yy * np.cos(angle))
    image = np.where(distance < 5, 220, 40) + rng.normal(0, 12, (48, 48))
    return np.clip(image, 0, 255).astype(np.uint8)


def make_faces(per_class: int, seed: int = 0, classes=CLASSES):
    rng = np.random.default_rng(seed)
    return [(c, class_pattern(CLASSES.index(c), rng)) for c in classes for _ in range(per_class)]


def write_fer_layout(root: Path, per_class: int = 4) -> Path:
    """root/train/<class>/Training_i.jpg and root/test/<class>/{PublicTest,PrivateTest}_i.jpg."""
    for split, prefix, seed in (("train", "Training", 0), ("test", "PublicTest", 1), ("test", "PrivateTest", 2)):
        for i, (c, pixels) in enumerate(make_faces(per_class, seed)):
            folder = root / split / c
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(folder / f"{prefix}_{seed}{i:04d}.png")
    return root


@pytest.fixture(scope="session")
def fer_folder(tmp_path_factory) -> Path:
    return write_fer_layout(tmp_path_factory.mktemp("fer-folder"), per_class=6)


@pytest.fixture(scope="session")
def fer_zip(fer_folder, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fer-zip") / "fer2013.zip"
    with zipfile.ZipFile(path, "w") as z:
        for f in sorted(fer_folder.rglob("*.png")):
            z.write(f, f.relative_to(fer_folder).as_posix())
    return path


@pytest.fixture(scope="session")
def fer_csv(fer_folder, tmp_path_factory) -> Path:
    """The same images as fer_folder, written as Kaggle's fer2013.csv with its own class codes."""
    path = tmp_path_factory.mktemp("fer-csv") / "fer2013.csv"
    usage = {"Training": "Training", "PublicTest": "PublicTest", "PrivateTest": "PrivateTest"}
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["emotion", "pixels", "Usage"])
        for image_path in sorted(fer_folder.rglob("*.png")):
            pixels = np.asarray(Image.open(image_path))
            code = CSV_CODE_TO_CLASS.index(image_path.parent.name)
            writer.writerow([code, " ".join(map(str, pixels.ravel())), usage[image_path.stem.split("_")[0]]])
    return path


@pytest.fixture(scope="session")
def real_zip() -> Path:
    path = Path(os.environ.get("FER_DATA") or SHARED_DATA / "fer2013.zip")
    if not path.is_file():
        pytest.skip("the real FER-2013 zip is not here (set FER_DATA)")
    return path


@pytest.fixture(scope="session")
def raw_test_zip() -> Path:
    path = SHARED_DATA / "fer2013-test-raw.zip"
    if not path.is_file():
        pytest.skip("fer2013-test-raw.zip is not here")
    return path


@pytest.fixture(scope="session")
def untrained_weights(tmp_path_factory) -> Path:
    """Weights of an untrained resnet50_dropout: the right format, meaningless predictions."""
    import torch
    from fer.model import ModelConfig, build_model
    from fer.weights import save_weights
    torch.manual_seed(0)
    cfg = ModelConfig()
    return save_weights(build_model(cfg).eval(), fer_spec(cfg),
                        tmp_path_factory.mktemp("weights") / "untrained.safetensors", val_acc=0.0, val_split="public")


def fer_spec(cfg=None, **network):
    """The spec of a network built in a test for FER-2013's seven classes (ModelConfig() unless given)."""
    from fer.model import ModelConfig
    from fer.spec import ModelSpec
    return ModelSpec(cfg or ModelConfig(**network), CLASSES)


def fer_engine(model, cfg=None, **network):
    """A network built in a test, as an engine for FER-2013's classes."""
    from fer.inference import TorchEngine
    return TorchEngine(model, fer_spec(cfg, **network))
