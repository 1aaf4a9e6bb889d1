"""Any FER data set: its own classes and splits, in every layout fer reads (split folders without a test split,
FER+'s vote CSV beside fer2013.csv, RAF-DB's list and aligned RGB faces, read gray at 48 px or in colour at
100 px), trained, evaluated, exported, explained and predicted with its own class names."""
import csv
import json

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from fer.datasets import FERPLUS_CLASSES, RAFDB_CLASSES, load_split, splits_of
from fer.errors import DataError
from fer.preprocess import FaceFormat
from fer.weights import read_metadata
from tests.conftest import PORTRAITS, class_pattern
from tests.test_hostile_inputs import one_line_error, run

FIVE = ("happy", "sad", "neutral", "bored", "surprise")  # four of FER-2013's classes and one of its own


def write_split_folders(root, classes=FIVE, per_class=(6, 3)):
    """root/train/<class>/ and root/val/<class>/: no test split."""
    rng = np.random.default_rng(0)
    for split, n in zip(("train", "val"), per_class):
        for k, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(class_pattern(k, rng)).save(root / split / name / f"{i}.png")
    return root


def write_ferplus(root, rows_per_usage=12):
    """fer2013.csv (Kaggle's layout) and fer2013new.csv (FER+'s votes) for the same faces, row for row; every
    fourth face's majority is "unknown" or "not a face"."""
    rng = np.random.default_rng(1)
    root.mkdir(parents=True)
    with (root / "fer2013.csv").open("w", newline="") as pixels_file, \
            (root / "fer2013new.csv").open("w", newline="") as votes_file:
        pixels, votes = csv.writer(pixels_file), csv.writer(votes_file)
        pixels.writerow(["emotion", "pixels", "Usage"])
        votes.writerow(["Usage", "Image name", *FERPLUS_CLASSES, "unknown", "NF"])
        for usage in ("Training", "PublicTest", "PrivateTest"):
            for i in range(rows_per_usage):
                k = i % len(FERPLUS_CLASSES)
                pixels.writerow([0, " ".join(map(str, class_pattern(k % 7, rng).ravel())), usage])
                counts = [0] * 10
                counts[k], counts[(k + 1) % 8] = 7, 3
                if i % 4 == 3:
                    counts = [1, 0, 0, 0, 0, 0, 0, 0, 5, 4] if i % 8 == 3 else [2, 0, 0, 0, 0, 0, 0, 0, 0, 8]
                votes.writerow([usage, f"fer{i:07d}.png", *counts])
    return root


def write_rafdb(root, per_class=(3, 2)):
    """RAF-DB basic: EmoLabel/list_patition_label.txt and Image/aligned/<name>_aligned.jpg, 100 x 100 RGB."""
    rng = np.random.default_rng(2)
    (root / "EmoLabel").mkdir(parents=True)
    (root / "Image" / "aligned").mkdir(parents=True)
    lines = []
    for split, n in zip(("train", "test"), per_class):
        for label in range(1, 8):
            for i in range(n):
                name = f"{split}_{label}{i:04d}.jpg"
                gray = np.array(Image.fromarray(class_pattern(label - 1, rng)).resize((100, 100)))
                rgb = np.stack([gray, (gray * 0.8).astype(np.uint8), (gray * 0.6).astype(np.uint8)], -1)
                Image.fromarray(rgb).save(root / "Image" / "aligned" / name.replace(".jpg", "_aligned.jpg"))
                lines.append(f"{name} {label}")
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    return root


def test_split_folders_give_their_own_classes_in_fer_order_then_sorted(tmp_path):
    root = write_split_folders(tmp_path / "five")
    train = load_split(root, "train", cache=False)
    assert train.classes == ("bored", "happy", "neutral", "sad", "surprise")  # not all FER-2013's: sorted
    assert splits_of(root, cache=False) == {"train", "val"}
    assert load_split(root, cache=False).split == "val"  # the layout's own selection split
    subset = write_split_folders(tmp_path / "four", classes=("sad", "happy", "angry", "surprise"))
    assert load_split(subset, "train", cache=False).classes == ("angry", "happy", "sad", "surprise")  # FER order


def test_ferplus_labels_are_majorities_and_its_votes_are_kept(tmp_path):
    root = write_ferplus(tmp_path / "ferplus")
    train = load_split(root, "train", cache=False)
    assert train.classes == FERPLUS_CLASSES and len(train) == 9  # 3 of 12 left out: unknown or not a face
    assert train.votes.shape == (9, 8) and torch.allclose(train.votes.sum(1), torch.ones(9))
    assert torch.equal(train.votes.argmax(1), train.labels)
    assert train.votes[0, 0] == pytest.approx(0.7) and train.votes[0, 1] == pytest.approx(0.3)
    same = load_split(root / "fer2013new.csv", "train", cache=False)
    assert torch.equal(same.images, train.images)


def test_rafdb_list_and_aligned_faces(tmp_path):
    root = write_rafdb(tmp_path / "raf")
    train, test = load_split(root, "train", cache=False), load_split(root, "test", cache=False)
    assert train.classes == RAFDB_CLASSES and len(train) == 21 and len(test) == 14
    assert train.images.shape[1:] == (48, 48)  # RGB 100 px read as the one preprocessing reads any face
    assert train.class_counts() == {c: 3 for c in RAFDB_CLASSES}
    colour = load_split(root, "train", cache=False, face=FaceFormat(100, 3))
    assert colour.images.shape[1:] == (100, 100, 3) and colour.face == FaceFormat(100, 3)
    assert torch.equal(colour.labels, train.labels)
    red, green, blue = colour.images.float().mean((0, 1, 2))  # written as R > G > B: the colour is kept
    assert red > green > blue


def test_the_cache_keeps_one_copy_per_format(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_CACHE", str(tmp_path / "cache"))
    root = write_rafdb(tmp_path / "raf")
    gray, colour = load_split(root, "train"), load_split(root, "train", face=FaceFormat(64, 3))
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2
    assert torch.equal(load_split(root, "train").images, gray.images)
    assert torch.equal(load_split(root, "train", face=FaceFormat(64, 3)).images, colour.images)


@pytest.mark.parametrize("layout", ["split_folders", "ferplus", "rafdb", "rafdb_rgb100"])
def test_each_layout_trains_evaluates_exports_explains_and_predicts_with_its_own_classes(layout, tmp_path, capsys,
                                                                                        monkeypatch):
    writer = {"split_folders": write_split_folders, "ferplus": write_ferplus, "rafdb": write_rafdb,
              "rafdb_rgb100": write_rafdb}[layout]
    data = writer(tmp_path / layout)
    weights = tmp_path / "m.safetensors"
    extra = {"rafdb": ["--val-fraction", "0.3"],  # RAF-DB has no validation split
             "rafdb_rgb100": ["--val-fraction", "0.3", "--image-size", "100", "--channels", "3"]}.get(layout, [])
    code, out, err = run(["train", "--data", data, "--arch", "resnet18", "--epochs", "1", "--batch-size", "8",
                          "--no-progress", "--out", weights, *extra], capsys)
    assert code == 0, err
    meta = read_metadata(weights)
    classes = meta["classes"]
    assert classes == list(load_split(data, "train").classes) and meta["config"]["num_classes"] == len(classes)
    assert meta["val_split"] == {"split_folders": "val", "ferplus": "public"}.get(layout, "train[0.3]")
    assert meta["input_size"] == ([3, 100, 100] if layout == "rafdb_rgb100" else [1, 48, 48])

    code, out, err = run(["evaluate", data, "--split", "train", "--weights", weights, "--engine", "torch", "--json"],
                         capsys)
    assert code == 0, err
    assert list(json.loads(out)["per_class"]) == classes

    code, _, err = run(["export", "--weights", weights, "--out", tmp_path / "m.onnx"], capsys)
    assert code == 0, err
    drawn = []  # the text written on the annotated photo
    monkeypatch.setattr(cv2, "putText", lambda canvas, text, *a, **k: drawn.append(text) or canvas)
    code, out, err = run(["predict", PORTRAITS[0], "--weights", weights, "--engine", "onnx", "--json", "--out",
                          tmp_path / "out", "--explain", "--explain-class", classes[-1]], capsys)
    assert code == 0, err
    [face] = json.loads(out)["results"][0]["faces"]
    assert list(face["probs"]) == classes and face["label"] in classes
    assert drawn == [f"{face['label']} {face['probs'][face['label']]:.0%}"]
    assert (tmp_path / "out" / f"{PORTRAITS[0].stem}.cam.jpg").is_file()
    if layout == "rafdb_rgb100":  # int8, calibrated on the data's own faces in the model's format
        code, _, err = run(["export", "--int8", "--weights", weights, "--data", data], capsys)
        assert code == 0, err
        code, out, err = run(["evaluate", data, "--split", "test", "--weights", weights, "--engine", "onnx-int8",
                              "--json"], capsys)
        assert code == 0, err
        assert json.loads(out)["n"] == 14 and list(json.loads(out)["per_class"]) == classes


def test_a_class_the_model_does_not_know_is_one_line(tmp_path, capsys):
    data = write_split_folders(tmp_path / "five")
    code, _, err = run(["evaluate", data, "--split", "val"], capsys)  # the shipped model knows no "bored"
    assert code == 2 and one_line_error(err) and "'bored'" in err


def test_a_data_set_without_a_selection_split_asks_for_one(tmp_path, capsys):
    data = write_split_folders(tmp_path / "five")
    for name in ("happy", "sad", "neutral", "bored", "surprise"):
        for f in (data / "val" / name).iterdir():
            f.rename(data / "train" / name / f"v{f.name}")
        (data / "val" / name).rmdir()
    (data / "val").rmdir()
    code, _, err = run(["train", "--data", data, "--arch", "resnet18", "--epochs", "1", "--out",
                        tmp_path / "m.safetensors"], capsys)
    assert code == 2 and one_line_error(err) and "--val-fraction" in err


def test_ferplus_without_its_faces_is_one_line(tmp_path):
    root = write_ferplus(tmp_path / "ferplus")
    (root / "fer2013.csv").unlink()
    with pytest.raises(DataError, match="fer2013.csv"):
        load_split(root / "fer2013new.csv", cache=False)
