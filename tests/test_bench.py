"""The speed benchmark (bench/bench.py) runs end to end and reports what it says it does.

Timings are never asserted here (a timed unit test measures the machine, not the code);
the benchmark's own targets are checked by `make bench`.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

import resnet_lib as rl
from conftest import ROOT, write_cifar
from resnet_tools import devices

BENCH = ROOT / "bench" / "bench.py"


def load_bench(module: str = "bench"):
    """bench/bench.py, or (after it, which puts bench/ on sys.path) its module beside it: methods,
    sections or reporting."""
    spec = importlib.util.spec_from_file_location("bench_under_test", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench if module == "bench" else importlib.import_module(module)


def test_quick_benchmark_writes_every_section(tmp_path: Path):
    data_dir = write_cifar(tmp_path / "cifar", per_batch=40, n_test=64)
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--device", "cpu", "--quick", "--compile", "off", "--threads", "1",
         "--sections", "throughput,accuracy,options", "--data-dir", str(data_dir), "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["settings"]["batch_size"] == rl.RECIPES["modern"]["batch_size"]  # the CPU's modern batch
    assert report["hardware"]["torch_threads"] == 1

    lite = report["throughput"]["lite"]
    expected = {"pipeline", "ceiling", "reference, num_workers=0", "reference, num_workers=1"}
    if report["settings"]["reference_in_own_process"]:  # glibc: fit's allocator settings apply in the bench process
        expected.add("same-allocator reference, num_workers=0")
        assert lite["ratios"]["pipeline_over_same_allocator_reference"] > 0
    assert set(lite["methods"]) == expected
    for method in lite["methods"].values():
        assert len(method["window_seconds"]) == 2 and all(s > 0 for s in method["window_seconds"])
        assert method["images_per_sec"] > 0
    assert lite["ratios"]["pipeline_over_best_reference"] > 0 and lite["ratios"]["pipeline_over_ceiling"] > 0

    tta = report["time_to_accuracy"]
    assert tta["epochs"] == 2 and tta["train_images"] == 200 and tta["test_images"] == 64
    assert 0 <= tta["seed_final_test_acc"] <= 1
    assert len(tta["runs"]["modern"]["history"]["test_acc"]) == 2

    options = report["speed_options"]
    assert options["bf16_emulated_on_this_device"] is not devices.cpu_native_bf16() and options["seeds"] == [0, 1]
    plain, speed = options["models"]["lite"]["plain"], options["models"]["lite"]["speed"]
    assert (plain["batch_size"], plain["lr"]) == (rl.RECIPES["modern"]["batch_size"], rl.RECIPES["modern"]["lr"])
    assert (speed["batch_size"], speed["lr"]) == (plain["batch_size"], plain["lr"])  # one recipe, two step options
    assert len(plain["test_acc"]) == len(speed["test_acc"]) == 2
    assert options["models"]["lite"]["difference"] == pytest.approx(speed["mean"] - plain["mean"])

    targets = {t["target"]: t for t in report["targets"]}
    assert any("within noise" in t for t in targets) and any("fixed-batch ceiling" in t for t in targets)
    markdown = out.with_suffix(".md").read_text()
    for heading in ("Throughput on cpu", "Time to accuracy", "Accuracy with and without the speed options", "Targets"):
        assert heading in markdown


def test_options_section_turns_bf16_on_only_for_the_speed_runs(cifar: rl.CIFAR10, monkeypatch):
    sections = load_bench("sections")
    seen = []
    real_fit = rl.fit

    def spy(model, data, cfg, **kw):
        seen.append((cfg.batch_size, cfg.bf16, cfg.channels_last))
        return real_fit(model, data, cfg, **kw)

    monkeypatch.setattr(rl, "fit", spy)
    result = sections.speed_options_accuracy(cifar, ["lite"], sections.torch.device("cpu"), epochs=1, seeds=1,
                                          compile_on=False, speed_overrides={"batch_size": 64})
    assert seen == [(128, False, False), (64, True, True)]  # bf16 obeyed on the CPU: plain fp32, speed bf16
    assert result["variants"]["speed"]["batch_size"] == 64
    assert result["models"]["lite"]["within_noise"] is False  # one seed: no spread, no claim


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--sections", "bogus"], "choose from throughput, epoch, accuracy, options"),
        (["--options-models", "wide"], "choose from lite, improved"),
        (["--options-seeds", "0"], "--options-seeds must be at least 1"),
        (["--options-set", "batch=3"], "expected FIELD=VALUE"),
        (["--models", "tiny"], "unknown model"),
    ],
)
def test_bad_arguments_stop_with_a_message(argv, message):
    bench = load_bench()
    with pytest.raises(SystemExit, match=message):
        bench.main(["--device", "cpu", *argv])


def test_numerics_benchmark_times_each_variant_against_fp32_eager(tmp_path: Path):
    # Eager variants only: a cold torch.compile would cost the suite a minute; the compiled ones
    # go through the same fit epoch and step with compile=True (fit's and the ceiling's own paths).
    out = tmp_path / "numerics.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "numerics.py"), "--models", "lite", "--steps", "1", "--windows", "2",
         "--threads", "1", "--variants", "bf16 eager", "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["hardware"]["cpu_native_bf16"] == devices.cpu_native_bf16()  # the header's capability
    lite = report["models"]["lite"]
    assert set(lite["variants"]) == {"fp32 eager", "bf16 eager"}  # the baseline is always run
    base, bf16 = lite["variants"]["fp32 eager"], lite["variants"]["bf16 eager"]
    assert base["fit epoch"]["speedup_over_fp32_eager"] == 1.0 and base["step"]["speedup_over_fp32_eager"] == 1.0
    assert bf16["bf16"] is True and bf16["compile"] is False
    for kind in ("fit epoch", "step"):
        assert len(bf16[kind]["window_seconds"]) == 2 and bf16[kind]["ms_per_step"] > 0
    assert lite["fastest_run_including_warmup"] in lite["variants"]
    md = out.with_suffix(".md").read_text()
    assert "| lite | bf16 eager |" in md and "native bf16" in md  # the row, and the capability in the header


def test_numerics_benchmark_refuses_an_unknown_variant(tmp_path: Path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "numerics.py"), "--variants", "fp16 eager", "--out",
         str(tmp_path / "n.json")], capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0 and "unknown ['fp16 eager']" in proc.stderr
