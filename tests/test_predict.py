import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from fer.errors import DataError
from fer.images import open_image
from fer.photos import draw_labels, predict, predict_files, predict_image
from fer.api import load_model
from tests.conftest import PORTRAITS


@pytest.fixture(scope="module")
def model(untrained_weights):
    return load_model(untrained_weights)


def test_photos_to_predict_has_real_portraits():
    assert len(PORTRAITS) >= 2


@pytest.mark.parametrize("path", PORTRAITS, ids=lambda p: p.name)
def test_finds_exactly_one_face_in_each_shipped_portrait(path, model):
    result = predict_image(Image.open(path), model)
    assert result["face_found"] and len(result["faces"]) == 1
    face = result["faces"][0]
    x, y, w, h = face["box"]
    assert w > 50 and h > 50
    assert abs(sum(face["probs"].values()) - 1) < 1e-3 and face["label"] == max(face["probs"], key=face["probs"].get)


def portrait_variants():
    rgb = Image.open(PORTRAITS[0]).convert("RGB")
    sixteen = Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257)
    rotated = rgb.rotate(-90, expand=True)  # stored sideways; EXIF orientation 8 turns it upright
    exif = Image.Exif()
    exif[0x0112] = 8
    yield "rgba.png", rgb.convert("RGBA"), {}
    yield "palette.png", rgb.convert("P", palette=Image.ADAPTIVE), {}
    yield "cmyk.jpg", rgb.convert("CMYK"), {}
    yield "gray16.png", sixteen, {}
    yield "exif_rotated.jpg", rotated, {"exif": exif}


@pytest.mark.parametrize("name,image,save_args", list(portrait_variants()), ids=lambda v: v if isinstance(v, str) else "")
def test_finds_the_face_in_any_image_mode(tmp_path, model, name, image, save_args):
    path = tmp_path / name
    image.save(path, **save_args)
    [result] = predict_files([path], model)
    assert result["face_found"], name
    drawn = draw_labels(open_image(path), result)
    assert drawn.mode == "RGB" and drawn.size == open_image(path).size


def test_no_face_gets_no_emotion_unless_the_whole_image_is_asked_for(model):
    blank = Image.fromarray(np.full((120, 160), 128, np.uint8))
    result = predict_image(blank, model)
    assert not result["face_found"] and result["faces"] == [] and result["note"] == "no face found"
    result = predict_image(blank, model, whole_image=True)
    assert not result["face_found"] and "whole image" in result["note"]
    assert result["faces"][0]["box"] == [0, 0, 160, 120]


def test_a_crop_of_the_models_own_size_is_a_face_already(model):
    """FER-2013's own files (48 x 48) are labelled whole when YuNet finds no face in them; any other size is not."""
    crop = Image.fromarray(np.full((48, 48), 128, np.uint8))
    result = predict_image(crop, model)
    assert result["faces"][0]["box"] == [0, 0, 48, 48] and "whole image" in result["note"]
    assert predict_image(crop, model, whole_image=False)["faces"] == []
    assert predict_image(Image.fromarray(np.full((49, 48), 128, np.uint8)), model)["faces"] == []


def test_many_faces_are_each_labelled(model):
    face = Image.open(PORTRAITS[0]).convert("RGB")
    group = Image.new("RGB", (face.width * 3, face.height), "white")
    for i in range(3):
        group.paste(face, (i * face.width, 0))
    result = predict_image(group, model)
    assert len(result["faces"]) == 3
    assert sorted(f["box"][0] // face.width for f in result["faces"]) == [0, 1, 2]


def test_first_version_call_prints_and_draws(model, capsys):
    result = predict(PORTRAITS[0], model, ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"),
                     print_text=True, put_text=True)
    label = result["faces"][0]["label"]
    assert label in capsys.readouterr().out
    drawn = np.asarray(result["image"])
    assert drawn.shape[:2] == Image.open(PORTRAITS[0]).size[::-1]
    assert not np.array_equal(drawn, np.asarray(Image.open(PORTRAITS[0]).convert("RGB")))


def test_a_batch_goes_on_past_a_bad_file(tmp_path, model):
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    results = predict_files([bad, PORTRAITS[0], tmp_path / "missing.jpg"], model)
    assert "not an image" in results[0]["error"] and "no such file" in results[2]["error"]
    assert results[1]["face_found"]


def png_header_only(width, height):
    """A PNG whose header claims width x height pixels: a decompression bomb's first bytes."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [10000, 30000])
def test_a_huge_image_is_refused_before_decoding(tmp_path, side):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(side, side))
    with pytest.raises(DataError, match="too large"):
        open_image(path)


def test_animated_gif_uses_its_first_frame(tmp_path, model):
    face = Image.open(PORTRAITS[0]).convert("L")
    blank = Image.new("L", face.size, 128)
    path = tmp_path / "animated.gif"
    face.save(path, save_all=True, append_images=[blank, blank], duration=100, loop=0)
    [result] = predict_files([path], model)
    assert result["face_found"]


@pytest.mark.parametrize("size", [(20000, 3), (1, 1), (3, 20000)])
def test_extreme_shapes_fall_back_to_the_whole_image(model, size):
    result = predict_image(Image.new("RGB", size, "gray"), model, whole_image=True)
    assert not result["face_found"] and result["faces"][0]["box"] == [0, 0, *size]


def test_the_int8_path_never_imports_pytorch(tmp_path):
    """`fer predict`, `fer video` and fer.load().predict with the shipped int8 model run on NumPy, ONNX Runtime
    and OpenCV alone: importing PyTorch would cost the one-photo command seconds and most of a gigabyte."""
    import subprocess
    import sys
    from tests.conftest import REPO
    code = f"""
import sys
from fer.cli import main
rc = main(["predict", {str(PORTRAITS[0])!r}, "--out", {str(tmp_path)!r}, "--json"])
rc = rc or main(["video", {str(REPO / "videos" / "portraits.mp4")!r}, "--every", "10", "--csv",
                 {str(tmp_path / "clip.csv")!r}])
import fer
result = fer.load().predict({str(PORTRAITS[1])!r})
assert result["faces"] and result["engine"] == "onnx-int8", result
loaded = [name for name in ("torch", "torchvision") if name in sys.modules]
print("loaded:", loaded)
sys.exit(rc or (3 if loaded else 0))
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert run.returncode == 0, run.stdout[-500:] + run.stderr[-2000:]
    assert '"label"' in run.stdout and "loaded: []" in run.stdout
    assert list(tmp_path.glob("*.fer.jpg")) and (tmp_path / "clip.csv").stat().st_size > 100
