"""Finding faces (YuNet through OpenCV's FaceDetectorYN) and cropping each the way FER-2013 framed its faces.

YuNet (Wu, Peng, Yu 2023; MIT, `fer/models/`) returns per face a box, five landmarks (right eye, left eye,
nose tip, right and left mouth corner, the subject's right being the photo's left) and a score. Each face
is then rotated so that its eyes are level and cropped with FER-2013's framing: the template below holds
where the five landmarks fall, on median, in FER-2013's own 48 x 48 crops (measured with YuNet on
PublicTest faces, see `benchmarks/photo_path.py`), so a crop from a photo looks like the crops the model
was trained on.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

import cv2
import numpy as np

from .paths import PACKAGE_DIR
from .preprocess import IMAGE_SIZE, FaceFormat, preprocess_face

YUNET_MODEL = PACKAGE_DIR / "models" / "face_detection_yunet_2023mar.onnx"
# Median landmark positions in FER-2013's 48 x 48 crops: right eye, left eye, nose, mouth corners.
TEMPLATE = np.array([[14.96, 17.87], [33.20, 17.74], [23.85, 28.44], [16.80, 37.17], [31.63, 37.10]])
TEMPLATE_EYE_DISTANCE = float(np.hypot(*(TEMPLATE[1] - TEMPLATE[0])))
TEMPLATE_EYES_TO_MOUTH = float(np.hypot(*((TEMPLATE[3] + TEMPLATE[4]) / 2 - (TEMPLATE[0] + TEMPLATE[1]) / 2)))
TEMPLATE_ANCHOR = (TEMPLATE[0] + TEMPLATE[1] + TEMPLATE[3] + TEMPLATE[4]) / 4  # between eyes and mouth
# The crop is 10 % tighter than the template's median distances say: through the photo path this scored
# best on PublicTest scenes (zoom 0.9 to 1.25 tried; 1.05-1.15 is a plateau 2-3 points above 1.0).
FRAMING_ZOOM = 1.1


@dataclass(frozen=True)
class DetectorConfig:
    score_threshold: float = 0.6   # YuNet's confidence; chosen on PublicTest scenes (README)
    nms_threshold: float = 0.3
    min_face: int = 16             # pixels: a smaller face holds too little to read an expression from
    max_faces: int = 50
    # The detector sees a copy scaled to this long side (big photos are slow and YuNet finds faces of
    # ~10-300 px); small photos are scaled up to it, so that a close-up crop is found too.
    detect_side: int = 640
    retry_angle: float = 35.0      # degrees; 0: no second search of a photo without a face
    # Turn each face upright: YuNet finds faces on their side or upside down, but places its landmarks as if
    # every face were upright (measured: a portrait turned by 180 degrees gets its "eyes" on the chin, eyes
    # level), so the landmarks cannot say which way is up. Its score can: each face is searched again in a
    # small square around it at the four quarter turns, and the turn scored highest gives the landmarks.
    upright: bool = True


@dataclass
class Face:
    """A face in a photo's pixels: box (x, y, w, h), YuNet's score, five landmarks as [x, y]."""
    box: tuple[int, int, int, int]
    score: float = 1.0
    landmarks: list[list[float]] | None = field(default=None)


class _YuNet(threading.local):
    """One FaceDetectorYN per thread (it keeps per-call state and is not thread-safe)."""

    def __init__(self):
        self.detector = None
        self.settings = None

    def get(self, cfg: DetectorConfig):
        settings = (cfg.score_threshold, cfg.nms_threshold, cfg.max_faces)
        if self.detector is None or self.settings != settings:
            # OpenCV 5 warns on stderr that its new graph engine ignores a compute target nobody set.
            level = cv2.utils.logging.getLogLevel()
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
            try:
                self.detector = cv2.FaceDetectorYN.create(str(YUNET_MODEL), "", (320, 320), cfg.score_threshold,
                                                          cfg.nms_threshold, cfg.max_faces)
            finally:
                cv2.utils.logging.setLogLevel(level)
            self.settings = settings
        return self.detector


_yunet = _YuNet()


def detect_faces(rgb: np.ndarray, cfg: DetectorConfig = DetectorConfig()) -> list[Face]:
    """The faces in an RGB (or gray) photo, largest first, in the photo's pixels.

    When none is found upright, the photo is searched again turned by -cfg.retry_angle and +cfg.retry_angle
    degrees (YuNet misses heads tilted further than about 30 degrees, which FER-2013 holds many of), then by
    quarter turns (a photo on its side). With cfg.upright, every face's landmarks are those of the quarter
    turn in which YuNet sees it best, so that `face_transform` turns it upright whichever way it lies."""
    if rgb.ndim == 2:
        rgb = cv2.cvtColor(rgb, cv2.COLOR_GRAY2RGB)
    h, w = rgb.shape[:2]
    if min(h, w) < 8:
        return []
    scale = cfg.detect_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = cv2.cvtColor(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR),
                         cv2.COLOR_RGB2BGR)
    to_photo = np.array([[1 / scale, 0, 0], [0, 1 / scale, 0]])
    faces = _detect(small, to_photo, (w, h), cfg)
    if faces and cfg.upright:
        faces = [_upright(small, to_photo, scale, face, (w, h), cfg) for face in faces]
    retries = (-cfg.retry_angle, cfg.retry_angle) if cfg.retry_angle else ()
    searches = []  # every turn, the best kept: a tilted search may find a turned face, badly framed
    for angle in (*retries, 90, -90, 180) if not faces else ():
        turned, rotation = _turn(small, angle)
        back = cv2.invertAffineTransform(rotation)  # turned pixels -> small pixels, then -> photo pixels
        searches.append(_detect(turned, to_photo @ np.vstack([back, [0, 0, 1]]), (w, h), cfg))
    if searches:
        faces = max(searches, key=lambda found: max((f.score for f in found), default=0.0))
    return sorted(faces, key=lambda f: f.box[2] * f.box[3], reverse=True)


def _turn(bgr: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """The picture turned by `angle` degrees (counter-clockwise) on a canvas that holds all of it, corners
    filled by reflection, and the 2 x 3 map from its pixels to the turned ones."""
    h, w = bgr.shape[:2]
    rotation = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0)
    cos, sin = abs(rotation[0, 0]), abs(rotation[0, 1])
    size = (round(h * sin + w * cos), round(h * cos + w * sin))
    rotation[:, 2] += ((size[0] - 1) / 2 - (w - 1) / 2, (size[1] - 1) / 2 - (h - 1) / 2)
    return cv2.warpAffine(bgr, rotation, size, borderMode=cv2.BORDER_REFLECT), rotation


UPRIGHT_SIDE = 160  # pixels: the square around a face searched at each quarter turn (YuNet is fast there)
UPRIGHT_MARGIN = 1.6  # the square's side, in the face box's longer sides


def _search_square(small: np.ndarray, to_photo: np.ndarray, scale: float, face: Face, photo_size,
                   cfg: DetectorConfig, quarter: int, square_side: int = UPRIGHT_SIDE) -> list[Face]:
    """YuNet in the square around `face` (UPRIGHT_MARGIN times its box, scaled to `square_side` pixels) turned by
    `quarter` quarter turns: the faces found there near its centre, in photo pixels. `small` is the picture
    searched, `scale` its size over the photo's, `to_photo` the map from its pixels to the photo's."""
    x, y, w, h = face.box
    centre = np.array([x + w / 2, y + h / 2])
    side = UPRIGHT_MARGIN * max(w, h) * scale  # in the pixels of `small`
    s = square_side / side
    to_square = np.array([[s, 0, square_side / 2 - s * centre[0] * scale],
                          [0, s, square_side / 2 - s * centre[1] * scale], [0, 0, 1]])
    turn = np.vstack([cv2.getRotationMatrix2D(((square_side - 1) / 2,) * 2, 90 * quarter, 1.0), [0, 0, 1]])
    matrix = turn @ to_square  # small pixels -> the turned square
    square = cv2.warpAffine(small, matrix[:2], (square_side, square_side), borderMode=cv2.BORDER_CONSTANT)
    return _near(_detect(square, to_photo @ np.linalg.inv(matrix), photo_size, cfg), centre, max(w, h) / 2)


def _upright(small: np.ndarray, to_photo: np.ndarray, scale: float, face: Face, photo_size,
             cfg: DetectorConfig) -> Face:
    """The face as YuNet sees it in the quarter turn it scores highest, its box and landmarks in photo pixels."""
    best_quarter, best_score = 0, -1.0  # upright as found, unless a turned search scores it higher
    for quarter in range(4):
        found = _search_square(small, to_photo, scale, face, photo_size, cfg, quarter)
        if found and max(f.score for f in found) > best_score:
            best_quarter, best_score = quarter, max(f.score for f in found)
    if best_quarter == 0:
        return face
    # Found better turned: found again in the whole picture turned that way, for landmarks from all its pixels
    # (the small square's are off by a few pixels).
    x, y, w, h = face.box
    turned, rotation = _turn(small, 90 * best_quarter)
    back = to_photo @ np.vstack([cv2.invertAffineTransform(rotation), [0, 0, 1]])
    found = _near(_detect(turned, back, photo_size, cfg), np.array([x + w / 2, y + h / 2]), max(w, h) / 2)
    return max(found, key=lambda f: f.score) if found else face


def quarter_turns(face: Face) -> int:
    """How many quarter turns (counter-clockwise) make the face upright, from its eyes' landmarks (0 without
    them): the turn `find_again` searches it in."""
    if not face.landmarks:
        return 0
    (rx, ry), (lx, ly) = face.landmarks[0], face.landmarks[1]  # YuNet's order: right eye, left eye, ...
    return round(math.degrees(math.atan2(ly - ry, lx - rx)) / 90) % 4


def find_again(frame_bgr: np.ndarray, face: Face, cfg: DetectorConfig = DetectorConfig()) -> Face | None:
    """A face of an earlier frame, found again in this one: YuNet in the square around `face` (its box where
    the face should be now), turned as the face was, the face at the size a whole-frame search sees it (at
    least UPRIGHT_SIDE pixels a side): a fraction of a whole-frame search's work, and nearly its landmarks.
    None where it is not there (hidden, gone, or moved further than half its size)."""
    height, width = frame_bgr.shape[:2]
    seen_at = cfg.detect_side / max(height, width)  # detect_faces's scale
    side = max(UPRIGHT_SIDE, round(UPRIGHT_MARGIN * max(face.box[2:]) * seen_at))
    found = _search_square(frame_bgr, np.eye(3)[:2], 1.0, face, (width, height), cfg, quarter_turns(face), side)
    return max(found, key=lambda f: f.score) if found else None


def _near(faces: list[Face], centre: np.ndarray, radius: float) -> list[Face]:
    """The faces whose box centre lies within `radius` pixels of `centre`: the same face, found again."""
    return [f for f in faces if np.hypot(*(np.add(f.box[:2], np.divide(f.box[2:], 2)) - centre)) < radius]


def _detect(bgr: np.ndarray, to_photo: np.ndarray, photo_size, cfg: DetectorConfig) -> list[Face]:
    """YuNet on one image; boxes and landmarks mapped into the photo by the 2 x 3 affine `to_photo`."""
    detector = _yunet.get(cfg)
    detector.setInputSize((bgr.shape[1], bgr.shape[0]))
    _, rows = detector.detect(bgr)
    faces = []
    for row in rows if rows is not None else []:
        x, y, bw, bh = row[:4]
        corners = np.array([[x, y], [x + bw, y], [x, y + bh], [x + bw, y + bh]]) @ to_photo[:, :2].T + to_photo[:, 2]
        x0, y0 = np.maximum(corners.min(0), 0).round().astype(int)
        x1, y1 = np.minimum(corners.max(0), photo_size).round().astype(int)
        if min(x1 - x0, y1 - y0) < cfg.min_face:
            continue
        points = row[4:14].reshape(5, 2) @ to_photo[:, :2].T + to_photo[:, 2]
        landmarks = [[round(float(v), 1) for v in point] for point in points]
        faces.append(Face((int(x0), int(y0), int(x1 - x0), int(y1 - y0)), round(float(row[14]), 4), landmarks))
    return faces


def face_transform(face: Face, align: bool = True, size: int = IMAGE_SIZE) -> np.ndarray:
    """The 2 x 3 affine map from photo pixels to the crop (`size` pixels wide): eyes level (if align), scaled
    and placed as in FER-2013's 48 x 48 crops. Without landmarks, the box is squared and fills the crop."""
    if size != IMAGE_SIZE:  # the same framing, scaled: FER-2013's template is measured in 48-px crops
        return face_transform(face, align) * (size / IMAGE_SIZE)
    if face.landmarks is None:
        x, y, w, h = face.box
        side = max(w, h)
        s = IMAGE_SIZE / side
        return np.array([[s, 0, -s * (x + (w - side) / 2)], [0, s, -s * (y + (h - side) / 2)]])
    points = np.asarray(face.landmarks, dtype=np.float64)
    right_eye, left_eye = points[0], points[1]
    eyes, mouth = (right_eye + left_eye) / 2, (points[3] + points[4]) / 2
    angle = math.atan2(left_eye[1] - right_eye[1], left_eye[0] - right_eye[0]) if align else 0.0
    # Eye distance shrinks when a face turns sideways, eyes-to-mouth when it nods: the mean of both
    # ratios keeps the scale steady under either.
    scale = FRAMING_ZOOM * 0.5 * (TEMPLATE_EYE_DISTANCE / max(np.hypot(*(left_eye - right_eye)), 1e-3)
                                  + TEMPLATE_EYES_TO_MOUTH / max(np.hypot(*(mouth - eyes)), 1e-3))
    anchor = (right_eye + left_eye + points[3] + points[4]) / 4
    cos, sin = scale * math.cos(-angle), scale * math.sin(-angle)
    linear = np.array([[cos, -sin], [sin, cos]])
    return np.hstack([linear, (TEMPLATE_ANCHOR - linear @ anchor)[:, None]])


def crop_face(photo: np.ndarray, face: Face, align: bool = True, fmt: FaceFormat = FaceFormat()) -> np.ndarray:
    """The face as the network's input: aligned, framed like FER-2013, equalized, in the format `fmt` (48 x 48
    gray by default). photo: gray (H x W) for a gray format, RGB (H x W x 3) for a colour one
    (fer.images.to_channels)."""
    matrix = face_transform(face, align, fmt.size)
    # Warp to a crop k times larger, then shrink with pixel-area averaging: a large face warped straight to
    # 48 px would alias.
    k = max(1, min(8, math.floor(1 / max(np.hypot(*matrix[0, :2]), 1e-6))))
    big = cv2.warpAffine(photo, matrix * np.array([[k], [k]]), (fmt.size * k, fmt.size * k),
                         flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return preprocess_face(big, fmt)


def crop_to_photo(face: Face, align: bool = True, size: int = IMAGE_SIZE) -> np.ndarray:
    """The 2 x 3 affine map from the crop (`size` pixels wide) back to photo pixels (to draw a crop's heat map
    there)."""
    return cv2.invertAffineTransform(face_transform(face, align, size))
