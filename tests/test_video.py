"""Video: faces followed across frames with stable ids, smoothed labels, a CSV that matches the frames, and
bad or broken videos answered in one line without leaving half-written outputs behind as if complete."""
import json

import cv2
import numpy as np
import pandas as pd
import pytest

from fer.cli import main
from fer.democlip import Walk, render, write_clip
from fer.inference import load_engine
from fer.tracking import iou
from fer.video import FaceTracker, Track, VideoConfig, analyze_video, smooth

FPS = 10
CROSSING = (Walk("grace_hopper.jpg", (0.2, 0.3), (0.8, 0.5), (90, 110)),
            Walk("eileen_collins.jpg", (0.8, 0.7), (0.2, 0.4), (100, 90)))


@pytest.fixture(scope="module")
def engine(untrained_weights):
    return load_engine(untrained_weights, "torch")


def clip(path, walks, seconds=4.0, fps=FPS, fourcc="mp4v"):
    return write_clip(path, render(walks, size=(320, 240), fps=fps, seconds=seconds), fps=fps, fourcc=fourcc)


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_ids_stay_stable_when_two_faces_cross_paths_slowly(tmp_path, engine):
    result = analyze_video(clip(tmp_path / "cross.mp4", CROSSING), engine, progress=False)
    counts = result.table.groupby("face_id").size()
    assert list(counts.index) == [1, 2] and counts.min() >= 0.75 * result.frames


def test_a_face_that_leaves_and_comes_back_soon_keeps_its_id(tmp_path, engine):
    away = (Walk("grace_hopper.jpg", (0.3, 0.5), (0.7, 0.5), (100, 100), visible=(0.0, 0.45)),
            Walk("grace_hopper.jpg", (0.3, 0.5), (0.7, 0.5), (100, 100), visible=(0.55, 1.0)))  # same path
    result = analyze_video(clip(tmp_path / "away.mp4", away), engine, cfg=VideoConfig(max_missing=1.0), progress=False)
    table = result.table
    assert set(table["face_id"]) == {1}
    absent = set(range(result.frames)) - set(table["frame"])
    assert absent and min(absent) > 10 and max(absent) < 30  # the frames in which it was away


GONE = (Walk("grace_hopper.jpg", (0.3, 0.5), (0.3, 0.5), (100, 100), visible=(0.0, 0.2)),
        Walk("grace_hopper.jpg", (0.7, 0.5), (0.7, 0.5), (100, 100), visible=(0.8, 1.0)))  # 2.4 s away


def test_a_face_away_longer_than_max_missing_is_known_again_by_how_it_looks(tmp_path, engine):
    result = analyze_video(clip(tmp_path / "gone.mp4", GONE), engine, cfg=VideoConfig(max_missing=1.0, remember=5.0),
                           progress=False)
    assert set(result.table["face_id"]) == {1}  # back elsewhere in the frame, after more than max_missing


def test_a_face_away_for_longer_than_remember_is_a_new_face(tmp_path, engine):
    result = analyze_video(clip(tmp_path / "gone.mp4", GONE), engine, cfg=VideoConfig(max_missing=1.0, remember=1.0),
                           progress=False)
    assert set(result.table["face_id"]) == {1, 2}


def test_another_face_where_a_lost_one_should_be_gets_its_own_id(tmp_path, engine):
    swap = (Walk("grace_hopper.jpg", (0.3, 0.5), (0.7, 0.5), (100, 100), visible=(0.0, 0.45)),
            Walk("eileen_collins.jpg", (0.3, 0.5), (0.7, 0.5), (100, 100), visible=(0.55, 1.0)))  # same path
    result = analyze_video(clip(tmp_path / "swap.mp4", swap), engine, progress=False)
    assert set(result.table["face_id"]) == {1, 2}


def test_two_faces_meeting_head_on_keep_their_ids_through_the_occlusion(tmp_path, engine):
    """Collins passes in front of Hopper, hiding her for most of a second: position alone gave Hopper a third
    id when she reappeared (measured before appearance was used); each id must also stay on one person."""
    head_on = (Walk("grace_hopper.jpg", (0.15, 0.5), (0.85, 0.5), (90, 90)),
               Walk("eileen_collins.jpg", (0.85, 0.5), (0.15, 0.5), (90, 90)))
    table = analyze_video(clip(tmp_path / "head_on.mp4", head_on, seconds=6.0), engine, progress=False).table
    assert set(table["face_id"]) == {1, 2}
    for _, rows in table.groupby("face_id"):
        centres = (rows["x"] + rows["w"] / 2).to_numpy()
        direction = np.sign(centres[-1] - centres[0])
        assert direction != 0 and (np.diff(centres) * direction > -8).all()  # one way across: never swapped


def test_the_csv_has_one_row_per_analysed_frame_and_face_and_none_for_empty_frames(tmp_path, engine):
    walks = (Walk("eileen_collins.jpg", (0.5, 0.5), (0.5, 0.5), (110, 110), visible=(0.3, 0.7)),)
    video = clip(tmp_path / "middle.mp4", walks, seconds=3.0)
    result = analyze_video(video, engine, out_csv=tmp_path / "rows.csv", cfg=VideoConfig(every=2), progress=False)
    table = pd.read_csv(tmp_path / "rows.csv")
    assert len(table) == len(result.rows) and table["frame"].is_unique
    assert (table["frame"] % 2 == 0).all() and np.allclose(table["time_s"], table["frame"] / FPS)
    assert table["frame"].min() >= 0.25 * result.frames and table["frame"].max() <= 0.75 * result.frames
    raw = table[[c for c in table if c.startswith("raw_") and c != "raw_label"]].to_numpy()
    smoothed = table[[c for c in table if c.startswith("smooth_")]].to_numpy()
    assert np.allclose(raw.sum(1), 1, atol=1e-3) and np.allclose(smoothed.sum(1), 1, atol=1e-3)
    assert result.analysed == (result.frames + 1) // 2


def test_smoothing_stops_a_flickering_label():
    track = Track(1, np.zeros(4), 0.0)
    steady, blip = np.array([0.6, 0.4]), np.array([0.4, 0.6])  # one frame in four says the other class
    frames = [steady, steady, steady, blip] * 6
    labels = [int(np.argmax(smooth(track, p, 0.1, time_constant=0.5))) for p in frames]
    assert [int(np.argmax(p)) for p in frames].count(1) == 6 and set(labels) == {0}


def test_the_tracker_matches_by_overlap_then_by_motion():
    tracker = FaceTracker()
    first = tracker.update([(0, 0, 50, 50), (200, 0, 50, 50)], 0.0)
    second = tracker.update([(205, 2, 50, 50), (4, 1, 50, 50)], 0.1)
    assert [t.face_id for t in second] == [first[1].face_id, first[0].face_id]


def test_annotated_video_keeps_the_frame_rate_and_the_frames(tmp_path, capsys, untrained_weights):
    video = clip(tmp_path / "in.mp4", CROSSING, seconds=2.0)
    code, out, err = run(["video", video, "--weights", untrained_weights, "--engine", "torch", "--out",
                          tmp_path / "out.mp4", "--csv", tmp_path / "out.csv", "--json", "--no-progress",
                          "--search-every", "0.3"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    capture = cv2.VideoCapture(str(tmp_path / "out.mp4"))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(FPS) and capture.get(cv2.CAP_PROP_FRAME_COUNT) == 20
    assert summary["frames"] == 20 and summary["complete"] and set(summary["faces"]) == {"1", "2"}
    assert abs(sum(summary["faces"]["1"]["shares"].values()) - 1) < 0.01


@pytest.mark.parametrize("kind", ["text", "truncated mp4", "missing", "empty"])
def test_a_file_that_is_not_a_video_is_one_line_and_exit_2(tmp_path, capsys, untrained_weights, kind):
    path = tmp_path / "clip.mp4"
    if kind == "text":
        path.write_text("not a video")
    elif kind == "truncated mp4":
        whole = clip(tmp_path / "whole.mp4", CROSSING, seconds=1.0).read_bytes()
        path.write_bytes(whole[: len(whole) // 3])  # mp4v keeps its index at the end: nothing is playable
    elif kind == "empty":
        path.write_bytes(b"")
    code, _, err = run(["video", path, "--weights", untrained_weights, "--csv", tmp_path / "rows.csv",
                        "--no-progress"], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("fer: ") and "clip.mp4" in err
    assert not list(tmp_path.glob("rows*")) and not list(tmp_path.glob(".rows*"))


def test_a_video_that_ends_early_keeps_what_was_read(tmp_path, capsys, untrained_weights):
    whole = clip(tmp_path / "whole.avi", CROSSING, seconds=3.0, fourcc="MJPG").read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole[: int(len(whole) * 0.6)])  # an AVI keeps playing up to where it was cut
    code, out, err = run(["video", cut, "--weights", untrained_weights, "--engine", "torch", "--csv",
                          tmp_path / "rows.csv", "--out", tmp_path / "out.mp4", "--json", "--no-progress"], capsys)
    summary = json.loads(out)
    assert code == 0 and not summary["complete"] and 5 < summary["frames"] < 30 and "ended after" in err
    assert pd.read_csv(tmp_path / "rows.csv")["frame"].max() < summary["frames"]
    assert cv2.VideoCapture(str(tmp_path / "out.mp4")).get(cv2.CAP_PROP_FRAME_COUNT) == summary["frames"]


class FailingEngine:
    """An engine that breaks after a few frames: what a crash or Ctrl-C in the middle of a video looks like."""
    name = "failing"

    def __init__(self, engine, after):
        self.engine, self.calls, self.after = engine, 0, after
        self.spec = engine.spec

    def logits(self, x):
        self.calls += 1
        if self.calls > self.after:
            raise KeyboardInterrupt
        return self.engine.logits(x)


def test_an_interrupted_run_leaves_partial_files_never_complete_looking_ones(tmp_path, engine):
    video = clip(tmp_path / "in.mp4", CROSSING, seconds=2.0)
    with pytest.raises(KeyboardInterrupt):
        analyze_video(video, FailingEngine(engine, 5), out_video=tmp_path / "out.mp4", out_csv=tmp_path / "out.csv",
                      progress=False)
    assert not (tmp_path / "out.mp4").exists() and not (tmp_path / "out.csv").exists()
    partial = pd.read_csv(tmp_path / "out.partial.csv")
    assert 0 < len(partial) and partial["frame"].max() <= 5
    assert cv2.VideoCapture(str(tmp_path / "out.partial.mp4")).isOpened()
    assert not list(tmp_path.glob(".*tmp*"))


@pytest.mark.parametrize("record", [False, True])
def test_a_camera_that_is_not_there_is_one_line_and_exit_2(tmp_path, capsys, untrained_weights, record):
    argv = ["video", "--camera", "7", "--weights", untrained_weights, "--no-progress"]
    code, _, err = run(argv + (["--out", tmp_path / "cam.mp4"] if record else []), capsys)
    assert code == 2 and err.count("\n") == 1 and ("camera" in err)


def test_the_tracker_s_iou_is_torchvision_s():
    """tracking.iou is written out so that `fer video` never loads PyTorch; it must equal box_iou."""
    import torch
    from torchvision.ops import box_convert, box_iou
    from fer.tracking import iou
    rng = np.random.default_rng(0)
    boxes = np.concatenate([rng.integers(0, 100, (200, 2)), rng.integers(0, 60, (200, 2))], axis=1)
    boxes[:5, 2:] = 0  # empty boxes among them
    xyxy = box_convert(torch.from_numpy(boxes.astype(np.float64)), "xywh", "xyxy")
    expected = torch.nan_to_num(box_iou(xyxy[:100], xyxy[100:]).diagonal(), nan=0.0).numpy()
    got = np.array([iou(a, b) for a, b in zip(boxes[:100], boxes[100:])])
    assert np.allclose(got, expected) and (got > 0).sum() > 10
    assert iou(np.array([0, 0, 0, 0]), np.array([0, 0, 0, 0])) == 0.0


def test_between_whole_frame_searches_each_face_is_followed_and_labelled_as_a_search_would(tmp_path, engine,
                                                                                               monkeypatch):
    import fer.video
    searches = []
    search = fer.video.detect_faces
    monkeypatch.setattr(fer.video, "detect_faces", lambda *a, **k: searches.append(1) or search(*a, **k))
    video = clip(tmp_path / "cross.mp4", CROSSING, seconds=3.0)
    every = analyze_video(video, engine, cfg=VideoConfig(smoothing=0, search_every=0), progress=False).table
    whole_searches, searches[:] = len(searches), []
    followed = analyze_video(video, engine, cfg=VideoConfig(smoothing=0, search_every=0.5), progress=False).table
    assert whole_searches == 30 and len(searches) <= 30 / 5 + 3  # 10 frames/s: one in 5, and where one was lost
    assert set(followed["face_id"]) == {1, 2} and len(followed) >= 0.95 * len(every)
    joined = every.merge(followed, on=["frame", "face_id"], suffixes=("", "_followed"))
    assert len(joined) >= 0.95 * len(every)
    boxes = zip(joined[["x", "y", "w", "h"]].to_numpy(), joined[["x_followed", "y_followed", "w_followed",
                                                                  "h_followed"]].to_numpy())
    assert np.mean([iou(a, b) >= 0.8 for a, b in boxes]) >= 0.95
    assert (joined["label"] == joined["label_followed"]).mean() >= 0.9
    with pytest.raises(ValueError, match="search_every"):
        analyze_video(video, engine, cfg=VideoConfig(search_every=-1), progress=False)
