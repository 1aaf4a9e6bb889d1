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


def test_the_face_detector_ships_as_package_data_and_opencv_5_is_allowed():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "models/*" in pyproject["tool"]["setuptools"]["package-data"]["fer"]
    [opencv] = [d for d in pyproject["project"]["dependencies"] if d.startswith("opencv-python-headless")]
    assert "<5" not in opencv  # YuNet runs on OpenCV 4.8+ and 5; only the Haar cascade needed < 5


def test_top_level_layout():
    for name in ("notebooks", "fer", "tests", "environment.yml", "charts", "trained_models",
                 "photos_to_predict", "dataset_1", "videos", "benchmarks"):
        assert (REPO / name).exists(), name
