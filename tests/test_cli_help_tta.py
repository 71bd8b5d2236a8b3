"""The CLI's help (generated from TrainConfig's field metadata and defaults) and its TTA labels/defaults."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import pytest

import resnet_lib as rl
from resnet_tools import inference
from conftest import ROOT, tiny_config
from resnet_tools import cli


def help_text(*command):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "resnet_lib.py"), *command, "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def options_without_help(text):
    """Option lines of argparse's help that have no help text (on their line or the next)."""
    lines = text.splitlines()
    bare = []
    for i, line in enumerate(lines):
        if re.match(r"^  -", line) and not re.search(r"\S  +\S", line.strip()):
            following = lines[i + 1] if i + 1 < len(lines) else ""
            if not re.match(r"^ {8,}\S", following):
                bare.append(line.strip())
    return bare


def test_every_train_option_has_help_from_trainconfig_metadata_and_defaults():
    text = help_text("train")
    assert options_without_help(text) == []
    flat = " ".join(text.split())
    fields = [f.name for f in dataclasses.fields(rl.TrainConfig)]
    comments = {name: cli.config_field_help(name) for name in fields}
    assert all(comments.values())  # every field carries help
    for name in fields:
        if name == "recipe":
            continue
        assert "--" + name.replace("_", "-") in text
        assert " ".join(cli.config_option_help(name).replace("%%", "%").split()) in flat, name
    assert comments["lr"] == "peak learning rate"
    assert comments["schedule"] == "constant | cosine | onecycle (linear warm-up, linear decay)"  # choices first
    assert comments["val_size"].startswith("Validation images held out of the training set (seeded)")
    assert comments["val_size"].endswith("only evaluated for reporting.")  # the whole help text
    assert "peak learning rate (default: report 0.01, report-kuangliu 0.1, modern 0.1, distill 0.1)" in flat
    assert (
        "(default: 40 in every recipe)" in flat
        and "True or False is obeyed everywhere. (default: auto)" in flat
    )


@pytest.mark.parametrize("command", ["predict", "export"])
def test_predict_and_export_options_have_help(command):
    assert options_without_help(help_text(command)) == []


@pytest.fixture
def checkpoints(cifar, tmp_path):
    """A one-epoch checkpoint evaluated with TTA (the modern recipe) and one without, plus exports."""
    out = {}
    for tta in (True, False):
        ck = tmp_path / f"tta_{tta}.pt"
        rl.fit(rl.build_model("lite", seed=0), cifar, tiny_config(epochs=1, tta=tta), checkpoint=ck, progress=False)
        out[tta] = ck
        out[(tta, "safetensors")] = inference.export_safetensors(ck, tmp_path / f"tta_{tta}.safetensors")
    return out


def test_predict_uses_the_tta_the_run_was_evaluated_with_unless_told(
    checkpoints, cifar, tmp_path, monkeypatch, capsys
):
    import numpy as np

    np.save(tmp_path / "x.npy", cifar.test_x[:8].numpy())
    used = []
    real_predict = cli.predict

    def spy(*args, **kw):
        used.append(kw["tta"])
        return real_predict(*args, **kw)

    monkeypatch.setattr(cli, "predict", spy)
    for key, flags, expected in [
        (True, [], True),
        (False, [], False),
        ((True, "safetensors"), [], True),
        ((False, "safetensors"), [], False),
        (True, ["--no-tta"], False),
        (False, ["--tta"], True),
    ]:
        argv = ["predict", "--checkpoint", str(checkpoints[key]), "--input", str(tmp_path / "x.npy")]
        argv += ["--out", str(tmp_path / "s.csv"), "--device", "cpu", *flags]
        assert cli.main(argv) == 0
        assert used[-1] is expected, (key, flags)
        label = "flip TTA" if expected else "no TTA"
        why = "as the run was evaluated" if not flags else "as asked"
        assert f"8 predictions ({label}, {why})" in capsys.readouterr().out


def test_train_labels_every_accuracy_with_its_tta(cifar_dir, tmp_path, capsys):
    argv = ["train", "--recipe", "modern", "--epochs", "1", "--batch-size", "64", "--device", "cpu"]
    argv += ["--data-dir", str(cifar_dir), "--out", str(tmp_path / "o"), "--quiet", "--tta"]
    with pytest.warns(UserWarning, match="not the official"):
        assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert re.search(r"val acc [\d.]+% \(flip TTA\), test acc [\d.]+% \(flip TTA\), train acc [\d.]+% \(running", out)
