import io
import time
import zipfile

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from fer.augment import AugmentConfig, augment
from fer.datasets import load_split, resolve_data_source
from fer.errors import DataError
from fer.images import read_face
from fer.preprocess import CLASSES, FaceFormat, normalize, preprocess_face
from tests.conftest import class_pattern


def test_class_order_is_the_fer2013_convention():
    assert CLASSES == ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")


def test_csv_codes_map_sad_and_neutral(tmp_path):
    # Kaggle's codes put sad at 4, surprise at 5 and neutral at 6; CLASSES puts neutral at 4.
    pixels = " ".join(["128"] * 48 * 48)
    path = tmp_path / "fer2013.csv"
    path.write_text("emotion,pixels,Usage\n4," + pixels + ",Training\n6," + pixels + ",Training\n"
                    "5," + pixels + ",PublicTest\n")
    train = load_split(path, "train", cache=False)
    assert [CLASSES[i] for i in train.labels] == ["sad", "neutral"]
    assert [CLASSES[i] for i in load_split(path, "public", cache=False).labels] == ["surprise"]


@pytest.mark.parametrize("split,expected", [("train", 42), ("public", 42), ("private", 42), ("test", 84),
                                            ("all", 126)])
def test_folder_zip_and_csv_give_the_same_faces(fer_folder, fer_zip, fer_csv, split, expected):
    loaded = [load_split(source, split) for source in (fer_folder, fer_zip, fer_csv)]
    for faces in loaded:
        assert faces.images.shape == (expected, 48, 48) and faces.images.dtype == torch.uint8
        assert faces.class_counts() == {c: expected // 7 for c in CLASSES}
    order = [torch.argsort(f.labels * 10**6 + f.images.view(len(f), -1)[:, :20].sum(1).long()) for f in loaded]
    for faces, o in zip(loaded[1:], order[1:]):
        assert torch.equal(faces.labels[o], loaded[0].labels[order[0]])
        assert torch.equal(faces.images[o], loaded[0].images[order[0]])


def test_plain_class_folder_may_hold_some_classes_only(tmp_path):
    rng = np.random.default_rng(0)
    for c in ("happy", "sad"):
        (tmp_path / c).mkdir()
        for i in range(3):
            Image.fromarray(class_pattern(CLASSES.index(c), rng)).save(tmp_path / c / f"{i}.jpg")
    faces = load_split(tmp_path, cache=False)
    assert faces.split == "all" and len(faces) == 6
    assert faces.classes == ("happy", "sad") and faces.class_counts() == {"happy": 3, "sad": 3}
    in_fer = faces.in_classes(CLASSES)  # as a FER-2013 model reads it
    assert in_fer.class_counts()["happy"] == 3 and in_fer.class_counts()["angry"] == 0
    with pytest.raises(DataError, match="without splits"):
        load_split(tmp_path, "private", cache=False)


def test_second_load_comes_from_the_cache_in_under_2_seconds(fer_zip):
    first = load_split(fer_zip, "train")
    start = time.perf_counter()
    second = load_split(fer_zip, "train")
    assert time.perf_counter() - start < 2
    assert torch.equal(first.images, second.images)


def test_unknown_class_folder_is_named_in_the_error(tmp_path):
    (tmp_path / "train" / "angery").mkdir(parents=True)
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(tmp_path / "train" / "angery" / "a.png")
    with pytest.raises(DataError, match="unknown class folder 'train/angery'"):
        load_split(tmp_path, "train", cache=False)


def test_zip_without_the_layout_is_refused(tmp_path):
    path = tmp_path / "flat.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("face.jpg", b"x")
    with pytest.raises(DataError, match="outside class folders"):
        load_split(path, cache=False)


def test_missing_split_is_a_clear_error(fer_folder, tmp_path):
    (tmp_path / "test" / "happy").mkdir(parents=True)
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(tmp_path / "test" / "happy" / "PublicTest_1.png")
    with pytest.raises(DataError, match="no 'train' images"):
        load_split(tmp_path, "train", cache=False)


def test_unreadable_image_is_an_error_naming_the_file(tmp_path):
    (tmp_path / "happy").mkdir()
    (tmp_path / "happy" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DataError, match="broken.jpg"):
        load_split(tmp_path, cache=False)


def test_csv_with_a_bad_pixel_row_names_the_line(tmp_path):
    path = tmp_path / "fer2013.csv"
    path.write_text("emotion,pixels,Usage\n3," + " ".join(["1"] * 2304) + ",Training\n3,1 2 3,Training\n")
    with pytest.raises(DataError, match="line 3"):
        load_split(path, "train", cache=False)


def test_data_source_falls_back_from_argument_to_env_to_dataset_1(tmp_path, monkeypatch, fer_zip):
    monkeypatch.setenv("FER_DATA", str(fer_zip))
    assert resolve_data_source() == fer_zip
    assert resolve_data_source(tmp_path) == tmp_path
    monkeypatch.setenv("FER_DATA", str(tmp_path / "missing"))
    with pytest.raises(DataError, match="FER_DATA"):
        resolve_data_source()


def test_preprocessing_equalizes_and_resizes_any_mode():
    yy, xx = np.mgrid[0:96, 0:80]
    dim = (60 + 30 * np.sin(yy / 9.0) + 0.3 * xx).astype(np.uint8)  # a smooth, dark, low-contrast image
    out = preprocess_face(dim)
    assert out.shape == (48, 48) and out.dtype == np.uint8
    assert out.min() < 10 and out.max() > 245  # equalization spreads it over the full range
    rgb = Image.fromarray(np.stack([dim] * 3, -1))
    for image in (rgb, rgb.convert("RGBA"), rgb.convert("P", palette=Image.ADAPTIVE), rgb.convert("CMYK"),
                  Image.fromarray(dim.astype(np.uint16) * 256)):
        buffer = io.BytesIO()
        image.save(buffer, format="TIFF")
        face = read_face(buffer.getvalue(), f"{image.mode}.tiff")
        assert face.shape == (48, 48)
        assert np.abs(face.astype(int) - out.astype(int)).mean() < 8, image.mode


def test_a_colour_face_is_equalized_on_its_luma_and_keeps_its_colours():
    yy, xx = np.mgrid[0:96, 0:80]
    dim = 60 + 30 * np.sin(yy / 9.0) + 0.3 * xx
    rgb = np.stack([dim, dim * 0.7, dim * 0.4], -1).astype(np.uint8)  # dark and reddish
    out = preprocess_face(rgb, FaceFormat(64, 3))
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    luma = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)
    assert luma.min() < 25 and luma.max() > 230  # the light spread over the full range
    red, green, blue = out.reshape(-1, 3).mean(0)
    assert red > green > blue  # the hue kept
    gray = preprocess_face(rgb)  # the same face for a gray model
    assert gray.shape == (48, 48) and gray.min() < 10 and gray.max() > 245
    assert normalize(torch.from_numpy(np.stack([out, out]))).shape == (2, 3, 64, 64)
    assert normalize(torch.from_numpy(np.stack([gray]))).shape == (1, 1, 48, 48)


def test_equalizing_twice_changes_little():
    face = cv2.equalizeHist(class_pattern(3, np.random.default_rng(1)))
    assert np.abs(preprocess_face(face).astype(int) - face.astype(int)).mean() < 3


def test_augment_draws_per_image_and_repeats_with_the_seed():
    images = normalize(torch.from_numpy(np.stack([class_pattern(i, np.random.default_rng(i)) for i in range(7)])))
    first = augment(images, AugmentConfig(), torch.Generator().manual_seed(0))
    again = augment(images, AugmentConfig(), torch.Generator().manual_seed(0))
    assert first.shape == images.shape and torch.equal(first, again)
    assert not torch.allclose(first, images)
    off = AugmentConfig(flip=False, max_rotate_deg=0, max_scale=0, max_translate=0, erase_prob=0)
    assert torch.allclose(augment(images, off, torch.Generator()), images, atol=1e-5)


@pytest.mark.real_data
def test_real_zip_has_the_published_split_and_class_counts(real_zip):
    counts = {"train": (3995, 436, 4097, 7215, 4965, 4830, 3171),
              "public": (467, 56, 496, 895, 607, 653, 415),
              "private": (491, 55, 528, 879, 626, 594, 416)}
    for split, expected in counts.items():
        faces = load_split(real_zip, split)
        assert tuple(faces.class_counts().values()) == expected
    assert len(load_split(real_zip, "train")) == 28709
    assert len(load_split(real_zip, "test")) == 7178


@pytest.mark.real_data
def test_raw_test_zip_equalized_is_close_to_the_training_copy(real_zip, raw_test_zip):
    raw = load_split(raw_test_zip, "private")
    equalized = load_split(real_zip, "private")
    assert len(raw) == len(equalized) == 3589
    assert raw.class_counts() == equalized.class_counts()
    difference = (raw.images.float() - equalized.images.float()).abs().mean().item()
    assert difference < 6, difference
