"""Experiments as grids of runs: a spec names what every run shares, what varies and the seeds; each run is
notebook 02 executed by papermill (or `python -m fer train` where papermill is absent, as on the GPU
machine), in its own folder; an interrupted sweep resumes; one table and one chart compare the runs.

A spec is a TOML file (experiments/*.toml):

    name = "dropout"                  # the sweep's folder: runs/sweeps/dropout/
    seeds = [0, 1]                    # every run once per seed (default [0])
    recipe = "flagship"               # optional: the runs start from recipes/flagship.toml (fer.recipes)
    [base]                            # what every run shares: TrainConfig fields (`python -m fer train
    subset = 4096                     # --help`), the augmentation's by their own names (erase_prob, flip, ...)
    epochs = 3
    [grid]                            # every combination of these values
    arch = ["resnet50", "resnet50_dropout"]
    [[run]]                           # and/or named runs, each with its own settings (crossed with the grid)
    name = "b"
    head_dropout = 0.3

For runs/sweeps/NAME/RUN/ (RUN: the run's name and the grid values that vary, then its seed):
    settings.json        the run's complete TrainConfig, as it was started
    model.safetensors, model.history.csv, checkpoints/, tensorboard/     as any training run writes them
    02_training.ipynb    the executed notebook (notebook engine)
    log.txt              the run's output
    status.json          {"status": "done" | "failed", "error": the one line that stopped it, "seconds": ...}
and in runs/sweeps/NAME/: results.csv/.md (one row per run), summary.csv/.md (mean ± std over seeds) and
sweep.png (selection-split curves of every run, PublicTest for FER-2013; best accuracy per setting with its
seeds' spread).

Running again skips the runs that are done, resumes a half-finished one from its checkpoint, and retries the
failed ones (fix the cause first); a run whose settings changed in the spec is refused (name a new sweep).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import json
import os
import queue
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

from .config import TrainConfig
from .datasets import resolve_data_source
from .errors import ConfigError, FerError, one_line, quote
from .paths import REPO_ROOT, runs_dir
from .recipes import read_recipe, read_toml
from .runtime import atomic_write
from .charts import read_history
from .run_files import paths_for

TRAINING_NOTEBOOK = REPO_ROOT / "notebooks" / "02_training.ipynb"
ENGINES = ("auto", "notebook", "train")
# Settings that may differ when a sweep is resumed: where it runs, not what (a --jobs slot picks the device).
MAY_CHANGE = ("data", "device", "compile", "progress", "out", "resume", "force")
RUN_FILE = "model.safetensors"
MAX_RUNS = 1000  # a spec of more runs is a mistake (years of CPU time): refused before anything is built


@dataclass
class Run:
    name: str
    varying: dict           # the settings that tell this run from the others (seed included)
    config: TrainConfig
    folder: Path

    def status(self) -> dict:
        path = self.folder / "status.json"
        return json.loads(path.read_text()) if path.is_file() else {"status": "unfinished" if
                                                                    self.files["checkpoint"].exists() else "new"}

    @property
    def files(self) -> dict[str, Path]:
        return paths_for(self.folder / RUN_FILE)


def read_spec(path) -> dict:
    """The spec of a TOML file; ConfigError in one line."""
    spec = read_toml(path, "sweep spec")
    spec.setdefault("name", Path(path).stem)
    return spec


def plan(spec: dict, data=None, root=None, overrides: dict | None = None) -> list[Run]:
    """Every run of a spec, in order, with its complete config; ConfigError for a malformed spec or an
    unknown setting, of the wrong type or out of range in any run (all checked before the first run starts;
    the device where a run gets it). overrides: settings that replace the spec's base (`--set`)."""
    unknown = sorted(spec.keys() - {"name", "seeds", "recipe", "base", "grid", "run"})
    if unknown:
        raise ConfigError(f"the sweep spec has unknown key {unknown[0]!r} (expected name, seeds, recipe, base, "
                          f"grid, run)")
    name, seeds = spec["name"], spec.get("seeds", [0])
    base, grid, named = spec.get("base", {}), spec.get("grid", {}), spec.get("run", [{}])
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ConfigError(f"the sweep's name must be letters, digits, '.', '_' or '-', not {name!r}")
    if not (isinstance(seeds, list) and seeds and all(type(s) is int for s in seeds)):  # noqa: E721
        raise ConfigError(f"seeds must be a list of whole numbers, not {seeds!r}")
    if not isinstance(base, dict) or not isinstance(grid, dict) or not isinstance(named, list) \
            or not all(isinstance(r, dict) for r in named):
        raise ConfigError("base and grid must be tables and run a list of tables ([[run]])")
    if not named:
        raise ConfigError("run = [] names no run: give [[run]] tables, or leave run out")
    bad = [k for k, v in grid.items() if not isinstance(v, list) or not v]
    if bad:
        raise ConfigError(f"grid.{bad[0]} must be a non-empty list of values")
    count = len(named) * len(seeds) * int(np.prod([len(v) for v in grid.values()], dtype=object))
    if count > MAX_RUNS:
        raise ConfigError(f"the spec makes {count:,} runs, more than {MAX_RUNS:,}: narrow the grid or the seeds")
    for table in (base, grid, *named, overrides or {}):
        if "seed" in table:
            raise ConfigError("give the seeds as seeds = [...], not as a setting")
    if "recipe" in spec:  # the recipe's settings first, the spec's own over them
        base = {**read_recipe(spec["recipe"]), **base, "recipe": str(spec["recipe"])}
    base = {**base, **(overrides or {})}
    if data is not None:
        base = {**base, "data": str(data)}
    base.setdefault("data", None)
    base["data"] = str(resolve_data_source(base["data"]).resolve())  # one data set for the whole sweep
    combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    root = (Path(root) if root is not None else runs_dir() / "sweeps" / name).resolve()
    runs = []
    for entry, combo, seed in itertools.product(named, combos, seeds):
        label = entry.get("name")
        settings = {k: v for k, v in entry.items() if k != "name"}
        varying = {**({"name": label} if label else {}), **combo, "seed": seed}
        folder_name = ",".join(f"{k}={v}" if k != "name" else str(v) for k, v in varying.items())
        try:  # every run's settings checked before the first one starts (the device where the run gets it)
            config = TrainConfig.from_settings(**{**base, **settings, **combo, "seed": seed, "progress": False})
            dataclasses.replace(config, device="cpu").validate()
        except (ConfigError, TypeError) as e:
            raise ConfigError(f"run {folder_name}: {one_line(e)}") from None
        folder = root / re.sub(r"[^A-Za-z0-9._=,+-]", "_", folder_name)
        config.out = str(folder / RUN_FILE)
        runs.append(Run(folder.name, varying, config, folder))
    if len({r.folder for r in runs}) < len(runs):
        raise ConfigError("two runs of the sweep have the same name: give each [[run]] its own name")
    for run in runs:
        check_unchanged(run)
    return runs


def flat_settings(cfg: TrainConfig) -> dict:
    """The config as the sweep and notebook 02 name its settings: augmentation fields at the top level."""
    values = {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name != "augment"}
    return {**values, **dataclasses.asdict(cfg.augment)}


def check_unchanged(run: Run) -> None:
    stored = run.folder / "settings.json"
    if not stored.is_file():
        return
    before, now = json.loads(stored.read_text()), flat_settings(run.config)
    # A setting that fer added since the run started is missing from its file: its default is what the run did
    # (fer.config.UPGRADES fills the same way).
    defaults = flat_settings(TrainConfig())
    changed = [k for k in now if k not in MAY_CHANGE and before.get(k, defaults[k]) != now[k]]
    if changed:
        raise ConfigError(f"{quote(run.folder)} was started with {changed[0]} = {before.get(changed[0])!r}, the spec "
                          f"now says {now[changed[0]]!r}: give the sweep a new name to run the new settings")


def train_command(cfg: TrainConfig, resume: bool) -> list[str]:
    """`python -m fer train` with every setting of the config spelled out."""
    command = [sys.executable, "-m", "fer", "train"]
    for name, value in flat_settings(cfg).items():
        if name in ("resume", "force") or value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            command.append(flag if value else "--no-" + flag[2:])
        else:
            command += [flag, str(value)]
    return command + (["--resume"] if resume else ["--force"])


# papermill's Python API in a child process: its command line reads parameters as YAML, where 1e-05 is a string.
PAPERMILL = """import json, logging, sys, papermill
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
source, target, parameters, cwd = sys.argv[1:]
papermill.execute_notebook(source, target, parameters=json.load(open(parameters)), cwd=cwd, progress_bar=False,
                           log_output=True)
"""


def notebook_command(run: Run, resume: bool) -> list[str]:
    """papermill executing notebook 02 into the run's folder, with every setting in its `settings`."""
    settings = {k: v for k, v in flat_settings(run.config).items() if k not in ("resume", "force")}
    parameters = {"data_dir": settings.pop("data"), "settings": settings, "resume": resume, "force": not resume}
    with atomic_write(run.folder / "parameters.json") as tmp:
        tmp.write_text(json.dumps(parameters, indent=1))
    return [sys.executable, "-c", PAPERMILL, str(TRAINING_NOTEBOOK), str(run.folder / TRAINING_NOTEBOOK.name),
            str(run.folder / "parameters.json"), os.getcwd()]  # relative paths in the settings: as for train


def pick_engine(engine: str) -> str:
    if engine == "auto":
        found = all(importlib.util.find_spec(m) for m in ("papermill", "ipykernel"))
        return "notebook" if found else "train"
    if engine == "notebook" and not importlib.util.find_spec("papermill"):
        raise ConfigError("the notebook engine needs papermill (pip install -e '.[notebooks]'); or --engine train")
    return engine


def execute(run: Run, engine: str, device: str | None = None, threads: int | None = None) -> dict:
    """Run (or resume) one run to its end; write and return its status. Never raises for the run's own failure.
    threads: the CPU threads the run may use (OMP_NUM_THREADS), for runs that share the CPU."""
    run.folder.mkdir(parents=True, exist_ok=True)
    cfg = dataclasses.replace(run.config, device=device) if device else run.config
    start = time.time()
    try:
        cfg.validate()
    except FerError as e:
        return write_status(run, {"status": "failed", "error": one_line(e), "seconds": 0.0})
    resume = run.files["checkpoint"].exists()
    with atomic_write(run.folder / "settings.json") as tmp:
        tmp.write_text(json.dumps(flat_settings(cfg), indent=1))
    command = notebook_command(Run(run.name, run.varying, cfg, run.folder), resume) if engine == "notebook" \
        else train_command(cfg, resume)
    with (run.folder / "log.txt").open("a") as log:
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    status = {"status": "done" if code == 0 and run.files["weights"].exists() else "failed",
              "seconds": round(time.time() - start, 1), "engine": engine}
    if status["status"] == "failed":
        status["error"] = failure_line(run, code)
    return write_status(run, status)


def failure_line(run: Run, code: int) -> str:
    """The one line that says why a run stopped: the notebook's error, else the last line of its output."""
    notebook = run.folder / TRAINING_NOTEBOOK.name
    if notebook.is_file():
        try:
            cells = json.loads(notebook.read_text())["cells"]
            errors = [o for c in cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
            if errors:
                return one_line(ValueError(f"{errors[-1]['ename']}: {errors[-1]['evalue']}"))
        except (ValueError, KeyError):
            pass
    lines = [line for line in (run.folder / "log.txt").read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else f"exit code {code}"


def write_status(run: Run, status: dict) -> dict:
    with atomic_write(run.folder / "status.json") as tmp:
        tmp.write_text(json.dumps(status))
    return status


def _has_cuda() -> bool:
    import torch
    return torch.cuda.is_available()


def run_sweep(runs: list[Run], engine: str = "auto", jobs: int = 1, devices: list[str] | None = None,
              log=print) -> list[dict]:
    """Every run not done yet, `jobs` at a time (each slot on its own device from `devices`, if given)."""
    engine = pick_engine(engine)
    todo = [r for r in runs if r.status()["status"] != "done"]
    log(f"sweep: {len(runs)} runs, {len(runs) - len(todo)} done already, {len(todo)} to run ({engine} engine)")
    jobs = max(1, min(jobs, len(todo)))  # no more slots than runs
    slots = queue.Queue()
    for i in range(jobs):
        slots.put(devices[i % len(devices)] if devices else None)
    # Runs that share the CPU share its cores: PyTorch's threads slow to a crawl when more of them compete
    # than there are cores (measured: 2 runs of 2 threads on 2 cores took 2.3x as long as one after the other).
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None

    def one(run: Run) -> dict:
        device = slots.get()
        try:
            log(f"  {run.name}: {'resuming' if run.files['checkpoint'].exists() else 'starting'}"
                + (f" on {device}" if device else ""))
            on_cpu = (device or run.config.device) in ("cpu", "auto") and not _has_cuda()
            status = execute(run, engine, device, threads if on_cpu else None)
            log(f"  {run.name}: {status['status']}" + (f" ({status['error']})" if "error" in status else ""))
            return status
        finally:
            slots.put(device)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(one, todo))


RESULT_COLUMNS = ("status", "best_val_acc", "best_epoch", "epochs", "train_seconds", "images_per_second",
                  "error")
SUMMARY_COLUMNS = ("seeds", "mean_acc", "std_acc", "best_epoch", "train_seconds", "images_per_second")


def results(runs: list[Run]) -> pd.DataFrame:
    """One row per run: what varies, its status, best accuracy on the selection split and its epoch, time and
    throughput."""
    rows = []
    for run in runs:
        status = run.status()
        row = {"run": run.name, **run.varying, "status": status["status"], "best_val_acc": np.nan,
               "best_epoch": np.nan, "epochs": 0, "train_seconds": np.nan, "images_per_second": np.nan,
               "error": status.get("error", "")}
        if run.files["history"].is_file():
            history = read_history(run.files["history"])
            if len(history):
                best = history["val_acc"].idxmax()
                row.update(best_val_acc=history["val_acc"][best], best_epoch=int(history["epoch"][best]),
                           epochs=len(history), train_seconds=history["seconds"].iloc[-1],
                           images_per_second=history["images_per_second"].median())
        rows.append(row)
    return pd.DataFrame(rows)


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds of each setting's finished runs."""
    settings = [c for c in table.columns if c not in RESULT_COLUMNS and c not in ("run", "seed")]
    done = table[table["status"] == "done"]
    if not settings:
        settings = ["all"]
        done = done.assign(all="all")
    grouped = done.groupby(settings, sort=False, dropna=False)
    out = grouped.agg(seeds=("seed", "count"), mean_acc=("best_val_acc", "mean"),
                      std_acc=("best_val_acc", "std"), best_epoch=("best_epoch", "mean"),
                      train_seconds=("train_seconds", "mean"), images_per_second=("images_per_second", "mean"))
    return out.reset_index()




def compare(means: pd.DataFrame) -> str:
    """The comparison in words: the best and the worst setting, their gap, and whether it is larger than twice
    the largest spread over seeds (a smaller gap is not evidence of a difference)."""
    settings = [c for c in means.columns if c not in SUMMARY_COLUMNS]
    done = means.dropna(subset=["mean_acc"])
    if len(done) < 2:
        return "fewer than two settings have a finished run: nothing to compare"
    best, worst = done.loc[done["mean_acc"].idxmax()], done.loc[done["mean_acc"].idxmin()]
    gap, spread = best["mean_acc"] - worst["mean_acc"], done["std_acc"].max()
    if np.isnan(spread):
        verdict = "with one seed per setting the spread between seeds is unknown, and so is whether this is a difference"
    elif gap > 2 * spread:
        verdict = f"more than twice the largest spread between seeds ({spread:.1%}): a difference"
    else:
        verdict = f"within twice the largest spread between seeds ({spread:.1%}): not a difference at this size"

    def label(row):
        return ", ".join(f"{c} {row[c]}" for c in settings)
    return (f"best: {label(best)}, {best['mean_acc']:.1%} (mean of {int(best['seeds'])} seeds); worst: {label(worst)}, "
            f"{worst['mean_acc']:.1%}; gap {gap:.1%}, {verdict}.")


def markdown(table: pd.DataFrame) -> str:
    """A Markdown table (pandas' to_markdown needs tabulate, which fer does not depend on)."""
    def cell(value):
        if isinstance(value, float):
            return "" if np.isnan(value) else f"{value:.4g}"
        return str(value).replace("|", "\\|")
    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def report(runs: list[Run], folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, Path]:
    """Write results.csv/.md, summary.csv/.md and sweep.png into the sweep's folder; return the tables and chart."""
    import matplotlib.pyplot as plt

    from .charts import plot_sweep, save
    table = results(runs)
    means = summary(table)
    for stem, frame in (("results", table), ("summary", means)):
        with atomic_write(folder / f"{stem}.csv") as tmp:
            frame.to_csv(tmp, index=False)
        with atomic_write(folder / f"{stem}.md") as tmp:
            tmp.write_text(markdown(frame))
    histories = {r.name: read_history(r.files["history"]) for r in runs if r.files["history"].is_file()}
    groups = {r.name: ", ".join(f"{k}={v}" for k, v in r.varying.items() if k != "seed") or "all" for r in runs}
    fig = plot_sweep(histories, groups, table, title=f"sweep {folder.name}")
    chart = save(fig, "sweep.png", folder)
    plt.close(fig)
    return table, means, chart


def sweep(spec, data=None, engine: str = "auto", jobs: int = 1, devices: list[str] | None = None,
          root=None, overrides: dict | None = None, log=print) -> tuple[pd.DataFrame, pd.DataFrame, Path]:
    """Plan, run what is not done, and report. spec: a TOML file or a dict of the same shape."""
    spec = read_spec(spec) if isinstance(spec, (str, os.PathLike)) else dict(spec)
    runs = plan(spec, data, root, overrides)
    run_sweep(runs, engine, jobs, devices, log)
    return report(runs, runs[0].folder.parent)
