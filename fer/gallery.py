"""The prediction gallery of notebooks/04: upload photos (or a short video), pick a model, see each face
labelled (or each face's emotion timeline).

ipywidgets 8: FileUpload.value is a tuple of dicts with name, type, size, content (memoryview),
last_modified. Everything a test needs is reachable without a browser: `Gallery.cards` holds what each
card shows (labels or the error text), newest first, and `Gallery.add_upload(value)` is what the upload
button calls. Only new photos are labelled; changing the model labels them all again.
"""
from __future__ import annotations

import html
import io
import tempfile
from pathlib import Path

import ipywidgets as widgets

from .ensemble import ENSEMBLE_CHOICE, ensemble_members
from .charts import plot_emotion_shares, plot_timeline
from .errors import DataError, FerError, one_line, quote
from .images import PHOTO_SUFFIXES, open_image
from .paths import PHOTOS_DIR, TRAINED_MODELS_DIR
from .predict import NO_FACE_NOTE, draw_labels, predict_image
from .preprocess import CLASSES
from .video import VideoConfig, analyze_video, emotion_shares
from .inference import load_engine

MAX_UPLOAD_BYTES = 20_000_000
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".webm", ".mkv")
VIDEO_EVERY = 3  # a 30 frames/s upload is analysed at 10 frames/s: the timeline looks the same, 3x sooner
BUSY = ("<span style='color:#555'><span class='fer-busy' style='display:inline-block;width:10px;height:10px;"
        "border:2px solid #2a9d3a;border-top-color:transparent;border-radius:50%;"
        "animation:fer-spin 0.8s linear infinite'></span> TEXT</span>"
        "<style>@keyframes fer-spin{to{transform:rotate(360deg)}}</style>")


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
    def __init__(self, photos_dir=PHOTOS_DIR, models_dir=TRAINED_MODELS_DIR, max_upload_bytes=MAX_UPLOAD_BYTES):
        self.photos_dir = Path(photos_dir)
        self.models_dir = Path(models_dir)
        self.max_upload_bytes = max_upload_bytes
        self.cards: list[dict] = []    # what each card shows, newest first: {"name", "labels"} or {"name", "error"}
        self._photos: list[tuple[str, bytes | Exception]] = []  # newest first, like the cards
        self._card_widgets: list[widgets.Widget] = []
        self._models: dict[str, list] = {}

        names = sorted(p.name for p in self.models_dir.glob("*.safetensors"))
        try:
            has_ensemble = len(ensemble_members(self.models_dir)) > 1
        except FerError:
            has_ensemble = False
        options = names + ([ENSEMBLE_CHOICE] if has_ensemble else [])
        default = "resnet50_dropout.safetensors"
        self.model_picker = widgets.Dropdown(options=options, description="model",
                                             value=default if default in options else (options or [None])[0])
        self.upload = widgets.FileUpload(accept="image/*,video/*", multiple=True, description="Upload photos")
        self.status = widgets.HTML()
        self.summary = widgets.HTML()  # a live table of the cards, for the notebook's last cell
        self.cards_box = widgets.VBox()
        self.widget = widgets.VBox([widgets.HBox([self.upload, self.model_picker]), self.status, self.cards_box])
        self.upload.observe(lambda change: self.add_upload(change["new"]), names="value")
        self.model_picker.observe(lambda change: self.relabel_all(), names="value")
        shipped = sorted(self.photos_dir.iterdir()) if self.photos_dir.is_dir() else []
        self._add([(p.name, p.read_bytes()) for p in shipped if p.suffix.lower() in PHOTO_SUFFIXES])

    def models(self) -> list:
        choice = self.model_picker.value
        if choice is None:
            raise FerError(f"no weights in {quote(self.models_dir)}")
        if choice not in self._models:
            paths = ensemble_members(self.models_dir) if choice == ENSEMBLE_CHOICE else [self.models_dir / choice]
            self._models[choice] = [load_engine(p) for p in paths]
        return self._models[choice]

    def add_upload(self, value) -> None:
        """Label newly uploaded files (the FileUpload.value tuple) and show them first."""
        items = []
        for item in value:
            content = bytes(item["content"])
            if len(content) > self.max_upload_bytes:
                content = FerError(f"cannot read {quote(item['name'])}: file too large ({len(content):,} bytes, "
                                   f"limit {self.max_upload_bytes:,})")
            items.append((item["name"], content))
        if items:
            self._add(items)
            self.upload.value = ()  # so that uploading the same file again is a change, and memory is freed

    def _add(self, items) -> None:
        self._busy(f"labelling {len(items)} photo{'s' * (len(items) != 1)}...")
        try:
            models = self.models()
        except FerError as e:
            self._show_error(e)
            return
        new = [self._card(name, content, models) for name, content in items]
        self._photos[:0] = items
        self.cards[:0] = [card for card, _ in new]
        self._card_widgets[:0] = [child for _, child in new]
        self._show()

    def relabel_all(self) -> None:
        """Label every photo again with the model just picked."""
        self._busy(f"labelling {len(self._photos)} photos with {self.model_picker.value}...")
        try:
            models = self.models()
        except FerError as e:
            self._show_error(e)
            return
        new = [self._card(name, content, models) for name, content in self._photos]
        self.cards = [card for card, _ in new]
        self._card_widgets = [child for _, child in new]
        self._show()

    def _busy(self, text: str) -> None:
        self.upload.disabled = self.model_picker.disabled = True
        self.status.value = BUSY.replace("TEXT", html.escape(text))

    def _show_error(self, error: Exception) -> None:
        self.upload.disabled = self.model_picker.disabled = False
        self.status.value = f"<b style='color:#b00'>{html.escape(one_line(error))}</b>"

    def _show(self) -> None:
        self.cards_box.children = tuple(self._card_widgets)
        self.upload.disabled = self.model_picker.disabled = False
        self.status.value = (f"{len(self.cards)} photos, newest first; model: "
                             f"{html.escape(str(self.model_picker.value))}")
        rows = "".join(f"<tr><td>{html.escape(c['name'])}</td><td>"
                       f"{html.escape(', '.join(c['labels']) if 'labels' in c else c['error'])}</td></tr>"
                       for c in self.cards)
        self.summary.value = f"<table><tr><th>photo</th><th>labels, or why it failed</th></tr>{rows}</table>"

    def _card(self, name: str, content, models):
        title = widgets.HTML(f"<b>{html.escape(name)}</b>")
        try:
            if isinstance(content, Exception):
                raise content
            if Path(name).suffix.lower() in VIDEO_SUFFIXES:
                return self._video_card(name, content, models, title)
            image = open_image(content, name)
            result = predict_image(image, models)
            drawn = draw_labels(image, result)
        except Exception as e:  # noqa: BLE001 - one bad upload shows its message; the gallery goes on
            message = one_line(e) if isinstance(e, FerError) else f"cannot label {quote(name)}: {type(e).__name__}: {one_line(e)}"
            shown = widgets.HTML(f"<span style='color:#b00'>{html.escape(message)}</span>")
            return {"name": name, "error": message}, widgets.VBox([title, shown])
        drawn.thumbnail((360, 360))
        buffer = io.BytesIO()
        drawn.save(buffer, format="PNG")
        picture = widgets.Image(value=buffer.getvalue(), format="png")
        note = "" if result["face_found"] else f" <i>({NO_FACE_NOTE})</i>"
        faces = [widgets.HTML(f"face {i + 1}: <b>{f['label']}</b>{note}" + probability_bars(f["probs"]))
                 for i, f in enumerate(result["faces"])]
        card = {"name": name, "labels": [f["label"] for f in result["faces"]], "face_found": result["face_found"]}
        return card, widgets.VBox([title, widgets.HBox([picture, widgets.VBox(faces)])])

    def _video_card(self, name: str, content: bytes, models, title):
        """A short video: each face's emotion timeline and its share of the time in each emotion."""
        with tempfile.TemporaryDirectory(prefix="fer-gallery-") as scratch:
            path = Path(scratch) / f"upload{Path(name).suffix.lower()}"
            path.write_bytes(content)
            try:
                result = analyze_video(path, models, cfg=VideoConfig(every=VIDEO_EVERY), progress=False)
            except DataError as e:
                raise DataError(str(e).replace(quote(path), quote(name))) from None
        table = result.table
        charts = [_png_widget(plot_timeline(table, face_id)) for face_id in sorted(set(table["face_id"]))]
        shares = emotion_shares(table) if len(table) else None
        summary = widgets.HTML(f"{result.frames} frames, {result.frames / result.fps:.1f} s, "
                               f"{len(charts)} face(s) followed" + ("" if charts else f" <i>(no face found)</i>"))
        parts = [title, summary, *charts] + ([_png_widget(plot_emotion_shares(shares))] if charts else [])
        labels = [shares.loc[i].idxmax() for i in shares.index] if charts else []
        return {"name": name, "labels": labels, "video": True, "frames": result.frames}, widgets.VBox(parts)


def _png_widget(fig) -> widgets.Image:
    import matplotlib.pyplot as plt
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return widgets.Image(value=buffer.getvalue(), format="png")
