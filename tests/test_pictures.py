"""Issue 22: what a user sees must be true. A no-face photo is marked as one; the per-class panel of a video
is readable at 640 x 480; one person stays one face in the gallery's analysis of the shipped clip; a face's
timeline shows a gap as a gap. (The Grad-CAM placement checks are in test_explain.py.)"""
import importlib
import json

import matplotlib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fer.charts import plot_timeline, timeline_segments
from fer.cli import main
from fer.gallery import VIDEO_MAX_RATE, Gallery, analyse_video_upload
from fer.inference import load_engine
from fer.photos import draw_face, draw_labels
from fer.preprocess import CLASSES
from fer.video import PANEL_MIN_ROW, VideoConfig, analyze_video, draw_track, panel_layout
from tests.conftest import REPO

SHIPPED_CLIP = REPO / "videos" / "portraits.mp4"


def test_a_photo_without_a_face_is_marked_on_the_picture_and_in_the_json(untrained_weights, tmp_path, monkeypatch,
                                                                          capsys):
    chart = tmp_path / "bars.png"
    Image.new("RGB", (400, 300), (255, 255, 255)).save(chart)
    assert main(["predict", str(chart), "--weights", str(untrained_weights), "--json"]) == 0
    [result] = json.loads(capsys.readouterr().out)["results"]
    assert not result["face_found"] and "no face" in result["note"] and result["faces"] == []
    drawn = []
    monkeypatch.setattr(importlib.import_module("fer.photos"), "draw_face",
                        lambda canvas, box, text, color: drawn.append(text))
    draw_labels(Image.open(chart), result)
    assert drawn == ["NO FACE FOUND"]  # and no emotion
    assert main(["predict", str(chart), "--weights", str(untrained_weights), "--json", "--whole-image"]) == 0
    [result] = json.loads(capsys.readouterr().out)["results"]
    drawn.clear()
    draw_labels(Image.open(chart), result)
    assert len(result["faces"]) == 1 and drawn[0].startswith("NO FACE FOUND - whole image: ")


def test_a_long_label_shrinks_to_fit_a_narrow_picture():
    canvas = np.zeros((60, 90, 3), np.uint8)
    draw_face(canvas, (0, 0, 90, 60), "NO FACE FOUND - whole photo: surprise 99%")
    columns = np.flatnonzero(canvas.any(axis=(0, 2)))
    assert columns.max() < 90 and columns.min() == 0  # drawn, and inside


def test_the_per_class_panel_is_readable_on_a_640_by_480_frame():
    frame = np.full((480, 640, 3), 128, np.uint8)
    box = (250, 100, 140, 150)
    probs = np.array([0.05, 0.01, 0.1, 0.6, 0.14, 0.05, 0.05])
    draw_track(frame, box, 1, probs, CLASSES)
    _, _, line = draw_face(np.zeros_like(frame), box, "1: happy 60%")
    layout = panel_layout(frame.shape, box, line, CLASSES)
    assert layout["row"] >= PANEL_MIN_ROW and layout["font_scale"] >= 0.35  # letters ~8 px high, rows 11+
    assert layout["top"] >= box[1] + box[3]  # under the face, not over the eyes and mouth
    panel = frame[layout["top"]:layout["top"] + layout["height"], layout["left"]:layout["left"] + layout["width"]]
    assert (panel == 255).all(axis=2).sum() > 100  # white letters: the class names and percentages


def test_the_panel_stays_inside_a_frame_with_the_face_at_the_bottom_edge():
    frame = np.full((240, 320, 3), 128, np.uint8)
    box = (10, 150, 80, 85)
    draw_track(frame, box, 2, np.full(len(CLASSES), 1 / len(CLASSES)), CLASSES)
    layout = panel_layout(frame.shape, box, 20, CLASSES)
    assert layout["left"] + layout["width"] <= 320 and layout["top"] + layout["height"] <= 240
    assert layout["left"] >= box[0] + box[2]  # beside the face, where there is room


@pytest.mark.skipif(not SHIPPED_CLIP.exists(), reason="no shipped clip")
def test_the_shipped_clip_gives_two_faces_in_the_gallery_and_on_the_command_line(capsys):
    engine = load_engine(None, "auto")
    gallery = analyse_video_upload(SHIPPED_CLIP.name, SHIPPED_CLIP.read_bytes(), [engine])
    command_line = analyze_video(SHIPPED_CLIP, [engine], cfg=VideoConfig(), progress=False)
    assert gallery.table["face_id"].nunique() == 2
    assert command_line.table["face_id"].nunique() == 2


def test_sampling_by_time_keeps_every_frame_of_a_slow_clip_and_thins_a_fast_one(tmp_path, untrained_weights):
    from fer.democlip import Walk, render, write_clip
    engine = load_engine(untrained_weights, "torch")
    walk = [Walk("grace_hopper.jpg", (0.5, 0.5), (0.5, 0.5), (100, 100))]
    slow = write_clip(tmp_path / "slow.mp4", render(walk, size=(240, 180), fps=5, seconds=1.0), fps=5)
    fast = write_clip(tmp_path / "fast.mp4", render(walk, size=(240, 180), fps=30, seconds=1.0), fps=30)
    cfg = VideoConfig(max_rate=VIDEO_MAX_RATE)
    assert analyze_video(slow, engine, cfg=cfg, progress=False).analysed == 5
    assert analyze_video(fast, engine, cfg=cfg, progress=False).analysed == 10


def test_a_gap_in_a_timeline_is_drawn_as_a_gap():
    times = np.r_[np.arange(0, 2, 0.1), np.arange(3, 4, 0.1)]
    assert [(s.start, s.stop) for s in timeline_segments(times, 0.1)] == [(0, 20), (20, 30)]
    table = pd.DataFrame({"time_s": times, "face_id": 1,
                          **{f"smooth_{c}": 1 / len(CLASSES) for c in CLASSES}})
    fig = plot_timeline(table, 1)
    ax = fig.axes[0]
    shaded = [p for p in ax.patches if p.get_label() == "not seen"]
    assert len(shaded) == 1
    patch = shaded[0]  # a Rectangle (matplotlib >= 3.9) or a Polygon
    x0, x1 = (patch.get_x(), patch.get_x() + patch.get_width()) if hasattr(patch, "get_width") else \
        (patch.get_xy()[:, 0].min(), patch.get_xy()[:, 0].max())
    assert abs(x0 - 1.9) < 1e-6 and abs(x1 - 3.0) < 1e-6
    matplotlib.pyplot.close(fig)


def test_each_face_of_a_video_has_a_thumbnail_of_its_own(tmp_path, untrained_weights):
    from fer.democlip import Walk, render, write_clip
    engine = load_engine(untrained_weights, "torch")
    walks = [Walk("grace_hopper.jpg", (0.25, 0.5), (0.25, 0.5), (100, 100)),
             Walk("eileen_collins.jpg", (0.75, 0.5), (0.75, 0.5), (100, 100))]
    video = write_clip(tmp_path / "two.mp4", render(walks, size=(320, 200), fps=5, seconds=0.6), fps=5)
    result = analyze_video(video, engine, progress=False)
    assert sorted(result.thumbnails) == sorted(result.table["face_id"].unique()) and len(result.thumbnails) == 2
    first, second = result.thumbnails.values()
    assert first.shape == (96, 96, 3) and np.abs(first.astype(int) - second.astype(int)).mean() > 10


def test_a_file_uploaded_again_says_so_on_its_card(tmp_path, untrained_weights):
    import shutil
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(untrained_weights, models / "resnet50_dropout.safetensors")
    photos = tmp_path / "photos"
    photos.mkdir()
    gallery = Gallery(photos_dir=photos, models_dir=models)
    content = (REPO / "photos_to_predict" / "grace_hopper.jpg").read_bytes()
    gallery.add_upload([{"name": "a.jpg", "content": content}])
    gallery.add_upload([{"name": "b.jpg", "content": content}])
    assert gallery._entries[0]["same_as"] == "a.jpg" and "same_as" not in gallery._entries[1]
    assert "uploaded again" in gallery.cards_box.children[0].children[0].value
    assert gallery.upload.description == "Upload photos or videos"


def test_an_unknown_option_close_to_a_known_one_gets_a_hint(capsys):
    assert main(["predict", "x.jpg", "--output", "out"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean --out?" in err


def test_video_without_outputs_says_that_nothing_was_written(tmp_path, untrained_weights, capsys):
    from fer.democlip import Walk, render, write_clip
    walk = [Walk("grace_hopper.jpg", (0.5, 0.5), (0.5, 0.5), (100, 100))]
    video = write_clip(tmp_path / "v.mp4", render(walk, size=(240, 180), fps=5, seconds=0.4), fps=5)
    assert main(["video", str(video), "--weights", str(untrained_weights), "--no-progress"]) == 0
    assert "nothing written" in capsys.readouterr().out
