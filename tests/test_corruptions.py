"""The corruptions of real photos (fer.corruptions), as a benchmark's input and as training augmentation, and
MixUp/CutMix in training."""
import cv2
import numpy as np
import pytest
import torch

from fer.augment import AugmentConfig, mix
from fer.corruptions import CORRUPTIONS, SEVERITIES, corrupt, corrupt_randomly, equalize
from fer.detect import detect_faces, face_transform
from fer.images import open_image, to_gray, to_rgb
from fer.weights import read_metadata
from tests.conftest import PORTRAITS
from tests.test_hostile_inputs import run, tiny_train_args


@pytest.fixture(scope="module")
def faces():
    """Two real 48-px face crops (raw, not equalized: what a corruption acts on), gray and RGB."""
    gray, rgb = [], []
    for path in PORTRAITS:
        image = open_image(path)
        matrix = face_transform(detect_faces(to_rgb(image))[0])
        gray.append(cv2.warpAffine(to_gray(image), matrix, (48, 48), flags=cv2.INTER_AREA))
        rgb.append(cv2.warpAffine(to_rgb(image), matrix, (48, 48), flags=cv2.INTER_AREA))
    return torch.from_numpy(np.stack(gray)), torch.from_numpy(np.stack(rgb))


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_each_corruption_keeps_the_faces_shape_and_grows_with_severity(faces, name):
    gray, rgb = faces
    change = []
    for severity in SEVERITIES:
        out = corrupt(gray, name, severity, torch.Generator().manual_seed(0))
        assert out.dtype == torch.uint8 and out.shape == gray.shape
        again = corrupt(gray, name, severity, torch.Generator().manual_seed(0))
        assert torch.equal(out, again)  # the same draws for the same generator state
        change.append((out.float() - gray.float()).abs().mean().item())
        colour = corrupt(rgb, name, severity, torch.Generator().manual_seed(0))
        assert colour.shape == rgb.shape and colour.dtype == torch.uint8
    assert change[0] > 0.5, change  # severity 1 does something
    assert change[-1] > change[0], change  # and 5 more


def test_unknown_corruptions_and_severities_are_refused(faces):
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(faces[0], "fog", 1, torch.Generator())
    with pytest.raises(ValueError, match="severity"):
        corrupt(faces[0], "blur", 6, torch.Generator())


def test_random_corruption_in_training_is_equalized_again(faces):
    gray = equalize(faces[0])
    assert torch.equal(corrupt_randomly(gray, 0.0, torch.Generator().manual_seed(1)), gray)
    out = corrupt_randomly(gray.repeat(8, 1, 1), 1.0, torch.Generator().manual_seed(1))
    assert not torch.equal(out, gray.repeat(8, 1, 1))
    # Equalized: every face spans (nearly) the whole grey range, as the training faces do.
    assert (out.flatten(1).max(1).values >= 250).all() and (out.flatten(1).min(1).values <= 30).all()


def test_mixup_and_cutmix_make_targets_of_two_labels():
    images = torch.randn(16, 1, 48, 48)
    labels = torch.arange(16) % 7
    for cfg in (AugmentConfig(mixup_alpha=0.4), AugmentConfig(cutmix_alpha=1.0),
                AugmentConfig(mixup_alpha=0.4, cutmix_alpha=1.0)):
        mixed, targets = mix(images, labels, 7, cfg, torch.Generator().manual_seed(0))
        assert mixed.shape == images.shape and targets.shape == (16, 7)
        assert torch.allclose(targets.sum(1), torch.ones(16)) and ((targets > 0).sum(1) <= 2).all()
        again, _ = mix(images, labels, 7, cfg, torch.Generator().manual_seed(0))
        assert torch.equal(mixed, again)


def test_training_with_corruptions_and_mixing_runs_and_stores_the_settings(fer_folder, tmp_path, capsys):
    out = tmp_path / "w.safetensors"
    code, _, err = run(tiny_train_args(fer_folder, "--out", out, "--corrupt-prob", "0.5", "--mixup-alpha", "0.4",
                                       "--cutmix-alpha", "1.0"), capsys)
    assert code == 0, err
    augment = read_metadata(out)["train_config"]["augment"]
    assert augment["corrupt_prob"] == 0.5 and augment["mixup_alpha"] == 0.4 and augment["cutmix_alpha"] == 1.0


def test_the_robustness_benchmark_scores_every_corruption_and_severity(fer_zip, tmp_path):
    import json
    import subprocess
    import sys
    from fer.model import ModelConfig, build_model
    from fer.weights import save_weights
    from tests.conftest import REPO, fer_spec
    cfg = ModelConfig(arch="resnet18", dropout=0.0)  # small: 76 passes over the faces
    weights = save_weights(build_model(cfg).eval(), fer_spec(cfg), tmp_path / "small.safetensors", val_acc=0.0,
                           val_split="public")
    out, chart = tmp_path / "r.json", tmp_path / "r.png"
    done = subprocess.run([sys.executable, "benchmarks/robustness.py", str(fer_zip), "--split", "private",
                           "--weights", str(weights), "--engine", "torch", "--out", str(out),
                           "--chart", str(chart)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["n"] == 42 and set(result["corruptions"]) == set(CORRUPTIONS)
    assert all(len(row) == 5 and all(0 <= a <= 1 for a in row) for row in result["corruptions"].values())
    assert result["mean_corruption_accuracy"] == pytest.approx(np.mean(list(result["corruptions"].values())))
    assert chart.stat().st_size > 10_000 and "| **mean** |" in done.stdout


def test_the_small_models_benchmark_measures_each_candidate_of_a_sweep(fer_zip, tmp_path):
    import json
    import subprocess
    import sys
    from fer.model import ModelConfig, build_model
    from fer.weights import save_weights
    from tests.conftest import REPO, fer_spec
    cfg = ModelConfig(arch="shufflenet_v2_x0_5", dropout=0.0, stem="stride1")
    (tmp_path / "sweep" / "shufflenet").mkdir(parents=True)
    save_weights(build_model(cfg).eval(), fer_spec(cfg), tmp_path / "sweep" / "shufflenet" / "model.safetensors",
                 val_acc=0.25, val_split="public")
    out = tmp_path / "small"
    done = subprocess.run([sys.executable, "benchmarks/small_models.py", str(tmp_path / "sweep"), "--weights",
                           "--data", str(fer_zip), "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert row["arch"] == "shufflenet_v2_x0_5" and row["stem"] == "stride1" and row["val_acc"] == 0.25
    assert 0 < row["gmac"] < 0.05 and row["int8_batch1_images_per_second"] > 0 and row["int8_mb"] > 0
    assert "| shufflenet_v2_x0_5 | stride1 | 48 | 25.00% |" in out.with_suffix(".md").read_text()
    assert out.with_suffix(".png").stat().st_size > 5_000
