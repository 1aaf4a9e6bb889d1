"""What a new user met (issue 35): turned photos, photos without a face, folders, the Python calls the README
shows, and the command line's rough edges. Each test is one of the reported cases."""
import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from fer.cli import main
from fer.detect import crop_face, detect_faces
from fer.images import open_image, to_gray, to_rgb
from fer.photos import predict_image
from fer.weights import read_metadata
from tests.conftest import PORTRAITS, REPO


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# Photos


@pytest.mark.parametrize("quarter", [1, 2, 3], ids=["90", "180", "270"])
@pytest.mark.parametrize("path", PORTRAITS, ids=lambda p: p.stem)
def test_a_turned_photo_is_read_upright(path, quarter):
    """YuNet finds a face on its side or upside down but places its landmarks as if it were upright: the crop
    of the turned photo must be the upright photo's crop, whichever way the photo lies."""
    image = open_image(path)
    upright = crop_face(to_gray(image), detect_faces(to_rgb(image))[0]).astype(float)
    turned_rgb = np.ascontiguousarray(np.rot90(to_rgb(image), quarter))
    [face] = detect_faces(turned_rgb)
    turned = crop_face(np.ascontiguousarray(np.rot90(to_gray(image), quarter)), face).astype(float)
    assert np.abs(turned - upright).mean() < 6  # grey levels; a crop left turned differs by 40 to 85


def test_a_turned_photo_gets_the_upright_photos_label(untrained_weights):
    image = open_image(PORTRAITS[0])
    upright = predict_image(image, [untrained_weights])["faces"][0]["probs"]
    turned = predict_image(image.rotate(180), [untrained_weights])["faces"][0]["probs"]
    assert max(abs(upright[c] - turned[c]) for c in upright) < 0.05


@pytest.mark.parametrize("kind", ["gradient", "transparent png", "noise"])
def test_a_photo_without_a_face_gets_no_emotion(tmp_path, untrained_weights, capsys, kind):
    if kind == "gradient":
        image = Image.fromarray(np.tile(np.linspace(0, 255, 320, dtype=np.uint8), (240, 1)))
    elif kind == "transparent png":
        image = Image.new("RGBA", (300, 200), (0, 0, 0, 0))
    else:
        image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8))
    path = tmp_path / "nothing.png"
    image.save(path)
    code, out, err = run(["predict", path, "--weights", untrained_weights, "--json", "--out", tmp_path / "out"],
                         capsys)
    [result] = json.loads(out)["results"]
    assert code == 0 and result["faces"] == [] and result["note"] == "no face found"
    code, out, err = run(["predict", path, "--weights", untrained_weights], capsys)
    assert out.strip() == f"{path}: no face found" and not err


def test_numpy_arrays_are_photos_too(untrained_weights):
    rgb = to_rgb(open_image(PORTRAITS[0]))
    from_pil = predict_image(Image.fromarray(rgb), [untrained_weights])
    for array in (rgb, rgb.astype(np.float32) / 255, np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])):
        result = predict_image(array, [untrained_weights])
        assert result["faces"][0]["label"] == from_pil["faces"][0]["label"]
    gray = predict_image(to_gray(open_image(PORTRAITS[0])), [untrained_weights])
    assert gray["face_found"]


def test_a_bad_array_is_one_clear_error(untrained_weights):
    from fer.errors import DataError
    with pytest.raises(DataError, match="H x W"):
        predict_image(np.zeros((4, 4, 5), np.uint8), [untrained_weights])
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        predict_image(np.full((40, 40), 7.5), [untrained_weights])


def test_predict_a_folder_labels_the_photos_inside(tmp_path, untrained_weights, capsys):
    folder = tmp_path / "album"
    (folder / "trip").mkdir(parents=True)
    shutil.copy(PORTRAITS[0], folder / "a.jpg")
    shutil.copy(PORTRAITS[1], folder / "trip" / "b.jpg")
    (folder / "notes.txt").write_text("not a photo")
    code, out, err = run(["predict", folder, "--weights", untrained_weights, "--json"], capsys)
    assert code == 0 and [r["path"] for r in json.loads(out)["results"]] == [str(folder / "a.jpg")]
    code, out, err = run(["predict", folder, "--recursive", "--weights", untrained_weights, "--json"], capsys)
    assert [r["path"] for r in json.loads(out)["results"]] == [str(folder / "a.jpg"), str(folder / "trip" / "b.jpg")]
    (tmp_path / "empty").mkdir()
    code, out, err = run(["predict", tmp_path / "empty", "--weights", untrained_weights], capsys)
    assert code == 2 and err.count("\n") == 1 and "holds no photo" in err


# The Python API


def python_blocks(text: str) -> list[str]:
    blocks, inside = [], None
    for line in text.splitlines():
        if line.strip() == "```python":
            inside = []
        elif line.strip() == "```" and inside is not None:
            blocks.append("\n".join(inside))
            inside = None
        elif inside is not None:
            inside.append(line)
    return blocks


def test_every_python_example_in_the_readme_runs(tmp_path):
    """Run as a user would, in a fresh interpreter at the repository's root, with the shipped weights."""
    blocks = python_blocks((REPO / "README.md").read_text())
    assert blocks, "the README shows Python examples"
    for block in blocks:
        done = subprocess.run([sys.executable, "-c", block], cwd=REPO, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "MPLBACKEND": "Agg"})
        assert done.returncode == 0, f"{block}\n{done.stderr[-2000:]}"


def test_fer_predict_is_the_function_whatever_was_imported_before():
    import fer
    import fer.photos  # noqa: F401 - the module once shadowed the function of the same name
    assert callable(fer.predict) and fer.predict.__module__ == "fer.photos"


def test_the_result_names_the_engine_that_gave_it(untrained_weights):
    from fer.inference import load_engine
    assert predict_image(open_image(PORTRAITS[0]), [untrained_weights])["engine"] == "torch"
    result = predict_image(open_image(PORTRAITS[0]), [load_engine(untrained_weights, "onnx")])
    assert result["engine"] == "onnx"


# The command line


def test_weights_before_a_photo_do_not_swallow_it(untrained_weights, capsys):
    code, out, err = run(["predict", "--weights", untrained_weights, PORTRAITS[0], "--json"], capsys)
    assert code == 0, err
    assert [r["path"] for r in json.loads(out)["results"]] == [str(PORTRAITS[0])]
    code, out, err = run(["predict", "--weights", untrained_weights, "--weights", untrained_weights, PORTRAITS[0],
                          "--json"], capsys)
    assert code == 0 and json.loads(out)["results"][0]["engine"] == "torch+torch"


def test_weights_before_the_data_do_not_swallow_it(fer_zip, untrained_weights, capsys, monkeypatch):
    monkeypatch.delenv("FER_DATA", raising=False)
    code, out, err = run(["evaluate", "--split", "private", "--weights", untrained_weights, fer_zip, "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["data"] == str(fer_zip)


def test_an_ensemble_list_is_one_flag(tmp_path, untrained_weights, capsys):
    shutil.copy(untrained_weights, tmp_path / "a.safetensors")
    shutil.copy(untrained_weights, tmp_path / "b.safetensors")
    (tmp_path / "members.txt").write_text("# two members\na.safetensors\nb.safetensors  # the second\n\n")
    code, out, err = run(["predict", PORTRAITS[0], "--weights", tmp_path / "members.txt", "--json"], capsys)
    assert code == 0 and json.loads(out)["results"][0]["engine"] == "torch+torch"
    (tmp_path / "broken.txt").write_text("a.safetensors\nmissing.safetensors\n")
    code, out, err = run(["predict", PORTRAITS[0], "--weights", tmp_path / "broken.txt"], capsys)
    assert code == 2 and "missing.safetensors" in err and err.count("\n") == 1


def test_fer_alone_prints_the_help_and_has_a_version(capsys):
    code, out, err = run([], capsys)
    assert code == 0 and "predict" in out and "evaluate" in out and not err
    code, out, err = run(["--version"], capsys)
    assert code == 0 and out.startswith("fer ")


def test_fer_is_a_console_command():
    from importlib.metadata import entry_points
    [command] = [e for e in entry_points(group="console_scripts") if e.name == "fer"]
    assert command.value == "fer.cli:main"


def test_evaluate_reads_fer_data_when_no_data_is_given(fer_zip, untrained_weights, capsys, monkeypatch):
    monkeypatch.setenv("FER_DATA", str(fer_zip))
    code, out, err = run(["evaluate", "--split", "private", "--weights", untrained_weights, "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["n"] == 42


def test_calibrate_never_rewrites_its_weights_without_force(fer_folder, untrained_weights, tmp_path, capsys,
                                                            monkeypatch):
    import fer.calibrate
    monkeypatch.setattr(fer.calibrate, "fit_temperature", lambda log_probs, labels: 1.5)  # an untrained model's
    weights = tmp_path / "w.safetensors"
    shutil.copy(untrained_weights, weights)
    before = weights.read_bytes()
    code, out, err = run(["calibrate", fer_folder, "--split", "all", "--weights", weights], capsys)
    assert code == 2 and "--out" in err and "--force" in err and weights.read_bytes() == before
    copy = tmp_path / "calibrated.safetensors"
    code, out, err = run(["calibrate", fer_folder, "--split", "all", "--weights", weights, "--out", copy], capsys)
    assert code == 0, err
    assert weights.read_bytes() == before and read_metadata(copy)["temperature"] == 1.5
    assert json.loads(out)["written"] == str(copy)
    code, out, err = run(["calibrate", fer_folder, "--split", "all", "--weights", weights, "--out", copy], capsys)
    assert code == 2 and "exists" in err  # an existing --out is replaced only with --force


def test_outputs_are_checked_before_any_work(tmp_path, untrained_weights, capsys):
    clip = REPO / "videos" / "portraits.mp4"
    code, out, err = run(["video", clip, "--weights", untrained_weights, "--out", tmp_path / "annotated"], capsys)
    assert code == 2 and ".mp4" in err and not list(tmp_path.iterdir())
    taken = tmp_path / "taken.txt"
    taken.write_text("mine")
    code, out, err = run(["predict", PORTRAITS[0], "--weights", untrained_weights, "--out", taken], capsys)
    assert code == 2 and "is a file" in err and taken.read_text() == "mine" and not out


def test_video_summary_says_shares_of_frames_not_probabilities(tmp_path, untrained_weights, capsys):
    from fer.cli import plural
    assert plural(1, "frame") == "1 frame" and plural(2, "frame") == "2 frames"
    clip = tmp_path / "short.mp4"
    frame = cv2.resize(cv2.imread(str(PORTRAITS[0])), (320, 240))
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    for _ in range(3):
        writer.write(frame)
    writer.release()
    code, out, err = run(["video", clip, "--weights", untrained_weights, "--no-progress", "--every", "3"], capsys)
    assert code == 0, err
    assert "3 frames (1 analysed)" in out and "seen in 1 analysed frame, labelled " in out and "of them" in out


def test_every_option_says_its_default(capsys):
    for command in ("evaluate", "video", "predict"):
        code, out, err = run([command, "--help"], capsys)
        text = " ".join(out.split())
        assert code == 0
        if command == "evaluate":
            assert "faces per forward pass (default 256" in text
        if command == "video":
            assert "--tta" in text and "(default 1: all)" in text and "(default 0.5; 0: none)" in text
