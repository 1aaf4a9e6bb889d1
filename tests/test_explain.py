"""Grad-CAM: shapes and range, any class, eval mode, the stage chosen, and the map carried back onto the
photo where the face is."""
import numpy as np
import pytest
import torch
from PIL import Image

from fer.cli import main
from fer.datasets import load_split
from fer.detect import detect_faces
from fer.explain import Explainer, cam_on_photo, default_layer, grad_cam, overlay_crop, stage_strides, \
    upsample_to_crop
from fer.model import ModelConfig, build_model
from fer.photos import predict_image
from fer.api import load_model
from fer.preprocess import FaceFormat
from tests.conftest import PORTRAITS, fer_engine


@pytest.fixture(scope="module")
def model(untrained_weights):
    return load_model(untrained_weights)


@pytest.fixture(scope="module")
def faces(fer_folder):
    return load_split(fer_folder, "public").images[:10]


@pytest.mark.parametrize("layer", ["layer4", "layer3", "layer2", None])
def test_maps_are_one_per_crop_48_by_48_in_0_1(model, faces, layer):
    cams, probs = grad_cam(model, faces, layer=layer)
    assert cams.shape == (10, 48, 48) and probs.shape == (10, 7)
    assert cams.min() >= 0 and cams.max() <= 1 + 1e-6 and np.allclose(probs.sum(1), 1, atol=1e-4)
    assert np.isclose(cams.reshape(10, -1).max(1), 1).sum() >= 9  # each scaled by its own peak


def test_any_class_can_be_explained_and_the_maps_differ(model, faces):
    happy, _ = grad_cam(model, faces, target="happy")
    sad, _ = grad_cam(model, faces, target=5)
    per_crop, _ = grad_cam(model, faces, target=["happy"] * 5 + ["sad"] * 5)
    assert np.allclose(per_crop[:5], happy[:5], atol=1e-5) and np.allclose(per_crop[5:], sad[5:], atol=1e-5)
    assert not np.allclose(happy, sad)


def test_dropout_is_off_while_explaining_and_the_mode_is_restored():
    torch.manual_seed(0)
    model = build_model(ModelConfig(dropout=0.3))
    engine = fer_engine(model, ModelConfig(dropout=0.3))
    model.train()
    images = torch.randint(0, 256, (4, 48, 48), dtype=torch.uint8)
    first, _ = grad_cam(engine, images)
    again, _ = grad_cam(engine, images)
    assert np.allclose(first, again) and model.training


def test_the_default_stage_is_the_deepest_with_a_6_by_6_grid():
    face = FaceFormat()
    assert default_layer(build_model(ModelConfig(stem="imagenet")), face) == "layer2"
    assert default_layer(build_model(ModelConfig(stem="no_maxpool")), face) == "layer3"
    assert default_layer(build_model(ModelConfig(stem="cifar")), face) == "layer4"


def test_a_map_goes_back_onto_the_photo_where_its_face_is(model):
    photo = np.asarray(Image.open(PORTRAITS[1]).convert("RGB"))
    [face] = detect_faces(photo)
    on_photo = cam_on_photo(photo.shape, face, np.ones((48, 48), np.float32))
    ys, xs = np.nonzero(on_photo > 0.5)
    x, y, w, h = face.box
    assert on_photo.shape == photo.shape[:2]
    centre = np.array([xs.mean(), ys.mean()])
    assert x < centre[0] < x + w and y < centre[1] < y + h
    assert 0.3 * w * h < len(xs) < 3 * w * h  # about the face's size: FER-2013's tight framing


def test_the_explainer_overlays_every_face_of_a_photo(model):
    image = Image.open(PORTRAITS[0])
    result = predict_image(image, model)
    maps = Explainer(model).face_maps(image, result)
    assert len(maps) == len(result["faces"]) and maps[0]["class"] == result["faces"][0]["label"]
    overlay = Explainer(model, target="fear").photo_overlay(image, result)
    assert overlay.shape == (image.height, image.width, 3) and overlay.dtype == np.uint8
    assert overlay_crop(maps[0]["crop"], maps[0]["cam"], size=96).shape == (96, 96, 3)


def test_predict_explain_writes_the_overlay_beside_the_annotated_copy(tmp_path, untrained_weights, capsys):
    code = main(["predict", str(PORTRAITS[0]), "--weights", str(untrained_weights), "--engine", "torch",
                 "--out", str(tmp_path), "--explain", "--explain-class", "sad"])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{PORTRAITS[0].stem}.cam.jpg", f"{PORTRAITS[0].stem}.fer.jpg"]


def test_explain_without_out_is_one_line_and_exit_2(untrained_weights, capsys):
    assert main(["predict", str(PORTRAITS[0]), "--weights", str(untrained_weights), "--explain"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out" in err


def evidence_only_where_bright(stem: str) -> torch.nn.Module:
    """A ResNet50 that is a small positive blur: every convolution and the classifier average with equal
    positive weights, BatchNorm is the identity, the residual branches stay off (their last BatchNorm is zero,
    as at initialization) and the max-pool is an average of the same window, so each stage's activation of a
    bright spot is where the spot is, on that stage's own grid, and the evidence for any class lies there."""
    model = build_model(ModelConfig(arch="resnet50", dropout=0.0, stem=stem)).eval()
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                module.weight.fill_(1.0 / module.weight[0].numel())
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, torch.nn.BatchNorm2d):
                module.weight.fill_(0.0 if name.endswith("bn3") else 1.0), module.bias.zero_()
    if isinstance(model.maxpool, torch.nn.MaxPool2d):  # same window, stride and padding; no ties to break
        model.maxpool = torch.nn.AvgPool2d(3, 2, 1, count_include_pad=False)
    return model


STAGES = [("imagenet", "layer2"), ("imagenet", "layer3"), ("no_maxpool", "layer3"), ("cifar", "layer4")]


@pytest.mark.parametrize("stem,layer", STAGES + [("imagenet", "layer4"), ("cifar", "layer2")])
def test_each_cell_is_centred_on_the_pixel_stride_times_its_index(stem, layer):
    # The premise of the placement, checked on the network itself: the input pixels that feed a cell in the
    # middle of a large face (no border in reach) are centred on stride * index.
    model = evidence_only_where_bright(stem)
    x = torch.ones(1, 1, 256, 256, requires_grad=True)
    captured = {}
    handle = getattr(model, layer).register_forward_hook(lambda m, i, o: captured.update(a=o))
    model(x)
    handle.remove()
    k = captured["a"].shape[-1] // 2
    captured["a"][0, :, k, k].sum().backward()
    weight = x.grad[0, 0].abs()
    rows, cols = torch.meshgrid(torch.arange(256.0), torch.arange(256.0), indexing="ij")
    centre = ((weight * rows).sum() / weight.sum(), (weight * cols).sum() / weight.sum())
    stride = stage_strides(model, FaceFormat())[layer]
    assert abs(centre[0] - stride * k) < 0.5 and abs(centre[1] - stride * k) < 0.5, (centre, stride * k)


def test_a_cell_of_the_map_lands_on_its_own_pixel():
    cells = torch.zeros(1, 1, 6, 6)
    cells[0, 0, 2, 3] = 1.0
    crop = upsample_to_crop(cells, stride=8, size=48)[0]
    assert crop.shape == (48, 48) and crop[16, 24] == 1.0
    assert np.unravel_index(int(crop.argmax()), crop.shape) == (16, 24)  # block-centred: (19 or 20, 27 or 28)
    assert crop[47, 47] == crop[40, 40]  # beyond the last cell's centre: its value held


@pytest.mark.parametrize("stem,layer", STAGES)
@pytest.mark.parametrize("row,col", [(32, 32), (32, 0), (0, 32)])
def test_the_map_peaks_on_the_pixels_that_hold_the_evidence(stem, layer, row, col):
    # A face of grey 127 (normalized just below 0: nothing passes the first ReLU) with one white 3 x 3 spot,
    # bright enough to outweigh the grey around it in the stem's 7 x 7 average. With the residual branches
    # off, the 1 x 1 stride-2 shortcuts carry only even cells to the next stage, so the spots sit on pixels
    # that every stage keeps (multiples of 32), where the cells of every stage are centred.
    image = torch.full((1, 48, 48), 127, dtype=torch.uint8)
    image[0, max(0, row - 1):row + 2, max(0, col - 1):col + 2] = 255
    engine = fer_engine(evidence_only_where_bright(stem), arch="resnet50", dropout=0.0, stem=stem)
    cam, _ = grad_cam(engine, image, target="happy", layer=layer)
    hottest = cam[0] >= cam[0].max() - 1e-6
    # The spot is among the hottest pixels (past the last cell, pixels 33-47 of layer3, the map holds that
    # cell's value, so the hottest may be a band); the block-centred interpolation put the hottest
    # (stride - 1) / 2 px right of and below the spot: 3.5 px at the imagenet stem's layer2, 7.5 at its layer3.
    assert cam[0].max() > 0 and hottest.mean() < 0.25
    assert hottest[row, col], np.argwhere(hottest).mean(0)
