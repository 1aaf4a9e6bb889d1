"""Determinism and crash-safe resume: same seed, same CPU -> the same history and weights, even across a
SIGKILL and --resume."""
import csv
import os
import signal
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file

from fer.train import load_checkpoint, paths_for
from tests.conftest import REPO

TIMING_COLUMNS = {"seconds", "images_per_second"}


def train_command(data, out, epochs=4, resume=False):
    return [sys.executable, "-m", "fer", "train", "--data", str(data), "--arch", "resnet50", "--epochs",
            str(epochs), "--batch-size", "14", "--val-subset", "14", "--out", str(out), "--no-progress", "--seed", "3"] \
        + (["--resume"] if resume else [])


def run_training(data, out, **kwargs):
    done = subprocess.run(train_command(data, out, **kwargs), cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]


def history_without_timings(out):
    with open(paths_for(out)["history"]) as f:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(f)]


def assert_same_run(a, b):
    assert history_without_timings(a) == history_without_timings(b)
    weights_a, weights_b = load_file(str(a)), load_file(str(b))
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    last_a = load_checkpoint(paths_for(a)["checkpoint"])["model"]
    last_b = load_checkpoint(paths_for(b)["checkpoint"])["model"]
    assert all(torch.equal(last_a[k], last_b[k]) for k in last_a)


def test_same_seed_gives_identical_history_and_weights(fer_folder, tmp_path):
    run_training(fer_folder, tmp_path / "a.safetensors", epochs=2)
    run_training(fer_folder, tmp_path / "b.safetensors", epochs=2)
    assert_same_run(tmp_path / "a.safetensors", tmp_path / "b.safetensors")


def test_sigkill_mid_run_then_resume_ends_like_an_uninterrupted_run(fer_folder, tmp_path):
    whole, killed = tmp_path / "whole.safetensors", tmp_path / "killed.safetensors"
    run_training(fer_folder, whole)

    process = subprocess.Popen(train_command(fer_folder, killed), cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    checkpoint = paths_for(killed)["checkpoint"]
    deadline = time.time() + 300
    while not checkpoint.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)  # somewhere in epoch 2, after epoch 1's checkpoint
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert load_checkpoint(checkpoint)["epoch"] >= 1  # what is on disk is whole
    assert not [p for p in checkpoint.parent.iterdir() if p.name.endswith(".tmp")]

    run_training(fer_folder, killed, resume=True)
    assert_same_run(whole, killed)
