"""Issue 35's fresh probe: the 19 cases that broke, one test each (or one per variant), and the torchvision
networks that trained but could not be used afterwards. Every refusal is one line on stderr, exit 2, before any
run starts or any file is written."""
import csv
import json

import pytest
import torch

from fer.datasets import load_split
from fer.errors import DataError, WeightsError
from fer.model import ModelConfig, build_model
from fer.weights import load_network, save_weights
from tests.conftest import PORTRAITS, fer_spec, write_fer_layout
from tests.test_any_dataset import write_ferplus, write_rafdb, write_split_folders
from tests.test_hostile_inputs import one_line_error, run, tampered, tiny_train_args


# Sweeps: the whole spec is checked before the first run


def sweep(tmp_path, capsys, spec: str, *extra):
    path = tmp_path / "spec.toml"
    path.write_text(spec)
    return run(["sweep", path, "--data", tmp_path / "data", "--out", tmp_path / "sweep", "--engine", "train",
                *extra], capsys)


@pytest.fixture
def data(tmp_path):
    return write_fer_layout(tmp_path / "data", per_class=2)


@pytest.mark.parametrize("spec, message", [
    ('name = "s"\nrun = []\n', "names no run"),
    ('name = "s"\n' + "a = " + "[" * 1000 + "]" * 1000 + "\n", "nested too deeply"),
    ('name = "s"\n[grid]\nlr = ["fast"]\n', "lr"),
    ('name = "s"\nseeds = [-1]\n', "seed"),
    ('name = "s"\nseeds = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]\n[grid]\nlr = [' + ", ".join(["1e-3"] * 100) + "]\n"
     "epochs = [" + ", ".join(map(str, range(1, 101))) + "]\n" + "warmup = [" + ", ".join(["0.1"] * 100) + "]\n"
     "label_smoothing = [" + ", ".join(["0.1"] * 100) + "]\n", "1,000,000,000 runs"),
], ids=["empty run list", "nested 1000 deep", "grid value of the wrong type", "negative seed", "1e9 runs"])
def test_a_bad_sweep_spec_is_one_line_before_any_run(tmp_path, capsys, data, spec, message):
    code, out, err = sweep(tmp_path, capsys, spec)
    assert code == 2 and one_line_error(err) and message in err, err
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("extra, message", [(["--set", "lr=abc"], "lr"), (["--devices", "bogus"], "--devices")])
def test_a_bad_sweep_option_is_one_line(tmp_path, capsys, data, extra, message):
    code, out, err = sweep(tmp_path, capsys, 'name = "s"\n[base]\nepochs = 1\n', *extra)
    assert code == 2 and one_line_error(err) and message in err, err


def test_more_jobs_than_runs_start_no_more_slots_than_runs(tmp_path, capsys, data):
    from fer import sweep as sweeps
    runs = sweeps.plan(sweeps.read_spec(write_spec(tmp_path)), data, tmp_path / "sweep")
    started = []
    sweeps.run_sweep(runs, "train", jobs=10_000_000_000, log=started.append)  # one slot, not ten billion
    assert started[0].startswith("sweep: 1 runs")


def write_spec(tmp_path):
    path = tmp_path / "one.toml"
    path.write_text('name = "one"\n[base]\nepochs = 1\nsubset = 14\nval_subset = 14\nbatch_size = 14\n'
                    'arch = "resnet18"\ndevice = "cpu"\n')
    return path


# Data layouts: refused in one line naming the file


def test_ferplus_votes_below_zero_are_refused(tmp_path):
    root = write_ferplus(tmp_path / "ferplus")
    rows = list(csv.reader((root / "fer2013new.csv").open()))
    rows[3][2] = "-4"
    csv.writer((root / "fer2013new.csv").open("w", newline="")).writerows(rows)
    with pytest.raises(DataError, match=r"fer2013new.csv.* line 4: vote counts must be numbers >= 0"):
        load_split(root, "train")


def test_a_ferplus_row_shorter_than_its_header_is_refused(tmp_path):
    root = write_ferplus(tmp_path / "ferplus")
    rows = list(csv.reader((root / "fer2013new.csv").open()))
    rows[5] = rows[5][:6]
    csv.writer((root / "fer2013new.csv").open("w", newline="")).writerows(rows)
    with pytest.raises(DataError, match=r"line 6: 6 fields, the header has 12"):
        load_split(root, "train")


def test_a_rafdb_list_naming_one_image_twice_is_refused(tmp_path):
    root = write_rafdb(tmp_path / "raf")
    listing = root / "EmoLabel" / "list_patition_label.txt"
    lines = listing.read_text().splitlines()
    listing.write_text("\n".join([*lines, lines[0].split()[0] + " 3"]) + "\n")
    with pytest.raises(DataError, match=rf"line {len(lines) + 1} names .*{lines[0].split()[0]}.* again \(first on "
                                        r"line 1\)"):
        load_split(root, "train")


@pytest.mark.parametrize("zipped", [False, True], ids=["folder", "zip"])
def test_a_class_folder_without_images_is_refused(tmp_path, zipped):
    import shutil
    root = write_fer_layout(tmp_path / "fer", per_class=2)
    for image in (root / "train" / "fear").iterdir():
        image.unlink()
    source = root
    if zipped:
        source = shutil.make_archive(str(tmp_path / "fer"), "zip", root)
    with pytest.raises(DataError, match="the class folder 'train/fear' holds no images"):
        load_split(source, "train")


def test_a_split_layout_without_train_is_refused_before_training(tmp_path, capsys):
    import shutil
    root = write_split_folders(tmp_path / "split")
    shutil.move(root / "train", tmp_path / "elsewhere")
    (root / "test").mkdir()
    shutil.copytree(root / "val" / "happy", root / "test" / "happy")
    code, out, err = run(tiny_train_args(root, "--out", tmp_path / "w.safetensors"), capsys)
    assert code == 2 and one_line_error(err) and "no train/ folder" in err
    assert not (tmp_path / "w.safetensors").exists()


def test_a_val_fraction_that_holds_out_nothing_names_the_option(fer_folder, tmp_path, capsys):
    code, out, err = run(["train", "--data", fer_folder, "--arch", "resnet18", "--epochs", "1", "--no-progress",
                          "--val-fraction", "0.01", "--out", tmp_path / "w.safetensors"], capsys)
    assert code == 2 and one_line_error(err) and "--val-fraction 0.01" in err


# average


def snapshots(tmp_path, untrained_weights, scale=1.0, version=None):
    paths = []
    for i in range(2):
        model, spec = load_network(untrained_weights)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(scale)
        config = {"data": str(tmp_path), "version": version} if version else None
        paths.append(save_weights(model, spec, tmp_path / f"epoch_{i:03d}.safetensors",
                                  dtype=torch.float32, val_acc=0.1, val_split="public", epoch=i,
                                  train_config=config or {}))
    return paths


def test_averaged_weights_that_overflow_float16_are_not_written(tmp_path, untrained_weights, fer_folder):
    model, spec = load_network(untrained_weights)
    with torch.no_grad():
        model.fc.weight.fill_(1e6)  # float32 holds it, float16 (max 65504) does not
    with pytest.raises(WeightsError, match="do not fit float16.* not written"):
        save_weights(model, spec, tmp_path / "big.safetensors", val_acc=0.1, val_split="public")
    assert not (tmp_path / "big.safetensors").exists()


def test_a_snapshot_from_a_newer_fer_is_named(tmp_path, untrained_weights, capsys):
    paths = snapshots(tmp_path, untrained_weights, version=99)
    code, out, err = run(["average", *paths, "--out", tmp_path / "mean.safetensors"], capsys)
    assert code == 2 and one_line_error(err) and "epoch_000.safetensors" in err and "newer fer" in err


# Class names are data from a file


@pytest.mark.parametrize("name", ["happy\x1b[2J", "happy\nfer: forged"], ids=["ansi escape", "newline"])
def test_class_names_with_control_characters_are_refused(untrained_weights, tmp_path, capsys, name):
    classes = ["angry", "disgust", "fear", name, "neutral", "sad", "surprise"]
    path = tampered(untrained_weights, tmp_path, "classes", json.dumps(classes))
    code, out, err = run(["predict", PORTRAITS[0], "--weights", path], capsys)
    assert code == 2 and one_line_error(err) and "control characters" in err
    assert "\x1b" not in err and "forged" not in out


# torchvision's networks


def test_googlenet_trains_without_its_auxiliary_outputs(fer_folder, tmp_path, capsys):
    out = tmp_path / "g.safetensors"
    code, _, err = run(tiny_train_args(fer_folder, "--arch", "googlenet", "--out", out), capsys)
    assert code == 0, err
    assert load_network(out)[1].arch == "googlenet"


def test_mnasnet_weights_load_after_training(tmp_path):
    cfg = ModelConfig(arch="mnasnet0_5", dropout=0.0)
    path = save_weights(build_model(cfg).eval(), fer_spec(cfg), tmp_path / "m.safetensors", val_acc=0.1,
                        val_split="public")
    assert load_network(path)[1].arch == "mnasnet0_5"
