"""The ensemble (issue 31): a list of weights files is one flag, members are averaged as calibrated
probabilities, and the calibration error is reported beside the accuracy."""
import json
import shutil

import pytest
import torch
import torch.nn.functional as F

import fer.paths
from fer.calibrate import write_temperature
from fer.datasets import load_split
from fer.ensemble import read_manifest
from fer.errors import WeightsError
from fer.evaluate import evaluate
from fer.inference import load_engine
from fer.preprocess import normalize
from tests.test_hostile_inputs import run


@pytest.fixture
def members(tmp_path, untrained_weights):
    """Two copies of one network, calibrated with very different temperatures."""
    paths = []
    for name, temperature in (("sharp", 0.2), ("flat", 8.0)):
        path = tmp_path / f"{name}.safetensors"
        shutil.copy(untrained_weights, path)
        write_temperature(path, temperature)
        paths.append(path)
    (tmp_path / "ensemble.txt").write_text("# the members\nsharp.safetensors\nflat.safetensors  # calibrated flat\n")
    return paths


def test_a_list_names_its_members_relative_to_itself(members, tmp_path):
    assert read_manifest(tmp_path / "ensemble.txt") == members
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(WeightsError, match="names no weights file"):
        read_manifest(tmp_path / "empty.txt")
    (tmp_path / "nested.txt").write_text("ensemble.txt\n")
    with pytest.raises(WeightsError, match="weights files only"):
        read_manifest(tmp_path / "nested.txt")


def test_members_are_averaged_as_calibrated_probabilities(members, fer_folder):
    faces = load_split(fer_folder, "public")
    engines = [load_engine(p, "torch") for p in members]
    result = evaluate(engines, faces)
    with torch.inference_mode():
        logits = engines[0].model(normalize(faces.images))  # the same network: the same logits
    expected = (F.softmax(logits / 0.2, 1) + F.softmax(logits / 8.0, 1)) / 2
    assert result["accuracy"] == pytest.approx((expected.argmax(1) == faces.labels).float().mean().item())
    assert result["loss"] == pytest.approx(F.nll_loss(expected.log(), faces.labels).item(), rel=1e-4)
    assert 0 <= result["ece"] <= 1


def test_ensemble_is_one_flag_and_reports_its_calibration(members, fer_folder, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(fer.paths, "ENSEMBLE_MANIFEST", tmp_path / "ensemble.txt")
    code, out, err = run(["evaluate", fer_folder, "--ensemble", "--engine", "torch", "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["weights"] == [str(p) for p in members] and result["engine"] == ["torch", "torch"]
    assert 0 <= result["ece"] <= 1
    code, out, err = run(["evaluate", fer_folder, "--ensemble", "--engine", "torch"], capsys)
    assert "calibration error (ECE)" in out
    monkeypatch.setattr(fer.paths, "ENSEMBLE_MANIFEST", tmp_path / "missing.txt")
    code, out, err = run(["evaluate", fer_folder, "--ensemble"], capsys)
    assert code == 2 and "--ensemble" in err and err.count("\n") == 1


def test_fast_is_one_flag_for_the_small_model(untrained_weights, fer_folder, capsys, monkeypatch):
    """--fast names the shipped small model; with --weights or --ensemble it is refused, not ensembled."""
    monkeypatch.setattr(fer.paths, "FAST_WEIGHTS", untrained_weights)
    code, out, err = run(["evaluate", fer_folder, "--fast", "--engine", "torch", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["weights"] == [str(untrained_weights)]
    code, out, err = run(["evaluate", fer_folder, "--fast", "--weights", untrained_weights], capsys)
    assert code == 2 and "--fast" in err and err.count("\n") == 1
    code, out, err = run(["evaluate", fer_folder, "--fast", "--ensemble"], capsys)
    assert code == 2 and "not allowed with" in err
    monkeypatch.setattr(fer.paths, "FAST_WEIGHTS", untrained_weights.parent / "missing.safetensors")
    code, out, err = run(["evaluate", fer_folder, "--fast"], capsys)
    assert code == 2 and "--fast" in err and "missing.safetensors" in err and err.count("\n") == 1
