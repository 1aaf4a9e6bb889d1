"""The command line: --json schemas, annotated copies, and exit code 2 with one line for each bad input."""
import json
import subprocess
import sys

import pytest

from fer.cli import main
from fer.preprocess import CLASSES
from tests.conftest import PORTRAITS, REPO


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_evaluate_json_is_one_object_with_the_documented_keys(fer_zip, untrained_weights, capsys):
    code, out, err = run(["evaluate", fer_zip, "--split", "private", "--weights", untrained_weights, "--json"],
                         capsys)
    assert code == 0
    result = json.loads(out)
    assert {"accuracy", "n", "per_class", "confusion", "images_per_second"} <= result.keys()
    assert result["n"] == 42 and list(result["per_class"]) == list(CLASSES)
    assert len(result["confusion"]) == 7 and sum(map(sum, result["confusion"])) == 42


def test_evaluate_with_tta_and_an_ensemble(fer_folder, untrained_weights, capsys):
    code, out, _ = run(["evaluate", fer_folder, "--weights", untrained_weights, untrained_weights, "--tta",
                        "--json"], capsys)
    assert code == 0 and json.loads(out)["tta"] is True


def test_predict_json_schema_and_annotated_copies(tmp_path, untrained_weights, capsys):
    code, out, err = run(["predict", *PORTRAITS, "--weights", untrained_weights, "--json", "--out",
                          tmp_path / "pred"], capsys)
    assert code == 0, err
    results = json.loads(out)["results"]
    assert [r["path"] for r in results] == [str(p) for p in PORTRAITS]
    for r in results:
        assert {"path", "face_found", "faces"} <= r.keys() and r["face_found"]
        face = r["faces"][0]
        assert len(face["box"]) == 4 and face["label"] in CLASSES and list(face["probs"]) == list(CLASSES)
        assert 0.5 < face["score"] <= 1 and len(face["landmarks"]) == 5 and len(face["landmarks"][0]) == 2
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == sorted(f"{p.stem}.fer.jpg" for p in PORTRAITS)


def bad_inputs(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("this is text, not a photo")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(PORTRAITS[0].read_bytes()[:2000])
    return {"missing": tmp_path / "missing.jpg", "empty": empty, "text": text, "corrupt": corrupt}


@pytest.mark.parametrize("kind", ["missing", "empty", "text", "corrupt"])
def test_predict_bad_photo_exits_2_with_one_line(tmp_path, untrained_weights, capsys, kind):
    path = bad_inputs(tmp_path)[kind]
    code, out, err = run(["predict", path, "--weights", untrained_weights], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("fer: ") and str(path.name) in err


def test_predict_batch_keeps_going_and_reports_the_bad_file(tmp_path, untrained_weights, capsys):
    bad = bad_inputs(tmp_path)["text"]
    code, out, err = run(["predict", PORTRAITS[0], bad, "--weights", untrained_weights, "--json"], capsys)
    assert code == 2
    results = json.loads(out)["results"]
    assert results[0]["face_found"] and "not an image" in results[1]["error"]
    assert "notes.jpg" in err


def test_evaluate_unknown_class_folder_exits_2(tmp_path, untrained_weights, capsys):
    (tmp_path / "data" / "happyy").mkdir(parents=True)
    (tmp_path / "data" / "happyy" / "a.jpg").write_bytes(PORTRAITS[0].read_bytes())
    code, _, err = run(["evaluate", tmp_path / "data", "--weights", untrained_weights], capsys)
    assert code == 2 and "unknown class folder 'happyy'" in err and err.count("\n") == 1


@pytest.mark.parametrize("kind", ["text", "pickle", "missing"])
def test_wrong_weights_file_exits_2(tmp_path, capsys, kind):
    path = tmp_path / "weights.safetensors"
    if kind == "text":
        path.write_text("hello")
    elif kind == "pickle":
        import torch
        torch.save({"fc.weight": torch.zeros(7, 2048)}, path)
    code, _, err = run(["predict", PORTRAITS[0], "--weights", path], capsys)
    assert code == 2 and err.count("\n") == 1 and "weights" in err


def test_bad_training_options_exit_2_before_reading_data(capsys):
    code, _, err = run(["train", "--model", "resnet50", "--dropout", "0.3"], capsys)
    assert code == 2 and "resnet50_dropout" in err


def test_real_process_exit_code_and_no_traceback(tmp_path):
    text = tmp_path / "x.jpg"
    text.write_text("nope")
    done = subprocess.run([sys.executable, "-m", "fer", "predict", str(text)], cwd=REPO, capture_output=True,
                          text=True)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and done.stderr.strip().count("\n") == 0


@pytest.mark.parametrize("command", ["train", "evaluate", "predict"])
def test_every_command_has_help(command, capsys):
    assert main([command, "--help"]) == 0 and "usage" in capsys.readouterr().out


def test_detector_settings_on_the_command_line(tmp_path, untrained_weights, capsys):
    code, out, _ = run(["predict", PORTRAITS[0], "--weights", untrained_weights, "--min-face", "1000", "--json"],
                       capsys)
    assert code == 0 and not json.loads(out)["results"][0]["face_found"]  # the face is smaller than asked
    code, _, err = run(["predict", PORTRAITS[0], "--weights", untrained_weights, "--min-score", "1.5"], capsys)
    assert code == 2 and "--min-score" in err and err.count("\n") == 1


def test_the_top_level_help_loads_neither_torch_nor_opencv():
    """`python -m fer --help` answers without importing the heavy libraries (they take seconds to load); a
    command's own --help builds that command's options only."""
    script = ("import sys, contextlib, io\nfrom fer.cli import main\n"
              "with contextlib.redirect_stdout(io.StringIO()) as out:\n    code = main(['--help'])\n"
              "print(code, 'torch' in sys.modules, 'cv2' in sys.modules, 'train' in out.getvalue())")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.stdout.split() == ["0", "False", "False", "True"], done.stderr


def test_each_command_still_has_all_its_options(capsys):
    for command, option in (("train", "--head-dropout"), ("sweep", "--jobs"), ("predict", "--explain-layer"),
                            ("video", "--max-rate"), ("evaluate", "--tta")):
        assert main([command, "--help"]) == 0
        assert option in capsys.readouterr().out, command
