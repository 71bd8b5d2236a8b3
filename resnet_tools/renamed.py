"""Names the project gave up, and what they became (issue 28, point 6): the one table every reader of
a recipe name (TrainConfig.from_recipe, the command line, results.json, checkpoints) maps old names
through, so a run started under an old name still resumes and renders, under the new one. A leaf:
checkpoints.py maps the configs it loads, and the core imports it."""

from __future__ import annotations

from typing import Any

# The seed report's presets were named "seed", easy to confuse with the random seed (run names
# such as lite-seed-sgd-seed1): now "report", and run names end in -s<k>.
RECIPE_ALIASES = {"seed": "report", "seed-kuangliu": "report-kuangliu"}
# How run names ended for seeds other than 0 before: lite-modern-seed1 (now lite-modern-s1).
FORMER_SEED_SUFFIX = "-seed"


def current_recipe(name: Any) -> Any:
    """The recipe's name now: an old name's new one, any other value as it is."""
    return RECIPE_ALIASES.get(name, name) if isinstance(name, str) else name


def with_current_recipe(config: Any) -> Any:
    """A config dict (results.json's or a checkpoint's) with its recipe's current name; a copy when
    that changes it, anything else as it is."""
    if not isinstance(config, dict) or current_recipe(config.get("recipe")) == config.get("recipe"):
        return config
    return {**config, "recipe": current_recipe(config["recipe"])}
