"""The notebooks' parts that run without a browser: the gallery widget and a papermill run of 02."""
import datetime
import json

import pytest

from fer.data import CLASSES
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
    assert "too large" in gallery.cards[0]["error"] and gallery.cards[1]["face_found"]


def test_gallery_starts_with_the_photos_to_predict():
    from fer.gallery import Gallery
    gallery = Gallery(models_dir=REPO / "trained_models")
    if gallery.model_picker.value is None:
        pytest.skip("no trained_models/*.safetensors")
    assert [c["name"] for c in gallery.cards] == [p.name for p in PORTRAITS]
    assert all(c["face_found"] for c in gallery.cards)


def test_smoke_mode_never_writes_over_the_shipped_weights(monkeypatch):
    from fer.train import notebook_config
    monkeypatch.setenv("FER_SMOKE", "1")
    cfg = notebook_config(out="trained_models/resnet50_dropout.safetensors", epochs=30)
    assert cfg.epochs == 1 and cfg.subset == 256
    assert not cfg.out.startswith("trained_models") and cfg.out.endswith("resnet50_dropout.safetensors")


def test_papermill_runs_02_headless_with_parameters(tmp_path, fer_folder, monkeypatch):
    papermill = pytest.importorskip("papermill")
    monkeypatch.delenv("FER_SMOKE", raising=False)  # this run's parameters are the point, not the smoke ones
    out = tmp_path / "model.safetensors"
    papermill.execute_notebook(str(REPO / "notebooks" / "02_training.ipynb"), str(tmp_path / "out.ipynb"),
                               parameters={"data_dir": str(fer_folder), "epochs": 1, "subset": 28,
                                           "batch_size": 14, "output": str(out)},
                               cwd=str(REPO), progress_bar=False, kernel_name="python3")
    assert out.exists() and out.with_suffix(".history.csv").exists()
    executed = json.loads((tmp_path / "out.ipynb").read_text())
    assert any("injected-parameters" in c["metadata"].get("tags", []) for c in executed["cells"])
