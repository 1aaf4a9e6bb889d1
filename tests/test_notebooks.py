"""The notebooks' parts that run without a browser: the gallery widget and a papermill run of 02."""
import datetime
import json

import ipywidgets as widgets
import pytest

from fer.preprocess import CLASSES
from tests.conftest import PORTRAITS, REPO


@pytest.fixture
def gallery(tmp_path, untrained_weights):
    from fer.gallery import Gallery
    models = tmp_path / "models"
    models.mkdir()
    (models / "resnet50_dropout.safetensors").symlink_to(untrained_weights)
    photos = tmp_path / "photos"
    photos.mkdir()
    return Gallery(photos_dir=photos, models_dir=models)


def upload_item(name, content):
    # The ipywidgets 8 FileUpload value format, as the kernel sees it.
    return {"name": name, "type": "image/jpeg", "size": len(content), "content": memoryview(content),
            "last_modified": datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)}


def test_gallery_labels_an_uploaded_portrait_and_shows_why_a_broken_file_failed(gallery):
    gallery.upload.value = (upload_item("portrait.jpg", PORTRAITS[0].read_bytes()),
                            upload_item("broken.jpg", b"\xff\xd8\xff\xe0 this is not a jpeg"))
    portrait, broken = gallery.cards
    assert portrait["name"] == "portrait.jpg" and portrait["face_found"]
    assert len(portrait["labels"]) == 1 and portrait["labels"][0] in CLASSES
    assert "broken.jpg" in broken["error"] and "corrupt image" in broken["error"]
    shown = json.dumps([child.children[1].value for child in gallery.cards_box.children
                        if hasattr(child.children[1], "value")])
    assert "corrupt image" in shown  # the message is on screen, not only in the data


def test_gallery_refuses_a_huge_upload_and_keeps_working(gallery):
    gallery.max_upload_bytes = 1000
    gallery.add_upload([upload_item("big.jpg", PORTRAITS[0].read_bytes())])
    gallery.max_upload_bytes = 10**8
    gallery.add_upload([upload_item("ok.jpg", PORTRAITS[1].read_bytes())])
    assert gallery.cards[0]["name"] == "ok.jpg" and gallery.cards[0]["face_found"]  # newest first
    assert "too large" in gallery.cards[1]["error"]


def test_gallery_labels_only_new_uploads_and_shows_them_first(gallery, monkeypatch):
    import fer.gallery
    gallery.add_upload([upload_item("first.jpg", PORTRAITS[0].read_bytes())])
    calls = []
    real = fer.gallery.predict_image
    monkeypatch.setattr(fer.gallery, "predict_image", lambda *a, **k: calls.append(1) or real(*a, **k))
    gallery.add_upload([upload_item("second.jpg", PORTRAITS[1].read_bytes())])
    assert len(calls) == 1 and [c["name"] for c in gallery.cards] == ["second.jpg", "first.jpg"]
    assert gallery.upload.value == () and not gallery.upload.disabled
    assert "second.jpg" in gallery.summary.value


def test_gallery_starts_with_the_photos_to_predict():
    from fer.gallery import Gallery
    gallery = Gallery(models_dir=REPO / "trained_models")
    if gallery.model_picker.value is None:
        pytest.skip("no trained_models/*.safetensors")
    assert [c["name"] for c in gallery.cards] == [p.name for p in PORTRAITS]
    assert all(c["face_found"] for c in gallery.cards)


def run_02(tmp_path, data, **parameters):
    papermill = pytest.importorskip("papermill")
    parameters = {"data_dir": str(data), "epochs": 1, "subset": 28, "batch_size": 14, "val_subset": 14,
                  "time_budget": 0, "progress": False, **parameters}
    papermill.execute_notebook(str(REPO / "notebooks" / "02_training.ipynb"), str(tmp_path / "out.ipynb"),
                               parameters=parameters, cwd=str(REPO / "notebooks"), progress_bar=False,
                               kernel_name="python3")
    return json.loads((tmp_path / "out.ipynb").read_text())


def test_papermill_runs_02_headless_with_parameters(tmp_path, fer_folder):
    out = tmp_path / "model.safetensors"
    executed = run_02(tmp_path, fer_folder, out=str(out))
    assert out.exists() and out.with_suffix(".history.csv").exists()
    assert any("injected-parameters" in c["metadata"].get("tags", []) for c in executed["cells"])


def test_02_by_default_trains_into_runs_and_never_into_trained_models(tmp_path, fer_folder, monkeypatch):
    monkeypatch.setenv("FER_RUNS", str(tmp_path / "runs"))
    shipped = {p: p.stat().st_mtime_ns for p in (REPO / "trained_models").iterdir()}
    run_02(tmp_path, fer_folder)
    assert (tmp_path / "runs" / "resnet50" / "resnet50.safetensors").is_file()  # the default arch: the shipped one
    assert {p: p.stat().st_mtime_ns for p in (REPO / "trained_models").iterdir()} == shipped


def test_gallery_shows_a_video_upload_as_a_timeline(gallery, tmp_path):
    from fer.democlip import render, write_clip
    clip = write_clip(tmp_path / "clip.mp4", render(size=(320, 240), fps=6, seconds=2), fps=6)
    gallery.add_upload([upload_item("interview.mp4", clip.read_bytes())])
    card = gallery.cards[0]
    # The gallery analyses this 6 frames/s clip frame by frame, as the command line does: the same faces.
    from fer.video import VideoConfig, analyze_video
    command_line = analyze_video(clip, gallery.models(), cfg=VideoConfig(), progress=False)
    assert card["name"] == "interview.mp4" and card["video"] and card["frames"] == 12
    assert len(card["labels"]) == command_line.table["face_id"].nunique() >= 2
    shown = gallery.cards_box.children[0].children
    timelines = [w for w in shown if isinstance(w, widgets.HBox)]  # each face: its thumbnail and timeline
    assert len(timelines) == len(card["labels"]) and all(isinstance(w, widgets.Image) for t in timelines
                                                        for w in t.children)


def test_gallery_names_a_broken_video(gallery):
    gallery.add_upload([upload_item("broken.mp4", b"not a video at all")])
    assert "broken.mp4" in gallery.cards[0]["error"] and "not a video" in gallery.cards[0]["error"]


def test_gallery_shows_a_heat_map_per_face_and_redraws_it_for_another_class(gallery, monkeypatch):
    import fer.gallery
    gallery.add_upload([upload_item("portrait.jpg", PORTRAITS[0].read_bytes())])
    assert gallery.cards[0]["heat_maps"] == 1
    calls = []
    real = fer.gallery.predict_image
    monkeypatch.setattr(fer.gallery, "predict_image", lambda *a, **k: calls.append(1) or real(*a, **k))
    gallery.map_picker.value = "sad"
    assert calls == [] and gallery.cards[0]["heat_maps"] == 1  # only redrawn
    assert "where it sees <b>sad</b>" in json.dumps([w.value for w in _html_widgets(gallery.cards_box)])
    gallery.map_picker.value = "off"
    assert gallery.cards[0]["heat_maps"] == 0


def _html_widgets(widget):
    if isinstance(widget, widgets.HTML):
        yield widget
    for child in getattr(widget, "children", ()):
        yield from _html_widgets(child)


def test_no_notebook_is_committed_with_papermills_injected_parameters():
    """A user who opens a notebook sees its own parameters (02: the shipped recipe), not a test's quick run."""
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        assert not [c for c in cells if "injected-parameters" in c["metadata"].get("tags", [])], path.name


def test_committed_outputs_name_only_the_weights_that_ship():
    """Outputs (and saved widget states) executed with a model no longer shipped show a stale model: each weights
    file a committed notebook names must be in trained_models/ today (re-execute the notebook otherwise)."""
    import re
    shipped = {p.name for p in (REPO / "trained_models").glob("*.safetensors")}
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        notebook = json.loads(path.read_text())
        executed = json.dumps([notebook["metadata"], [c.get("outputs", []) for c in notebook["cells"]]])
        stale = set(re.findall(r"[\w.-]+\.safetensors", executed)) - shipped
        assert not stale, f"{path.name} shows {sorted(stale)}: re-execute it"
