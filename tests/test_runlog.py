"""Per-epoch logs: history.csv and TensorBoard event files beside results.json."""

from __future__ import annotations

import csv
import json
import math
import sys

import pytest

import resnet_lib as rl
from resnet_tools import figures, job, results
from conftest import tiny_config
from resnet_tools.runlog import EpochLog, write_history_csv


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_train_and_evaluate_writes_history_csv_and_tensorboard_events(cifar, tmp_path):
    out = tmp_path / "run"
    _, res = job.train_and_evaluate(tiny_config(epochs=2), data=cifar, out_dir=out, progress=False)
    rows = read_csv(out / "history.csv")
    assert list(rows[0]) == list(rl.HISTORY_KEYS) and len(rows) == 2
    saved = json.loads((out / "results.json").read_text())["history"]
    for key in rl.HISTORY_KEYS:
        assert [float(r[key]) for r in rows] == pytest.approx(saved[key], rel=1e-12), key
    events = list(out.glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"loss/train", "loss/val", "loss/test", "accuracy/val", "lr", "images_per_sec", "final/test_acc"} <= tags
    assert [e.step for e in acc.Scalars("lr")] == [1, 2]
    assert [e.value for e in acc.Scalars("lr")] == pytest.approx(res["history"]["lr"])
    assert acc.Scalars("final/test_acc")[0].value == pytest.approx(100 * res["final"]["test_acc"])


def test_history_csv_is_rewritten_every_epoch_and_nan_is_empty(tmp_path):
    history = {k: [] for k in rl.HISTORY_KEYS}
    log = EpochLog(tmp_path, tensorboard=False)
    for epoch in (1, 2, 3):
        for k in rl.HISTORY_KEYS:
            history[k].append(float(epoch) if k != "val_acc" else math.nan)
        log(history)
        rows = read_csv(tmp_path / "history.csv")
        assert len(rows) == epoch and rows[-1]["epoch"] == str(float(epoch)) and rows[-1]["val_acc"] == ""
    log.close()
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob("events.*"))
    write_history_csv({"epoch": [], "lr": []}, tmp_path / "empty.csv")
    assert (tmp_path / "empty.csv").read_text() == "epoch,lr\n"


def test_without_tensorboard_the_run_says_so_in_one_line_and_still_writes_history(
    cifar, tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    out = tmp_path / "run"
    job.train_and_evaluate(tiny_config(epochs=1), data=cifar, out_dir=out, progress=False)
    err = capsys.readouterr().err
    assert err.count("TensorBoard logs skipped") == 1 and "not installed" in err
    assert len(read_csv(out / "history.csv")) == 1 and not list(out.glob("events.*"))


def test_training_curves_can_show_the_learning_rate_schedule():
    import matplotlib

    matplotlib.use("Agg")
    h = {k: [0.5, 0.25, 0.125] for k in rl.HISTORY_KEYS}
    h.update(epoch=[1, 2, 3], lr=[0.1, 0.05, 0.0])
    fig = figures.plot_training_curves({"run": h}, lr=True)
    lr_ax = [ax for ax in fig.axes if ax.get_ylabel() == "learning rate"]
    assert len(fig.axes) == 3 and len(lr_ax) == 1
    (line,) = lr_ax[0].get_lines()
    assert list(line.get_xdata()) == [0, 1, 2] and list(line.get_ydata()) == [0.1, 0.05, 0.0]
    assert len(figures.plot_training_curves({"run": h}).axes) == 2  # the default stays loss + accuracy


def test_a_fresh_run_moves_the_old_run_aside_and_a_resume_keeps_its_logs(cifar, tmp_path, capsys):
    out = tmp_path / "run"
    job.train_and_evaluate(tiny_config(epochs=1), data=cifar, out_dir=out, progress=False)
    first = set(out.glob("events.out.tfevents.*"))
    old = json.loads((out / "results.json").read_text())
    job.train_and_evaluate(tiny_config(epochs=1, lr=0.2), data=cifar, out_dir=out, progress=False)  # replaces it
    second = set(out.glob("events.out.tfevents.*"))
    assert len(first) == len(second) == 1 and first != second  # only the new run's curves in the folder
    (aside,) = out.glob("replaced-*")
    assert "moved to replaced-" in capsys.readouterr().err
    assert json.loads((aside / "results.json").read_text()) == old  # the finished run is kept whole
    assert {p.name for p in aside.iterdir()} >= {"checkpoint.pt", "best.pt", "history.csv", "results.json"}
    assert results.load_results(tmp_path).keys() == {"run"}  # nested, it is no run of the results folder
    job.train_and_evaluate(tiny_config(epochs=1, lr=0.2), data=cifar, out_dir=out, resume=True, progress=False)
    assert second <= set(out.glob("events.out.tfevents.*"))  # a resume appends to the run's own logs
    assert len(read_csv(out / "history.csv")) == 1 and len(list(out.glob("replaced-*"))) == 1
