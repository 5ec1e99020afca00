"""Load a script under ``systems/`` as a module, for testing its functions."""

import importlib.util
from pathlib import Path

SYSTEMS = Path(__file__).parents[1] / "systems"


def load_script(relative: str):
    """``load_script("aldp_s/force_budget.py")`` → the module."""
    path = SYSTEMS / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
