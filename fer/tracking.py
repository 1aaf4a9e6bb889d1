"""Following faces from frame to frame: each detected box gets the id of the face it continues, or a new one.

A track keeps a face's box, its motion and its appearance (a colour histogram). A box continues a track when it
overlaps where the track's motion says the face should be, or is near it, and does not look like another face;
a face lost for up to `max_missing` seconds gets its id back near where it should be, one lost for up to
`remember` seconds gets it back wherever it reappears if it looks the same (fer.video uses this for videos).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np


@dataclass(frozen=True)
class TrackerConfig:
    max_missing: float = 1.0       # seconds a lost face keeps its id by where it should be
    remember: float = 5.0          # seconds a lost face keeps its id by how it looks (see same_face)
    min_iou: float = 0.2           # box overlap that counts as the same face without asking its motion
    # Correlation of two faces' hue-saturation histograms (cv2.compareHist): at least same_face, a lost face
    # may come back anywhere in the frame; under different_face, two boxes are never the same face, however
    # they overlap. Measured on the demo clip's two portraits: 1.00 for a face with itself in any frame and
    # at any size, 0.05 between the two.
    same_face: float = 0.5
    different_face: float = 0.2


@dataclass
class Track:
    face_id: int
    box: np.ndarray                # x, y, w, h
    seen: float                    # seconds
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))  # box centre, pixels per second
    smooth: np.ndarray | None = None
    appearance: np.ndarray | None = None  # its face's colour histogram, a slow moving average


def appearance(frame_bgr: np.ndarray, box) -> np.ndarray | None:
    """A face's colour histogram (hue x saturation, 16 x 8 bins, L2-normalized) inside its box; None for a box
    with no pixels in the frame. Hue and saturation change little with a face's size, pose and brightness."""
    height, width = frame_bgr.shape[:2]
    x, y, w, h = (int(round(v)) for v in box)
    roi = frame_bgr[max(0, y):min(height, y + h), max(0, x):min(width, x + w)]
    if roi.size == 0:
        return None
    hist = cv2.calcHist([cv2.cvtColor(roi, cv2.COLOR_BGR2HSV)], [0, 1], None, [16, 8], [0, 180, 0, 256])
    return cv2.normalize(hist, None).flatten()


def similarity(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
    return None if a is None or b is None else float(cv2.compareHist(a, b, cv2.HISTCMP_CORREL))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two x, y, w, h boxes (0 for two empty ones). Written out rather than
    torchvision.ops.box_iou: that would load PyTorch (seconds, most of a gigabyte) into `fer video`, whose int8
    path needs nothing else of it (issue 32)."""
    (ax, ay, aw, ah), (bx, by, bw, bh) = np.asarray(a, np.float64), np.asarray(b, np.float64)
    width = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    height = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    overlap = width * height
    union = aw * ah + bw * bh - overlap
    return overlap / union if union > 0 else 0.0


class FaceTracker:
    """Gives each detected box the id of the face it continues, or a new one."""

    def __init__(self, cfg: TrackerConfig = TrackerConfig()):
        self.cfg = cfg
        self.tracks: list[Track] = []
        self.next_id = 1
        self.thumbnails: dict[int, tuple[float, np.ndarray]] = {}  # face id: (detector score, RGB picture)

    def update(self, boxes, t: float, appearances=None) -> list[Track]:
        """The tracks of `boxes` (seen at time t), in the same order. appearances: each box's `appearance`
        (None: position and motion alone decide, as for a caller without the frame)."""
        self.tracks = [tr for tr in self.tracks if t - tr.seen <= max(self.cfg.max_missing, self.cfg.remember)]
        boxes = [np.asarray(b, dtype=float) for b in boxes]
        appearances = list(appearances) if appearances is not None else [None] * len(boxes)
        pairs = []
        for i, box in enumerate(boxes):
            for j, track in enumerate(self.tracks):
                predicted = track.box.copy()
                predicted[:2] += track.velocity * (t - track.seen)
                overlap = iou(box, predicted)
                distance = math.dist(_centre(box), _centre(predicted)) / max(track.box[2], track.box[3], 1)
                alike = similarity(appearances[i], track.appearance)
                if alike is not None and alike < self.cfg.different_face:
                    continue  # overlapping or near, it is another face (crossing in front of this one)
                # The longer a face was lost, the further from its predicted place it may come back; a face
                # that looks the same may come back anywhere.
                near = t - track.seen <= self.cfg.max_missing and (
                    overlap >= self.cfg.min_iou or distance < 0.6 + (t - track.seen) / self.cfg.max_missing)
                if near or (alike is not None and alike >= self.cfg.same_face):
                    # the most overlap and the most alike first, then the nearest
                    pairs.append((-(overlap + (alike or 0.0)), distance, i, j))
        assigned: dict[int, Track] = {}
        used: set[int] = set()
        for _, _, i, j in sorted(pairs):
            if i not in assigned and j not in used:
                assigned[i] = self.tracks[j]
                used.add(j)
        result = []
        for i, box in enumerate(boxes):
            track = assigned.get(i)
            if track is None:
                track = Track(self.next_id, box, t, appearance=appearances[i])
                self.next_id += 1
                self.tracks.append(track)
            else:
                dt = max(t - track.seen, 1e-6)
                moved = (_centre(box) - _centre(track.box)) / dt
                # A face back after a gap may be far from where it was lost: its old motion says nothing.
                track.velocity = 0.5 * track.velocity + 0.5 * moved if dt <= 0.25 else np.zeros(2)
                track.box, track.seen = box, t
                if appearances[i] is not None:
                    track.appearance = appearances[i] if track.appearance is None else \
                        cv2.normalize(0.8 * track.appearance + 0.2 * appearances[i], None).flatten()
            result.append(track)
        return result


def _centre(box: np.ndarray) -> np.ndarray:
    return np.array([box[0] + box[2] / 2, box[1] + box[3] / 2])


def smooth(track: Track, probs: np.ndarray, dt: float, time_constant: float) -> np.ndarray:
    """The track's moving average after `probs`, `dt` seconds after its last update."""
    if track.smooth is None or time_constant <= 0:
        track.smooth = probs.copy()
    else:
        weight = 1 - math.exp(-dt / time_constant)
        track.smooth = (1 - weight) * track.smooth + weight * probs
    return track.smooth
