"""Recipes: every setting of a training run in one TOML file, the file a README table or a shipped model
points at (recipes/flagship.toml is the shipped model's).

    python -m fer train --recipe flagship --data ../shared/data/fer2013.zip
    python -m fer train --recipe recipes/flagship.toml --set stem=no_maxpool --set seed=3

A recipe is flat `name = value` lines: TrainConfig's fields and the augmentation's by their own names
(erase_prob, corrupt_prob, ...), as a sweep's [base] table holds them. It says what a run learns, not where it
runs: data, out, device, resume and force are refused in it. Options on the command line and `--set` change a
recipe's values; the run's stored config records the recipe it started from (TrainConfig.recipe).
"""
from __future__ import annotations

import tomllib
from pathlib import Path

from .errors import ConfigError, one_line, quote
from .paths import REPO_ROOT

RECIPES_DIR = REPO_ROOT / "recipes"
NOT_IN_A_RECIPE = ("data", "out", "device", "resume", "force", "recipe")


def read_toml(path, what: str) -> dict:
    """A TOML file as a dict; ConfigError in one line naming `what` it should be."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read the {what} {quote(path)}: {one_line(e)}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"the {what} {quote(path)} is not TOML: {one_line(e)}") from None
    except RecursionError:
        raise ConfigError(f"the {what} {quote(path)} is nested too deeply") from None


def recipe_path(recipe) -> Path:
    """A recipe's file: a path as it is; a bare name (flagship) is recipes/<name>.toml."""
    text = str(recipe)
    if text.endswith(".toml") or "/" in text or "\\" in text:
        return Path(recipe)
    return RECIPES_DIR / f"{text}.toml"


def available_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.toml"))


def read_recipe(recipe) -> dict:
    """The settings of a recipe (a name or a path), checked: each a known setting of the right type and range."""
    from .config import TrainConfig
    path = recipe_path(recipe)
    if not path.is_file():
        known = ", ".join(available_recipes()) or "none"
        raise ConfigError(f"no recipe at {quote(path)} (the recipes in {RECIPES_DIR.name}/: {known})")
    settings = read_toml(path, "recipe")
    tables = [k for k, v in settings.items() if isinstance(v, dict)]
    if tables:
        raise ConfigError(f"the recipe {quote(path)} has a table [{tables[0]}]: a recipe is flat name = value lines")
    misplaced = [k for k in NOT_IN_A_RECIPE if k in settings]
    if misplaced:
        raise ConfigError(f"the recipe {quote(path)} sets {misplaced[0]}: a recipe says what a run learns; give "
                          f"--{misplaced[0]} on the command line")
    try:
        TrainConfig.from_settings(**settings).validate()
    except ConfigError as e:
        raise ConfigError(f"the recipe {quote(path)}: {e}") from None
    return settings


def parse_overrides(pairs) -> dict:
    """`--set NAME=VALUE` pairs as settings: VALUE read as a TOML value (2e-3, true, "cuda"), else as text."""
    overrides = {}
    for pair in pairs or []:
        name, sep, text = pair.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--set takes NAME=VALUE, not {pair!r}")
        try:
            value = tomllib.loads(f"value = {text}")["value"]
        except tomllib.TOMLDecodeError:
            value = text
        overrides[name.strip()] = value
    return overrides
