"""The prediction gallery of notebooks/04: upload photos, pick a model, see each face labelled.

ipywidgets 8: FileUpload.value is a tuple of dicts with name, type, size, content (memoryview),
last_modified. Everything a test needs is reachable without a browser: `Gallery.cards` holds what each
card shows (labels or the error text) and `Gallery.add_upload(value)` is what the upload button calls.
"""
from __future__ import annotations

import html
import io
from pathlib import Path

import ipywidgets as widgets

from .data import CLASSES, DataError, open_image
from .predict import NO_FACE_NOTE, draw_labels, predict_image
from .weights import REPO_ROOT, WeightsError, load_model

PHOTOS_DIR = REPO_ROOT / "photos_to_predict"
MODELS_DIR = REPO_ROOT / "trained_models"
MAX_UPLOAD_BYTES = 20_000_000
ENSEMBLE = "ensemble of all models"
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def probability_bars(probs: dict[str, float]) -> str:
    """One horizontal bar per class, as HTML (no JavaScript, so it renders in any front end)."""
    rows = []
    top = max(probs, key=probs.get)
    for name in CLASSES:
        p = probs[name]
        color = "#2a9d3a" if name == top else "#9bb7d4"
        rows.append(f"<div style='display:flex;align-items:center;font:12px sans-serif;margin:1px 0'>"
                    f"<span style='width:62px'>{name}</span>"
                    f"<span style='display:inline-block;height:10px;width:{max(1, round(p * 150))}px;"
                    f"background:{color}'></span><span style='margin-left:4px'>{p:.0%}</span></div>")
    return "".join(rows)


class Gallery:
    def __init__(self, photos_dir=PHOTOS_DIR, models_dir=MODELS_DIR, max_upload_bytes=MAX_UPLOAD_BYTES):
        self.photos_dir = Path(photos_dir)
        self.models_dir = Path(models_dir)
        self.max_upload_bytes = max_upload_bytes
        self.cards: list[dict] = []  # {"name", "labels"} or {"name", "error"}, in display order
        self._photos: list[tuple[str, bytes]] = []
        self._models: dict[str, list] = {}

        model_files = sorted(self.models_dir.glob("*.safetensors"))
        options = [p.name for p in model_files] + ([ENSEMBLE] if len(model_files) > 1 else [])
        default = "resnet50_dropout.safetensors"
        self.model_picker = widgets.Dropdown(options=options, description="model",
                                             value=default if default in options else (options or [None])[0])
        self.upload = widgets.FileUpload(accept="image/*", multiple=True, description="Upload photos")
        self.status = widgets.HTML()
        self.cards_box = widgets.VBox()
        self.widget = widgets.VBox([widgets.HBox([self.upload, self.model_picker]), self.status, self.cards_box])
        self.upload.observe(lambda change: self.add_upload(change["new"]), names="value")
        self.model_picker.observe(lambda change: self.refresh(), names="value")
        for path in sorted(self.photos_dir.iterdir()) if self.photos_dir.is_dir() else []:
            if path.suffix.lower() in PHOTO_SUFFIXES:
                self._photos.append((path.name, path.read_bytes()))
        self.refresh()

    def models(self) -> list:
        choice = self.model_picker.value
        if choice is None:
            raise WeightsError(f"no weights in '{self.models_dir}'")
        if choice not in self._models:
            names = [o for o in self.model_picker.options if o != ENSEMBLE] if choice == ENSEMBLE else [choice]
            self._models[choice] = [load_model(self.models_dir / n) for n in names]
        return self._models[choice]

    def add_upload(self, value) -> None:
        """Add uploaded files (the FileUpload.value tuple) to the gallery; a bad one becomes a message."""
        for item in value:
            content = bytes(item["content"])
            if len(content) > self.max_upload_bytes:
                self._photos.append((item["name"], DataError(
                    f"cannot read '{item['name']}': file too large ({len(content):,} bytes, "
                    f"limit {self.max_upload_bytes:,})")))
            else:
                self._photos.append((item["name"], content))
        self.refresh()

    def refresh(self) -> None:
        try:
            models = self.models()
        except (WeightsError, DataError, OSError) as e:
            self.status.value = f"<b style='color:#b00'>{html.escape(str(e))}</b>"
            self.cards, self.cards_box.children = [], ()
            return
        self.status.value = f"{len(self._photos)} photos, model: {html.escape(str(self.model_picker.value))}"
        self.cards = []
        children = []
        for name, content in self._photos:
            card, child = self._card(name, content, models)
            self.cards.append(card)
            children.append(child)
        self.cards_box.children = tuple(children)

    def _card(self, name: str, content, models):
        title = widgets.HTML(f"<b>{html.escape(name)}</b>")
        try:
            if isinstance(content, Exception):
                raise content
            image = open_image(content, name)
            result = predict_image(image, models)
        except DataError as e:
            message = widgets.HTML(f"<span style='color:#b00'>{html.escape(str(e))}</span>")
            return {"name": name, "error": str(e)}, widgets.VBox([title, message])
        drawn = draw_labels(image, result)
        drawn.thumbnail((360, 360))
        buffer = io.BytesIO()
        drawn.save(buffer, format="PNG")
        picture = widgets.Image(value=buffer.getvalue(), format="png")
        note = "" if result["face_found"] else f" <i>({NO_FACE_NOTE})</i>"
        faces = [widgets.HTML(f"face {i + 1}: <b>{f['label']}</b>{note}" + probability_bars(f["probs"]))
                 for i, f in enumerate(result["faces"])]
        card = {"name": name, "labels": [f["label"] for f in result["faces"]], "face_found": result["face_found"]}
        return card, widgets.VBox([title, widgets.HBox([picture, widgets.VBox(faces)])])
