"""Face data sets: finding the data, reading every layout, and caching the decoded faces.

Layouts (a folder, a zip of one read in place, or a CSV):
  FER-2013 folders   train/<class>/*, test/<class>/{PublicTest,PrivateTest}_* (splits train, public, private)
  split folders      <split>/<class>/* with split train, val (or valid, validation), test (or testing)
  class folders      <class>/* (one split, "all")
  Kaggle CSV         fer2013.csv: emotion, pixels, Usage
  FER+               fer2013new.csv beside fer2013.csv (Barsoum et al. 2016): 8 classes, each face's label the
                     majority of its 10 annotators' votes and the votes kept (FaceSet.votes) for training on
                     their distribution; faces whose majority is "unknown" or "not a face" left out
  RAF-DB basic       list_patition_label.txt (labels 1-7) and the aligned images (Image/aligned/*_aligned.jpg)

The classes come from the data: the FER-2013 order when every class is one of FER-2013's (a folder of five of
its classes keeps that order), the order of the layout's own list for FER+ and RAF-DB, else the folder names
sorted. Every face goes through `fer.images.read_face` (the one preprocessing), in the format the model reads
(`fer.preprocess.FaceFormat`: 48 x 48 gray unless a run says otherwise). A data set is decoded once per format
into a uint8 tensor N x H x W (gray) or N x H x W x 3 (RGB) and cached as a plain .npz (no pickle) under
fer.paths.cache_dir().
"""
from __future__ import annotations

import csv
import difflib
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
from .preprocess import CLASSES, FaceFormat, preprocess_face
from .runtime import atomic_write

# The Kaggle fer2013.csv codes: 0 angry, 1 disgust, 2 fear, 3 happy, 4 sad, 5 surprise, 6 neutral.
CSV_CODE_TO_CLASS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
CSV_USAGE_TO_GROUP = {"Training": "train", "PublicTest": "public", "PrivateTest": "private"}
CSV_SIDE = 48  # the Kaggle CSV's faces: 48 x 48 gray pixels, row by row
SPLITS = ("train", "val", "public", "private", "test", "all")
# The top folders of a split layout, and the split each one holds.
SPLIT_FOLDERS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "test": "test", "testing": "test"}
FERPLUS_CLASSES = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")
FERPLUS_DROPPED = ("unknown", "NF")  # a face whose majority vote is one of these is left out
RAFDB_CLASSES = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")  # labels 1 to 7
# A class folder this close to one of FER-2013's names without being it is taken for a typo ("angery").
TYPO_SIMILARITY = 0.9
# A face crop is small (FER-2013's are under 3 KB): a zip member that claims or turns out to be larger than
# this is refused before it fills the memory (a 294 KB zip bomb can inflate to gigabytes).
MAX_MEMBER_BYTES = 20_000_000
CACHE_VERSION = "4"  # bump when decoding or preprocessing changes, so old caches are not reused
NO_DATA_HINT = ("give the data's path (train's --data, the DATA argument of evaluate and calibrate, a notebook's "
                "data_dir), set FER_DATA, or put FER-2013 in dataset_1/ (see dataset_1/README.md)")


@dataclass
class FaceSet:
    """Preprocessed face crops of one split: images uint8 N x H x W (gray) or N x H x W x 3 (RGB), labels
    int64 N (index in `classes`), for FER+ the annotators' votes, float N x classes (each row sums to 1), and
    in a run that distills, its teacher's probabilities (fer.distill), float N x classes."""
    images: torch.Tensor
    labels: torch.Tensor
    source: str
    split: str
    classes: tuple[str, ...] = CLASSES
    votes: torch.Tensor | None = None
    teacher: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def face(self) -> FaceFormat:
        """The format the faces were read in."""
        return FaceFormat(self.images.shape[1], 1 if self.images.dim() == 3 else self.images.shape[3])

    def class_counts(self) -> dict[str, int]:
        counts = torch.bincount(self.labels, minlength=len(self.classes)).tolist()
        return dict(zip(self.classes, counts))

    def select(self, index: torch.Tensor, split: str | None = None) -> "FaceSet":
        return FaceSet(self.images[index], self.labels[index], self.source, split or self.split, self.classes,
                       *(None if t is None else t[index] for t in (self.votes, self.teacher)))

    def subset(self, n: int | None, seed: int = 0) -> "FaceSet":
        """A random n-image subset (the same for the same seed), for quick runs."""
        if n is None or n >= len(self):
            return self
        return self.select(torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n])

    def split_off(self, fraction: float, seed: int = 0) -> tuple["FaceSet", "FaceSet"]:
        """(the rest, a held-out part of about `fraction` of each class): a validation set carved out of a
        training set, stratified and the same for the same seed."""
        generator = torch.Generator().manual_seed(seed)
        held = []
        for k in range(len(self.classes)):
            members = torch.nonzero(self.labels == k).flatten()
            members = members[torch.randperm(len(members), generator=generator)]
            held.append(members[:round(fraction * len(members))])
        held = torch.cat(held).sort().values
        keep = torch.ones(len(self), dtype=torch.bool)
        keep[held] = False
        return self.select(torch.nonzero(keep).flatten()), self.select(held, f"{self.split}[{fraction:g}]")

    def in_classes(self, classes) -> "FaceSet":
        """The same faces labelled by their index in `classes` (a model's): DataError naming a class of the
        data that `classes` lack."""
        classes = tuple(classes)
        if classes == self.classes:
            return self
        missing = [c for c in self.classes if c not in classes]
        if missing:
            raise DataError(f"{quote(self.source)} has faces of class {missing[0]!r}, which the model does not know "
                            f"(its classes: {', '.join(classes)})")
        mapping = torch.tensor([classes.index(c) for c in self.classes])

        def remapped(per_class):
            if per_class is None:
                return None
            out = torch.zeros(len(self), len(classes))
            out[:, mapping] = per_class
            return out
        return FaceSet(self.images, mapping[self.labels], self.source, self.split, classes, remapped(self.votes),
                       remapped(self.teacher))


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


def load_split(source=None, split: str | None = None, cache: bool = True,
               face: FaceFormat = FaceFormat()) -> FaceSet:
    """Load one split of a data set (any layout of the module's docstring), its faces in the format `face`.

    split: train, val, public (FER-2013's PublicTest), private (PrivateTest), test (a split layout's test/, or
    FER-2013's PublicTest and PrivateTest together), all; None: the layout's own selection split (public for
    FER-2013, val for a split layout that has one), else all.
    """
    if split is not None and split not in SPLITS:
        raise DataError(f"unknown split '{split}' (expected one of {', '.join(SPLITS)})")
    path = resolve_data_source(source)
    images, labels, groups, classes, votes = _load_all(path, cache, face)
    present = set(np.unique(groups).tolist()) - {"all"}
    if split is None:
        split = "public" if "public" in present else "val" if "val" in present else "all"
    if split == "all":
        keep = np.ones(len(labels), dtype=bool)
    elif not present:
        raise DataError(f"{quote(path)} is a plain <class>/ folder without splits: the '{split}' split needs a "
                        f"layout with splits (train/<class>/, val/<class>/, test/<class>/; or FER-2013's)")
    elif split == "test":
        keep = np.isin(groups, ["public", "private", "test"])
    else:
        keep = groups == split
    if not keep.any():
        raise DataError(f"no '{split}' images in {quote(path)} (it has {', '.join(sorted(present))})")
    return FaceSet(torch.from_numpy(images[keep]), torch.from_numpy(labels[keep].astype(np.int64)), str(path), split,
                   classes, None if votes is None else torch.from_numpy(votes[keep]))


def splits_of(source=None, cache: bool = True, face: FaceFormat = FaceFormat()) -> set[str]:
    """The splits a data set has (empty for plain class folders); `face`: the format it will be read in (the
    data is decoded, and cached, in it)."""
    return set(np.unique(_load_all(resolve_data_source(source), cache, face)[2]).tolist()) - {"all"}


SPLIT_NAMES = {"public": "PublicTest", "private": "PrivateTest", "train": "Training"}


def split_name(split: str) -> str:
    """A split as people call it: FER-2013's PublicTest and PrivateTest, else its own name."""
    return SPLIT_NAMES.get(split, split)


def _load_all(path: Path, cache: bool, face: FaceFormat):
    """images, labels, groups, classes and votes (None but for FER+) of a whole data set in the format `face`,
    from the cache if it is there."""
    cache_file = _cache_file(path, face) if cache else None
    if cache_file is not None and cache_file.exists():
        try:
            with np.load(cache_file, allow_pickle=False) as saved:
                votes = saved["votes"] if saved["votes"].size else None
                return saved["images"], saved["labels"], saved["groups"], tuple(saved["classes"].tolist()), votes
        except Exception:  # noqa: BLE001 - a damaged cache of any kind is rebuilt below
            pass
    classes, votes = None, None
    if path.is_dir() and _rafdb_list(path) is not None:
        images, names, groups, classes = _read_rafdb(path, face)
    elif path.is_dir() and (path / "fer2013new.csv").is_file():
        images, names, groups, classes, votes = _read_ferplus(path / "fer2013new.csv", face)
    elif path.is_dir():
        images, names, groups = _read_members(_folder_members(path), path, face)
    elif path.suffix.lower() == ".zip":
        images, names, groups = _read_zip(path, face)
    elif path.name.lower() == "fer2013new.csv":
        images, names, groups, classes, votes = _read_ferplus(path, face)
    elif path.suffix.lower() == ".csv":
        images, names, groups = _read_csv(path, face)
        classes = CLASSES  # the format's seven codes, whichever of them the rows use
    else:
        raise DataError(f"cannot read data from {quote(path)}: expected a folder, a .zip or a .csv")
    classes = classes or order_classes(names)
    labels = np.array([classes.index(n) for n in names], dtype=np.int64)
    if cache_file is not None:
        with atomic_write(cache_file) as tmp, open(tmp, "wb") as f:
            np.savez(f, images=images, labels=labels, groups=groups, classes=np.array(classes),
                     votes=votes if votes is not None else np.zeros((0, 0), np.float32))
    return images, labels, groups, classes, votes


def order_classes(names) -> tuple[str, ...]:
    """The classes of a data set from its faces' class names: FER-2013's order when all are FER-2013's,
    else sorted."""
    found = set(np.unique(names).tolist())
    if found <= set(CLASSES):
        return tuple(c for c in CLASSES if c in found)
    return tuple(sorted(found))


def _cache_file(path: Path, face: FaceFormat) -> Path:
    stat = path.stat()
    if path.is_dir():  # a folder's identity: its files' names, sizes and times
        entries = sorted(f"{p.relative_to(path)}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
                         for p in path.rglob("*") if p.is_file())
        identity = "\n".join(entries)
    else:
        identity = f"{stat.st_size}:{stat.st_mtime_ns}"
    key = hashlib.sha256(f"{CACHE_VERSION}\n{path.resolve()}\n{identity}".encode()).hexdigest()[:16]
    suffix = "" if face == FaceFormat() else f"-{face.size}{'rgb' if face.channels == 3 else 'gray'}"
    return cache_dir() / f"{path.stem}-{key}{suffix}.npz"


def _member_group_and_class(relpath: str, where: Path) -> tuple[str, str] | None:
    """Where a file of a data set belongs: (group, class), None for a file that is not an image.

    FER-2013 layout: [prefix/]train/<class>/*, [prefix/]test/<class>/{PublicTest,PrivateTest}_*.
    Split layout: [prefix/]<split>/<class>/* (SPLIT_FOLDERS). Plain layout: [prefix/]<class>/*.
    """
    parts = [p for p in relpath.replace("\\", "/").split("/") if p]
    if not parts or any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return None
    if not parts[-1].lower().endswith(PHOTO_SUFFIXES):
        return None
    if len(parts) < 2:
        raise DataError(f"{quote(where)} has images outside class folders ({quote(relpath)}): expected "
                        f"<class>/ folders, alone or in train/, val/ and test/")
    class_name = parts[-2].lower()
    if class_name not in CLASSES:
        close = difflib.get_close_matches(class_name, CLASSES, n=1, cutoff=TYPO_SIMILARITY)
        if close:
            raise DataError(f"{quote(where)} has an unknown class folder {quote('/'.join(parts[:-1]))} (did you "
                            f"mean {close[0]!r}? rename the folder)")
    split = SPLIT_FOLDERS.get(parts[-3].lower()) if len(parts) >= 3 else None
    if split == "test":
        stem = parts[-1]
        if stem.startswith("PublicTest"):
            return "public", class_name
        if stem.startswith("PrivateTest"):
            return "private", class_name
    return split or "all", class_name


def check_no_empty_class_folder(folders, images, where: Path) -> None:
    """DataError for a class folder without images: a folder beside class folders that hold images (relative
    paths, "/"-separated) whose class would otherwise silently vanish from the data set. A folder counts as a
    class folder where it stands in a split folder (train/, test/, ...) or bears one of FER-2013's names; any
    other empty folder beside the classes (a run's checkpoints/, say) is not one."""
    def skipped(relpath):  # as _member_group_and_class skips them
        return any(part.startswith(".") or part == "__MACOSX" for part in relpath.split("/"))

    class_folders = {image.rpartition("/")[0] for image in images if not skipped(image)}
    parents = {folder.rpartition("/")[0] for folder in class_folders}
    for folder in sorted(folders - class_folders):
        parent, _, name = folder.rpartition("/")
        looks_like_a_class = parent.rpartition("/")[2].lower() in SPLIT_FOLDERS or name.lower() in CLASSES
        if parent in parents and looks_like_a_class and not skipped(folder) \
                and not any(c.startswith(folder + "/") for c in class_folders):
            raise DataError(f"{quote(where)}: the class folder {quote(folder)} holds no images (add its faces or "
                            f"remove it)")


def _folder_members(root: Path):
    paths = sorted(root.rglob("*"))  # one walk of the tree, for the check and the members
    check_no_empty_class_folder({p.relative_to(root).as_posix() for p in paths if p.is_dir()},
                                [p.relative_to(root).as_posix() for p in paths
                                 if p.name.lower().endswith(PHOTO_SUFFIXES) and p.is_file()], root)
    for path in paths:
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


def _read_zip(path: Path, face: FaceFormat):
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise DataError(f"cannot read {quote(path)}: not a zip file ({one_line(e)})") from None
    with archive:
        names = [info.filename.rstrip("/") for info in archive.infolist()]
        folders = {n for info, n in zip(archive.infolist(), names) if info.is_dir()}
        folders |= {n.rsplit("/", k)[0] for n in names for k in range(1, n.count("/") + 1)}  # implied by paths
        check_no_empty_class_folder(folders, [n for n in names if n.lower().endswith(PHOTO_SUFFIXES)], path)
        members = []
        for info in archive.infolist():
            if info.is_dir():
                continue
            placed = _member_group_and_class(info.filename, path)
            if placed is not None:
                members.append((info.filename, placed, lambda info=info: _read_zip_member(archive, info, path)))
        return _read_members(members, path, face)


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


def _read_members(members, where: Path, face: FaceFormat):
    images, names, groups = [], [], []
    for relpath, (group, class_name), read_bytes in members:
        images.append(read_face(read_bytes(), f"{where}/{relpath}", face))
        names.append(class_name)
        groups.append(group)
    if not images:
        raise DataError(f"no face images in {quote(where)}: expected <class>/ folders of .jpg/.png, alone or in "
                        f"train/, val/ and test/")
    return np.stack(images), np.array(names), np.array(groups)


def _read_csv(path: Path, face: FaceFormat):
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
                images.append(preprocess_face(_csv_pixels(row, path, line), face))
                labels.append(CSV_CODE_TO_CLASS[int(row["emotion"])])
                groups.append(CSV_USAGE_TO_GROUP.get((row.get("Usage") or "").strip(), "all"))
    except UnicodeDecodeError as e:
        raise DataError(f"{quote(path)} is not UTF-8 text near byte {e.start} (save the CSV as UTF-8)") from None
    except csv.Error as e:
        raise DataError(f"{quote(path)} line {line}: malformed CSV ({one_line(e)})") from None
    if not images:
        raise DataError(f"{quote(path)} has no rows")
    return np.stack(images), np.array(labels), np.array(groups)


def _csv_pixels(row: dict, path: Path, line: int) -> np.ndarray:
    try:
        code = int(row["emotion"])
        pixels = np.array((row["pixels"] or "").split(), dtype=np.int64)
        if not 0 <= code < len(CSV_CODE_TO_CLASS):
            raise ValueError(f"emotion code {code} is not 0-6")
        if pixels.size != CSV_SIDE * CSV_SIDE or pixels.min() < 0 or pixels.max() > 255:
            raise ValueError(f"expected {CSV_SIDE * CSV_SIDE} pixels in 0-255, got {pixels.size}")
    except (ValueError, TypeError, AttributeError, OverflowError) as e:
        raise DataError(f"{quote(path)} line {line}: bad row ({one_line(e)})") from None
    return pixels.astype(np.uint8).reshape(CSV_SIDE, CSV_SIDE)


def _read_ferplus(path: Path, face: FaceFormat):
    """FER+ (fer2013new.csv, row for row the faces of fer2013.csv beside it): the majority label of the 8
    emotions, the votes as a distribution; a face whose "unknown" or "not a face" votes are at least its most
    voted emotion's is left out."""
    pixels_csv = path.with_name("fer2013.csv")
    if not pixels_csv.is_file():
        raise DataError(f"{quote(path)} is FER+'s labels; its faces are in fer2013.csv, which is not beside it")
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            votes_rows = list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{quote(path)} is not a readable CSV ({one_line(e)})") from None
    wanted = (*FERPLUS_CLASSES, *FERPLUS_DROPPED)
    if not votes_rows or not set(wanted) <= set(votes_rows[0]):
        raise DataError(f"{quote(path)} is not FER+'s fer2013new.csv: expected the columns {', '.join(wanted)}")
    pixels, _, groups = _read_csv(pixels_csv, face)
    if len(votes_rows) != len(pixels):
        raise DataError(f"{quote(path)} has {len(votes_rows)} rows and {quote(pixels_csv)} {len(pixels)}: they must "
                        f"be the same faces, row for row")
    keep, names, votes = [], [], []
    for i, row in enumerate(votes_rows):
        if None in row or None in row.values():  # csv.DictReader's marks of a row longer or shorter than the header
            raise DataError(f"{quote(path)} line {i + 2}: {len([v for v in row.values() if v is not None])} fields, "
                            f"the header has {len(votes_rows[0])}")
        try:
            counts = np.array([float(row[c] or 0) for c in wanted])
            if not np.isfinite(counts).all() or counts.min() < 0:
                raise ValueError
        except ValueError:
            raise DataError(f"{quote(path)} line {i + 2}: vote counts must be numbers >= 0") from None
        emotions = counts[:len(FERPLUS_CLASSES)]
        if emotions.max() <= 0 or counts[len(FERPLUS_CLASSES):].max() >= emotions.max():
            continue
        keep.append(i)
        names.append(FERPLUS_CLASSES[int(emotions.argmax())])
        votes.append(emotions / emotions.sum())
    return pixels[keep], np.array(names), groups[keep], FERPLUS_CLASSES, np.array(votes, dtype=np.float32)


def _rafdb_list(root: Path) -> Path | None:
    for candidate in (root / "EmoLabel" / "list_patition_label.txt", root / "list_patition_label.txt"):
        if candidate.is_file():
            return candidate
    return None


def _read_rafdb(root: Path, face: FaceFormat):
    """RAF-DB basic: list_patition_label.txt ("train_00001.jpg 5", labels 1-7) and the aligned faces
    (Image/aligned/train_00001_aligned.jpg, or the original name, in Image/aligned/, aligned/ or the root)."""
    listing = _rafdb_list(root)
    folders = [root / "Image" / "aligned", root / "aligned", root / "Image" / "original", root]
    images, names, groups, first_line = [], [], [], {}
    for line_number, line in enumerate(listing.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            name, label = line.split()
            label = int(label)
            if not 1 <= label <= len(RAFDB_CLASSES):
                raise ValueError
        except ValueError:
            raise DataError(f"{quote(listing)} line {line_number}: expected 'NAME.jpg LABEL' with a label 1-7, "
                            f"not {line.strip()[:60]!r}") from None
        if name in first_line:  # one face, two labels (or counted twice): the list is damaged
            raise DataError(f"{quote(listing)} line {line_number} names {quote(name)} again (first on line "
                            f"{first_line[name]})")
        first_line[name] = line_number
        stem, suffix = os.path.splitext(name)
        found = next((f / n for f in folders for n in (f"{stem}_aligned{suffix}", name) if (f / n).is_file()), None)
        if found is None:
            raise DataError(f"{quote(root)} has no image for {quote(name)} (looked in Image/aligned/, aligned/ and "
                            f"the folder itself)")
        images.append(read_face(_read_file(found), str(found), face))
        names.append(RAFDB_CLASSES[label - 1])
        groups.append("train" if stem.startswith("train") else "test")
    if not images:
        raise DataError(f"{quote(listing)} lists no images")
    return np.stack(images), np.array(names), np.array(groups), RAFDB_CLASSES
