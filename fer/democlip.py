"""A short clip made from the shipped portraits (photos_to_predict/, public domain), moved and zoomed across
the frames: the demo video of notebook 05 and the test and benchmark clips, with no third-party footage.

    python -m fer.democlip videos/portraits.mp4      # the committed demo clip (640 x 480, 6 s at 10 frames/s)
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .paths import PHOTOS_DIR
from .runtime import atomic_write


@dataclass(frozen=True)
class Walk:
    """A portrait's head (a square crop of the photo) moving from one point to another while zooming.

    start, end: the head's centre as fractions of the frame; size: its side in pixels at start and end;
    visible: the time span, as fractions of the clip, in which it is in the frame."""
    photo: str
    start: tuple[float, float]
    end: tuple[float, float]
    size: tuple[int, int] = (150, 150)
    visible: tuple[float, float] = (0.0, 1.0)


DEMO = (Walk("grace_hopper.jpg", (0.2, 0.35), (0.8, 0.55), (140, 180)),
        Walk("eileen_collins.jpg", (0.8, 0.7), (0.25, 0.35), (170, 130)))


def head(photo: str) -> np.ndarray:
    """The portrait's head and shoulders as a square BGR crop (the face found by YuNet, with margin)."""
    from .detect import detect_faces
    rgb = np.asarray(Image.open(PHOTOS_DIR / photo).convert("RGB"))
    [face] = detect_faces(rgb)[:1]
    x, y, w, h = face.box
    side = int(max(w, h) * 2.0)
    cx, cy = x + w // 2, y + h // 2
    padded = cv2.copyMakeBorder(rgb, side, side, side, side, cv2.BORDER_REFLECT)
    crop = padded[cy + side - side // 2: cy + side + side // 2, cx + side - side // 2: cx + side + side // 2]
    return cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)


def render(walks=DEMO, size=(640, 480), fps: float = 10, seconds: float = 6) -> list[np.ndarray]:
    """The clip's BGR frames: a soft gradient background, each walk's head pasted where it is at that time."""
    width, height = size
    frames_total = max(1, round(fps * seconds))
    yy, xx = np.mgrid[0:height, 0:width]
    background = np.stack([150 + 40 * xx / width, 160 + 30 * yy / height, np.full(xx.shape, 170.0)], -1)
    heads = {w.photo: head(w.photo) for w in walks}
    frames = []
    for i in range(frames_total):
        progress = i / max(1, frames_total - 1)
        frame = background.astype(np.uint8)
        for walk in walks:
            if not walk.visible[0] <= progress <= walk.visible[1]:
                continue
            side = int(walk.size[0] + (walk.size[1] - walk.size[0]) * progress)
            cx = int((walk.start[0] + (walk.end[0] - walk.start[0]) * progress) * width)
            cy = int((walk.start[1] + (walk.end[1] - walk.start[1]) * progress) * height)
            tile = cv2.resize(heads[walk.photo], (side, side), interpolation=cv2.INTER_AREA)
            x0, y0 = cx - side // 2, cy - side // 2
            fx0, fy0, fx1, fy1 = max(0, x0), max(0, y0), min(width, x0 + side), min(height, y0 + side)
            if fx1 > fx0 and fy1 > fy0:
                frame[fy0:fy1, fx0:fx1] = tile[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0]
        frames.append(frame)
    return frames


def write_clip(path, frames, fps: float = 10, fourcc: str = "mp4v") -> Path:
    """Frames as a video file (mp4v for .mp4, MJPG for .avi), written atomically."""
    path = Path(path)
    height, width = frames[0].shape[:2]
    with atomic_write(path) as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
        if not writer.isOpened():
            raise OSError(f"OpenCV cannot write {fourcc} video here")
        for frame in frames:
            writer.write(frame)
        writer.release()
    return path


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "videos/portraits.mp4")
    print(write_clip(out, render()))
