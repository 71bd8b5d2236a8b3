"""What the notebooks' first cell needs beyond `import resnet_lib`: the repository's folder, their
parameters from environment variables (`from_env`), and in Colab the packages it lacks and Google Drive
(`colab`). The project is installed (`pip install -e .`, part of `make setup`), so the cell finds all
of it from any working folder, kernel or launcher. Imports nothing of the project."""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]  # the repository: resnet_lib.py, data/, results/, figures/
# What Colab lacks of requirements.txt (torchmetrics and captum: notebook 05's calibration and Grad-CAM).
COLAB_MISSING = ("torchinfo", "seaborn", "safetensors", "tqdm", "torchmetrics", "captum")
DRIVE_FOLDER = Path("/content/drive/MyDrive/compact-resnets")


def from_env(name: str, default: Any) -> Any:
    """A parameter's default, or the environment variable `name` if set: a Python literal (2, 0.1, None,
    ['seed']), else a string; 1/0, true/false or yes/no for flags."""
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
