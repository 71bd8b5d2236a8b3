"""Progress bars: a widget where someone watches a notebook, a text bar where a notebook runs headless."""

from __future__ import annotations

import pytest
from tqdm import tqdm as text_tqdm

from resnet_tools import progress


@pytest.mark.parametrize(
    "kernel, env, widget",
    [
        (False, {}, None),  # a terminal or a script: tqdm.auto decides (a text bar)
        (True, {}, False),  # papermill, nbconvert, nbval: nobody updates a widget
        (True, {"JPY_SESSION_NAME": "/home/me/02_train_lite.ipynb"}, True),  # JupyterLab, Notebook 7
        (True, {"VSCODE_PID": "123"}, True),
        (True, {"JPY_SESSION_NAME": "x", "RESNET_PROGRESS": "text"}, False),  # the override wins
        (True, {"RESNET_PROGRESS": "widget"}, True),
    ],
)
def test_progress_bar_kind_follows_the_front_end(monkeypatch, kernel, env, widget):
    for name in ("JPY_SESSION_NAME", "VSCODE_PID", "RESNET_PROGRESS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(progress, "in_kernel", lambda: kernel)
    chosen = []
    monkeypatch.setattr(progress, "auto_tqdm", lambda **kw: chosen.append(("auto", kw)) or "auto")
    monkeypatch.setattr(progress, "text_tqdm", lambda **kw: chosen.append(("text", kw)) or "text")
    progress.progress_bar(total=3, dynamic_ncols=True)
    kind, kw = chosen[0]
    assert kind == ("text" if widget is False else "auto")
    if kind == "text":  # redrawn rarely, so a saved notebook stays small; fixed width, no terminal
        assert kw["mininterval"] == progress.TEXT_INTERVAL and "dynamic_ncols" not in kw


def test_text_bar_ends_with_the_finished_state(capsys, monkeypatch):
    monkeypatch.setattr(progress, "in_kernel", lambda: True)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    monkeypatch.delenv("RESNET_PROGRESS", raising=False)
    monkeypatch.delenv("VSCODE_PID", raising=False)
    bar = progress.progress_bar(total=50, desc="lite/modern", unit="step")
    assert isinstance(bar, text_tqdm)
    for _ in range(50):
        bar.update(1)
    bar.close()
    out = capsys.readouterr().out
    assert out.rstrip().splitlines()[-1].split("\r")[-1].startswith("lite/modern: 100%|")
    assert out.count("\r") <= 3  # first frame and the final one, not one per step
