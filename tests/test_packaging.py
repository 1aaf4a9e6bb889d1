"""pyproject.toml is the one list of dependencies; environment.yml must install exactly that project."""
import re
import tomllib

import yaml

from tests.conftest import REPO


def test_environment_yml_installs_the_project_with_the_same_extras():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    [editable] = [line for line in pip_section if ".[" in line]
    extras = re.search(r"\.\[([\w,]+)\]", editable).group(1).split(",")
    assert set(extras) <= set(pyproject["project"]["optional-dependencies"])
    # No package is pinned twice: conda installs python and pip only, pip the rest from pyproject.toml.
    conda_packages = {re.split(r"[=<>]", d)[0] for d in env["dependencies"] if isinstance(d, str)}
    assert conda_packages == {"python", "pip"}
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    minimum = pyproject["project"]["requires-python"].removeprefix(">=")
    assert tuple(map(int, python.split("=")[1].split("."))) >= tuple(map(int, minimum.split(".")))


def test_opencv_is_bounded_below_5_which_dropped_the_haar_cascades():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("opencv-python-headless") and "<5" in d for d in deps)


def test_top_level_layout():
    for name in ("notebooks", "fer", "tests", "environment.yml", "charts", "trained_models",
                 "photos_to_predict", "dataset_1"):
        assert (REPO / name).exists(), name
