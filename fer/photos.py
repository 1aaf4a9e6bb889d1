"""Prediction on photos: find the faces, crop each like FER-2013, label it, draw the labels on the photo."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .detect import DetectorConfig, Face, crop_face, detect_faces
from .errors import DataError, FerError, one_line, quote
from .images import PHOTO_SUFFIXES, as_image, display_name, open_image, to_channels, to_rgb, to_viewable
from .inference import classes_of, engines_of, face_of, load_engines, predict_probs
from .runtime import atomic_write

BOX_COLOR = (0, 220, 0)
NO_FACE_COLOR = (255, 170, 0)
NO_FACE_NOTE = "no face found"
WHOLE_IMAGE_NOTE = "no face found: the whole image was classified"
ANNOTATED_SUFFIX = ".fer.jpg"
EXPLAINED_SUFFIX = ".cam.jpg"


def predict_image(image, models=None, tta: bool = False, temperature: float | None = None,
                  detector: DetectorConfig = DetectorConfig(), align: bool = True,
                  whole_image: bool | None = None) -> dict:
    """Faces and their expressions in one photo.

    image: a path, bytes, a PIL image or a NumPy array (RGB or gray; `fer.images.as_image`).
    models: a model, an engine, a weights path or a list of them (an ensemble); None: the shipped model (a path
    is loaded on every call: load it once with fer.inference.load_engine for many photos); temperature None:
    each model's calibrated one.
    whole_image: when no face is found, True labels the whole image as one face; False gives no label; None
    (default) labels it only when the image is a face crop already: exactly the size the model reads
    (FER-2013's own 48 x 48 files), where YuNet often finds no face because there is no room around it.
    Returns {"face_found", "engine", "faces": [{"box", "score", "landmarks", "label", "probs"}]}, with "note"
    when no face was found ("faces" then empty, or the whole image).
    """
    image = as_image(image)
    models = load_engines(models)
    faces = detect_faces(to_rgb(image), detector)
    face_found = bool(faces)
    fmt = face_of(models)
    if whole_image is None:
        whole_image = image.size == (fmt.size, fmt.size)
    result = {"face_found": face_found,
              "engine": "+".join(getattr(m, "name", type(m).__name__) for m in engines_of(models))}
    if not face_found:
        result["note"] = WHOLE_IMAGE_NOTE if whole_image else NO_FACE_NOTE
        if not whole_image:
            return {**result, "faces": []}
        faces = [Face((0, 0, image.width, image.height), score=None)]
    photo = to_channels(image, fmt.channels)
    crops = np.stack([crop_face(photo, face, align, fmt) for face in faces])
    probs = predict_probs(models, crops, tta=tta, temperature=temperature)
    classes = classes_of(models)
    return {**result, "faces": [
        {"box": list(face.box), "score": face.score, "landmarks": face.landmarks,
         "label": classes[int(p.argmax())], "probs": {c: round(float(v), 4) for c, v in zip(classes, p)}}
        for face, p in zip(faces, probs)]}


def predict(path, model=None, classes=None, print_text: bool = True, put_text: bool = True,
            tta: bool = False, whole_image: bool | None = None) -> dict:
    """The first version's call: label the faces in the photo at `path` (a path, bytes, a PIL image or an RGB
    array), print the labels and, with put_text, return the photo with boxes and labels drawn on it as
    result["image"] (a PIL image). model: weights path(s), a model or an engine (default: the shipped model, on
    the command line's engine). classes: the model's own (from its weights) unless given; given, they must be
    the model's."""
    models = load_engines(model)
    if classes is not None and tuple(classes) != classes_of(models):
        raise ValueError(f"the model is trained for the classes {classes_of(models)}, not {tuple(classes)}")
    image = as_image(path)
    shown = str(path) if isinstance(path, (str, os.PathLike)) else "image"
    result = {"path": shown, **predict_image(image, models, tta=tta, whole_image=whole_image)}
    if print_text:
        print(summary_line(result))
    if put_text:
        result["image"] = draw_labels(image, result)
    return result


def summary_line(result: dict) -> str:
    """`photo.jpg: happy 87%, sad 41% -> out/photo.fer.jpg`, the name escaped if it holds control characters."""
    faces = ", ".join(f"{f['label']} {f['probs'][f['label']]:.0%}" for f in result["faces"])
    where = f" ({result['note']})" if faces and "note" in result else result.get("note", "")
    written = f" -> {display_name(result['annotated'])}" if "annotated" in result else ""
    written += f", {display_name(result['explained'])}" if "explained" in result else ""
    return f"{display_name(result['path'])}: {faces}{where}{written}"


def predict_files(paths, models, tta: bool = False, out_dir=None, detector: DetectorConfig = DetectorConfig(),
                  whole_image: bool | None = None) -> list[dict]:
    """A result per photo (see iter_predictions)."""
    return list(iter_predictions(paths, models, tta, out_dir, detector, whole_image=whole_image))


def photos_in(paths, recursive: bool = False) -> list[Path]:
    """The photos named, a folder standing for the photos in it (by their suffixes, sorted; with recursive, in
    its subfolders too). DataError for a folder that holds none. Other paths are kept as they are, so that a
    file that is missing or not a photo gets its own error in the batch."""
    photos = []
    for path in map(Path, paths):
        if not path.is_dir():
            photos.append(path)
            continue
        found = sorted(p for p in (path.rglob("*") if recursive else path.iterdir())
                       if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file() and ANNOTATED_SUFFIX not in p.name
                       and EXPLAINED_SUFFIX not in p.name)
        if not found:
            raise DataError(f"{quote(path)} holds no photo ({', '.join(PHOTO_SUFFIXES)})"
                            + ("" if recursive else "; --recursive looks in its subfolders too"))
        photos.extend(found)
    return photos


def iter_predictions(paths, models, tta: bool = False, out_dir=None, detector: DetectorConfig = DetectorConfig(),
                     explainer=None, whole_image: bool | None = None):
    """Yield a result per photo, as it is done, writing its annotated copy into out_dir when given, and with
    an explainer (fer.explain.Explainer) its heat-map overlay beside it (NAME.cam.jpg).

    A photo that cannot be read or written yields {"path", "error"} and the batch goes on; nothing is
    ever written over a photo of the batch (see annotated_paths).
    """
    paths = [Path(p) for p in paths]
    targets = annotated_paths(paths, out_dir) if out_dir is not None else {}
    for path in paths:
        try:
            image = open_image(path)
            result = {"path": str(path), **predict_image(image, models, tta=tta, detector=detector,
                                                         whole_image=whole_image)}
        except FerError as e:
            yield {"path": str(path), "error": str(e) if quote(path) in str(e) else f"{quote(path)}: {e}"}
            continue
        except Exception as e:  # noqa: BLE001 - one photo that breaks the pipeline must not end the batch
            yield {"path": str(path), "error": f"cannot process {quote(path)}: {type(e).__name__}: {one_line(e)}"}
            continue
        if out_dir is not None:
            target = targets[path]
            try:
                result["annotated"] = str(write_annotated(draw_labels(image, result), target))
                if explainer is not None:
                    overlay = Image.fromarray(explainer.photo_overlay(image, result))
                    result["explained"] = str(write_annotated(overlay, explained_path(target)))
            except (OSError, ValueError) as e:
                result["error"] = f"cannot write {quote(target)}: {one_line(e)}"
        yield result


def annotated_paths(paths: list[Path], out_dir) -> dict[Path, Path]:
    """Where each photo's annotated copy goes: out_dir/<stem>.fer.jpg, numbered (<stem>-2.fer.jpg ...) where
    two photos share a stem, and never the path of any photo of the batch."""
    out_dir = Path(out_dir)
    inputs = {os.path.realpath(p) for p in paths}
    taken, targets = set(), {}
    for path in paths:
        if path in targets:
            continue
        n, target = 1, out_dir / f"{path.stem}{ANNOTATED_SUFFIX}"
        while target in taken or {os.path.realpath(target), os.path.realpath(explained_path(target))} & inputs:
            n += 1
            target = out_dir / f"{path.stem}-{n}{ANNOTATED_SUFFIX}"
        taken.add(target)
        targets[path] = target
    return targets


def explained_path(annotated: Path) -> Path:
    """Where the heat-map overlay goes: NAME.cam.jpg beside NAME.fer.jpg."""
    return annotated.with_name(annotated.name.removesuffix(ANNOTATED_SUFFIX) + EXPLAINED_SUFFIX)


JPEG_MAX_SIDE = 65_500  # libjpeg cannot write a wider or taller picture


def write_annotated(drawn: Image.Image, target: Path) -> Path:
    """A drawn copy as a JPEG, written atomically (a symlink at target is replaced, not followed); a picture
    with a side over JPEG's limit is scaled down to fit."""
    target = Path(target)
    if target.exists() and not target.is_file() and not target.is_symlink():
        raise DataError(f"{quote(target)} exists and is not a file")
    if max(drawn.size) > JPEG_MAX_SIDE:
        ratio = JPEG_MAX_SIDE / max(drawn.size)
        drawn = drawn.resize(tuple(max(1, round(side * ratio)) for side in drawn.size), Image.Resampling.BOX)
    with atomic_write(target) as tmp:
        drawn.save(tmp, format="JPEG", quality=92)
    return target


def draw_labels(image: Image.Image, result: dict) -> Image.Image:
    """A copy of the photo (RGB) with each face's box and "label 87%" drawn on it, always inside the photo."""
    canvas = np.array(to_viewable(image).convert("RGB"))  # a copy: the photo itself is never drawn on
    color = BOX_COLOR if result["face_found"] else NO_FACE_COLOR
    if not result["faces"]:  # nothing labelled: the picture says why
        draw_face(canvas, (0, 0, canvas.shape[1], canvas.shape[0]), "NO FACE FOUND", color)
    for face in result["faces"]:
        label = f"{face['label']} {face['probs'][face['label']]:.0%}"
        # Without a face the label is a guess about the whole picture, and the picture says so.
        draw_face(canvas, face["box"], label if result["face_found"] else f"NO FACE FOUND - whole image: {label}",
                  color)
    return Image.fromarray(canvas)


def draw_face(canvas: np.ndarray, box, text: str, color=BOX_COLOR) -> tuple[int, int, int]:
    """Draw a box and its label on an RGB or BGR array in place; the label stays inside the picture, above
    the box where there is room, else inside its top. Returns the label's left, bottom and font scale's
    line height (where a caller may draw more under it)."""
    height, width = canvas.shape[:2]
    x, y, w, h = (int(v) for v in box)
    # Readable on a phone photo and a thumbnail alike: from the face's width and the photo's size, and never
    # taller than the picture's short side allows (a 5,000,000 x 1 photo would otherwise ask OpenCV for a
    # font thousands of pixels high, and crash it).
    font_scale = min(max(0.35, min(w / 220, 4.0), max(width, height) / 1600), 4.0, max(0.35, min(width, height) / 40))
    thickness = max(1, round(font_scale * 1.6))
    (tw, th), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
    if tw + 4 > width and font_scale > 0.3:  # a long label on a narrow picture: smaller, to be read whole
        font_scale = max(0.3, font_scale * (width - 4) / (tw + 4))
        thickness = max(1, round(font_scale * 1.6))
        (tw, th), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
    label_h = th + baseline + 4
    cv2.rectangle(canvas, (x, y), (x + w - 1, y + h - 1), color, max(1, thickness // 2 + 1))
    top = y - label_h if y - label_h >= 0 else y
    top = max(0, min(top, height - label_h))
    left = max(0, min(x, width - tw - 4))
    cv2.rectangle(canvas, (left, top), (left + tw + 4, top + label_h), color, -1)
    cv2.putText(canvas, text, (left + 2, top + th + 2), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0),
                thickness, cv2.LINE_AA)
    return left, top + label_h, label_h
