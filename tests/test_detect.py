"""YuNet detection and FER-2013 framing on generated scenes: 0, 1 and several faces, turned faces,
tiny and huge photos; the crop does not depend on where, how large or how turned the face is."""
import cv2
import numpy as np
import pytest
from PIL import Image

from fer.detect import YUNET_MODEL, DetectorConfig, Face, crop_face, detect_faces, face_transform
from fer.photos import BOX_COLOR, draw_labels, predict_image
from fer.api import load_model
from tests.conftest import PORTRAITS

HOPPER = np.asarray(Image.open(PORTRAITS[1]).convert("RGB"))  # grace_hopper.jpg, 512 x 600


@pytest.fixture(scope="module")
def model(untrained_weights):
    return load_model(untrained_weights)


def turned(rgb: np.ndarray, degrees: float, scale: float = 1.0) -> np.ndarray:
    h, w = rgb.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, scale)
    return cv2.warpAffine(rgb, matrix, (w, h), borderMode=cv2.BORDER_REFLECT)


def test_the_detector_model_and_its_license_ship_inside_the_package():
    assert YUNET_MODEL.stat().st_size == 232_589
    assert "MIT License" in (YUNET_MODEL.parent / "LICENSE-yunet").read_text()


def test_a_photo_without_a_face_has_none():
    yy, xx = np.mgrid[0:300, 0:400]
    gradient = np.stack([(xx * 0.6) % 255, (yy * 0.8) % 255, np.full_like(xx, 90)], -1).astype(np.uint8)
    assert detect_faces(gradient) == []


def test_one_face_with_its_score_and_five_landmarks():
    [face] = detect_faces(HOPPER)
    x, y, w, h = face.box
    right_eye, left_eye, nose, mouth_right, mouth_left = np.array(face.landmarks)
    assert face.score >= DetectorConfig().score_threshold and 80 < w < 300
    assert x < right_eye[0] < nose[0] < left_eye[0] < x + w  # the subject's right eye is the photo's left
    assert right_eye[1] < nose[1] < mouth_right[1] and y < nose[1] < y + h


def test_every_face_of_a_group_photo_is_found_and_labelled(model):
    small = cv2.resize(HOPPER, (256, 300))
    group = np.full((420, 1100, 3), 200, np.uint8)
    for i, (left, top) in enumerate(((20, 60), (400, 20), (760, 100))):
        group[top:top + 300, left:left + 256] = small
    result = predict_image(Image.fromarray(group), model)
    assert result["face_found"] and len(result["faces"]) == 3
    assert sorted(round(f["box"][0] / 370) for f in result["faces"]) == [0, 1, 2]
    assert all(f["score"] > 0.5 and len(f["landmarks"]) == 5 for f in result["faces"])


@pytest.mark.parametrize("degrees", [-40, -20, 20, 40])
def test_a_turned_face_is_found_and_cropped_with_level_eyes(degrees):
    [face] = detect_faces(turned(HOPPER, degrees))
    matrix = face_transform(face)
    eyes = np.array(face.landmarks[:2]) @ matrix[:, :2].T + matrix[:, 2]
    assert abs(eyes[0, 1] - eyes[1, 1]) < 1.0  # level in the crop
    assert 10 < eyes[0, 0] < 24 < eyes[1, 0] < 38  # and where FER-2013 puts them


def landmarks_in_crop(face, align=True) -> np.ndarray:
    matrix = face_transform(face, align)
    return np.array(face.landmarks) @ matrix[:, :2].T + matrix[:, 2]


def test_the_crop_frames_the_face_alike_wherever_and_however_large_or_turned_it_is():
    [face] = detect_faces(HOPPER)
    [moved] = detect_faces(turned(HOPPER, 25, 0.7))
    reference = landmarks_in_crop(face)
    assert np.abs(landmarks_in_crop(moved) - reference).max() < 2.5  # pixels of the 48 x 48 crop
    assert np.abs(landmarks_in_crop(moved, align=False) - reference).max() > 5


def test_a_tiny_photo_still_shows_its_face_and_a_speck_falls_back_to_the_whole_photo(model):
    tiny = cv2.resize(HOPPER, (85, 100), interpolation=cv2.INTER_AREA)
    assert len(detect_faces(tiny)) == 1
    result = predict_image(Image.fromarray(HOPPER[:6, :6]), model, whole_image=True)
    assert not result["face_found"] and result["faces"][0]["box"] == [0, 0, 6, 6]


def test_a_huge_photo_is_searched_scaled_down_and_boxed_in_its_own_pixels():
    huge = np.full((6000, 8000, 3), 120, np.uint8)
    big_face = cv2.resize(HOPPER, (1024, 1200))
    huge[3000:4200, 5000:6024] = big_face
    [face] = detect_faces(huge)
    x, y, w, h = face.box
    assert 5000 < x < 6024 and 3000 < y < 4200 and 200 < w < 1024


def test_faces_under_the_minimum_size_are_left_out():
    assert detect_faces(HOPPER, DetectorConfig(min_face=400)) == []


def test_a_box_without_landmarks_is_squared_and_fills_the_crop():
    gray = np.zeros((100, 200), np.uint8)
    gray[:, 50:150] = 255
    crop = crop_face(gray, Face((0, 0, 200, 100)))  # the whole photo: squared around its centre
    assert crop.shape == (48, 48)


@pytest.mark.parametrize("size", [(60, 40), (640, 480), (6000, 4000)])
def test_labels_are_drawn_inside_the_photo_and_readable(size):
    image = Image.new("RGB", size, "white")
    w, h = size
    result = {"face_found": True, "faces": [
        {"box": [0, 0, w // 2, h // 2], "label": "happy", "probs": {"happy": 0.9}},  # at the top edge
        {"box": [w // 2, h // 2, w // 2, h // 2], "label": "sad", "probs": {"sad": 0.6}}]}
    drawn = np.asarray(draw_labels(image, result))
    label_pixels = np.all(drawn == BOX_COLOR, axis=-1).sum()
    assert label_pixels > 0.002 * w * h  # two filled label backgrounds, scaled with the photo
    assert drawn.shape[:2] == (h, w)


def shifted(rgb: np.ndarray, dx: float, dy: float) -> np.ndarray:
    return cv2.warpAffine(rgb, np.float32([[1, 0, dx], [0, 1, dy]]), rgb.shape[1::-1], borderMode=cv2.BORDER_REFLECT)


@pytest.mark.parametrize("quarter", [0, 1, 2, 3])
def test_a_face_is_found_again_near_where_it_was_as_a_whole_photo_search_finds_it(quarter):
    """Video between whole-frame searches (fer.video.FaceFollower): the face of the last frame searched for in a
    small square around it, turned as it was, gives the box and landmarks a whole-photo search gives."""
    from fer.detect import find_again, quarter_turns
    from fer.tracking import iou
    photo = np.ascontiguousarray(np.rot90(HOPPER, quarter))  # np.rot90: counter-clockwise
    [before] = detect_faces(photo)
    assert quarter_turns(before) == (-quarter) % 4  # the turns that make it upright again
    moved = np.ascontiguousarray(shifted(photo, 14, -9))
    [whole] = detect_faces(moved)
    again = find_again(cv2.cvtColor(moved, cv2.COLOR_RGB2BGR), before)
    assert again is not None and iou(again.box, whole.box) >= 0.8  # YuNet's boxes vary with the scale it sees
    assert np.abs(landmarks_in_crop(again) - landmarks_in_crop(whole)).max() < 2.0  # the crop: pixels of 48
    gone = np.full_like(photo, 128)
    assert find_again(cv2.cvtColor(gone, cv2.COLOR_RGB2BGR), before) is None
