"""What more than one fault-injection module uses (tests/test_faults_processes.py, test_faults_files.py,
test_faults_inputs.py; test_faults_weak.py takes one_error, must_not_run and run_main): the one-clear-error
check, the fixtures one_torch_thread (autouse) and no_training, the command line in process, batch file
paths, an overflowing pickle frame, and the module-scoped checkpoint fixture with its variant().

Not a test module. A module imports the fixtures it uses by name (and one_torch_thread always): pytest
takes a fixture imported into a test module as that module's own, so the autouse one applies to each
module that imports it and the checkpoint fixture trains once per module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
import torch

import resnet_lib as rl
from resnet_tools import checkpoints, cifarfiles
from resnet_tools.cli import main
from conftest import tiny_config, write_cifar

FOLDER = cifarfiles.CIFAR10_FOLDER


def one_error(excinfo: pytest.ExceptionInfo) -> str:
    """The message of an error that is one clear error: no chained traceback under it."""
    e = excinfo.value
    assert e.__cause__ is None and (e.__context__ is None or e.__suppress_context__), "chained traceback"
    return str(e)


def must_not_run(what: str) -> Callable[..., Any]:
    def fail(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"{what} was called: the error came too late")

    return fail


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread while this module runs (module scope: autouse fixtures come
    first, so the module-scoped checkpoint fixture trains with it too). On a small shared
    CPU, two spinning OpenMP threads made a 6-step epoch take 16 s instead of 0.5 s."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if data loading or training starts: errors must come before them."""
    monkeypatch.setattr(rl, "fit", must_not_run("fit (training)"))
    monkeypatch.setattr(rl, "load_cifar10", must_not_run("load_cifar10 (data loading)"))


# ---------------------------------------------------------------------------------------
# Used by more than one module: the command line, data folders, checkpoints
# ---------------------------------------------------------------------------------------
def run_main(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    return code, capsys.readouterr().err


def batch_path(root: Path, name: str) -> Path:
    return root / FOLDER / name


# A protocol-5 pickle whose first frame claims 2**64 - 1 bytes: the unpickler raises
# OverflowError, which used to escape read_batch as a raw traceback.
HUGE_FRAME = b"\x80\x05\x95" + b"\xff" * 8 + b"}."


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    """A real one-epoch Lite checkpoint (tiny_config(epochs=1)) and its dict."""
    root = tmp_path_factory.mktemp("ck")
    with pytest.warns(UserWarning):
        data = rl.load_cifar10(write_cifar(root / "cifar"), download=False)
    ck = root / "checkpoint.pt"
    rl.fit(rl.build_model("lite", seed=0), data, tiny_config(epochs=1), checkpoint=ck, progress=False)
    return ck, checkpoints.load_checkpoint_dict(ck)


def variant(saved: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = dict(saved)
    for k, v in changes.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v(saved) if callable(v) else v
    return out
