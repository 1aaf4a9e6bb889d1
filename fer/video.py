"""Emotions over time: every face of a video (or the webcam) found, followed and labelled, frame by frame.

The faces of a frame go through the same detection, crop and classifier as a photo (`fer.photos`), batched;
with `search_every` S > 0 the whole frame is searched every S seconds of video and each face is found again in
a square around where it was in between (FaceFollower), which costs a fraction of a search.
A tracker (fer.tracking) keeps each face's identity across frames: box overlap and the distance to where its
motion says it should be, checked against its appearance (a colour histogram of the face). A face lost for up to
`max_missing` seconds (hidden behind another) gets its id back near where it should be, one lost for up to
`remember` seconds (out of the frame, say) gets it back wherever it reappears if it looks the same, and a box
that overlaps where one face should be but looks like another does not take its id. Each face's
probabilities are smoothed over time with an exponential moving average of time constant `smoothing` seconds,
so that its label does not flicker. The CSV keeps the raw and the smoothed probabilities: one row per frame and face.

Outputs are written to temp files and renamed when the video is done: an interrupted run leaves
NAME.partial.mp4 / .partial.csv (playable, readable), never a file that looks complete and is not.
"""
from __future__ import annotations

import csv
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from .detect import DetectorConfig, Face, crop_face, detect_faces, find_again
from .errors import DataError, quote
from .inference import classes_of, face_of, predict_probs
from .photos import BOX_COLOR, draw_face
from .preprocess import FaceFormat
from .runtime import check_outputs, native_stderr_silenced, remove_stale_temp_files, temp_name
from .tracking import FaceTracker, Track, TrackerConfig, appearance, iou, smooth

__all__ = ["VideoConfig", "VideoResult", "analyze_video", "FaceFollower", "csv_fields", "classes_in", "draw_track",
           "panel_layout", "read_frames", "emotion_shares", "open_video", "FaceTracker", "Track", "smooth"]

def csv_fields(classes) -> list[str]:
    """The columns of the table: one row per analysed frame and face, a raw and a smoothed column per class."""
    return (["time_s", "frame", "face_id", "x", "y", "w", "h", "score"] + [f"raw_{c}" for c in classes]
            + [f"smooth_{c}" for c in classes] + ["label", "raw_label"])


def classes_in(table) -> tuple[str, ...]:
    """The classes of a table, from its smooth_<class> columns."""
    return tuple(c.removeprefix("smooth_") for c in table.columns if c.startswith("smooth_"))



@dataclass(frozen=True)
class VideoConfig(TrackerConfig):
    """How a video is analysed: which frames, how each face's probabilities are smoothed, how faces are found
    and followed (the tracker's settings, fer.tracking.TrackerConfig, are this config's too)."""
    every: int = 1                 # analyse every Nth frame (the others are drawn with the last labels)
    # At most this many analysed frames per second of video, by the frames' times (None: no cap). Sampling
    # by time, not by frame count, keeps a low-frame-rate clip's gaps as short as they are in the clip.
    max_rate: float | None = None
    smoothing: float = 0.5         # seconds: the time constant of each face's moving average
    # Seconds of video between whole-frame searches; in between, each face is found again around where it was
    # (FaceFollower). By time, as max_rate: a new face is found as late at 10 frames/s as at 30. 0: every frame.
    # 0.2 s: 2.2x the frames/s of searching every frame on a 30 frames/s clip, the drawn (smoothed) labels the
    # same in every frame there and in 98 % of the frames of the two-face demo clip (benchmarks/video_follow.py).
    search_every: float = 0.2
    detector: DetectorConfig = DetectorConfig()
    tta: bool = False              # test-time augmentation of every face (10 views: ten times the classifier's work)


MAX_CAMERA = 63  # /dev/video0 ... /dev/video63
PLAYLIST_STARTS = (b"ffconcat", b"#EXTM3U", b"file ", b"[playlist]", b"<?xml", b"#")


def _is_text(head: bytes) -> bool:
    """Whether the first bytes of a file are UTF-8 text (a character cut at the end allowed)."""
    text = head.decode("utf-8", "ignore")
    return len(text.encode()) >= len(head) - 3 and all(c.isprintable() or c in "\t\r\n" for c in text)


def open_video(source) -> tuple[cv2.VideoCapture, float, int]:
    """A capture, its frame rate and its frame count (0 when unknown, as for a camera)."""
    is_camera = isinstance(source, int)
    if is_camera and not 0 <= source <= MAX_CAMERA:  # OpenCV crashes on -1 and overflows on huge numbers
        raise DataError(f"--camera must be a camera number from 0 to {MAX_CAMERA}, not {source}")
    if not is_camera:
        path = Path(source)
        if not path.is_file():
            raise DataError(f"cannot read {quote(path)}: no such file")
        if path.stat().st_size == 0:
            raise DataError(f"cannot read {quote(path)}: empty file")
        with path.open("rb") as f:
            head = f.read(1024)
        # FFmpeg also reads lists and playlists (concat lists, m3u8), which open other files: a video file
        # is binary, so a file that starts as text is refused before FFmpeg sees it.
        if head.lstrip().startswith(PLAYLIST_STARTS) or _is_text(head):
            raise DataError(f"cannot read {quote(path)}: a text file (a playlist or a list of files), not a video")
    with native_stderr_silenced():
        capture = cv2.VideoCapture(source if is_camera else str(source))
    if not capture.isOpened():
        capture.release()
        raise DataError(f"no camera {source} could be opened" if is_camera else
                        f"cannot read {quote(source)}: not a video OpenCV can decode")
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = fps if fps and math.isfinite(fps) and 1 <= fps <= 240 else 30.0
    return capture, fps, max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0))


THUMBNAIL_SIZE = 96
PANEL_MIN_ROW = 11  # pixels per class row: a name in letters about 8 px high, readable at 640 x 480


def panel_layout(frame_shape, box, line: int, classes) -> dict:
    """Where the per-class panel of a face goes and how big: one row per class (name, bar, percentage),
    rows scaled with the label above the box (`line`, its height) and never under PANEL_MIN_ROW pixels;
    under the box where there is room, else right of it, else left of it, else over the box's lower part."""
    height, width = frame_shape[:2]
    x, y, w, h = (int(v) for v in box)
    row = max(PANEL_MIN_ROW, round(line * 0.55))
    font_scale = (row - 3) / 22  # FONT_HERSHEY_SIMPLEX: ~22 px high at scale 1
    names_w = max(cv2.getTextSize(c, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)[0][0] for c in classes) + 4
    percent_w = cv2.getTextSize("100%", cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)[0][0] + 4
    panel_w = min(width, max(w, names_w + percent_w + 4 * row))
    panel_h = len(classes) * row + 2
    if y + h + 2 + panel_h <= height:
        left, top = x, y + h + 2
    elif x + w + 2 + panel_w <= width:
        left, top = x + w + 2, y
    elif x - 2 - panel_w >= 0:
        left, top = x - 2 - panel_w, y
    else:
        left, top = x, y + h - panel_h
    left = max(0, min(left, width - panel_w))
    top = max(0, min(top, height - panel_h))
    return {"left": left, "top": top, "width": panel_w, "height": panel_h, "row": row, "font_scale": font_scale,
            "names_w": names_w, "percent_w": percent_w}


def draw_track(frame_bgr: np.ndarray, box, face_id: int, probs: np.ndarray, classes) -> None:
    """Box and "id: label p%" above it, and a panel with every class's name, bar and percentage (in the
    model's order, the top class in green), on a BGR frame; sizes follow the frame and the face."""
    top_class = int(np.argmax(probs))
    _, _, line = draw_face(frame_bgr, box, f"{face_id}: {classes[top_class]} {probs[top_class]:.0%}",
                           BOX_COLOR[::-1])
    p = panel_layout(frame_bgr.shape, box, line, classes)
    region = frame_bgr[p["top"]:p["top"] + p["height"], p["left"]:p["left"] + p["width"]]
    region[:] = (region * 0.35).astype(frame_bgr.dtype)  # darkened, so white letters read on any scene
    bar_left, bar_right = p["left"] + p["names_w"], p["left"] + p["width"] - p["percent_w"]
    for k, (name, value) in enumerate(zip(classes, probs)):
        row_top = p["top"] + 1 + k * p["row"]
        baseline = row_top + p["row"] - 3
        cv2.putText(frame_bgr, name, (p["left"] + 2, baseline), cv2.FONT_HERSHEY_SIMPLEX, p["font_scale"],
                    (255, 255, 255), 1, cv2.LINE_AA)
        cv2.rectangle(frame_bgr, (bar_left, row_top + 2), (bar_right, row_top + p["row"] - 2), (90, 90, 90), -1)
        cv2.rectangle(frame_bgr, (bar_left, row_top + 2),
                      (bar_left + max(1, int((bar_right - bar_left) * float(value))), row_top + p["row"] - 2),
                      (58, 200, 42) if k == top_class else (230, 200, 170), -1)
        cv2.putText(frame_bgr, f"{value:.0%}", (bar_right + 3, baseline), cv2.FONT_HERSHEY_SIMPLEX,
                    p["font_scale"], (255, 255, 255), 1, cv2.LINE_AA)


@dataclass
class VideoResult:
    rows: list[dict]
    classes: tuple[str, ...]        # the model's, in the order of its outputs
    frames: int
    analysed: int
    fps: float
    seconds: float
    complete: bool                  # False: the input ended before its announced length
    outputs: dict[str, str]
    thumbnails: dict[int, np.ndarray] = field(default_factory=dict)  # face id: its clearest view (RGB)

    @property
    def table(self):
        import pandas as pd
        return pd.DataFrame(self.rows, columns=csv_fields(self.classes))


def analyze_video(source, models, out_video=None, out_csv=None, cfg: VideoConfig = VideoConfig(),
                  progress: bool = True, show: bool = False) -> VideoResult:
    """Find, follow and label the faces of a video file (or camera index); see the module's docstring."""
    check_outputs({"--out": out_video, "--csv": out_csv}, [] if isinstance(source, int) else [source])
    classes, fmt = classes_of(models), face_of(models)
    capture, fps, announced = open_video(source)
    if cfg.every < 1 or not cfg.search_every >= 0 or cfg.max_rate is not None and not cfg.max_rate > 0:
        capture.release()
        raise DataError(f"every must be >= 1, search_every >= 0 and max_rate > 0, not {cfg.every}, "
                        f"{cfg.search_every} and {cfg.max_rate}")
    next_analysis = 0.0  # seconds: the time from which the next frame may be analysed under max_rate
    writer, finals, temps = None, {}, {}
    for kind, path in (("video", out_video), ("csv", out_csv)):
        if path is not None:
            finals[kind] = Path(path)
            finals[kind].parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temp_files(finals[kind])
            temps[kind] = temp_name(finals[kind])
    csv_file = temps["csv"].open("w", newline="") if "csv" in temps else None
    table = csv.DictWriter(csv_file, fieldnames=csv_fields(classes)) if csv_file else None
    if table:
        table.writeheader()
    tracker, follower, rows, shown = FaceTracker(cfg), FaceFollower(cfg), [], []
    frame_index, analysed, finished = 0, 0, False
    start = time.perf_counter()
    bar = tqdm(total=announced or None, unit="frame", disable=not progress, desc="video")
    try:
        while True:
            try:
                ok, frame = capture.read()
            except KeyboardInterrupt:
                if not isinstance(source, int):
                    raise
                break  # Ctrl-C is how a camera recording ends
            if not ok:
                break
            t = frame_index / fps
            if frame_index % cfg.every == 0 and t >= next_analysis - 1e-9:
                shown = analyse_frame(frame, t, frame_index, models, classes, fmt, tracker, follower, cfg, rows,
                                      table)
                analysed += 1
                if cfg.max_rate:
                    next_analysis = max(next_analysis + 1 / cfg.max_rate, t)  # drift-free: on a grid of times
            if "video" in temps:
                if writer is None:
                    writer = cv2.VideoWriter(str(temps["video"]), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                             (frame.shape[1], frame.shape[0]))
                    if not writer.isOpened():
                        raise DataError(f"cannot write {quote(finals['video'])}: OpenCV has no mp4v writer here")
            if writer is not None or show:
                for box, face_id, probs in shown:
                    draw_track(frame, box, face_id, probs, classes)
            if writer is not None:
                writer.write(frame)
            if show:
                cv2.imshow("fer (q quits)", frame)
                if cv2.waitKey(1) & 0xFF == ord("q"):
                    break
            frame_index += 1
            bar.update(1)
        finished = True
    finally:
        bar.close()
        capture.release()
        if writer is not None:
            writer.release()
        if csv_file is not None:
            csv_file.close()
        if show:
            cv2.destroyAllWindows()
        outputs = _finish_outputs(temps, finals, finished, frame_index > 0)
    if frame_index == 0:
        raise DataError(f"cannot read {quote(source)}: no frame could be decoded")
    return VideoResult(rows, classes, frame_index, analysed, fps, time.perf_counter() - start,
                       complete=not announced or frame_index >= announced, outputs=outputs,
                       thumbnails={face_id: picture for face_id, (_, picture) in sorted(tracker.thumbnails.items())})


class FaceFollower:
    """Where the faces of an analysed frame are: the whole frame searched (fer.detect.detect_faces) every
    `search_every` seconds of video; in between, each face of the last analysed frame found again in a square
    around where its motion puts it (fer.detect.find_again, a fraction of the work), and the whole frame searched
    at once when one of them is not found there. A face lost for up to `max_missing` seconds (hidden behind
    another) is looked for where it should be, too, and comes back as soon as it is found; a face that comes
    into view is found at the next whole-frame search, at most search_every seconds late."""

    def __init__(self, cfg: VideoConfig):
        self.cfg = cfg
        self.followed: dict[int, tuple[Track, Face]] = {}  # face id: its track and the face as last seen
        self.searched: float | None = None  # the time of the last whole-frame search
        self.last: float | None = None      # the time of the last analysed frame

    def faces(self, frame_bgr: np.ndarray, rgb: np.ndarray, t: float) -> list[Face]:
        if self.searched is not None and t - self.searched < self.cfg.search_every - 1e-9:
            found, complete = [], True
            for track, face in self.followed.values():
                again = find_again(frame_bgr, expected(track, face, t), self.cfg.detector)
                if again is not None:
                    found.append(again)
                elif track.seen == self.last:  # in view a frame ago and not found near there: search it all
                    complete = False
                    break
            if complete and not _any_overlap(found):
                return found
        self.searched = t
        return detect_faces(rgb, self.cfg.detector)

    def follow(self, tracks: list[Track], faces: list[Face], t: float) -> None:
        """The faces of this frame, with their tracks; the faces lost within max_missing seconds stay."""
        self.followed.update((track.face_id, (track, face)) for track, face in zip(tracks, faces))
        self.followed = {i: (track, face) for i, (track, face) in self.followed.items()
                         if t - track.seen <= self.cfg.max_missing}
        self.last = t


def expected(track: Track, face: Face, t: float) -> Face:
    """The face where its track's motion puts it at time t (its landmarks moved with it)."""
    shift = track.velocity * (t - track.seen)
    x, y, w, h = face.box
    landmarks = [[px + shift[0], py + shift[1]] for px, py in face.landmarks] if face.landmarks else None
    return Face((round(x + shift[0]), round(y + shift[1]), w, h), face.score, landmarks)


def _any_overlap(faces: list[Face], most: float = 0.5) -> bool:
    """Whether two of the faces found again are one face (two tracks' squares found the same one)."""
    return any(iou(a.box, b.box) > most for i, a in enumerate(faces) for b in faces[i + 1:])


def analyse_frame(frame_bgr, t: float, frame_index: int, models, classes, fmt: FaceFormat, tracker: FaceTracker,
                  follower: FaceFollower, cfg: VideoConfig, rows, table) -> list:
    """Find (the follower), crop and classify (one batch) the faces of one frame; update tracks and the table."""
    rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
    faces = follower.faces(frame_bgr, rgb, t)
    if not faces:
        tracker.update([], t)
        follower.follow([], [], t)
        return []
    photo = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY) if fmt.channels == 1 else rgb
    probs = predict_probs(models, np.stack([crop_face(photo, f, fmt=fmt) for f in faces]), tta=cfg.tta,
                          temperature=None)
    shown = []
    previous = {tr.face_id: tr.seen for tr in tracker.tracks}
    tracks = tracker.update([f.box for f in faces], t, [appearance(frame_bgr, f.box) for f in faces])
    follower.follow(tracks, faces, t)
    for face, track, p in zip(faces, tracks, probs):
        smoothed = smooth(track, p, t - previous.get(track.face_id, t), cfg.smoothing)
        row = {"time_s": round(t, 3), "frame": frame_index, "face_id": track.face_id,
               **dict(zip(("x", "y", "w", "h"), face.box)), "score": face.score,
               **{f"raw_{c}": round(float(v), 4) for c, v in zip(classes, p)},
               **{f"smooth_{c}": round(float(v), 4) for c, v in zip(classes, smoothed)},
               "label": classes[int(np.argmax(smoothed))], "raw_label": classes[int(np.argmax(p))]}
        rows.append(row)
        if table is not None:
            table.writerow(row)
        shown.append((face.box, track.face_id, smoothed.copy()))
        best = tracker.thumbnails.get(track.face_id)
        if best is None or (face.score or 0.0) > best[0]:
            tracker.thumbnails[track.face_id] = (face.score or 0.0, face_thumbnail(rgb, face.box))
    return shown


def face_thumbnail(rgb: np.ndarray, box, size: int = THUMBNAIL_SIZE) -> np.ndarray:
    """The face with a margin around it, square, `size` pixels a side (RGB): who "face 2" is."""
    height, width = rgb.shape[:2]
    x, y, w, h = (int(v) for v in box)
    side = int(max(w, h) * 1.4)
    cx, cy = x + w // 2, y + h // 2
    x0, y0 = max(0, cx - side // 2), max(0, cy - side // 2)
    crop = rgb[y0:min(height, y0 + side), x0:min(width, x0 + side)]
    if crop.size == 0:
        return np.zeros((size, size, 3), np.uint8)
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


def _finish_outputs(temps: dict, finals: dict, complete: bool, any_frame: bool) -> dict[str, str]:
    """Rename the temp outputs to their names, or to NAME.partial.EXT when the run did not finish; without a
    single frame there is nothing to keep."""
    done = {}
    for kind, tmp in temps.items():
        if not tmp.exists():
            continue
        if not any_frame:
            tmp.unlink()
            continue
        final = finals[kind] if complete else finals[kind].with_name(
            f"{finals[kind].stem}.partial{finals[kind].suffix}")
        os.replace(tmp, final)
        done[kind] = str(final)
    return done


def read_frames(path, indices) -> list[np.ndarray]:
    """Some frames of a video as RGB arrays (to show an annotated clip in a notebook)."""
    capture, _, _ = open_video(path)
    wanted, frames, index = set(indices), [], 0
    while len(frames) < len(wanted):
        ok, frame = capture.read()
        if not ok:
            break
        if index in wanted:
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        index += 1
    capture.release()
    return frames


def emotion_shares(table) -> "pd.DataFrame":  # noqa: F821
    """Per face: the share of its analysed frames in which each emotion was its (smoothed) label."""
    import pandas as pd
    shares = pd.crosstab(table["face_id"], table["label"], normalize="index")
    return shares.reindex(columns=list(classes_in(table)), fill_value=0.0).round(3)


def camera_can_show() -> bool:
    """Whether a window can be opened: an OpenCV with a GUI backend, and a display on Linux."""
    has_gui = not re.search(r"GUI:\s+NONE", cv2.getBuildInformation())
    needs_display = os.name == "posix" and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY")
    return has_gui and not (needs_display and os.uname().sysname == "Linux")
