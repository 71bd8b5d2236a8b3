"""bf16 follows the processor (issue 24): auto is on for CUDA and for a CPU with native bf16,
off elsewhere; True and False are obeyed on every device; results.json records the numerics."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import tiny_config, write_cifar

import resnet_lib as rl
from resnet_tools import devices
from resnet_tools.cli import field_parser, main
from resnet_tools.evaluation import logits_of


@pytest.mark.parametrize(
    "device_type, requested, native, expected",
    [
        ("cpu", None, True, True),  # AMX or AVX512-BF16: auto is on
        ("cpu", None, False, False),  # emulated: slower than fp32, auto is off
        ("cuda", None, False, True),  # a GPU: auto is on whatever the host CPU is
        ("mps", None, True, False),  # not measured on Apple GPUs: auto stays fp32
        ("cpu", True, False, True),  # asked for: obeyed even where emulated
        ("cpu", False, True, False),
        ("cuda", False, True, False),
        ("mps", True, False, True),
    ],
)
def test_policy_on_synthetic_capabilities(device_type, requested, native, expected):
    assert devices.bf16_enabled(device_type, requested, cpu_native=native) is expected


@pytest.mark.parametrize(
    "amx, avx512_bf16, expected", [(True, False, True), (False, True, True), (False, False, False)]
)
def test_cpu_capability_asks_the_processor(monkeypatch, amx, avx512_bf16, expected):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    assert devices.cpu_native_bf16() is expected
    assert devices.bf16_enabled("cpu", None) is expected
    assert devices.numerics(torch.device("cpu"), None) == ("bf16 autocast" if expected else "fp32")
    assert ("native bf16" in devices.device_name(torch.device("cpu"))) is expected


def test_config_and_cli_read_auto_true_and_false():
    assert rl.TrainConfig().bf16 is None
    parse = field_parser("bf16")
    assert [parse(t) for t in ("auto", "true", "no")] == [None, True, False]
    with pytest.raises(ValueError, match="true or false or auto"):
        parse("maybe")
    with pytest.raises(rl.ConfigError, match="True, False or None"):
        rl.TrainConfig(bf16="yes")


def test_evaluation_obeys_bf16_on_the_cpu():
    torch.manual_seed(0)
    model = rl.build_model("lite").eval()
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    stats = ((0.5,) * 3, (0.25,) * 3)
    fp32, bf16 = (logits_of(model, x, stats, bf16=b) for b in (False, True))
    assert fp32.dtype == bf16.dtype == torch.float32  # logits come back as fp32 either way
    assert not torch.equal(fp32, bf16)  # but bf16 was really used on the CPU
    assert torch.allclose(fp32, bf16, atol=0.1, rtol=0.1)


@pytest.mark.parametrize("flag, numerics", [("--bf16", "bf16 autocast"), ("--no-bf16", "fp32")])
def test_cli_flag_is_obeyed_on_the_cpu_and_recorded(tmp_path, flag, numerics):
    data = write_cifar(tmp_path / "cifar", per_batch=20, n_test=20)
    out = tmp_path / "run"
    args = ["train", "--recipe=modern", "--model=lite", "--epochs=1", "--batch-size=32", "--device=cpu"]
    with pytest.warns(UserWarning):  # the synthetic folder is not the official CIFAR-10
        assert main([*args, f"--data-dir={data}", "--no-download", f"--out={out}", "--quiet", flag]) in (0, None)
    record = json.loads((out / "results.json").read_text())
    assert record["numerics"] == numerics and record["config"]["bf16"] is (flag == "--bf16")


# torch.compile follows the run (issue 24): auto compiles CPU runs long enough to pay back the compile.
@pytest.mark.parametrize(
    "device_type, requested, steps, compiler, expected",
    [
        ("cpu", None, devices.COMPILE_MIN_STEPS, True, True),  # a full-size CPU run: compiled
        ("cpu", None, devices.COMPILE_MIN_STEPS - 1, True, False),  # tests, smoke runs: the compile costs more
        ("cpu", None, 10**6, False, False),  # no C++ compiler for inductor's kernels
        ("cuda", None, 10**6, True, False),  # CUDA replays the step as a CUDA graph instead
        ("mps", None, 10**6, True, False),
        ("cpu", True, 1, False, True),  # asked for: obeyed
        ("cpu", False, 10**6, True, False),
        ("cuda", True, 1, True, True),
    ],
)
def test_compile_policy(device_type, requested, steps, compiler, expected):
    assert devices.compile_enabled(device_type, requested, steps, compiler) is expected


def test_compiler_lookup_follows_cxx(monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    assert devices.has_cxx_compiler() is False
    monkeypatch.setenv("CXX", "sh")  # any program on PATH stands in
    assert devices.has_cxx_compiler() is True


class FakeCompileError(RuntimeError):
    """Stands in for torch._dynamo's BackendCompilerFailed (raised at the first call of a compiled model)."""


FakeCompileError.__module__ = "torch._dynamo.exc"


def failing_compile(model, **kwargs):
    def call(*args, **kw):
        raise FakeCompileError("backend='inductor' raised: no C++ compiler")

    return call


def test_automatic_compile_that_fails_trains_eagerly_alike(monkeypatch, cifar):
    data = cifar
    reference = rl.fit(rl.build_model("lite"), data, tiny_config(compile=False), progress=False)
    monkeypatch.setattr(devices, "COMPILE_MIN_STEPS", 1)  # make the tiny run "long"
    monkeypatch.setattr(devices, "has_cxx_compiler", lambda: True)
    monkeypatch.setattr(torch, "compile", failing_compile)
    with pytest.warns(UserWarning, match=r"torch.compile failed \(FakeCompileError\); training eagerly"):
        history = rl.fit(rl.build_model("lite"), data, tiny_config(compile=None), progress=False)
    assert history["train_loss"] == reference["train_loss"] and history["test_acc"] == reference["test_acc"]
    with pytest.raises(FakeCompileError):  # asked for: torch's error, not a silent fallback
        rl.fit(rl.build_model("lite"), data, tiny_config(compile=True), progress=False)
