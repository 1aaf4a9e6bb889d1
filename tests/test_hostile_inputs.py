"""Issue 17's probe, one test per numbered case: every bad input gets one line naming it and exit 2, the
good files of a batch are still processed and written, and nothing the user had is lost."""
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from fer.cli import main
from fer.datasets import MAX_MEMBER_BYTES, load_split
from fer.errors import DataError, WeightsError
from fer.images import open_image
from fer.train import paths_for
from fer.api import load_model
from tests.conftest import PORTRAITS, REPO


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> bool:
    return err.count("\n") == 1 and err.startswith("fer: ") and "Traceback" not in err


def corrupt_avif(tmp_path):
    buffer = io.BytesIO()
    Image.open(PORTRAITS[0]).save(buffer, format="AVIF")
    data = bytearray(buffer.getvalue())
    start = data.find(b"mdat") + 4
    data[start:start + 36] = b"\xff" * 36  # the coded picture's first bytes: the decoder raises RuntimeError
    path = tmp_path / "broken.avif"
    path.write_bytes(bytes(data))
    return path


def lab_tiff(tmp_path):
    lightness = Image.open(PORTRAITS[0]).convert("L")
    neutral = Image.new("L", lightness.size, 128)
    path = tmp_path / "cielab.tif"
    Image.merge("LAB", [lightness, neutral, neutral]).save(path)
    return path


# 1. One bad photo never loses the batch ----------------------------------------------------------


@pytest.mark.skipif("AVIF" not in Image.registered_extensions().values(), reason="Pillow without AVIF")
def test_1_a_corrupt_avif_is_one_line_and_the_good_photos_are_still_written(tmp_path, untrained_weights, capsys):
    out = tmp_path / "out"
    code, stdout, err = run(["predict", corrupt_avif(tmp_path), PORTRAITS[0], "--weights", untrained_weights,
                             "--out", out], capsys)
    assert code == 2 and one_line_error(err) and "broken.avif" in err
    assert PORTRAITS[0].name in stdout and (out / f"{PORTRAITS[0].stem}.fer.jpg").is_file()


def test_1_a_cielab_tiff_is_read_by_its_lightness_and_named_when_it_fails(tmp_path, untrained_weights, capsys):
    code, stdout, err = run(["predict", lab_tiff(tmp_path), PORTRAITS[1], "--weights", untrained_weights, "--json"],
                            capsys)
    results = json.loads(stdout)["results"]
    assert code == 0, err
    assert results[0]["face_found"] and results[1]["face_found"]


def test_1_a_failing_annotated_copy_is_reported_per_photo_and_predictions_still_print(tmp_path, untrained_weights,
                                                                                     capsys):
    out = tmp_path / "out"
    for photo in PORTRAITS:  # where each annotated copy should go, a folder stands: every write fails
        (out / f"{photo.stem}.fer.jpg").mkdir(parents=True)
    code, stdout, err = run(["predict", *PORTRAITS, "--weights", untrained_weights, "--out", out, "--json"], capsys)
    results = json.loads(stdout)["results"]
    assert code == 2 and err.count("\n") == len(PORTRAITS) and "cannot write" in err
    assert all(r["face_found"] and r["faces"] for r in results)
    # An --out that is a file is refused before any photo is read (tests/test_new_user.py).


def test_1_the_gallery_survives_a_corrupt_upload(tmp_path, untrained_weights):
    from fer.gallery import Gallery
    from tests.test_notebooks import upload_item
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(untrained_weights, models / "resnet50_dropout.safetensors")
    gallery = Gallery(photos_dir=tmp_path / "none", models_dir=models)
    gallery.add_upload([upload_item("broken.avif", corrupt_avif(tmp_path).read_bytes())])
    gallery.add_upload([upload_item("fine.jpg", PORTRAITS[0].read_bytes())])
    assert gallery.cards[0]["name"] == "fine.jpg" and gallery.cards[0]["face_found"]
    assert "broken.avif" in gallery.cards[1]["error"]


# 2. --out never overwrites an original and never collides ---------------------------------------


def test_2_out_never_overwrites_a_photo_of_the_batch(tmp_path, untrained_weights, capsys):
    shutil.copy(PORTRAITS[0], tmp_path / "me.jpg")
    shutil.copy(PORTRAITS[1], tmp_path / "me.fer.jpg")  # an original that looks like an annotated copy
    before = (tmp_path / "me.fer.jpg").read_bytes()
    code, _, err = run(["predict", tmp_path / "me.jpg", tmp_path / "me.fer.jpg", "--weights", untrained_weights,
                        "--out", tmp_path], capsys)
    assert code == 0, err
    assert (tmp_path / "me.fer.jpg").read_bytes() == before
    assert {p.name for p in tmp_path.iterdir()} == {"me.jpg", "me.fer.jpg", "me-2.fer.jpg", "me.fer.fer.jpg"}


def test_2_photos_with_the_same_name_get_their_own_copies(tmp_path, untrained_weights, capsys):
    for folder, suffix in (("x", ".jpg"), ("y", ".jpg"), ("z", ".png")):
        (tmp_path / folder).mkdir()
        Image.open(PORTRAITS[0]).save(tmp_path / folder / f"p{suffix}")
    out = tmp_path / "out"
    code, stdout, _ = run(["predict", tmp_path / "x/p.jpg", tmp_path / "y/p.jpg", tmp_path / "z/p.png",
                           "--weights", untrained_weights, "--out", out, "--json"], capsys)
    written = [r["annotated"] for r in json.loads(stdout)["results"]]
    assert code == 0 and len(set(written)) == 3 and all(os.path.isfile(p) for p in written)


def test_2_a_symlink_in_out_is_replaced_not_followed(tmp_path, untrained_weights, capsys):
    precious = tmp_path / "precious.jpg"
    shutil.copy(PORTRAITS[1], precious)
    out = tmp_path / "out"
    out.mkdir()
    (out / f"{PORTRAITS[0].stem}.fer.jpg").symlink_to(precious)
    code, _, _ = run(["predict", PORTRAITS[0], "--weights", untrained_weights, "--out", out], capsys)
    assert code == 0 and precious.read_bytes() == PORTRAITS[1].read_bytes()
    assert not (out / f"{PORTRAITS[0].stem}.fer.jpg").is_symlink()


# 3. train never replaces shipped weights unasked -------------------------------------------------


def tiny_train_args(data, *extra):
    return ["train", "--data", data, "--arch", "resnet50", "--epochs", "1", "--batch-size", "14", "--subset", "14",
            "--val-subset", "14", "--no-progress", *extra]


def test_3_train_without_out_writes_into_runs_not_trained_models(fer_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FER_RUNS", str(tmp_path / "runs"))
    shipped = sorted((REPO / "trained_models").glob("*"))
    stamps = [p.stat().st_mtime_ns for p in shipped]
    code, _, err = run(tiny_train_args(fer_folder), capsys)
    assert code == 0, err
    assert (tmp_path / "runs" / "resnet50" / "resnet50.safetensors").is_file()
    assert [p.stat().st_mtime_ns for p in sorted((REPO / "trained_models").glob("*"))] == stamps


def test_3_an_existing_model_at_out_is_kept_unless_forced(fer_folder, tmp_path, untrained_weights, capsys):
    out = tmp_path / "shipped.safetensors"
    shutil.copy(untrained_weights, out)
    before = out.read_bytes()
    code, _, err = run(tiny_train_args(fer_folder, "--out", out), capsys)
    assert code == 2 and one_line_error(err) and "already holds a model (PublicTest 0.00%)" in err
    assert out.read_bytes() == before
    code, _, err = run(tiny_train_args(fer_folder, "--out", out, "--force"), capsys)
    assert code == 0, err
    assert out.read_bytes() != before


# 4. Tampered weights metadata --------------------------------------------------------------------


def tampered(untrained_weights, tmp_path, key, value, tensors=None):
    with safe_open(str(untrained_weights), framework="pt") as f:
        meta = dict(f.metadata())
        state = {k: f.get_tensor(k) for k in f.keys()}
    if tensors:
        tensors(state)
    if value is None:
        meta.pop(key)
    else:
        meta[key] = value
    path = tmp_path / "tampered.safetensors"
    save_file(state, str(path), metadata=meta)
    return path


CONFIG = '{"arch": "resnet50_dropout", "dropout": 0.05, "head_dropout": 0.0, "stem": "imagenet", "norm": "batch", ' \
         '"num_classes": NUM, "image_size": 48}'
TAMPERED = {
    "classes a number": ("classes", "5"), "classes null": ("classes", "null"), "classes missing": ("classes", None),
    "3 classes": ("classes", '["angry", "happy", "sad"]'),
    "10 classes": ("classes", json.dumps([f"c{i}" for i in range(10)])),
    "config not JSON": ("config", "{arch: resnet"), "config a list": ("config", "[1, 2]"),
    "num_classes -1": ("config", CONFIG.replace("NUM", "-1")),
    "num_classes 'seven'": ("config", CONFIG.replace("NUM", '"seven"')),
    "num_classes 1e9": ("config", CONFIG.replace("NUM", "1000000000")),
    "temperature 'abc'": ("temperature", '"abc"'), "temperature null": ("temperature", "null"),
    "temperature a list": ("temperature", "[1.5]"), "temperature 0": ("temperature", "0"),
    "temperature -1": ("temperature", "-1"), "temperature NaN": ("temperature", "NaN"),
    "normalization changed": ("normalization", '{"mean": 0.3, "std": 0.2}'),
    # the faces' format: the config's and the input size must agree, and be one this code reads
    "input_size RGB for a gray config": ("input_size", "[3, 48, 48]"), "input_size missing": ("input_size", None),
    "image_size 4": ("config", CONFIG.replace("NUM", "7").replace('"image_size": 48', '"image_size": 4')),
    "channels 2": ("config", CONFIG.replace("NUM", "7").replace("}", ', "channels": 2}')),
    "channels 3 but gray tensors": ("config", CONFIG.replace("NUM", "7").replace("}", ', "channels": 3}')),
}


@pytest.mark.parametrize("case", list(TAMPERED))
def test_4_tampered_metadata_is_refused_in_one_line(untrained_weights, tmp_path, capsys, case):
    key, value = TAMPERED[case]
    path = tampered(untrained_weights, tmp_path, key, value)
    with pytest.raises(WeightsError):
        load_model(path)
    code, stdout, err = run(["predict", PORTRAITS[0], "--weights", path, "--json"], capsys)
    assert code == 2 and one_line_error(err) and "tampered.safetensors" in err and stdout == ""


def test_4_nan_weights_are_refused(untrained_weights, tmp_path):
    def poison(state):
        state["fc.weight"][0, 0] = float("nan")
    path = tampered(untrained_weights, tmp_path, "commit", '"x"', tensors=poison)
    with pytest.raises(WeightsError, match="NaN"):
        load_model(path)


def test_4_a_ten_class_file_is_refused_not_indexed(untrained_weights, tmp_path):
    def ten(state):
        state["fc.weight"], state["fc.bias"] = torch.zeros(10, 2048, dtype=torch.float16), torch.zeros(10, dtype=torch.float16)
    path = tampered(untrained_weights, tmp_path, "config", CONFIG.replace("NUM", "10"), tensors=ten)
    with pytest.raises(WeightsError, match="7 class names for a model with 10 outputs"):
        load_model(path)


# 5. Only photo formats are opened ----------------------------------------------------------------


def test_5_an_eps_file_named_jpg_never_reaches_ghostscript(tmp_path, monkeypatch):
    from PIL import EpsImagePlugin

    def ghostscript(*args, **kwargs):
        raise AssertionError("Ghostscript was called")
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", ghostscript)
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto showpage\n%%EOF\n")
    with pytest.raises(DataError, match="not an image in a photo format"):
        open_image(path)


# 6. Data files ------------------------------------------------------------------------------------


def zip_of(tmp_path, members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> bytearray:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return bytearray(buffer.getvalue())


def patch_headers(data: bytearray, local_offset: int, central_offset: int, change) -> bytearray:
    for signature, offset in ((b"PK\x03\x04", local_offset), (b"PK\x01\x02", central_offset)):
        i = data.find(signature)
        while i >= 0:
            struct.pack_into("<H", data, i + offset, change(struct.unpack_from("<H", data, i + offset)[0]))
            i = data.find(signature, i + 4)
    return data


def face_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 48), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def broken_zip(tmp_path, kind) -> str:
    data = zip_of(tmp_path, {"happy/a.png": face_png()})
    if kind == "bad CRC":
        start = data.find(b"\x89PNG")
        data[start + 100] ^= 0xFF
    elif kind == "encrypted":
        data = patch_headers(data, 6, 8, lambda v: v | 1)
    elif kind == "unsupported compression":
        data = patch_headers(data, 8, 10, lambda v: 97)
    elif kind == "zip bomb":
        data = zip_of(tmp_path, {"happy/a.png": bytes(MAX_MEMBER_BYTES + 10)}, zipfile.ZIP_DEFLATED)
    path = tmp_path / f"{kind.replace(' ', '_')}.zip"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("kind,message", [("bad CRC", "damaged zip member"), ("encrypted", "encrypted"),
                                          ("unsupported compression", "unsupported compression"),
                                          ("zip bomb", "too large for a face crop")])
def test_6_broken_zip_members_are_named(tmp_path, kind, message):
    path = broken_zip(tmp_path, kind)
    with pytest.raises(DataError, match=message) as error:
        load_split(path, cache=False)
    assert "a.png" in str(error.value)


def test_6_a_zip_bomb_is_refused_before_it_inflates(tmp_path):
    import tracemalloc
    path = broken_zip(tmp_path, "zip bomb")
    assert path.stat().st_size < 100_000
    tracemalloc.start()
    with pytest.raises(DataError):
        load_split(path, cache=False)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 5_000_000


def csv_rows(n=3, usage="Training"):
    return "".join(f"3,{' '.join(['7'] * 2304)},{usage}\n" for _ in range(n))


def test_6_a_csv_with_a_byte_order_mark_reads(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes(("emotion,pixels,Usage\n" + csv_rows()).encode("utf-8-sig"))
    assert len(load_split(path, "train", cache=False)) == 3


def test_6_a_latin1_csv_names_the_file(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes(("emotion,pixels,Usage\n" + csv_rows(2) + "3,1,Entraînement\n").encode("latin-1"))
    with pytest.raises(DataError, match="latin.csv.*not UTF-8"):
        load_split(path, cache=False)


def test_6_an_unterminated_quote_is_a_line_number_not_a_traceback(tmp_path):
    path = tmp_path / "quote.csv"
    path.write_text("emotion,pixels,Usage\n" + csv_rows(1) + '3,"7 7 7,Training\n' + csv_rows(80))
    with pytest.raises(DataError, match="quote.csv.*malformed CSV"):
        load_split(path, cache=False)


# 7. --resume with other settings -----------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(fer_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "m.safetensors"
    assert main([str(a) for a in tiny_train_args(fer_folder, "--out", out, "--seed", "1")]) == 0
    return out


@pytest.mark.parametrize("option", [["--arch", "resnet50_dropout"], ["--head-dropout", "0.2"], ["--norm", "group"],
                                    ["--stem", "cifar"], ["--optimizer", "sgd"], ["--lr", "0.5"]])
def test_7_resume_refuses_a_changed_setting_by_name(finished_run, fer_folder, capsys, option):
    code, _, err = run(tiny_train_args(fer_folder, "--out", finished_run, "--resume", *option), capsys)
    assert code == 2 and one_line_error(err) and option[0] in err and "differs from the checkpoint" in err


def test_7_resume_may_extend_the_run(finished_run, fer_folder, tmp_path, capsys):
    copy = tmp_path / "m.safetensors"
    shutil.copy(finished_run, copy)
    shutil.copytree(paths_for(finished_run)["checkpoint"].parent.parent, paths_for(copy)["checkpoint"].parent.parent)
    shutil.copy(paths_for(finished_run)["history"], paths_for(copy)["history"])
    code, stdout, err = run(["train", "--out", copy, "--resume", "--epochs", "2", "--data", fer_folder], capsys)
    assert code == 0, err
    assert "resumed" in stdout and "epoch 2" in stdout


def test_7_resume_without_a_checkpoint_is_refused(fer_folder, tmp_path, capsys):
    code, _, err = run(tiny_train_args(fer_folder, "--out", tmp_path / "new.safetensors", "--resume"), capsys)
    assert code == 2 and one_line_error(err) and "nothing to resume" in err


@pytest.mark.parametrize("damage", ["missing step", "history a string", "args lack lr"])
def test_7_a_damaged_checkpoint_is_one_line_and_leaves_no_temp_file(finished_run, fer_folder, tmp_path, capsys,
                                                                    damage):
    copy = tmp_path / "m.safetensors"
    shutil.copy(finished_run, copy)
    checkpoint = torch.load(paths_for(finished_run)["checkpoint"], weights_only=True)
    if damage == "missing step":
        checkpoint.pop("step")
    elif damage == "history a string":
        checkpoint["history"] = "epoch 1"
    else:
        checkpoint["args"].pop("lr")
    paths_for(copy)["checkpoint"].parent.mkdir(parents=True)
    torch.save(checkpoint, paths_for(copy)["checkpoint"])
    code, _, err = run(tiny_train_args(fer_folder, "--out", copy, "--resume"), capsys)
    assert code == 2 and one_line_error(err) and "cannot resume" in err
    assert not [p for p in tmp_path.rglob("*.tmp")]


# 8. Argument checks ------------------------------------------------------------------------------


@pytest.mark.parametrize("option", [["--batch-size", "0"], ["--batch-size", "-3"], ["--device", "bogus"],
                                    ["--label-smoothing", "2"], ["--subset", "0"], ["--epochs", "0"],
                                    ["--val-subset", "0"], ["--time-budget", "0"], ["--time-budget", "-5"],
                                    ["--lr", "nan"], ["--dropout", "1.5"]])
def test_8_bad_training_settings_are_refused_before_any_data_is_read(tmp_path, capsys, option):
    code, _, err = run(["train", "--data", tmp_path / "no-such-data", "--out", tmp_path / "m.safetensors", *option],
                       capsys)
    assert code == 2 and one_line_error(err) and option[0] in err and "no-such-data" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_8_cuda_without_a_gpu_is_refused(tmp_path, capsys):
    code, _, err = run(["train", "--device", "cuda", "--out", tmp_path / "m.safetensors"], capsys)
    assert code == 2 and one_line_error(err) and "no CUDA GPU" in err


def test_8_evaluate_batch_size_zero(fer_folder, untrained_weights, capsys):
    code, _, err = run(["evaluate", fer_folder, "--weights", untrained_weights, "--batch-size", "0"], capsys)
    assert code == 2 and one_line_error(err)


# 9. File names that are not UTF-8, or that hold a newline -----------------------------------------


def test_9_a_non_utf8_name_prints_and_the_batch_goes_on(tmp_path, untrained_weights):
    odd = os.path.join(os.fsencode(tmp_path), b"caf\xe9.jpg")
    shutil.copy(PORTRAITS[0], odd)
    done = subprocess.run([sys.executable, "-m", "fer", "predict", odd, str(PORTRAITS[1]), "--weights",
                           str(untrained_weights)], cwd=REPO, capture_output=True,
                          env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"})
    stdout = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()
    assert "caf\\udce9.jpg" in stdout and PORTRAITS[1].name in stdout


def test_9_a_newline_in_a_name_cannot_forge_a_line(tmp_path, untrained_weights, capsys):
    path = tmp_path / "bad\nfer: all good.jpg"
    path.write_text("not a photo")
    code, _, err = run(["predict", path, "--weights", untrained_weights], capsys)
    assert code == 2 and one_line_error(err) and "\\n" in err


# 10. Plain class folders -------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["train", "calibrate"])
def test_10_a_plain_class_folder_says_what_layout_is_needed(tmp_path, untrained_weights, capsys, command):
    (tmp_path / "happy").mkdir()
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(tmp_path / "happy" / "a.png")
    argv = tiny_train_args(tmp_path, "--out", tmp_path / "m.safetensors") if command == "train" else \
        ["calibrate", tmp_path, "--weights", untrained_weights, "--force"]
    code, _, err = run(argv, capsys)
    needed = "--val-fraction" if command == "train" else "a layout with splits"
    assert code == 2 and one_line_error(err) and needed in err


# 11. Leftovers and an --out that is a folder -----------------------------------------------------


def test_11_temp_files_of_killed_writers_are_cleaned(fer_folder, tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = tmp_path / f".m.safetensors.{dead.stdout.strip()}.tmp"  # as older versions named it
    leftover.write_bytes(bytes(1000))
    alive = tmp_path / f".m.safetensors.{os.getppid()}.tmp.safetensors"  # a writer still at work: left alone
    alive.write_bytes(b"x")
    code, _, err = run(tiny_train_args(fer_folder, "--out", out), capsys)
    assert code == 0, err
    assert not leftover.exists() and alive.exists()


def test_11_an_out_folder_is_refused_before_training(tmp_path, capsys):
    code, _, err = run(["train", "--data", tmp_path / "no-such-data", "--out", tmp_path], capsys)
    assert code == 2 and one_line_error(err) and "is a folder" in err
