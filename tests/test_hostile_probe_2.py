"""Issue 24's wider probe, one test (or more) per numbered case: no crash, no user file destroyed, one line on
stderr and exit 2 for every refused input, and nothing written that the kit would itself refuse to read."""
import json
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from PIL import Image

from fer.cli import main
from fer.democlip import Walk, render, write_clip
from fer.errors import WeightsError
from fer.export import _set_metadata, check_onnx, weights_digest
from fer.train import paths_for
from fer.api import load_model
from fer.weights import read_metadata
from tests.conftest import PORTRAITS, REPO
from tests.test_hostile_inputs import one_line_error, run, tampered, tiny_train_args


def fer_subprocess(*args, timeout=240):
    """`python -m fer ARGS` in its own process: a crash (segfault) is an exit code there, not a dead suite."""
    return subprocess.run([sys.executable, "-m", "fer", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    walk = Walk(PORTRAITS[0].name, start=(0.3, 0.5), end=(0.5, 0.5), size=(100, 100))
    return write_clip(path, render([walk], size=(320, 240), fps=5, seconds=1.0), fps=5)


# A. The process dies ------------------------------------------------------------------------------


def test_1_a_photo_five_million_pixels_wide_and_one_high_is_labelled_not_a_crash(tmp_path, untrained_weights):
    thin = tmp_path / "thin.png"
    Image.new("L", (5_000_000, 1), 128).save(thin)
    done = fer_subprocess("predict", thin, PORTRAITS[0], "--weights", untrained_weights, "--engine", "torch",
                          "--out", tmp_path / "out")
    assert done.returncode == 0, done.stderr[-500:]
    with Image.open(tmp_path / "out" / "thin.fer.jpg") as copy:
        assert max(copy.size) <= 65_500  # JPEG's limit: the copy is scaled to fit
    assert (tmp_path / "out" / f"{PORTRAITS[0].stem}.fer.jpg").is_file()


def test_17_a_photo_wider_than_jpeg_allows_gets_its_annotated_copy(tmp_path, untrained_weights, capsys):
    wide = tmp_path / "wide.png"
    Image.new("RGB", (70_000, 200), (90, 90, 90)).save(wide)
    code, _, err = run(["predict", wide, "--weights", untrained_weights, "--engine", "torch", "--out",
                        tmp_path / "out"], capsys)
    assert code == 0, err
    with Image.open(tmp_path / "out" / "wide.fer.jpg") as copy:
        copy.load()
        assert copy.size == (65_500, 187)


@pytest.mark.parametrize("camera", ["-1", "99999999999", "64"])
def test_2_an_impossible_camera_number_is_one_line(tmp_path, camera):
    done = fer_subprocess("video", "--camera", camera, "--out", tmp_path / "cam.mp4", timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--camera" in done.stderr, done.stderr


# B. A user's file is destroyed --------------------------------------------------------------------


def test_3_video_out_that_is_the_input_is_refused(clip, tmp_path, untrained_weights, capsys):
    before = clip.read_bytes()
    code, _, err = run(["video", clip, "--out", clip, "--weights", untrained_weights], capsys)
    assert code == 2 and one_line_error(err) and "--out" in err and clip.read_bytes() == before
    link = tmp_path / "link.mp4"
    link.symlink_to(clip)
    code, _, err = run(["video", clip, "--csv", link, "--weights", untrained_weights], capsys)
    assert code == 2 and one_line_error(err) and "--csv" in err and clip.read_bytes() == before


def test_3_video_out_and_csv_on_one_file_are_refused(clip, tmp_path, untrained_weights, capsys):
    same = tmp_path / "x.mp4"
    code, _, err = run(["video", clip, "--out", same, "--csv", same, "--weights", untrained_weights], capsys)
    assert code == 2 and one_line_error(err) and "--csv" in err and not same.exists()


def test_4_export_over_its_own_weights_is_refused(untrained_weights, tmp_path, capsys):
    weights = tmp_path / "m.safetensors"
    shutil.copy(untrained_weights, weights)
    before = weights.read_bytes()
    code, _, err = run(["export", "--weights", weights, "--out", weights], capsys)
    assert code == 2 and one_line_error(err) and weights.read_bytes() == before


def test_5_calibrate_on_too_few_faces_leaves_the_weights_as_they_were(fer_folder, untrained_weights, tmp_path,
                                                                      capsys):
    weights = tmp_path / "m.safetensors"
    shutil.copy(untrained_weights, weights)
    before = weights.read_bytes()
    code, _, err = run(["calibrate", fer_folder, "--weights", weights, "--force"], capsys)
    assert code == 2 and one_line_error(err) and "too few" in err and weights.read_bytes() == before


@pytest.mark.parametrize("fitted", [0.0016, 1_480_923.0])
def test_5_calibrate_never_writes_a_temperature_its_loader_refuses(fer_folder, untrained_weights, tmp_path, capsys,
                                                                   monkeypatch, fitted):
    import fer.calibrate
    import fer.cli
    monkeypatch.setattr(fer.calibrate, "MIN_CALIBRATION_FACES", 1)
    monkeypatch.setattr(fer.calibrate, "fit_temperature", lambda log_probs, labels: fitted)
    weights = tmp_path / "m.safetensors"
    shutil.copy(untrained_weights, weights)
    before = weights.read_bytes()
    code, _, err = run(["calibrate", fer_folder, "--weights", weights, "--force"], capsys)
    assert code == 2 and one_line_error(err) and "outside" in err and weights.read_bytes() == before
    load_model(weights)  # still loads


def test_6_a_chart_is_written_over_a_link_not_through_it(tmp_path):
    import matplotlib.pyplot as plt
    from fer.charts import save
    users = tmp_path / "users_file.txt"
    users.write_text("keep me")
    link = tmp_path / "link.png"
    link.symlink_to(users)
    fig = plt.figure()
    save(fig, link)
    plt.close(fig)
    assert users.read_text() == "keep me" and not link.is_symlink()
    assert Image.open(link).format == "PNG"


def test_14_calibrate_refuses_a_chart_it_cannot_write_before_fitting(fer_folder, untrained_weights, tmp_path,
                                                                     capsys):
    weights = tmp_path / "m.safetensors"
    shutil.copy(untrained_weights, weights)
    before = weights.read_bytes()
    code, _, err = run(["calibrate", fer_folder, "--weights", weights, "--force", "--report", "private", "--chart",
                        tmp_path / "x.csv"], capsys)
    assert code == 2 and one_line_error(err) and ".png" in err and weights.read_bytes() == before


def test_7_a_killed_run_without_weights_is_not_overwritten_without_force(fer_folder, tmp_path, capsys):
    out = tmp_path / "W" / "m.safetensors"
    files = paths_for(out)
    files["checkpoint"].parent.mkdir(parents=True)
    files["history"].write_text("epoch,lr\n1,0.001\n")
    files["checkpoint"].write_bytes(b"an earlier run's checkpoint")
    code, _, err = run(tiny_train_args(fer_folder, "--out", out), capsys)
    assert code == 2 and one_line_error(err) and "earlier run" in err
    assert files["history"].read_text() == "epoch,lr\n1,0.001\n"
    assert files["checkpoint"].read_bytes() == b"an earlier run's checkpoint"


# C. Traceback instead of one line ----------------------------------------------------------------


@pytest.mark.parametrize("seed", ["-1", "4294967296", "1e23"])
def test_8_an_impossible_seed_is_one_line(tmp_path, capsys, seed):
    code, _, err = run(["train", "--data", tmp_path / "no-such-data", "--out", tmp_path / "m.safetensors",
                        "--seed", seed], capsys)
    assert code == 2 and one_line_error(err) and "--seed" in err


def test_9_a_weights_file_of_three_bytes_with_the_onnx_engine(tmp_path, capsys):
    tiny = tmp_path / "tiny.safetensors"
    tiny.write_bytes(b"abc")
    code, _, err = run(["predict", PORTRAITS[0], "--weights", tiny, "--engine", "onnx"], capsys)
    assert code == 2 and one_line_error(err) and "tiny.safetensors" in err
    with pytest.raises(WeightsError):
        weights_digest(tiny)


@pytest.mark.parametrize("key", ["config", "classes"])
def test_10_deeply_nested_metadata_is_refused(untrained_weights, tmp_path, key):
    path = tampered(untrained_weights, tmp_path, key, "[" * 100_000 + "]" * 100_000)
    with pytest.raises(WeightsError, match="nested too deeply"):
        read_metadata(path)


def test_11_weights_that_give_nan_are_an_error_for_the_photo(untrained_weights, tmp_path, capsys):
    def negative_variance(state):
        state["bn1.running_var"][:] = -1.0
    path = tampered(untrained_weights, tmp_path, "commit", '"x"', tensors=negative_variance)
    code, stdout, err = run(["predict", PORTRAITS[0], "--weights", path, "--engine", "torch", "--json"], capsys)
    assert code == 2
    [result] = json.loads(stdout)["results"]
    assert "non-finite" in result["error"] and PORTRAITS[0].name in result["error"] and "faces" not in result
    code, stdout, err = run(["predict", PORTRAITS[0], "--weights", path, "--engine", "torch"], capsys)
    assert code == 2 and "nan" not in stdout.lower() and "non-finite" in err


def test_12_an_out_that_cannot_be_written_is_refused_before_training(fer_folder, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, stdout, err = run(tiny_train_args(fer_folder, "--out", blocker / "m.safetensors"), capsys)
    assert code == 2 and one_line_error(err) and "cannot write" in err and "epoch 1" not in stdout


@pytest.fixture(scope="module")
def finished_run(fer_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "m.safetensors"
    assert main([str(a) for a in tiny_train_args(fer_folder, "--out", out)]) == 0
    return out


def damaged_copy(finished_run, tmp_path, damage):
    copy = tmp_path / "m.safetensors"
    shutil.copy(finished_run, copy)
    checkpoint = torch.load(paths_for(finished_run)["checkpoint"], weights_only=True)
    damage(checkpoint)
    paths_for(copy)["checkpoint"].parent.mkdir(parents=True)
    torch.save(checkpoint, paths_for(copy)["checkpoint"])
    return copy


DAMAGES = {
    "an empty history row": lambda c: c["history"].__setitem__(0, {}),
    "a string weight decay": lambda c: c["optimizer"]["param_groups"][0].__setitem__("weight_decay", "0.05"),
    "bad betas": lambda c: c["optimizer"]["param_groups"][0].__setitem__("betas", (0.9, "x")),
    "a state of the wrong shape": lambda c: next(iter(c["optimizer"]["state"].values())).__setitem__(
        "exp_avg", torch.zeros(3)),
    "a stored seed of -1": lambda c: c["args"].__setitem__("seed", -1),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_13_a_checkpoint_damaged_inside_is_one_line(finished_run, fer_folder, tmp_path, capsys, damage):
    copy = damaged_copy(finished_run, tmp_path, DAMAGES[damage])
    code, stdout, err = run(tiny_train_args(fer_folder, "--out", copy, "--resume", "--epochs", "2"), capsys)
    assert code == 2 and one_line_error(err) and "cannot resume" in err and "epoch 2" not in stdout


def test_15_a_forged_onnx_graph_with_fers_metadata_is_refused(untrained_weights, tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper
    weights = tmp_path / "m.safetensors"
    shutil.copy(untrained_weights, weights)
    # Another graph (faces N x 3 x 8 x 8 in, the same out), under metadata copied from a real export.
    graph = helper.make_graph([helper.make_node("Flatten", ["faces"], ["logits"])], "forged",
                              [helper.make_tensor_value_info("faces", TensorProto.FLOAT, ["batch", 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 192])])
    proto = helper.make_model(graph)
    _set_metadata(proto, weights, "int8")
    onnx.save(proto, str(tmp_path / "m.int8.onnx"))
    with pytest.raises(WeightsError, match="graph"):
        check_onnx(tmp_path / "m.int8.onnx", weights)
    code, stdout, err = run(["predict", PORTRAITS[0], "--weights", weights, "--engine", "onnx-int8"], capsys)
    assert code == 2 and one_line_error(err) and "graph" in err
    code, stdout, err = run(["predict", PORTRAITS[0], "--weights", weights, "--json"], capsys)  # auto: torch
    assert code == 0 and json.loads(stdout)["results"][0]["faces"], err


# D. Accepted, then unusable ----------------------------------------------------------------------


def test_16_a_diverging_run_stops_in_one_line_and_writes_no_weights(fer_folder, tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    code, _, err = run(tiny_train_args(fer_folder, "--out", out, "--lr", "1e10", "--epochs", "3"), capsys)
    assert code == 2 and one_line_error(err) and "diverged" in err
    if out.exists():  # an epoch before the divergence (its one step at the warm-up's lr 0) may have been saved
        load_model(out)  # and then it is a file every command reads, never one with NaN in it


# E. Leftovers ------------------------------------------------------------------------------------


def test_18_a_writer_killed_before_its_rename_leaves_only_what_the_next_writer_cleans(untrained_weights, tmp_path):
    target = tmp_path / "m.safetensors"
    child = ("import os, signal, sys, torch; from fer.model import ModelConfig, build_model; "
             "from fer.weights import save_weights; from tests.conftest import fer_spec; "
             "os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL); "
             f"save_weights(build_model(ModelConfig()), fer_spec(), {str(target)!r})")
    done = subprocess.run([sys.executable, "-c", child], cwd=REPO, capture_output=True)
    assert done.returncode == -signal.SIGKILL
    assert [p.name for p in tmp_path.iterdir()] != []  # the killed writer's temp file
    from fer.model import ModelConfig, build_model
    from fer.weights import save_weights
    from tests.conftest import fer_spec
    save_weights(build_model(ModelConfig()), fer_spec(), target)  # the next writer cleans it
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
    load_model(target)


def test_19_video_out_that_is_a_folder_is_refused_before_reading(clip, tmp_path, untrained_weights, capsys):
    folder = tmp_path / "o.mp4"
    folder.mkdir()
    code, _, err = run(["video", clip, "--out", folder, "--csv", tmp_path / "o.csv", "--weights",
                        untrained_weights], capsys)
    assert code == 2 and one_line_error(err) and "o.mp4" in err and ".tmp" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.mp4"]


# F. One line on stderr, whatever the native libraries say -----------------------------------------


def test_f_a_video_without_its_index_is_one_line_on_stderr(clip, tmp_path, untrained_weights):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(clip.read_bytes()[:2000])  # the moov atom is gone: FFmpeg complains on stderr
    done = fer_subprocess("video", broken, "--weights", untrained_weights, "--csv", tmp_path / "o.csv",
                          "--no-progress", timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and done.stderr.startswith("fer: "), done.stderr


def test_f_a_camera_that_is_not_there_is_one_line_on_stderr(tmp_path, untrained_weights):
    done = fer_subprocess("video", "--camera", "7", "--csv", tmp_path / "o.csv", "--weights", untrained_weights,
                          timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "camera 7" in done.stderr, done.stderr


def test_f_a_photo_with_corrupt_exif_prints_no_warning(tmp_path, untrained_weights, capsys):
    photo = tmp_path / "exif.jpg"
    exif = Image.Exif()
    exif[0x010F] = "maker"
    Image.open(PORTRAITS[0]).save(photo, exif=exif.tobytes()[:-6] + b"\xff" * 6)
    code, _, err = run(["predict", photo, "--weights", untrained_weights, "--engine", "torch"], capsys)
    assert code == 0 and err == ""


# G. Lists and playlists ---------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["ffconcat version 1.0\nfile clip.mp4\n", "file 'clip.mp4'\n",
                                  "#EXTM3U\n#EXTINF:1,\nclip.mp4\n"])
def test_20_a_list_or_playlist_named_mp4_is_refused(clip, untrained_weights, capsys, text):
    playlist = clip.parent / "list.mp4"
    playlist.write_text(text)
    code, stdout, err = run(["video", playlist, "--weights", untrained_weights, "--json"], capsys)
    assert code == 2 and one_line_error(err) and "text file" in err and stdout == ""
