"""The prediction gallery of notebooks/04: upload photos (or a short video), pick a model, see each face
labelled, with its probability bars and a Grad-CAM heat map of the class picked (or each face's timeline).

ipywidgets 8: FileUpload.value is a tuple of dicts with name, type, size, content (memoryview),
last_modified. Everything a test needs is reachable without a browser: `Gallery.cards` holds what each
card shows (labels or the error text), newest first, and `Gallery.add_upload(value)` is what the upload
button calls. Only new photos are labelled; changing the model labels them all again; changing the heat
map's class redraws the maps only.
"""
from __future__ import annotations

import html
import io
import tempfile
from pathlib import Path

import ipywidgets as widgets
from PIL import Image

from .charts import plot_emotion_shares, plot_timeline
from .ensemble import ENSEMBLE_CHOICE, ensemble_members
from .errors import DataError, FerError, one_line, quote
from .explain import Explainer, overlay_crop
from .images import PHOTO_SUFFIXES, open_image
from .inference import classes_of, load_engine
from .paths import DEFAULT_WEIGHTS, PHOTOS_DIR, TRAINED_MODELS_DIR
from .photos import NO_FACE_NOTE, WHOLE_IMAGE_NOTE, draw_labels, predict_image
from .video import VideoConfig, analyze_video, emotion_shares

MAX_UPLOAD_BYTES = 20_000_000
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".webm", ".mkv")
# At most 10 analysed frames per second of video: a 30 frames/s upload is analysed 3x sooner with the same
# timeline, and a 10 frames/s clip keeps every frame (sampling every 3rd frame made its gaps 3x longer).
VIDEO_MAX_RATE = 10.0
PREDICTED = "predicted class"
NO_MAP = "off"
BUSY = ("<span style='color:#555'><span class='fer-busy' style='display:inline-block;width:10px;height:10px;"
        "border:2px solid #2a9d3a;border-top-color:transparent;border-radius:50%;"
        "animation:fer-spin 0.8s linear infinite'></span> TEXT</span>"
        "<style>@keyframes fer-spin{to{transform:rotate(360deg)}}</style>")


def probability_bars(probs: dict[str, float]) -> str:
    """One horizontal bar per class, as HTML (no JavaScript, so it renders in any front end)."""
    rows = []
    top = max(probs, key=probs.get)
    for name, p in probs.items():  # the model's classes, in its order
        color = "#2a9d3a" if name == top else "#9bb7d4"
        rows.append(f"<div style='display:flex;align-items:center;font:12px sans-serif;margin:1px 0'>"
                    f"<span style='width:62px'>{name}</span>"
                    f"<span style='display:inline-block;height:10px;width:{max(1, round(p * 150))}px;"
                    f"background:{color}'></span><span style='margin-left:4px'>{p:.0%}</span></div>")
    return "".join(rows)


def png_widget(picture) -> widgets.Image:
    """A matplotlib figure, a PIL image or an RGB array as an Image widget."""
    import matplotlib.pyplot as plt
    buffer = io.BytesIO()
    if hasattr(picture, "savefig"):
        picture.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
        plt.close(picture)
    else:
        (picture if isinstance(picture, Image.Image) else Image.fromarray(picture)).save(buffer, format="PNG")
    return widgets.Image(value=buffer.getvalue(), format="png")


def card_text(card: dict) -> str:
    """A card's line in the summary table: its labels, that it has no face, or why it failed."""
    if "error" in card:
        return card["error"]
    if not card["labels"]:
        return NO_FACE_NOTE
    return ", ".join(card["labels"]) + ("" if card.get("face_found", True) else f" ({WHOLE_IMAGE_NOTE})")


class Gallery:
    def __init__(self, photos_dir=PHOTOS_DIR, models_dir=TRAINED_MODELS_DIR, max_upload_bytes=MAX_UPLOAD_BYTES):
        self.photos_dir = Path(photos_dir)
        self.models_dir = Path(models_dir)
        self.max_upload_bytes = max_upload_bytes
        self.cards: list[dict] = []    # what each card shows, newest first: {"name", "labels"} or {"name", "error"}
        self._entries: list[dict] = []  # newest first: name, content, and the model's answer (or the error)
        self._engines: dict[str, list] = {}
        self._torch_models: dict[str, list] = {}

        names = sorted(p.name for p in self.models_dir.glob("*.safetensors"))
        try:
            has_ensemble = len(ensemble_members(self.models_dir)) > 1
        except FerError:
            has_ensemble = False
        options = names + ([ENSEMBLE_CHOICE] if has_ensemble else [])
        default = DEFAULT_WEIGHTS.name
        self.model_picker = widgets.Dropdown(options=options, description="model",
                                             value=default if default in options else (options or [None])[0])
        # the model's classes join these once it is loaded (_offer_classes), as the shipped photos are labelled
        self.map_picker = widgets.Dropdown(options=[PREDICTED, NO_MAP], value=PREDICTED, description="heat map")
        self.upload = widgets.FileUpload(accept="image/*,video/*", multiple=True, description="Upload photos or videos")
        self.status = widgets.HTML()
        self.summary = widgets.HTML()  # a live table of the cards, for the notebook's last cell
        self.cards_box = widgets.VBox()
        self.widget = widgets.VBox([widgets.HBox([self.upload, self.model_picker, self.map_picker]), self.status,
                                    self.cards_box])
        self.upload.observe(lambda change: self.add_upload(change["new"]), names="value")
        self.model_picker.observe(lambda change: self.relabel_all(), names="value")
        self.map_picker.observe(lambda change: self.redraw(), names="value")
        shipped = sorted(self.photos_dir.iterdir()) if self.photos_dir.is_dir() else []
        self._add([(p.name, p.read_bytes()) for p in shipped if p.suffix.lower() in PHOTO_SUFFIXES])

    def _paths(self) -> list[Path]:
        choice = self.model_picker.value
        if choice is None:
            raise FerError(f"no weights in {quote(self.models_dir)}")
        return ensemble_members(self.models_dir) if choice == ENSEMBLE_CHOICE else [self.models_dir / choice]

    def models(self) -> list:
        """The engines of the model picked (int8 ONNX Runtime where the file is there, else PyTorch)."""
        choice = self.model_picker.value
        if choice not in self._engines:
            self._engines[choice] = [load_engine(p) for p in self._paths()]
        return self._engines[choice]

    def explainer(self) -> Explainer | None:
        if self.map_picker.value == NO_MAP:
            return None
        choice = self.model_picker.value
        if choice not in self._torch_models:  # Grad-CAM needs the PyTorch model behind the engine
            self._torch_models[choice] = [load_engine(p, "torch") for p in self._paths()]
        target = None if self.map_picker.value == PREDICTED else self.map_picker.value
        return Explainer(self._torch_models[choice], target)

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
        """Label new (name, content) items and put them first; a file uploaded again says so on its card."""
        labelled = self._label_all(items, f"labelling {len(items)} file{'s' * (len(items) != 1)}...")
        if labelled is not None:
            earlier = {}
            for entry in reversed(self._entries):  # oldest first, so that a copy names the first upload
                if isinstance(entry["content"], bytes):
                    earlier.setdefault(entry["content"], entry["name"])
            for entry in reversed(labelled):
                if isinstance(entry["content"], bytes):
                    if entry["content"] in earlier:
                        entry["same_as"] = earlier[entry["content"]]
                    earlier.setdefault(entry["content"], entry["name"])
            self._entries[:0] = labelled
            self._render()

    def relabel_all(self) -> None:
        """Label every photo again with the model just picked."""
        labelled = self._label_all([(e["name"], e["content"]) for e in self._entries],
                                   f"labelling {len(self._entries)} files with {self.model_picker.value}...")
        if labelled is not None:
            for before, after in zip(self._entries, labelled):
                if "same_as" in before:
                    after["same_as"] = before["same_as"]
            self._entries = labelled
            self._render()

    def _label_all(self, items, message: str) -> list[dict] | None:
        """The entries of `items` labelled by the model picked, with a busy sign meanwhile; None (and the
        message on screen) when the model cannot be loaded."""
        self._busy(message)
        try:
            models = self.models()
            self._offer_classes(classes_of(models))
        except FerError as e:
            self._show_error(e)
            return None
        return [label_upload(name, content, models) for name, content in items]

    def _offer_classes(self, classes) -> None:
        """The heat-map picker offers the classes of the model picked (another data set has others)."""
        options = [PREDICTED, *classes, NO_MAP]
        if list(self.map_picker.options) != options:
            keep = self.map_picker.value if self.map_picker.value in options else PREDICTED
            with self.map_picker.hold_trait_notifications():
                self.map_picker.options = options
                self.map_picker.value = keep

    def redraw(self) -> None:
        """Draw the cards again (the heat maps of another class), without labelling anything again."""
        self._busy("drawing the heat maps...")
        self._render()

    def _busy(self, text: str) -> None:
        self.upload.disabled = self.model_picker.disabled = self.map_picker.disabled = True
        self.status.value = BUSY.replace("TEXT", html.escape(text))

    def _show_error(self, error: Exception) -> None:
        self.upload.disabled = self.model_picker.disabled = self.map_picker.disabled = False
        self.status.value = f"<b style='color:#b00'>{html.escape(one_line(error))}</b>"

    def _render(self) -> None:
        try:
            explainer = self.explainer()
        except FerError as e:
            self._show_error(e)
            return
        built = [card(entry, explainer) for entry in self._entries]
        self.cards = [card for card, _ in built]
        self.cards_box.children = tuple(widget for _, widget in built)
        self.upload.disabled = self.model_picker.disabled = self.map_picker.disabled = False
        self.status.value = (f"{len(self.cards)} files, newest first; model: "
                             f"{html.escape(str(self.model_picker.value))}")
        rows = "".join(f"<tr><td>{html.escape(c['name'])}</td><td>{html.escape(card_text(c))}</td></tr>"
                       for c in self.cards)
        self.summary.value = f"<table><tr><th>file</th><th>labels, or why it failed</th></tr>{rows}</table>"


# What the gallery does with one upload: label it (a photo's faces, or a video's faces over time), then draw its
# card. Module functions, not the Gallery's: they hold no widget state.


def label_upload(name: str, content, models) -> dict:
    """An upload's entry: {"name", "content"} and its "image" and "result" (a photo), its "video" (a
    fer.video.VideoResult) or the "error" that stopped it (one bad upload shows its message; the gallery goes on)."""
    entry = {"name": name, "content": content}
    try:
        if isinstance(content, Exception):
            raise content
        if Path(name).suffix.lower() in VIDEO_SUFFIXES:
            entry["video"] = analyse_video_upload(name, content, models)
        else:
            entry["image"] = open_image(content, name)
            entry["result"] = predict_image(entry["image"], models)
    except Exception as e:  # noqa: BLE001 - each upload's error is its card's, whatever raised it
        entry["error"] = one_line(e) if isinstance(e, FerError) else \
            f"cannot label {quote(name)}: {type(e).__name__}: {one_line(e)}"
    return entry


def analyse_video_upload(name: str, content: bytes, models):
    """A video upload's faces over time (at most VIDEO_MAX_RATE analysed frames a second); errors name the
    upload, not the temporary file it was read from."""
    with tempfile.TemporaryDirectory(prefix="fer-gallery-") as scratch:
        path = Path(scratch) / f"upload{Path(name).suffix.lower()}"
        path.write_bytes(content)
        try:
            return analyze_video(path, models, cfg=VideoConfig(max_rate=VIDEO_MAX_RATE), progress=False)
        except DataError as e:
            raise DataError(str(e).replace(quote(path), quote(name))) from None


def card(entry: dict, explainer: Explainer | None) -> tuple[dict, widgets.Widget]:
    """(what the card shows, for tests and the summary table; its widget) of one labelled upload."""
    name = entry["name"]
    again = f" <i>(the same file as {html.escape(entry['same_as'])}, uploaded again)</i>" \
        if "same_as" in entry else ""
    title = widgets.HTML(f"<b>{html.escape(name)}</b>{again}")
    if "error" in entry:
        shown = widgets.HTML(f"<span style='color:#b00'>{html.escape(entry['error'])}</span>")
        return {"name": name, "error": entry["error"]}, widgets.VBox([title, shown])
    if "video" in entry:
        return video_card(name, entry["video"], title)
    image, result = entry["image"], entry["result"]
    drawn = draw_labels(image, result)
    drawn.thumbnail((360, 360))
    maps = explainer.face_maps(image, result) if explainer is not None else []
    note = "" if result["face_found"] else f" <i>({html.escape(result['note'])})</i>"
    faces = [] if result["faces"] else [widgets.HTML(f"<i>{NO_FACE_NOTE}</i>: no expression to read")]
    for i, face in enumerate(result["faces"]):
        bars = widgets.HTML(f"face {i + 1}: <b>{face['label']}</b>{note}" + probability_bars(face["probs"]))
        if maps:
            heat = png_widget(overlay_crop(maps[i]["crop"], maps[i]["cam"], size=120))
            caption = widgets.HTML(f"<span style='font:11px sans-serif'>where it sees "
                                   f"<b>{maps[i]['class']}</b></span>")
            faces.append(widgets.HBox([bars, widgets.VBox([heat, caption])]))
        else:
            faces.append(bars)
    shown = {"name": name, "labels": [f["label"] for f in result["faces"]], "face_found": result["face_found"],
             "heat_maps": len(maps)}
    return shown, widgets.VBox([title, widgets.HBox([png_widget(drawn), widgets.VBox(faces)])])


def video_card(name: str, result, title) -> tuple[dict, widgets.Widget]:
    """A short video: each face's emotion timeline and its share of the time in each emotion."""
    table = result.table
    # Each face's timeline beside its clearest view, so that "face 2" has a face.
    charts = [widgets.HBox([png_widget(result.thumbnails[face_id]) if face_id in result.thumbnails
                            else widgets.HTML(), png_widget(plot_timeline(table, face_id))])
              for face_id in sorted(set(table["face_id"]))]
    shares = emotion_shares(table) if len(table) else None
    summary = widgets.HTML(f"{result.frames} frames, {result.frames / result.fps:.1f} s, "
                           f"{len(charts)} face(s) followed" + ("" if charts else " <i>(no face found)</i>"))
    parts = [title, summary, *charts] + ([png_widget(plot_emotion_shares(shares))] if charts else [])
    labels = [shares.loc[i].idxmax() for i in shares.index] if charts else []
    return {"name": name, "labels": labels, "video": True, "frames": result.frames}, widgets.VBox(parts)
