import csv

import pytest
import torch

from fer.augment import AugmentConfig
from fer.train import TrainConfig, load_checkpoint, lr_at, paths_for, train
from fer.weights import load_network, read_metadata

NO_AUGMENT = AugmentConfig(flip=False, max_rotate_deg=0, max_scale=0, max_translate=0, erase_prob=0)


def tiny_config(data, out, **overrides):
    values = dict(data=str(data), arch="resnet50", dropout=0.0, epochs=2, batch_size=14, optimizer="sgd", lr=0.05,
                  label_smoothing=0.0, warmup=0.1, augment=NO_AUGMENT, out=str(out), progress=False)
    values.update(overrides)
    return TrainConfig(**values)


def read_history(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_a_few_cpu_steps_lower_the_training_loss(fer_folder, tmp_path):
    state = train(tiny_config(fer_folder, tmp_path / "m.safetensors", epochs=6))
    losses = [row["train_loss"] for row in state["history"]]
    assert losses[-1] < 0.7 * losses[0], losses


def test_training_writes_weights_history_and_checkpoint(fer_folder, tmp_path):
    out = tmp_path / "model.safetensors"
    train(tiny_config(fer_folder, out, arch="resnet50_dropout", dropout=0.1))
    files = paths_for(out)
    history = read_history(files["history"])
    assert [row["epoch"] for row in history] == ["1", "2"]
    assert set(history[0]) == {"epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "seconds",
                               "images_per_second"}
    meta = read_metadata(out)
    assert meta["config"]["arch"] == "resnet50_dropout" and meta["config"]["dropout"] == 0.1
    assert meta["val_acc"] == max(float(r["val_acc"]) for r in history) and meta["val_split"] == "public"
    assert {"classes", "input_size", "normalization", "commit", "train_config"} <= meta.keys()
    model, _ = load_network(out)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert load_checkpoint(files["checkpoint"])["epoch"] == 2


def test_resume_continues_where_the_checkpoint_left_off(fer_folder, tmp_path):
    out = tmp_path / "m.safetensors"
    train(tiny_config(fer_folder, out, epochs=1))
    state = train(tiny_config(fer_folder, out, epochs=3, resume=True))
    assert [row["epoch"] for row in state["history"]] == [1, 2, 3]
    assert len(read_history(paths_for(out)["history"])) == 3


def test_time_budget_stops_cleanly_and_saves(fer_folder, tmp_path):
    out = tmp_path / "m.safetensors"
    state = train(tiny_config(fer_folder, out, epochs=1000, time_budget=3))
    assert 1 <= state["epoch"] < 1000
    assert out.exists() and paths_for(out)["checkpoint"].exists()
    assert state["seconds"] >= 3 * 0.9  # it used the budget, then stopped by itself
    assert state["history"][-1]["lr"] < 0.05  # past the peak: the schedule ran inside the budget


def test_schedule_warms_up_then_anneals_to_zero():
    assert lr_at(0.0, 1.0, 0.1) == 0.0
    assert lr_at(0.1, 1.0, 0.1) == pytest.approx(1.0)
    assert lr_at(0.55, 1.0, 0.1) == pytest.approx(0.5)
    assert lr_at(1.0, 1.0, 0.1) == pytest.approx(0.0)


def test_a_foreign_checkpoint_is_refused(tmp_path):
    path = tmp_path / "last.pt"
    path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="not a complete fer checkpoint"):
        load_checkpoint(path)
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not a fer training checkpoint"):
        load_checkpoint(path)


def test_ema_weights_are_what_is_evaluated_saved_and_resumed(fer_folder, tmp_path):
    out = tmp_path / "m.safetensors"
    train(tiny_config(fer_folder, out, epochs=1, ema_decay=0.9))
    checkpoint = load_checkpoint(paths_for(out)["checkpoint"])
    assert checkpoint["ema"] is not None and int(checkpoint["ema"]["n_averaged"]) == 3
    saved = load_network(out)[0].state_dict()
    ema_weight = checkpoint["ema"]["module.fc.weight"]
    assert torch.allclose(saved["fc.weight"], ema_weight.half().float())
    assert not torch.allclose(saved["fc.weight"], checkpoint["model"]["fc.weight"].half().float())
    state = train(tiny_config(fer_folder, out, epochs=2, ema_decay=0.9, resume=True))
    assert int(load_checkpoint(paths_for(out)["checkpoint"])["ema"]["n_averaged"]) == 6
    assert len(state["history"]) == 2


def test_augmentation_is_set_from_the_command_line_stored_and_checked(fer_folder, tmp_path, capsys):
    from fer.cli import main
    out = tmp_path / "m.safetensors"
    args = ["train", "--data", str(fer_folder), "--arch", "resnet50", "--epochs", "1", "--batch-size", "14",
            "--subset", "14", "--val-subset", "14", "--no-progress", "--out", str(out)]
    assert main([*args, "--erase-prob", "0", "--no-flip", "--max-rotate-deg", "5"]) == 0
    stored = read_metadata(out)["train_config"]["augment"]
    assert stored["erase_prob"] == 0 and stored["flip"] is False and stored["max_rotate_deg"] == 5
    assert stored["max_scale"] == AugmentConfig().max_scale  # the rest keep their defaults
    capsys.readouterr()
    assert main([*args, "--force", "--erase-prob", "1.5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "erase_prob" in err
