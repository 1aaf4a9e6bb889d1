"""FER-2013 face crops: finding the data, reading every layout, one preprocessing, batched augmentation.

Every face crop — training, evaluation and prediction alike — goes through `preprocess_face`: gray,
48 x 48, histogram-equalized. The shared copy of FER-2013 is already equalized while real photos are not,
so equalizing everything puts both on the same footing (equalizing twice moves pixels ~2.6 grey levels).

Data sets are decoded once into a uint8 tensor N x 48 x 48 and cached as a plain .npz (no pickle).
"""
from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

CLASSES = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
IMAGE_SIZE = 48
# Equalized pixels are close to uniform on [0, 1]: mean 1/2, standard deviation 1/sqrt(12).
NORM_MEAN = 0.5
NORM_STD = 1 / math.sqrt(12)
# The Kaggle fer2013.csv codes: 0 angry, 1 disgust, 2 fear, 3 happy, 4 sad, 5 surprise, 6 neutral.
CSV_CODE_TO_CLASS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
CSV_USAGE_TO_GROUP = {"Training": "train", "PublicTest": "public", "PrivateTest": "private"}
SPLITS = ("train", "public", "private", "test", "all")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# A photo over this many pixels is refused before it is decoded (a 30000 x 30000 PNG bomb is 900 M).
MAX_IMAGE_PIXELS = 80_000_000
DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent / "dataset_1"
CACHE_VERSION = "2"  # bump when decoding or preprocessing changes, so old caches are not reused


class DataError(ValueError):
    """Bad input data; the message is one line a user can act on."""


# ---------------------------------------------------------------------------------------------------
# Single images


def open_image(source, name: str | None = None) -> Image.Image:
    """Open a photo from a path or bytes, upright (EXIF), refusing huge images before decoding them."""
    name = name or str(source)
    try:
        if isinstance(source, (bytes, bytearray)):
            if not source:
                raise DataError(f"cannot read '{name}': empty file")
            fp = io.BytesIO(source)
        else:
            path = Path(source)
            if not path.exists():
                raise DataError(f"cannot read '{name}': no such file")
            if path.is_dir():
                raise DataError(f"cannot read '{name}': is a folder, not an image")
            if path.stat().st_size == 0:
                raise DataError(f"cannot read '{name}': empty file")
            fp = path.open("rb")
        with fp, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # refuse, do not warn
            image = Image.open(fp)
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise DataError(f"cannot read '{name}': image too large "
                                f"({image.width} x {image.height} pixels, limit {MAX_IMAGE_PIXELS:,})")
            image.load()
        return ImageOps.exif_transpose(image)
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"cannot read '{name}': image too large ({_one_line(e)})") from None
    except UnidentifiedImageError as e:
        raise DataError(f"cannot read '{name}': not an image ({_one_line(e)})") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise DataError(f"cannot read '{name}': corrupt image ({_one_line(e)})") from None


def to_viewable(image: Image.Image) -> Image.Image:
    """Any PIL mode the way a viewer shows it: 16-bit and float scaled to 0-255 (mode L), transparent
    pixels over white (mode RGB); other modes as they are."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        low, high = float(pixels.min()), float(pixels.max())
        scaled = (pixels - low) * (255.0 / (high - low)) if high > low else np.zeros_like(pixels)
        return Image.fromarray(scaled.round().astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    return image


def to_gray(image: Image.Image) -> np.ndarray:
    """Any PIL mode (RGB, RGBA, P, CMYK, LA, I;16, I, F) as one uint8 gray channel."""
    return np.asarray(to_viewable(image).convert("L"), dtype=np.uint8)


def preprocess_face(gray: np.ndarray) -> np.ndarray:
    """The one preprocessing of a face crop: 48 x 48 gray uint8, histogram-equalized."""
    if gray.shape != (IMAGE_SIZE, IMAGE_SIZE):
        shrinking = gray.shape[0] > IMAGE_SIZE or gray.shape[1] > IMAGE_SIZE
        gray = cv2.resize(gray, (IMAGE_SIZE, IMAGE_SIZE),
                          interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return cv2.equalizeHist(np.ascontiguousarray(gray, dtype=np.uint8))


def read_face(source, name: str | None = None) -> np.ndarray:
    return preprocess_face(to_gray(open_image(source, name)))


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__


# ---------------------------------------------------------------------------------------------------
# Data sets: folder, zip (read in place) or Kaggle CSV


@dataclass
class FaceSet:
    """Preprocessed face crops of one split: images uint8 N x 48 x 48, labels int64 N (index in CLASSES)."""
    images: torch.Tensor
    labels: torch.Tensor
    source: str
    split: str

    def __len__(self) -> int:
        return len(self.labels)

    def class_counts(self) -> dict[str, int]:
        counts = torch.bincount(self.labels, minlength=len(CLASSES)).tolist()
        return dict(zip(CLASSES, counts))

    def subset(self, n: int | None, seed: int = 0) -> "FaceSet":
        """A random n-image subset (the same for the same seed), for smoke runs."""
        if n is None or n >= len(self):
            return self
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n]
        return FaceSet(self.images[order], self.labels[order], self.source, self.split)


def resolve_data_source(source: str | os.PathLike | None = None) -> Path:
    """The data to use: the argument, else $FER_DATA, else dataset_1/ (the zip in it, if there is one)."""
    if source is None:
        source = os.environ.get("FER_DATA") or DEFAULT_DATA_DIR
        path = Path(source)
        if path == DEFAULT_DATA_DIR and path.is_dir():
            zips = sorted(path.glob("*.zip"))
            has_layout = any((path / d).is_dir() for d in ("train", "test"))
            if zips and not has_layout:
                path = zips[0]
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"no data at '{path}': pass a folder, zip or CSV, or set FER_DATA "
                        f"(see dataset_1/README.md)")
    return path


def load_split(source=None, split: str | None = None, cache: bool = True) -> FaceSet:
    """Load one split of a FER-2013 source; a plain <class>/ folder has no splits and gives them all.

    split: train, public (PublicTest), private (PrivateTest), test (both), all; None is public for
    FER-2013 layouts and all for a plain class folder.
    """
    if split is not None and split not in SPLITS:
        raise DataError(f"unknown split '{split}' (expected one of {', '.join(SPLITS)})")
    path = resolve_data_source(source)
    images, labels, groups = _load_all(path, cache)
    has_splits = bool(set(np.unique(groups).tolist()) - {"all"})
    if split is None:
        split = "public" if has_splits else "all"
    if split == "all":
        keep = np.ones(len(labels), dtype=bool)
    elif not has_splits:
        raise DataError(f"'{path}' is a plain class folder without splits; use --split all")
    elif split == "test":
        keep = np.isin(groups, ["public", "private"])
    else:
        keep = groups == split
    if not keep.any():
        raise DataError(f"no '{split}' images in '{path}'")
    return FaceSet(torch.from_numpy(images[keep]), torch.from_numpy(labels[keep].astype(np.int64)),
                   str(path), split)


def _load_all(path: Path, cache: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cache_file = _cache_file(path) if cache else None
    if cache_file is not None and cache_file.exists():
        try:
            with np.load(cache_file, allow_pickle=False) as saved:
                return saved["images"], saved["labels"], saved["groups"]
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache is rebuilt below
    if path.is_dir():
        images, labels, groups = _read_members(_folder_members(path), str(path))
    elif path.suffix.lower() == ".zip":
        images, labels, groups = _read_zip(path)
    elif path.suffix.lower() == ".csv":
        images, labels, groups = _read_csv(path)
    else:
        raise DataError(f"cannot read data from '{path}': expected a folder, a .zip or a .csv")
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, images=images, labels=labels, groups=groups)
        os.replace(tmp, cache_file)
    return images, labels, groups


def _cache_file(path: Path) -> Path:
    stat = path.stat()
    if path.is_dir():  # a folder's identity: its files' names, sizes and times
        entries = sorted(f"{p.relative_to(path)}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
                         for p in path.rglob("*") if p.is_file())
        identity = "\n".join(entries)
    else:
        identity = f"{stat.st_size}:{stat.st_mtime_ns}"
    key = hashlib.sha256(f"{CACHE_VERSION}\n{path.resolve()}\n{identity}".encode()).hexdigest()[:16]
    root = Path(os.environ.get("FER_CACHE", Path.home() / ".cache" / "fer"))
    return root / f"{path.stem}-{key}.npz"


def _member_group_and_class(relpath: str, where: str) -> tuple[str, str] | None:
    """Where a file of a data set belongs: (group, class), None for a file that is not an image.

    FER-2013 layout: [prefix/]train/<class>/*, [prefix/]test/<class>/{PublicTest,PrivateTest}_*.
    Plain layout: [prefix/]<class>/*.
    """
    parts = [p for p in relpath.replace("\\", "/").split("/") if p]
    if not parts or any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return None
    if not parts[-1].lower().endswith(IMAGE_EXTENSIONS):
        return None
    if len(parts) < 2:
        raise DataError(f"'{where}' has images outside class folders ('{relpath}'): expected "
                        f"train/<class>/, test/<class>/ or <class>/ with classes {', '.join(CLASSES)}")
    class_name = parts[-2].lower()
    if class_name not in CLASSES:
        raise DataError(f"'{where}' has an unknown class folder '{'/'.join(parts[:-1])}' "
                        f"(expected one of {', '.join(CLASSES)})")
    parent = parts[-3].lower() if len(parts) >= 3 else ""
    if parent == "train":
        return "train", class_name
    if parent == "test":
        stem = parts[-1]
        if stem.startswith("PublicTest"):
            return "public", class_name
        if stem.startswith("PrivateTest"):
            return "private", class_name
        return "test", class_name
    return "all", class_name


def _folder_members(root: Path):
    for path in sorted(root.rglob("*")):
        if path.is_file():
            relpath = str(path.relative_to(root))
            placed = _member_group_and_class(relpath, str(root))
            if placed is not None:
                yield relpath, placed, path.read_bytes


def _read_zip(path: Path):
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"cannot read '{path}': not a zip file ({_one_line(e)})") from None
    with archive:
        members = []
        for info in archive.infolist():
            if info.is_dir():
                continue
            placed = _member_group_and_class(info.filename, str(path))
            if placed is not None:
                members.append((info.filename, placed, lambda info=info: archive.read(info)))
        return _read_members(members, str(path))


def _read_members(members, where: str):
    images, labels, groups = [], [], []
    for relpath, (group, class_name), read_bytes in members:
        images.append(read_face(read_bytes(), f"{where}/{relpath}"))
        labels.append(CLASSES.index(class_name))
        groups.append(group)
    if not images:
        raise DataError(f"no face images in '{where}': expected train/<class>/, test/<class>/ or <class>/ "
                        f"folders of .jpg/.png with classes {', '.join(CLASSES)}")
    return np.stack(images), np.array(labels, dtype=np.int64), np.array(groups)


def _read_csv(path: Path):
    images, labels, groups = [], [], []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"emotion", "pixels"} <= set(reader.fieldnames):
            raise DataError(f"'{path}' is not a FER-2013 CSV: expected the columns emotion,pixels,Usage")
        for line, row in enumerate(reader, start=2):
            try:
                code = int(row["emotion"])
                pixels = np.array(row["pixels"].split(), dtype=np.int64)
                if not 0 <= code < len(CSV_CODE_TO_CLASS):
                    raise ValueError(f"emotion code {code} is not 0-6")
                if pixels.size != IMAGE_SIZE * IMAGE_SIZE or pixels.min() < 0 or pixels.max() > 255:
                    raise ValueError(f"expected {IMAGE_SIZE * IMAGE_SIZE} pixels in 0-255, got {pixels.size}")
            except (ValueError, TypeError, AttributeError) as e:
                raise DataError(f"'{path}' line {line}: bad row ({_one_line(e)})") from None
            images.append(preprocess_face(pixels.astype(np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE)))
            labels.append(CLASSES.index(CSV_CODE_TO_CLASS[code]))
            groups.append(CSV_USAGE_TO_GROUP.get((row.get("Usage") or "").strip(), "all"))
    if not images:
        raise DataError(f"'{path}' has no rows")
    return np.stack(images), np.array(labels, dtype=np.int64), np.array(groups)


# ---------------------------------------------------------------------------------------------------
# Tensors for the model


def normalize(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 N x 48 x 48 (any device) -> float N x 1 x 48 x 48, normalized like training."""
    return ((images_u8.float() / 255.0 - NORM_MEAN) / NORM_STD).unsqueeze(1)


@dataclass(frozen=True)
class AugmentConfig:
    """Train-time augmentation; each part can be switched off to measure what it adds."""
    flip: bool = True
    max_rotate_deg: float = 10.0
    max_scale: float = 0.1       # zoom in or out by up to 10 %
    max_translate: float = 0.1   # shift by up to 10 % of the side
    erase_prob: float = 0.25     # random erasing (Zhong et al. 2017) of one rectangle
    erase_max_area: float = 0.25


def augment(images: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Random flip + affine + erasing on a normalized batch N x 1 x H x W, each image its own draw.

    Written as batched tensor ops (not torchvision.transforms, which draw one set of parameters per call)
    so that a whole batch is augmented in one go on the CPU or the GPU, without DataLoader workers.
    """
    n, _, h, w = images.shape
    device = images.device

    def uniform(low, high, *shape):
        return torch.rand(n, *shape, generator=generator, device=device) * (high - low) + low

    angle = uniform(-1, 1) * math.radians(cfg.max_rotate_deg)
    scale = 1 + uniform(-1, 1) * cfg.max_scale
    flip = (torch.rand(n, generator=generator, device=device) < 0.5).float() * 2 - 1 if cfg.flip \
        else torch.ones(n, device=device)
    shift = uniform(-1, 1, 2) * cfg.max_translate * 2  # affine_grid coordinates span [-1, 1]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, shift[:, 0]], 1),
                         torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1)
    grid = torch.nn.functional.affine_grid(theta, list(images.shape), align_corners=False)
    out = torch.nn.functional.grid_sample(images, grid, mode="bilinear", padding_mode="border",
                                          align_corners=False)
    if cfg.erase_prob > 0:
        area = uniform(0.02, cfg.erase_max_area)
        aspect = torch.exp(uniform(math.log(0.3), math.log(3.3)))
        eh = (torch.sqrt(area * aspect) * h).clamp(1, h)
        ew = (torch.sqrt(area / aspect) * w).clamp(1, w)
        top = uniform(0, 1) * (h - eh)
        left = uniform(0, 1) * (w - ew)
        rows = torch.arange(h, device=device).view(1, h, 1)
        cols = torch.arange(w, device=device).view(1, 1, w)
        inside = ((rows >= top.view(n, 1, 1)) & (rows < (top + eh).view(n, 1, 1)) &
                  (cols >= left.view(n, 1, 1)) & (cols < (left + ew).view(n, 1, 1)))
        chosen = (torch.rand(n, generator=generator, device=device) < cfg.erase_prob).view(n, 1, 1)
        out = out.masked_fill((inside & chosen).unsqueeze(1), 0.0)  # 0 is the mean after normalizing
    return out
