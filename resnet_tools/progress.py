"""Progress bars that read well wherever the code runs (a leaf: imports nothing of the project).

tqdm.auto draws a widget in any Jupyter kernel, but a headless run (papermill, nbconvert, nbval)
has no front end to update it: the executed notebook keeps the widget's first frame, "0%| | 0/N",
for a run that finished. There a text bar is used instead, redrawn at most every TEXT_INTERVAL
seconds, so the saved output ends with the finished bar and stays small.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm import tqdm as text_tqdm
from tqdm.auto import tqdm as auto_tqdm

# Seconds between redraws of a text bar in a notebook without a live front end: 180 lines for a
# 90-minute run, against tqdm's default of 10 redraws a second.
TEXT_INTERVAL = 30.0


def in_kernel() -> bool:
    """True inside a Jupyter (IPython) kernel, whoever drives it."""
    shell = sys.modules.get("IPython")
    ip = shell.get_ipython() if shell is not None and hasattr(shell, "get_ipython") else None
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def live_front_end() -> bool:
    """A kernel that a person watches: Jupyter Server sets JPY_SESSION_NAME for its kernels,
    VS Code and Colab announce themselves; papermill, nbconvert and nbval set none of them.
    RESNET_PROGRESS=widget or =text overrides the guess."""
    choice = os.environ.get("RESNET_PROGRESS", "").lower()
    if choice in ("widget", "text"):
        return choice == "widget"
    return bool(
        os.environ.get("JPY_SESSION_NAME")
        or os.environ.get("VSCODE_PID")
        or "google.colab" in sys.modules
    )


def progress_bar(**kwargs: Any) -> Any:
    """A tqdm bar: tqdm.auto in a terminal and in a watched notebook; a text bar on stdout, redrawn
    every TEXT_INTERVAL seconds, in a notebook run headless."""
    if in_kernel() and not live_front_end():
        kwargs.pop("dynamic_ncols", None)  # no terminal to measure: a fixed width
        return text_tqdm(file=sys.stdout, mininterval=TEXT_INTERVAL, ascii=True, ncols=110, **kwargs)
    return auto_tqdm(**kwargs)
