"""torchrun with 2 CPU processes (gloo) trains like one process with the same global batch."""
import csv
import os
import socket
import subprocess
import sys

import pytest

from fer.train import paths_for
from tests.conftest import REPO

# GroupNorm and no dropout: the only randomness left is the shuffled order and the augmentation, which
# every rank draws for the global batch, so the two runs should agree to float tolerance.
ARGS = ["--arch", "resnet50", "--norm", "group", "--epochs", "2", "--batch-size", "14", "--val-subset", "14",
        "--optimizer", "sgd", "--lr", "0.02", "--no-amp", "--no-progress", "--seed", "5"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(data, out, processes):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
                "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m"] \
        if processes > 1 else [sys.executable, "-m"]
    done = subprocess.run(launcher + ["fer", "train", "--data", str(data), "--out", str(out)] + ARGS, cwd=REPO,
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(paths_for(out)["history"]) as f:
        return list(csv.DictReader(f)), done.stdout


def test_two_gloo_processes_follow_the_single_process_loss_curve(fer_folder, tmp_path):
    single, _ = train(fer_folder, tmp_path / "one.safetensors", 1)
    double, stdout = train(fer_folder, tmp_path / "two.safetensors", 2)
    assert "2 processes" in stdout and stdout.count("best PublicTest accuracy") == 1  # rank 0 alone reports
    assert len(single) == len(double) == 2
    for a, b in zip(single, double):
        for column in ("train_loss", "train_acc", "val_loss", "val_acc"):
            assert float(a[column]) == pytest.approx(float(b[column]), rel=1e-3, abs=1e-4), column
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == [
        "one.history.csv", "one.safetensors", "two.history.csv", "two.safetensors"]
