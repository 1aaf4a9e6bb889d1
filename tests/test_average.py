"""train --snapshots keeps every epoch's weights, and `fer average` makes one model of the mean of some of them,
its BatchNorm statistics recomputed and its accuracy measured on the run's selection split."""
import pytest
import torch

from fer.api import load_model
from fer.weights import read_metadata
from tests.test_config_versions import tensor
from tests.test_hostile_inputs import one_line_error, run, tiny_train_args


@pytest.fixture(scope="module")
def snapshots(fer_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("snap") / "m.safetensors"
    code = run_quietly(tiny_train_args(fer_folder, "--out", out, "--epochs", "3", "--snapshots"))
    assert code == 0
    return out, sorted((out.parent / "snapshots" / "m").glob("*.safetensors"))


def run_quietly(args):
    from fer.cli import main
    return main([str(a) for a in args])


def test_every_epoch_is_kept_in_float32_with_its_score(snapshots):
    out, files = snapshots
    assert [f.name for f in files] == ["epoch_001.safetensors", "epoch_002.safetensors", "epoch_003.safetensors"]
    for epoch, path in enumerate(files, start=1):
        meta = read_metadata(path)
        assert meta["epoch"] == epoch and 0 <= meta["val_acc"] <= 1 and meta["val_split"] == "public"
        assert tensor(path, "fc.weight").dtype == torch.float32
    best = read_metadata(out)  # the run's own best weights are written as before
    assert best["val_acc"] == max(read_metadata(p)["val_acc"] for p in files)


def test_the_average_is_the_mean_of_the_weights_with_batchnorm_recomputed(snapshots, tmp_path, capsys):
    _, files = snapshots
    out = tmp_path / "avg.safetensors"
    code, stdout, err = run(["average", *files, "--out", out], capsys)
    assert code == 0, err
    assert "averaged 3 snapshots (epochs 1-3): PublicTest" in stdout and str(out) in stdout
    meta = read_metadata(out)
    assert meta["averaged_epochs"] == [1, 2, 3] and 0 <= meta["val_acc"] <= 1
    for name in ("conv1.weight", "layer3.0.conv2.weight", "fc.bias"):
        mean = torch.stack([tensor(f, name) for f in files]).mean(0)
        assert torch.allclose(tensor(out, name).float(), mean, atol=2e-3), name  # stored in float16
    running = tensor(out, "bn1.running_mean").float()
    assert torch.isfinite(running).all()
    assert not any(torch.allclose(running, tensor(f, "bn1.running_mean"), atol=1e-3) for f in files)
    load_model(out)


def test_average_refuses_what_it_cannot_average_in_one_line(snapshots, fer_folder, tmp_path, capsys):
    _, files = snapshots
    code, _, err = run(["average", files[0], "--out", tmp_path / "one.safetensors"], capsys)
    assert code == 2 and one_line_error(err) and "at least two" in err
    code, _, err = run(["average", *files[:2], "--out", files[0]], capsys)
    assert code == 2 and one_line_error(err) and "--out" in err  # never writes over an input
    other = tmp_path / "other.safetensors"
    assert run_quietly(tiny_train_args(fer_folder, "--out", other, "--arch", "resnet18")) == 0
    code, _, err = run(["average", files[0], other, "--out", tmp_path / "mixed.safetensors"], capsys)
    assert code == 2 and one_line_error(err) and "another network" in err
    (tmp_path / "taken.safetensors").write_bytes(b"mine")
    code, _, err = run(["average", *files[:2], "--out", tmp_path / "taken.safetensors"], capsys)
    assert code == 2 and one_line_error(err) and "--force" in err
    assert (tmp_path / "taken.safetensors").read_bytes() == b"mine"


def test_snapshots_can_be_switched_on_when_resuming(fer_folder, tmp_path, capsys):
    out = tmp_path / "r.safetensors"
    assert run_quietly(tiny_train_args(fer_folder, "--out", out)) == 0
    assert not (tmp_path / "snapshots").exists()
    code, _, err = run(["train", "--out", out, "--resume", "--epochs", "2", "--snapshots", "--no-progress"], capsys)
    assert code == 0, err
    assert [p.name for p in (tmp_path / "snapshots" / "r").iterdir()] == ["epoch_002.safetensors"]


def test_finishing_a_member_keeps_the_average_publictest_prefers_calibrated(snapshots, fer_folder, tmp_path,
                                                                           monkeypatch):
    import importlib.util
    import json
    import sys
    import fer.calibrate
    from tests.conftest import REPO
    spec = importlib.util.spec_from_file_location("finish_member", REPO / "benchmarks" / "finish_member.py")
    finish = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(finish)
    monkeypatch.setattr(fer.calibrate, "MIN_CALIBRATION_FACES", 1)  # the tiny data set's PublicTest is 14 faces
    monkeypatch.setattr(fer.calibrate, "fit_temperature", lambda log_probs, labels: 1.5)
    run_out, files = snapshots
    out, results = tmp_path / "member.safetensors", tmp_path / "member.json"
    monkeypatch.setattr(sys, "argv", ["finish_member.py", str(run_out), "--data", str(fer_folder), "--raw-test",
                                      str(fer_folder), "--out", str(out), "--results", str(results)])
    finish.main()
    result = json.loads(results.read_text())
    assert result["epochs"] == 3 and list(result["averaged_public"]) == ["3"]  # min(5, 3) ... min(20, 3)
    kept = result["kept"]
    assert kept["public"] == max(result["averaged_public"].values()) and kept["temperature"] == 1.5
    meta = read_metadata(out)
    assert meta["temperature"] == 1.5 and meta["averaged_epochs"] == list(range(4 - kept["last_epochs"], 4))
    assert 0 <= result["raw_private"]["accuracy"] <= 1 and 0 <= result["train_eval_mode"]["accuracy"] <= 1
    assert tensor(out, "fc.weight").dtype == torch.float16
