"""FER-2013 data sets: finding the data, reading every layout (folder, zip read in place, Kaggle CSV),
and caching the decoded faces.

Every face goes through `fer.images.read_face` (the one preprocessing). A data set is decoded once into a
uint8 tensor N x 48 x 48 and cached as a plain .npz (no pickle) under fer.paths.cache_dir().
"""
from __future__ import annotations

import csv
import hashlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import DataError, one_line, quote
from .images import PHOTO_SUFFIXES, read_face
from .paths import DATASET_DIR, cache_dir
from .preprocess import CLASSES, IMAGE_SIZE, preprocess_face
from .runtime import atomic_write

# The Kaggle fer2013.csv codes: 0 angry, 1 disgust, 2 fear, 3 happy, 4 sad, 5 surprise, 6 neutral.
CSV_CODE_TO_CLASS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
CSV_USAGE_TO_GROUP = {"Training": "train", "PublicTest": "public", "PrivateTest": "private"}
SPLITS = ("train", "public", "private", "test", "all")
# A face crop is small (FER-2013's are under 3 KB): a zip member that claims or turns out to be larger than
# this is refused before it fills the memory (a 294 KB zip bomb can inflate to gigabytes).
MAX_MEMBER_BYTES = 20_000_000
CACHE_VERSION = "3"  # bump when decoding or preprocessing changes, so old caches are not reused
NO_DATA_HINT = ("give the data's path (train's --data, the DATA argument of evaluate and calibrate, a notebook's "
                "data_dir), set FER_DATA, or put FER-2013 in dataset_1/ (see dataset_1/README.md)")


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
        """A random n-image subset (the same for the same seed), for quick runs."""
        if n is None or n >= len(self):
            return self
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n]
        return FaceSet(self.images[order], self.labels[order], self.source, self.split)


def resolve_data_source(source: str | os.PathLike | None = None) -> Path:
    """The data to use: the argument, else $FER_DATA, else dataset_1/ (the zip in it, if there is one)."""
    if source is None or str(source) == "":
        source = os.environ.get("FER_DATA") or DATASET_DIR
        path = Path(source)
        if path == DATASET_DIR:
            entries = [p for p in path.iterdir() if p.name != "README.md"] if path.is_dir() else []
            if not entries:
                raise DataError(f"no data set found: {NO_DATA_HINT}")
            zips = sorted(path.glob("*.zip"))
            if zips and not any((path / d).is_dir() for d in ("train", "test")):
                path = zips[0]
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"no data at {quote(path)}: {NO_DATA_HINT}")
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
        raise DataError(f"{quote(path)} is a plain <class>/ folder without splits: the '{split}' split needs "
                        f"FER-2013's layout (train/<class>/Training_*, test/<class>/PublicTest_* and PrivateTest_*)")
    elif split == "test":
        keep = np.isin(groups, ["public", "private"])
    else:
        keep = groups == split
    if not keep.any():
        raise DataError(f"no '{split}' images in {quote(path)}")
    return FaceSet(torch.from_numpy(images[keep]), torch.from_numpy(labels[keep].astype(np.int64)),
                   str(path), split)


def _load_all(path: Path, cache: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cache_file = _cache_file(path) if cache else None
    if cache_file is not None and cache_file.exists():
        try:
            with np.load(cache_file, allow_pickle=False) as saved:
                return saved["images"], saved["labels"], saved["groups"]
        except Exception:  # noqa: BLE001 - a damaged cache of any kind is rebuilt below
            pass
    if path.is_dir():
        images, labels, groups = _read_members(_folder_members(path), path)
    elif path.suffix.lower() == ".zip":
        images, labels, groups = _read_zip(path)
    elif path.suffix.lower() == ".csv":
        images, labels, groups = _read_csv(path)
    else:
        raise DataError(f"cannot read data from {quote(path)}: expected a folder, a .zip or a .csv")
    if cache_file is not None:
        with atomic_write(cache_file) as tmp, open(tmp, "wb") as f:
            np.savez(f, images=images, labels=labels, groups=groups)
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
    return cache_dir() / f"{path.stem}-{key}.npz"


def _member_group_and_class(relpath: str, where: Path) -> tuple[str, str] | None:
    """Where a file of a data set belongs: (group, class), None for a file that is not an image.

    FER-2013 layout: [prefix/]train/<class>/*, [prefix/]test/<class>/{PublicTest,PrivateTest}_*.
    Plain layout: [prefix/]<class>/*.
    """
    parts = [p for p in relpath.replace("\\", "/").split("/") if p]
    if not parts or any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return None
    if not parts[-1].lower().endswith(PHOTO_SUFFIXES):
        return None
    if len(parts) < 2:
        raise DataError(f"{quote(where)} has images outside class folders ({quote(relpath)}): expected "
                        f"train/<class>/, test/<class>/ or <class>/ with classes {', '.join(CLASSES)}")
    class_name = parts[-2].lower()
    if class_name not in CLASSES:
        raise DataError(f"{quote(where)} has an unknown class folder {quote('/'.join(parts[:-1]))} "
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
            placed = _member_group_and_class(relpath, root)
            if placed is not None:
                yield relpath, placed, lambda path=path: _read_file(path)


def _read_file(path: Path) -> bytes:
    size = path.stat().st_size
    if size > MAX_MEMBER_BYTES:
        raise DataError(f"cannot read {quote(path)}: {size:,} bytes is too large for a face crop "
                        f"(limit {MAX_MEMBER_BYTES:,})")
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {quote(path)}: {one_line(e)}") from None


def _read_zip(path: Path):
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise DataError(f"cannot read {quote(path)}: not a zip file ({one_line(e)})") from None
    with archive:
        members = []
        for info in archive.infolist():
            if info.is_dir():
                continue
            placed = _member_group_and_class(info.filename, path)
            if placed is not None:
                members.append((info.filename, placed, lambda info=info: _read_zip_member(archive, info, path)))
        return _read_members(members, path)


def _read_zip_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> bytes:
    where = quote(f"{path}/{info.filename}")
    if info.file_size > MAX_MEMBER_BYTES:
        raise DataError(f"cannot read {where}: {info.file_size:,} bytes is too large for a face crop "
                        f"(limit {MAX_MEMBER_BYTES:,}; a zip bomb?)")
    try:
        with archive.open(info) as member:
            data = member.read(MAX_MEMBER_BYTES + 1)  # the header's size may lie: never inflate past the cap
    except NotImplementedError as e:
        raise DataError(f"cannot read {where}: unsupported compression ({one_line(e)})") from None
    except RuntimeError as e:  # zipfile's way of saying "encrypted, password required"
        raise DataError(f"cannot read {where}: {one_line(e)}") from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise DataError(f"cannot read {where}: damaged zip member ({one_line(e)})") from None
    if len(data) > MAX_MEMBER_BYTES:
        raise DataError(f"cannot read {where}: inflates past {MAX_MEMBER_BYTES:,} bytes (a zip bomb?)")
    return data


def _read_members(members, where: Path):
    images, labels, groups = [], [], []
    for relpath, (group, class_name), read_bytes in members:
        images.append(read_face(read_bytes(), f"{where}/{relpath}"))
        labels.append(CLASSES.index(class_name))
        groups.append(group)
    if not images:
        raise DataError(f"no face images in {quote(where)}: expected train/<class>/, test/<class>/ or <class>/ "
                        f"folders of .jpg/.png with classes {', '.join(CLASSES)}")
    return np.stack(images), np.array(labels, dtype=np.int64), np.array(groups)


def _read_csv(path: Path):
    images, labels, groups = [], [], []
    line = 1
    try:
        # utf-8-sig: Excel writes a byte-order mark before the header.
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"emotion", "pixels"} <= {n.strip() for n in reader.fieldnames}:
                raise DataError(f"{quote(path)} is not a FER-2013 CSV: expected the columns emotion,pixels,Usage")
            reader.fieldnames = [n.strip() for n in reader.fieldnames]
            for line, row in enumerate(reader, start=2):
                images.append(preprocess_face(_csv_pixels(row, path, line)))
                labels.append(CLASSES.index(CSV_CODE_TO_CLASS[int(row["emotion"])]))
                groups.append(CSV_USAGE_TO_GROUP.get((row.get("Usage") or "").strip(), "all"))
    except UnicodeDecodeError as e:
        raise DataError(f"{quote(path)} is not UTF-8 text near byte {e.start} (save the CSV as UTF-8)") from None
    except csv.Error as e:
        raise DataError(f"{quote(path)} line {line}: malformed CSV ({one_line(e)})") from None
    if not images:
        raise DataError(f"{quote(path)} has no rows")
    return np.stack(images), np.array(labels, dtype=np.int64), np.array(groups)


def _csv_pixels(row: dict, path: Path, line: int) -> np.ndarray:
    try:
        code = int(row["emotion"])
        pixels = np.array((row["pixels"] or "").split(), dtype=np.int64)
        if not 0 <= code < len(CSV_CODE_TO_CLASS):
            raise ValueError(f"emotion code {code} is not 0-6")
        if pixels.size != IMAGE_SIZE * IMAGE_SIZE or pixels.min() < 0 or pixels.max() > 255:
            raise ValueError(f"expected {IMAGE_SIZE * IMAGE_SIZE} pixels in 0-255, got {pixels.size}")
    except (ValueError, TypeError, AttributeError, OverflowError) as e:
        raise DataError(f"{quote(path)} line {line}: bad row ({one_line(e)})") from None
    return pixels.astype(np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE)
