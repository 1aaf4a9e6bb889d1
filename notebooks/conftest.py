"""nbval runs the committed notebooks as they are. While a notebook runs, and only then, its charts and
training runs go to a temporary folder instead of charts/ and runs/, and where the real data is not found
generated faces stand in for FER-2013; the environment of the rest of the test session is untouched."""
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from fer.datasets import resolve_data_source
from fer.errors import DataError
from tests.conftest import write_fer_layout

# Notebook 02 trains: committed with its real recipe (7 hours), it runs in the suite through papermill with
# quick parameters (tests/test_notebooks.py), never as committed.
collect_ignore = ["02_training.ipynb"]

_saved: dict | None = None
_scratch: Path | None = None  # removed when the notebook is done: a training notebook leaves ~1 GB there


def _is_notebook_cell(item) -> bool:
    return item is not None and item.path.suffix == ".ipynb"


def _notebook_environment() -> dict[str, str]:
    global _scratch
    scratch = _scratch = Path(tempfile.mkdtemp(prefix="fer-nbval-"))
    env = {"FER_CHARTS": str(scratch / "charts"), "FER_RUNS": str(scratch / "runs")}
    try:
        resolve_data_source()
    except DataError:
        env["FER_DATA"] = str(write_fer_layout(scratch / "data", per_class=12))
    return env


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    global _saved
    if _is_notebook_cell(item) and _saved is None:  # before nbval starts the notebook's kernel
        env = _notebook_environment()
        _saved = {key: os.environ.get(key) for key in env}
        os.environ.update(env)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    global _saved
    if _saved is not None and (nextitem is None or nextitem.path != item.path):
        for key, value in _saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _saved = None
        shutil.rmtree(_scratch, ignore_errors=True)
