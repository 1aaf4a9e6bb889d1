"""Any torchvision classification model by name: a ResNet other than the flagship and a non-ResNet go through
the same path as the ResNet50s (train, evaluate, export to ONNX, explain, predict)."""
import json

import pytest
import torch

from fer.explain import default_layer, grad_cam, stage_grids
from fer.model import ModelConfig, build_model
from fer.api import load_model
from fer.weights import read_metadata
from tests.conftest import PORTRAITS, fer_engine
from tests.test_hostile_inputs import one_line_error, run


def tiny_args(data, arch, out):
    return ["train", "--data", data, "--arch", arch, "--epochs", "1", "--batch-size", "14", "--subset", "28",
            "--val-subset", "14", "--no-progress", "--out", out]


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small"])
def test_a_torchvision_backbone_trains_evaluates_exports_explains_and_predicts(arch, fer_folder, tmp_path, capsys):
    weights = tmp_path / f"{arch}.safetensors"
    code, _, err = run(tiny_args(fer_folder, arch, weights), capsys)
    assert code == 0, err
    assert read_metadata(weights)["config"]["arch"] == arch
    model = load_model(weights)
    assert model.spec.arch == arch

    code, out, err = run(["evaluate", fer_folder, "--weights", weights, "--engine", "torch", "--json"], capsys)
    assert code == 0, err
    assert 0 <= json.loads(out)["accuracy"] <= 1

    code, _, err = run(["export", "--weights", weights, "--out", tmp_path / f"{arch}.onnx"], capsys)
    assert code == 0, err

    annotated = tmp_path / "annotated"
    code, out, err = run(["predict", PORTRAITS[0], "--weights", weights, "--engine", "onnx", "--out", annotated,
                          "--explain", "--json"], capsys)
    assert code == 0, err
    [result] = json.loads(out)["results"]
    assert result["faces"] and result["faces"][0]["label"] in result["faces"][0]["probs"]
    assert (annotated / f"{PORTRAITS[0].stem}.fer.jpg").is_file() and (annotated / f"{PORTRAITS[0].stem}.cam.jpg").is_file()


@pytest.mark.parametrize("arch", ["resnet18", "efficientnet_b0", "convnext_tiny", "mobilenet_v3_large"])
def test_grad_cam_finds_the_stages_of_any_backbone(arch):
    cfg = ModelConfig(arch=arch, dropout=0.0)
    model = build_model(cfg)
    grids = stage_grids(model, cfg.face)
    sides = list(grids.values())
    assert sides == sorted(sides) and len(sides) >= 3  # deepest (smallest grid) first
    layer, names = default_layer(model, cfg.face), list(grids)
    deeper = names[:names.index(layer)]
    assert grids[layer] >= 6 and all(grids[name] < 6 for name in deeper)  # the deepest stage of at least 6 x 6
    maps, probs = grad_cam(fer_engine(model, cfg), torch.randint(0, 256, (2, 48, 48), dtype=torch.uint8))
    assert maps.shape == (2, 48, 48) and probs.shape == (2, 7) and (maps.max(axis=(1, 2)) > 0).all()


def test_the_resnet_stages_keep_their_names():
    cfg = ModelConfig(arch="resnet50", dropout=0.0)
    model = build_model(cfg)
    assert list(stage_grids(model, cfg.face))[:3] == ["layer4", "layer3", "layer2"]
    assert default_layer(model, cfg.face) == "layer2"


@pytest.mark.parametrize("option, message", [
    (["--arch", "vit_b_16"], "cannot read a 48 x 48 face"),
    (["--arch", "resnet5"], "resnet50"),
    (["--arch", "efficientnet_b0", "--stem", "cifar"], "ResNet stem"),
    (["--arch", "efficientnet_b0", "--norm", "group"], "ResNets only"),
    (["--arch", "resnet18", "--dropout", "0.1"], "resnet50_dropout"),
])
def test_a_backbone_that_cannot_work_is_refused_before_the_data_is_read(tmp_path, capsys, option, message):
    code, _, err = run(["train", "--data", tmp_path / "no-such-data", "--out", tmp_path / "m.safetensors", *option],
                       capsys)
    assert code == 2 and one_line_error(err) and message in err and "no-such-data" not in err


def test_an_unknown_explain_layer_names_the_networks_stages(tmp_path, capsys):
    code, _, err = run(["predict", PORTRAITS[0], "--out", tmp_path, "--explain-layer", "layer9"], capsys)
    assert code == 2 and one_line_error(err) and "layer2" in err and "layer9" in err
