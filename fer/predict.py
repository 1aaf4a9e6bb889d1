"""Prediction on photos: find the faces (OpenCV Haar cascade), label each, draw the labels on the photo."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from .data import CLASSES, DataError, open_image, preprocess_face, to_gray, to_viewable
from .evaluate import predict_probs

# Detection runs on a copy at most this many pixels on its long side: faster on big photos, and faces
# smaller than 1/40 of that are too small to read an expression from anyway.
DETECT_MAX_SIDE = 1024
BOX_COLOR = (0, 220, 0)
NO_FACE_NOTE = "no face found: the whole photo was used"


@lru_cache(maxsize=1)
def face_detector() -> cv2.CascadeClassifier:
    path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
    detector = cv2.CascadeClassifier(str(path))
    if detector.empty():
        raise RuntimeError(f"OpenCV's face cascade is missing ({path}); install opencv-python-headless<5")
    return detector


def detect_faces(gray: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Face boxes (x, y, w, h) in `gray`'s pixels, largest first."""
    scale = min(1.0, DETECT_MAX_SIDE / max(gray.shape))
    if scale < 1:
        size = (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale)))
        small = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    else:
        small = gray
    min_side = max(24, min(small.shape) // 40)
    boxes = face_detector().detectMultiScale(cv2.equalizeHist(small), scaleFactor=1.1, minNeighbors=5,
                                             minSize=(min_side, min_side))
    boxes = [tuple(int(round(v / scale)) for v in box) for box in boxes]
    return sorted(boxes, key=lambda b: b[2] * b[3], reverse=True)


def predict_image(image: Image.Image, model, tta: bool = False, temperature: float | None = None) -> dict:
    """Faces and their expressions in one photo; the whole photo is used when no face is found."""
    gray = to_gray(image)
    boxes = detect_faces(gray)
    face_found = bool(boxes)
    if not face_found:
        boxes = [(0, 0, gray.shape[1], gray.shape[0])]
    crops = torch.from_numpy(np.stack([preprocess_face(gray[y:y + h, x:x + w]) for x, y, w, h in boxes]))
    if temperature is None:
        temperature = _temperature(model)
    probs = predict_probs(model, crops, tta=tta, device="cpu", temperature=temperature)
    faces = [{"box": list(box), "label": CLASSES[int(p.argmax())],
              "probs": {c: round(float(v), 4) for c, v in zip(CLASSES, p)}} for box, p in zip(boxes, probs)]
    return {"face_found": face_found, "faces": faces}


def _temperature(model) -> float:
    # Calibrated ensembles and models carry a temperature in their metadata; 1 otherwise.
    models = model if isinstance(model, (list, tuple)) else [model]
    temps = [getattr(m, "fer_metadata", {}).get("temperature", 1.0) for m in models]
    return float(sum(temps) / len(temps))


def predict(path, model, classes=CLASSES, print_text: bool = True, put_text: bool = True,
            tta: bool = False) -> dict:
    """The first version's call: label the faces in the photo at `path`, print the labels and, with
    put_text, return the photo with box and label drawn on it as result["image"] (a PIL image)."""
    if tuple(classes) != CLASSES:
        raise ValueError(f"the models are trained for the classes {CLASSES}")
    image = open_image(path)
    result = {"path": str(path), **predict_image(image, model, tta=tta)}
    if print_text:
        for face in result["faces"]:
            where = "" if result["face_found"] else f" ({NO_FACE_NOTE})"
            print(f"{path}: {face['label']} ({face['probs'][face['label']]:.0%}){where}")
    if put_text:
        result["image"] = draw_labels(image, result)
    return result


def predict_files(paths, model, tta: bool = False) -> list[dict]:
    """Predict every photo; a file that cannot be read gets {"path", "error"} and the batch goes on."""
    results = []
    for path in paths:
        try:
            results.append({"path": str(path), **predict_image(open_image(path), model, tta=tta)})
        except DataError as e:
            results.append({"path": str(path), "error": str(e)})
    return results


def draw_labels(image: Image.Image, result: dict) -> Image.Image:
    """A copy of the photo (RGB) with each face's box and "label 87%" drawn on it."""
    canvas = np.array(to_viewable(image).convert("RGB"))  # a copy: the photo itself is never drawn on
    thickness = max(1, round(max(canvas.shape[:2]) / 400))
    for face in result["faces"]:
        x, y, w, h = face["box"]
        text = f"{face['label']} {face['probs'][face['label']]:.0%}"
        font_scale = max(0.4, w / 220)
        (tw, th), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        cv2.rectangle(canvas, (x, y), (x + w, y + h), BOX_COLOR, thickness)
        top = y - th - baseline - 4 if y - th - baseline - 4 >= 0 else y + h
        cv2.rectangle(canvas, (x, top), (x + tw + 4, top + th + baseline + 4), BOX_COLOR, -1)
        cv2.putText(canvas, text, (x + 2, top + th + 2), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0),
                    thickness, cv2.LINE_AA)
    return Image.fromarray(canvas)


def annotate(result: dict, out_dir) -> Path:
    """Write the annotated copy of result["path"] as out_dir/<name>.fer.jpg; never over the original."""
    source = Path(result["path"])
    target = Path(out_dir) / f"{source.stem}.fer.jpg"
    if target.resolve() == source.resolve():
        raise DataError(f"will not overwrite '{source}' with its annotated copy")
    draw_labels(open_image(source), result).save(target, quality=92)
    return target
