"""Stored configs carry a version and older ones load (the shipped weights' own); --init-from fine-tunes from
a weights file; every training run writes TensorBoard event files where TensorBoard is installed."""
import pytest
import torch
from safetensors import safe_open

from fer.config import CONFIG_VERSION, TrainConfig
from fer.errors import ConfigError
from fer.model import ModelConfig
from fer.paths import DEFAULT_WEIGHTS
from fer.preprocess import FaceFormat
from fer.train import paths_for, tensorboard_dir
from fer.weights import read_metadata
from tests.test_hostile_inputs import one_line_error, run, tiny_train_args


# The training config stored in the first shipped weights (trained_models/resnet50_dropout.safetensors, in git
# history), written before configs had a version: its network is called "model", and amp, norm, ema_decay,
# force, init_from and every later setting are missing.
VERSION_1 = {"data": "../shared/data/fer2013.zip", "model": "resnet50_dropout", "dropout": 0.05, "head_dropout": 0.0,
             "stem": "imagenet", "epochs": 40, "batch_size": 128, "optimizer": "adamw", "lr": 0.001, "momentum": 0.9,
             "weight_decay": 0.05, "label_smoothing": 0.1, "warmup": 0.05,
             "augment": {"flip": True, "max_rotate_deg": 10.0, "max_scale": 0.1, "max_translate": 0.1,
                         "erase_prob": 0.25, "erase_max_area": 0.25},
             "subset": None, "val_subset": None, "device": "auto", "seed": 0, "time_budget": 5300.0,
             "out": "trained_models/resnet50_dropout.safetensors", "resume": False, "compile": False, "progress": False}


def test_the_shipped_weights_stored_config_loads():
    TrainConfig.from_dict(read_metadata(DEFAULT_WEIGHTS)["train_config"])


def test_the_first_shipped_weights_stored_config_loads_with_a_note_of_what_was_filled_in():
    stored = dict(VERSION_1)
    notes = []
    cfg = TrainConfig.from_dict(stored, notes)
    assert cfg.arch == "resnet50_dropout" and cfg.dropout == 0.05 and cfg.time_budget == 5300
    assert cfg.amp is True and cfg.norm == "batch" and cfg.ema_decay == 0.0  # what that version did
    [note] = notes
    assert "version 1" in note and all(name in note for name in ("amp=True", "norm='batch'", "ema_decay=0.0"))


def test_a_config_round_trips_with_its_version_and_no_note():
    cfg = TrainConfig(arch="resnet50", head_dropout=0.3, lr=3e-4)
    stored = cfg.to_dict()
    assert stored["version"] == CONFIG_VERSION
    notes = []
    assert TrainConfig.from_dict(stored, notes) == cfg and notes == []


@pytest.mark.parametrize("version, message", [(CONFIG_VERSION + 1, "newer fer"), ("2", "not a whole number"),
                                              (True, "not a whole number"), (0, "not a whole number")])
def test_a_config_of_an_unknown_version_is_refused(version, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict({**TrainConfig().to_dict(), "version": version})


def test_a_version_3_config_reads_48_px_gray_faces():
    """Version 3 (the CPU flagship's checkpoint) was written before the faces' size and colour were settings."""
    stored = {**TrainConfig(arch="resnet50").to_dict(), "version": 3}
    del stored["image_size"], stored["channels"]
    notes = []
    cfg = TrainConfig.from_dict(stored, notes)
    assert cfg.image_size == 48 and cfg.channels == 1 and cfg.model_config().face == FaceFormat(48, 1)
    assert "version 3" in notes[0] and "image_size=48" in notes[0] and "channels=1" in notes[0]


def test_a_damaged_current_config_is_still_refused():
    stored = TrainConfig().to_dict()
    stored.pop("lr")  # lr has always been there: its absence is damage, not age
    with pytest.raises(ConfigError, match="lacks lr"):
        TrainConfig.from_dict(stored)


def test_from_settings_takes_augmentation_fields_by_name():
    cfg = TrainConfig.from_settings(arch="resnet50", erase_prob=0.0, flip=False)
    assert cfg.augment.erase_prob == 0.0 and cfg.augment.flip is False and cfg.augment.max_rotate_deg == 10.0
    with pytest.raises(ConfigError, match="did you mean 'erase_prob'"):
        TrainConfig.from_settings(erase_probability=0.1)


def tensor(path, name):
    with safe_open(str(path), framework="pt") as f:
        return f.get_tensor(name)


def test_init_from_the_shipped_weights_fine_tunes_them(fer_folder, tmp_path, capsys):
    """No --model given: the network is the weights' own. The one step is taken in warm-up at lr 0, so the
    trained weights must still be exactly the shipped ones."""
    out = tmp_path / "tuned.safetensors"
    args = [a for a in tiny_train_args(fer_folder, "--out", out, "--init-from", DEFAULT_WEIGHTS) if a != "resnet50"]
    args.remove("--arch")
    code, _, err = run(args, capsys)
    assert code == 0, err
    meta = read_metadata(out)
    assert ModelConfig.from_dict(meta["config"]) == ModelConfig.from_dict(read_metadata(DEFAULT_WEIGHTS)["config"])
    assert meta["train_config"]["init_from"] == str(DEFAULT_WEIGHTS)
    with safe_open(str(DEFAULT_WEIGHTS), framework="pt") as f:
        classifier = [k for k in f.keys() if k.startswith("fc") and k.endswith("weight")]  # fc.1 behind head dropout
    for name in ("conv1.weight", "layer3.2.conv2.weight", *classifier):
        assert torch.equal(tensor(out, name), tensor(DEFAULT_WEIGHTS, name)), name


def test_init_from_weights_that_do_not_fit_the_network_asked_for_is_one_line(fer_folder, tmp_path, capsys):
    code, _, err = run(tiny_train_args(fer_folder, "--out", tmp_path / "m.safetensors", "--init-from", DEFAULT_WEIGHTS,
                                       "--stem", "cifar"), capsys)
    assert code == 2 and one_line_error(err) and "--init-from" in err and "stem" in err
    assert not (tmp_path / "m.safetensors").exists()


def test_init_from_takes_the_weights_faces_unless_told_and_refuses_other_channels(fer_folder, tmp_path, capsys):
    """Another size fits the same tensors (the network is convolutional); RGB needs another first layer."""
    code, _, err = run(tiny_train_args(fer_folder, "--out", tmp_path / "rgb.safetensors", "--init-from",
                                       DEFAULT_WEIGHTS, "--channels", "3"), capsys)
    assert code == 2 and one_line_error(err) and "channels 1" in err and "--channels" in err
    out = tmp_path / "big.safetensors"
    code, _, err = run(tiny_train_args(fer_folder, "--out", out, "--init-from", DEFAULT_WEIGHTS, "--image-size", "64"),
                       capsys)
    assert code == 0, err
    assert read_metadata(out)["input_size"] == [1, 64, 64]
    assert torch.equal(tensor(out, "conv1.weight"), tensor(DEFAULT_WEIGHTS, "conv1.weight"))


def test_each_resnet50_starts_from_the_other_ones_weights(fer_folder, tmp_path, capsys):
    """resnet50 and resnet50_dropout share every tensor: the ablation can start both from one model."""
    other = "resnet50" if read_metadata(DEFAULT_WEIGHTS)["config"]["arch"] == "resnet50_dropout" else "resnet50_dropout"
    out = tmp_path / "other.safetensors"
    args = tiny_train_args(fer_folder, "--out", out, "--init-from", DEFAULT_WEIGHTS)
    args[args.index("--arch") + 1] = other
    code, _, err = run(args, capsys)
    assert code == 0, err
    assert read_metadata(out)["config"]["arch"] == other
    assert torch.equal(tensor(out, "conv1.weight"), tensor(DEFAULT_WEIGHTS, "conv1.weight"))


def test_training_writes_tensorboard_events_and_a_resume_continues_them(fer_folder, tmp_path, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    out = tmp_path / "m.safetensors"
    assert run(tiny_train_args(fer_folder, "--out", out), capsys)[0] == 0
    assert run(tiny_train_args(fer_folder, "--out", out, "--resume", "--epochs", "2"), capsys)[0] == 0
    events = EventAccumulator(str(tensorboard_dir(out))).Reload()
    assert {"loss/train", "loss/val", "accuracy/train", "accuracy/val", "lr",
            "images_per_second"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("accuracy/val")] == [1, 2]
    assert paths_for(out)["weights"].is_file()
