"""What the notebooks need beyond `import resnet_lib`: the repository's folder, their parameters from
environment variables (`from_env`), in Colab the packages it lacks and Google Drive (`colab`), and their
parameters checked against the types the parameters cell declares (`notebook_parameters`). The project
is installed (`pip install -e .`, part of `make setup`), so the first cell finds all of it from any
working folder, kernel or launcher. Imports nothing of the project, nor torch: in Colab the first cell
imports it before the missing packages are installed."""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import os
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]  # the repository: resnet_lib.py, data/, results/, figures/
# What Colab lacks of requirements.txt (torchmetrics and captum: notebook 05's calibration and Grad-CAM).
COLAB_MISSING = ("torchinfo", "seaborn", "safetensors", "tqdm", "torchmetrics", "captum")
DRIVE_FOLDER = Path("/content/drive/MyDrive/compact-resnets")


def from_env(name: str, default: Any) -> Any:
    """A parameter's default, or the environment variable `name` if set: a Python literal (2, 0.1, None,
    ['report']), else a string; 1/0, true/false or yes/no for flags."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    if isinstance(default, bool):
        if text.lower() not in ("1", "true", "yes", "0", "false", "no"):
            raise ValueError(f"environment variable {name}={text!r} is not a flag: use 1 or 0")
        return text.lower() in ("1", "true", "yes")
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def colab(use_drive: bool) -> None:
    """In Colab (after the first cell cloned and installed the repository): install the pinned versions of
    the packages it lacks; with `use_drive`, mount Google Drive and keep data, results and figures there
    (each notebook gets its own Colab machine: without Drive, 05 finds no runs of 02-04), unless a folder
    is set already; work in the repository. Anywhere else: nothing."""
    if "google.colab" not in sys.modules:
        return
    pins = {
        line.split("==")[0]: line.split("#")[0].strip()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if "==" in line
    }
    missing = [pins.get(name, name) for name in COLAB_MISSING if importlib.util.find_spec(name) is None]
    if missing:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *missing], check=True)
    if use_drive:
        from google.colab import drive

        drive.mount(str(DRIVE_FOLDER.parents[1]))
        for name in ("DATA_DIR", "RESULTS_DIR", "FIGURES_DIR"):  # defaults of the notebooks' parameters
            os.environ.setdefault(name, str(DRIVE_FOLDER / name.split("_")[0].lower()))
        print(f"data, results and figures in Google Drive: {DRIVE_FOLDER}")
    else:
        print("USE_DRIVE is off: data and results stay on this Colab machine, unseen by the other notebooks")
    import torch  # already imported by resnet_lib's users; here only to name the runtime

    print("GPU runtime:", torch.cuda.get_device_name(0) if torch.cuda.is_available()
          else "none (Runtime > Change runtime type > GPU); training will be slow on the CPU")
    os.chdir(ROOT)


def _strict_int(value: Any) -> int:
    """int of an integer or its text; not of 1.5, True or '1.5' (which int() would take or round)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(value)
    return int(value)


# What each list element is called in messages, and an example of the forms a list takes.
_LIST_FORMS = {int: ("integers", "0,1,2 or [0, 1, 2] or one integer such as 0"),
               str: ("names", "report,modern or ['report', 'modern'] or one name such as modern")}


def list_parameter(value: Any, item: Callable[[Any], Any] = str, name: str | None = None) -> list:
    """A notebook's list parameter in every form people pass it: a list; papermill's `-p SEEDS
    "[0, 1, 2]"` (-p hands over text); `0,1,2` (an environment variable, `-p SEEDS 0,1,2`); or
    one value. Each element through `item` (int for seeds: whole numbers only). Empty lists and
    repeated values (the same run twice into one folder) are refused: ValueError in one line naming
    the parameter (`name`, as the notebooks pass it) and the forms it takes."""
    given = f"{name}={value!r}" if name else repr(value)
    what, forms = _LIST_FORMS.get(item, ("values", "a, b or [a, b]"))
    item = _strict_int if item is int else item
    if isinstance(value, str):
        text = value.strip()
        if text.startswith(("[", "(")):
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                raise ValueError(f"{given} cannot be read as a list of {what}: write {forms}") from None
            value = value if isinstance(value, (list, tuple)) else [value]
        else:
            value = [part.strip().strip("'\"") for part in text.split(",") if part.strip()]
    elif not isinstance(value, (list, tuple)):
        value = [value]
    try:
        values = [item(v) for v in value]
    except (TypeError, ValueError):
        raise ValueError(f"{given} is not a list of {what}: write {forms}") from None
    if not values:
        raise ValueError(f"{given} is empty: give at least one, as in {forms}")
    repeated = sorted({repr(v) for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"{given} repeats {', '.join(repeated)}: give each once (each is a run of its own, "
                         "in its own folder)")
    return values


def _scalar_parameter(name: str, value: Any, typ: Any) -> Any:
    """`value` as the parameter's declared scalar type (bool, int, float, str), from the value
    itself or its text (an environment variable, papermill's -p); ValueError in one line otherwise."""
    if typ is bool:
        flags = {"true": True, "false": False, "yes": True, "no": False, "1": True, "0": False}
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, str)) and str(value).strip().lower() in flags:
            return flags[str(value).strip().lower()]
        raise ValueError(f"{name}={value!r} is not a flag: use True or False (or 1/0, yes/no)")
    if typ in (int, float):
        number = value
        if isinstance(value, str):
            with contextlib.suppress(ValueError, SyntaxError):
                number = ast.literal_eval(value.strip())
        kinds = (int,) if typ is int else (int, float)
        if isinstance(number, bool) or not isinstance(number, kinds):
            raise ValueError(f"{name}={value!r} is not {'a whole number' if typ is int else 'a number'}, "
                             f"such as {'2' if typ is int else '0.1'}")
        return number
    if typ is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # papermill's -p turns the text 2024 (a folder's name) into a number
        raise ValueError(f"{name}={value!r} is not text (a name or a path)")
    return value


def notebook_parameter(name: str, value: Any, declared: Any) -> Any:
    """One notebook parameter checked and converted by its declared type (its annotation in the
    parameters cell: bool, int, float, str, list[int], list[str], Optional[...] of them), as
    papermill, an environment variable or the cell itself gave it. ValueError in one line naming it;
    other annotations (Any, or kept as text) pass the value through."""
    args = [a for a in typing.get_args(declared) if a is not type(None)]
    if typing.get_origin(declared) is typing.Union and type(None) in typing.get_args(declared):
        if value is None or (isinstance(value, str) and value.strip() == "None"):
            return None
        declared = args[0] if len(args) == 1 else Any
        args = list(typing.get_args(declared))
    if typing.get_origin(declared) is list:
        return list_parameter(value, args[0] if args else str, name=name)
    return _scalar_parameter(name, value, declared)


def notebook_parameters(namespace: dict[str, Any]) -> dict[str, Any]:
    """Every parameter a notebook declares with a type in its parameters cell (the upper-case names
    in `__annotations__`, e.g. `SEEDS: list[int] = ...`), checked and converted by that type:
    `globals().update(notebook_parameters(globals()))`. The first bad one stops the notebook, before
    any work, with one line naming it and what it accepts."""
    declared = namespace.get("__annotations__", {})
    # Text annotations (`from __future__ import annotations` in the cell's code) name their types.
    declared = {name: eval(typ, namespace) if isinstance(typ, str) else typ  # noqa: S307 - the notebook's own
                for name, typ in declared.items() if name.isupper() and name in namespace}
    return {name: notebook_parameter(name, namespace[name], typ) for name, typ in declared.items()}
