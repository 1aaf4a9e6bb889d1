"""The photo-path accuracy test: how much the detector and the crop cost the user.

Each PublicTest face (raw pixels, as photos are) is put back into a photo-like scene: upscaled 4x, placed
off-centre in a larger canvas whose surroundings are its own mirror image, blurred, and (in the rotated
set) turned by up to +-20 degrees, (in the turned sets) a photo on its side or upside down: the scene turned
by 90, 180 or 270 degrees. The full prediction path then runs on the scene: YuNet detection, the upright
search, alignment, FER-2013 framing, equalization, the classifier. Reported: the share of faces found,
accuracy through the photo path (a missed face gets what predict gives: no label, so it counts as wrong),
and accuracy on the original crops, for the same faces; the rotated set with and without alignment; the Haar
cascade's detection rate for comparison. Thresholds are chosen on PublicTest only.

    python benchmarks/photo_path.py ../shared/data/fer2013-test-raw.zip [--n 3589] [--weights W] [--sets ...]
        [--detect-side 640]
"""
from __future__ import annotations

import argparse
import json
import math
import time

import cv2
import numpy as np
import torch

from fer.datasets import load_split
from fer.detect import DetectorConfig, Face, crop_face, detect_faces
from fer.inference import predict_probs
from fer.api import load

SCALE = 4


def make_scene(face_u8: np.ndarray, rng: np.random.Generator, max_angle: float = 0.0, quarter: int = 0):
    """A photo-like gray scene holding one upscaled face; returns it and the face's centre and side."""
    side = face_u8.shape[0] * SCALE
    big = cv2.resize(face_u8, (side, side), interpolation=cv2.INTER_CUBIC)
    pads = rng.integers(side // 4, side, size=4)  # top, bottom, left, right: off-centre
    canvas = cv2.copyMakeBorder(big, *map(int, pads), cv2.BORDER_REFLECT)
    mask = np.zeros(canvas.shape, np.float32)
    mask[pads[0]:pads[0] + side, pads[2]:pads[2] + side] = 1
    mask = cv2.GaussianBlur(mask, (0, 0), side / 32)
    surroundings = cv2.GaussianBlur(canvas, (0, 0), side / 16)  # mirrored copies, blurred: no second face
    scene = (canvas * mask + surroundings * (1 - mask)).round().astype(np.uint8)
    centre = np.array([pads[2] + side / 2, pads[0] + side / 2])
    angle = float(rng.uniform(-max_angle, max_angle)) if max_angle else 0.0
    if angle:
        rotation = cv2.getRotationMatrix2D(tuple(centre), angle, 1.0)
        scene = cv2.warpAffine(scene, rotation, scene.shape[::-1], flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT)
    for _ in range(quarter):  # a quarter turn counter-clockwise (np.rot90): (x, y) goes to (y, width - 1 - x)
        centre = np.array([centre[1], scene.shape[1] - 1 - centre[0]])
        scene = np.ascontiguousarray(np.rot90(scene))
    return scene, centre, side, angle


def detect_all(scenes, cfg: DetectorConfig) -> tuple[list[list[Face]], float]:
    start = time.perf_counter()
    found = [detect_faces(scene, cfg) for scene, *_ in scenes]
    return found, (time.perf_counter() - start) / len(scenes)


def the_face(faces: list[Face], centre, side, threshold: float) -> Face | None:
    """The detection of the scene's face: the one whose box centre is nearest the face's, within it."""
    best, best_distance = None, side / 2
    for face in faces:
        if face.score < threshold:
            continue
        x, y, w, h = face.box
        distance = math.hypot(x + w / 2 - centre[0], y + h / 2 - centre[1])
        if distance < best_distance:
            best, best_distance = face, distance
    return best


def extra_detections(faces: list[Face], face: Face | None, threshold: float) -> int:
    return sum(1 for f in faces if f.score >= threshold and f is not face)


def photo_path(scenes, found, models, threshold: float, align: bool) -> dict:
    crops, hits, extras = [], [], 0
    for (scene, centre, side, _), faces in zip(scenes, found):
        face = the_face(faces, centre, side, threshold)
        extras += extra_detections(faces, face, threshold)
        hits.append(face is not None)
        if face is None:  # cropped for the batch's shape only: predict gives no label without a face
            face = Face((0, 0, scene.shape[1], scene.shape[0]), score=None)
        crops.append(crop_face(scene, face, align))
    predicted = predict_probs(models, torch.from_numpy(np.stack(crops))).argmax(1)
    hits = torch.tensor(hits)
    predicted[~hits] = -1  # no label: wrong
    return {"found": hits, "extra_detections": extras, "predicted": predicted}


def haar_found(scenes) -> float | None:
    if not hasattr(cv2, "CascadeClassifier") or not hasattr(cv2, "data"):
        return None  # OpenCV 5 moved the cascades out
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    hits = 0
    for scene, centre, side, _ in scenes:
        boxes = cascade.detectMultiScale(cv2.equalizeHist(scene), scaleFactor=1.1, minNeighbors=5, minSize=(24, 24))
        hits += any(math.hypot(x + w / 2 - centre[0], y + h / 2 - centre[1]) < side / 2 for x, y, w, h in boxes)
    return hits / len(scenes)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", help="fer2013-test-raw.zip (PublicTest with the original pixels)")
    parser.add_argument("--split", default="public", help="public only, unless you report the final number")
    parser.add_argument("--n", type=int, default=None, help="the first N faces of a seeded shuffle")
    parser.add_argument("--weights", nargs="+", default=None)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.4, 0.5, 0.6, 0.7])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--detect-side", type=int, default=DetectorConfig().detect_side,
                        help="the long side YuNet sees (fer.detect.DetectorConfig; benchmarks/detect_sizes.py)")
    parser.add_argument("--sets", nargs="+", default=None,
                        help="upright, rotated, turned_90, turned_180, turned_270 (default: all)")
    args = parser.parse_args()
    faces = load_split(args.data, args.split).subset(args.n, args.seed)
    models = load(args.weights, engine="torch")
    rng = np.random.default_rng(args.seed)
    labels = faces.labels
    direct = predict_probs(models, faces.images).argmax(1)
    result = {"split": args.split, "n": len(faces), "detect_side": args.detect_side,
              "direct_crop_accuracy": (direct == labels).float().mean().item()}
    sets = (("upright", 0.0, 0), ("rotated", 20.0, 0), ("turned_90", 0.0, 1), ("turned_180", 0.0, 2),
            ("turned_270", 0.0, 3))
    for name, max_angle, quarter in sets if not args.sets else [s for s in sets if s[0] in args.sets]:
        scenes = [make_scene(face.numpy(), rng, max_angle, quarter) for face in faces.images]
        if name == "upright":
            result["haar_found"] = haar_found(scenes)
        for threshold in args.thresholds:
            # Detected again for each threshold: a photo without a face above it is searched turned, too.
            found, seconds = detect_all(scenes, DetectorConfig(score_threshold=threshold, detect_side=args.detect_side))
            result[f"{name}_t{threshold}_detect_ms"] = round(1000 * seconds, 1)
            for align in ((True, False) if name == "rotated" else (True,)):
                run = photo_path(scenes, found, models, threshold, align)
                hit = run["found"]
                right = run["predicted"] == labels
                key = f"{name}_t{threshold}" + ("" if align else "_no_align")
                result[key] = {"found": round(hit.float().mean().item(), 4),
                               "extra_detections": run["extra_detections"],
                               "accuracy": round(right.float().mean().item(), 4),
                               "accuracy_on_found": round(right[hit].float().mean().item(), 4),
                               "direct_crop_accuracy_on_found": round((direct == labels)[hit].float().mean().item(), 4)}
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
