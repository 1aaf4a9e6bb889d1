"""Sweeps (fer.sweep, `python -m fer sweep`): a grid with seeds gives one table and one chart, a failing run is
recorded while the others go on, a killed sweep resumes without rerunning what finished."""
import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from fer.cli import main
from fer.errors import ConfigError
from fer.sweep import flat_settings, plan, read_spec, report, sweep
from tests.conftest import REPO

TINY = {"subset": 14, "val_subset": 14, "batch_size": 14, "epochs": 1, "optimizer": "sgd", "lr": 0.05,
        "erase_prob": 0.0}


def toml(base: dict, **tables) -> str:
    """A spec as TOML text (values written as TOML literals: lists, strings, numbers and booleans)."""
    def value(v):
        return json.dumps(v) if not isinstance(v, bool) else str(v).lower()
    lines = [f"{k} = {value(v)}" for k, v in tables.pop("top", {}).items()] + ["[base]"]
    lines += [f"{k} = {value(v)}" for k, v in base.items()]
    if "grid" in tables:
        lines += ["[grid]"] + [f"{k} = {value(v)}" for k, v in tables["grid"].items()]
    for run in tables.get("runs", []):
        lines += ["[[run]]"] + [f"{k} = {value(v)}" for k, v in run.items()]
    return "\n".join(lines) + "\n"


def test_a_2x2_grid_with_two_seeds_gives_one_table_and_one_chart(fer_folder, tmp_path):
    spec = tmp_path / "grid.toml"
    spec.write_text(toml({**TINY, "arch": "resnet50"}, top={"name": "grid", "seeds": [0, 1]},
                         grid={"head_dropout": [0.0, 0.3], "max_rotate_deg": [0.0, 10.0]}))
    table, means, chart = sweep(spec, data=fer_folder, engine="train", jobs=2, root=tmp_path / "grid", log=print)
    assert len(table) == 8 and (table["status"] == "done").all(), table[["run", "status", "error"]]
    assert set(table.columns) >= {"head_dropout", "max_rotate_deg", "seed", "best_val_acc", "best_epoch",
                                  "train_seconds", "images_per_second"}
    assert len(means) == 4 and (means["seeds"] == 2).all() and means["std_acc"].notna().all()
    assert chart.is_file() and chart.stat().st_size > 10_000
    for name in ("results.csv", "results.md", "summary.csv", "summary.md"):
        assert (tmp_path / "grid" / name).is_file()
    assert pd.read_csv(tmp_path / "grid" / "results.csv")["best_val_acc"].between(0, 1).all()
    # each run is a complete training run with its exact settings kept beside it
    run = tmp_path / "grid" / "head_dropout=0.3,max_rotate_deg=10.0,seed=1"
    settings = json.loads((run / "settings.json").read_text())
    assert settings["head_dropout"] == 0.3 and settings["max_rotate_deg"] == 10.0 and settings["seed"] == 1
    assert (run / "model.safetensors").is_file() and (run / "model.history.csv").is_file()


def test_a_failing_run_is_recorded_and_the_others_go_on(fer_folder, tmp_path, capsys):
    """Through notebook 02 and papermill: one run finishes, one fails in training; the sweep exits 1 and the
    table says which failed and why, in one line. Settings that contradict each other are refused before any
    run starts, naming the run."""
    pytest.importorskip("papermill")
    spec = tmp_path / "mixed.toml"
    runs = [{"name": "good"}, {"name": "missing-weights", "init_from": str(tmp_path / "no.safetensors")}]
    spec.write_text(toml({**TINY, "arch": "resnet50"}, top={"name": "mixed"},
                         runs=[*runs, {"name": "contradiction", "dropout": 0.2}]))
    command = ["sweep", str(spec), "--data", str(fer_folder), "--engine", "notebook", "--out", str(tmp_path / "mixed")]
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "run contradiction,seed=0" in err and "dropout" in err
    assert not (tmp_path / "mixed").exists()
    spec.write_text(toml({**TINY, "arch": "resnet50"}, top={"name": "mixed"}, runs=runs))
    code = main(command)
    assert code == 1
    table = pd.read_csv(tmp_path / "mixed" / "results.csv").set_index("run")
    assert table["status"].to_dict() == {"good,seed=0": "done", "missing-weights,seed=0": "failed"}
    assert "no weights file" in table["error"]["missing-weights,seed=0"]
    assert (tmp_path / "mixed" / "good,seed=0" / "02_training.ipynb").is_file()
    assert capsys.readouterr().err == ""  # the failures are the runs', in the table; the sweep itself went well


def test_a_killed_sweep_resumes_and_reruns_nothing_finished(fer_folder, tmp_path):
    spec = tmp_path / "kill.toml"
    spec.write_text(toml({**TINY, "arch": "resnet50", "epochs": 6}, top={"name": "kill", "seeds": [0, 1]}))
    root = tmp_path / "kill"
    first, second = root / "seed=0", root / "seed=1"
    command = [sys.executable, "-m", "fer", "sweep", str(spec), "--data", str(fer_folder), "--engine", "train",
               "--out", str(root)]
    process = subprocess.Popen(command, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while not ((first / "status.json").is_file() and (second / "checkpoints" / "model" / "last.pt").is_file()):
            assert process.poll() is None and time.time() < deadline, "the sweep ended before it could be killed"
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the sweep and the run it started, mid-run
        process.wait()
    assert not (second / "status.json").exists()
    done_weights = (first / "model.safetensors").stat().st_mtime_ns
    assert main(command[3:]) == 0
    assert (first / "model.safetensors").stat().st_mtime_ns == done_weights  # not rerun
    log = (first / "log.txt").read_text()
    assert log.startswith("$ ") and "\n$ " not in log  # started once
    assert "resumed from" in (second / "log.txt").read_text()
    history = pd.read_csv(second / "model.history.csv")
    assert history["epoch"].tolist() == [1, 2, 3, 4, 5, 6]


def test_a_spec_that_changed_under_a_started_run_is_refused(fer_folder, tmp_path):
    spec = {"name": "s", "base": {**TINY, "arch": "resnet50"}}
    [run] = plan(spec, fer_folder, tmp_path)
    run.folder.mkdir(parents=True)
    (run.folder / "settings.json").write_text(json.dumps({**flat_settings(run.config), "lr": 0.01}))
    with pytest.raises(ConfigError, match="lr"):
        plan(spec, fer_folder, tmp_path)


def test_a_run_started_before_fer_added_a_setting_is_not_taken_for_a_changed_one(fer_folder, tmp_path):
    spec = {"name": "s", "base": {**TINY, "arch": "resnet50"}}
    [run] = plan(spec, fer_folder, tmp_path)
    run.folder.mkdir(parents=True)
    older = {k: v for k, v in flat_settings(run.config).items() if k not in ("votes", "val_split", "val_fraction")}
    (run.folder / "settings.json").write_text(json.dumps(older))
    assert plan(spec, fer_folder, tmp_path)[0].folder == run.folder
    # and its history, written with the columns of then (public_*), is read into the table and chart
    run.files["history"].write_text("epoch,lr,train_loss,train_acc,public_loss,public_acc,seconds,images_per_second\n"
                                    "1,0.001,1.9,0.2,1.8,0.25,10.0,100.0\n")
    (run.folder / "status.json").write_text(json.dumps({"status": "done"}))
    table, _, chart = report([run], tmp_path)
    assert table["best_val_acc"].tolist() == [0.25] and chart.is_file()


@pytest.mark.parametrize("spec, message", [
    ({"base": {"lr": 0.1}, "grid": {"head_droput": [0.1]}}, "did you mean 'head_dropout'"),
    ({"grid": {"lr": 0.1}}, "grid.lr must be a non-empty list"),
    ({"grid": {"seed": [0, 1]}}, "seeds = "),
    ({"seeds": "0"}, "seeds must be a list"),
    ({"runs": [{}]}, "unknown key 'runs'"),
    ({"name": "../up"}, "name must be"),
])
def test_a_malformed_spec_is_one_line_before_anything_runs(fer_folder, tmp_path, spec, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan({"name": "s", **spec}, fer_folder, tmp_path)
    assert not list(tmp_path.iterdir())


def test_every_committed_experiment_spec_plans(fer_folder, tmp_path):
    specs = sorted((REPO / "experiments").glob("*.toml"))
    assert specs
    for path in specs:
        runs = plan(read_spec(path), fer_folder, tmp_path / path.stem)
        assert runs and all(r.config.validate() for r in runs)


def test_cli_sweep_dry_run_lists_the_runs(fer_folder, tmp_path, capsys):
    spec = tmp_path / "dry.toml"
    spec.write_text(toml(TINY, top={"seeds": [0, 1, 2]}, grid={"arch": ["resnet50", "resnet50_dropout"]}))
    assert main(["sweep", str(spec), "--data", str(fer_folder), "--out", str(tmp_path / "d"), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6 and all(line.split()[0] == "new" for line in lines)
    assert not (tmp_path / "d").exists()
