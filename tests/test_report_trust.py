"""What a results file cannot make the README or the paper say (issue 29, #4 and #5): impossible
numbers are left out with the file and field named, text is escaped for Markdown, HTML and LaTeX,
and an odd results folder gives a warning or an error line, never a traceback. Synthetic files only."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from resnet_tools import results
from resnet_tools.report import facts, latex, markdown, paper
from resnet_tools.report import readme as readme_section
from test_report import FULL, fake_result, write_per_class, write_runs

JPEG = {"label": "CIFAR-10 (JPEG copy)", "official": False, "n_train": 45_000, "n_val": 5_000, "n_test": 10_000}
HOSTILE = "GPU <b>bold</b> & *x* [a](http://e.x)\n\n<!-- results:end --> | `tick` \\ 50% #1 训练机 ✓ naïve"


@pytest.fixture(autouse=True)
def no_committed_experiments(tmp_path_factory, monkeypatch):
    monkeypatch.setattr(facts, "EXPERIMENTS", tmp_path_factory.mktemp("no-experiments"))


def build(tmp_path: Path, runs: dict[str, dict]) -> tuple[dict[str, str], str]:
    """The paper's fragments ({name: text}) and the README block with docs/results.md from these runs."""
    write_runs(tmp_path / "results", runs)
    (tmp_path / "results").mkdir(exist_ok=True)
    out = tmp_path / "generated"
    paper.write_inputs(tmp_path / "results", tmp_path / "figures", out)
    block = readme_section.render_block(tmp_path / "results", tmp_path / "figures", tmp_path)
    block += "\n" + readme_section.render_doc(tmp_path / "results")
    return {p.name: p.read_text() for p in out.glob("*.tex")}, block


def target_run(test_acc: float = 0.83) -> dict:
    """lite-modern as its target asks (JPEG copy, 40 epochs): a test accuracy of 0.83 misses 85%."""
    return fake_result("lite-modern", test_acc, 0.83, dict(JPEG), epochs=40)


# ------------------------------------------------------------------ #4: values checked before rendering
@pytest.mark.parametrize(
    "field, value, shown",
    [
        ("final.test_acc", 5.0, "500.00"),
        ("final.val_acc", -0.5, "-50.00"),
        ("final.train_acc", 1e308, "inf"),
        ("final.test_acc", math.inf, "inf"),
        ("final.test_acc", math.nan, "nan"),
        ("num_params", -1, "| -1 |"),
        ("wall_seconds", -3600, "-3600 s"),
        ("wall_seconds", math.inf, "inf"),
        ("data.n_test", -5, "-5"),
        ("config.lr", "fast", "fast"),
    ],
)
def test_a_file_with_impossible_numbers_is_left_out_naming_the_field(tmp_path, capsys, field, value, shown):
    bad = target_run(test_acc=0.90)  # would meet the 85% target if its numbers were believed
    where, key = field.split(".") if "." in field else ("", field)
    (bad[where] if where else bad)[key] = value
    good = fake_result("lite-report-sgd", 0.7123, 0.70, dict(JPEG), epochs=40)
    frags, block = build(tmp_path, {"lite-modern": bad, "lite-report-sgd": good})
    err = capsys.readouterr().err
    assert f"lite-modern/results.json: left out of every table: {field}: {value!r}" in err
    assert "Traceback" not in err
    assert shown not in block and shown not in frags["results_table.tex"]
    assert "| met" not in block and "& met" not in frags["targets.tex"]
    assert "| lite-modern | >= 85.0 | not measured |" in block  # the bad run counts as not measured
    assert "71.23" in frags["results_table.tex"] and "| 71.23 |" in block  # the good run is still shown


@pytest.mark.parametrize(
    "key, value, problem",
    [
        ("history", {"epoch": [1], "test_acc": [7.0]}, "history.test_acc: 7.0 is not an accuracy"),
        ("history", {"epoch": [1, 2], "val_acc": [0.5]}, "history.val_acc: 1 values for 2 epochs"),
        ("history", {"epoch": "1"}, "history.epoch: '1' is not a list"),
        ("config", 5, "config: not a mapping"),
        ("final", [], "final: not a mapping"),
        ("config", {"model": "lite", "recipe": "distill", "optimizer": "sgd", "schedule": "onecycle", "lr": 0.1,
                    "teacher": "t.pt", "distill_temperature": "hot", "distill_alpha": 0.5},
         "config.distill_temperature: 'hot' is not a non-negative finite number"),
    ],
)
def test_history_and_sections_are_checked_too(tmp_path, capsys, key, value, problem):
    bad = target_run(test_acc=0.90)
    bad[key] = value
    runs = results.load_results(write_runs(tmp_path / "results", {"lite-modern": bad}))
    assert runs == {} and f"lite-modern/results.json: left out of every table: {problem}" in capsys.readouterr().err


def test_a_figure_path_latex_cannot_read_is_one_error_line(tmp_path, capsys):
    (tmp_path / "图").mkdir()
    (tmp_path / "图" / "samples_per_class.png").write_bytes(b"png")
    argv = ["--results", str(tmp_path / "results"), "--figures", str(tmp_path / "图"), "--out", str(tmp_path / "o")]
    assert paper.main(argv) == 2 and "LaTeX cannot include a file whose path contains 图" in capsys.readouterr().err


def test_the_committed_record_passes_the_check():
    for path in sorted(Path(facts.ROOT, "results").glob("*/results.json")):
        assert results.check_record(json.loads(path.read_text())) == [], path


def test_an_experiment_file_with_impossible_numbers_is_not_measured(tmp_path, monkeypatch, capsys):
    res = fake_result("lite-report-sgd", 0.70, 0.69, FULL, epochs=40)
    res["final"]["train_acc"] = 92.67  # a percentage where a fraction belongs
    (tmp_path / "bad.json").write_text(json.dumps(res))
    index = {"data": "d", "readings": [{"name": "bad", "what": "w", "file": "bad.json"}]}
    (tmp_path / "index.json").write_text(json.dumps(index))
    monkeypatch.setattr(facts, "EXPERIMENTS", tmp_path)
    readings, _ = facts.seed_readings()
    assert readings[0].res is None and readings[0].note == "invalid results file"
    assert "bad.json: left out of every table: final.train_acc: 92.67" in capsys.readouterr().err


def test_per_class_numbers_out_of_range_are_refused_naming_file_and_field(tmp_path, capsys):
    write_runs(tmp_path / "results", {"lite-modern": target_run()})
    write_per_class(tmp_path / "results", ["lite-modern"])
    csv_path = tmp_path / "results" / "per_class_accuracy.csv"
    lines = csv_path.read_text().splitlines()
    lines[1] = lines[1].split(",")[0] + ",inf"
    lines[2] = lines[2].split(",")[0]  # a short row: no value at all
    csv_path.write_text("\n".join(lines) + "\n")
    argv = ["--results", str(tmp_path / "results"), "--figures", str(tmp_path), "--out", str(tmp_path / "o")]
    assert paper.main(argv) == 2
    assert "per_class_accuracy.csv: lite-modern/airplane: 'inf' is outside [0, 100]" in capsys.readouterr().err


# ------------------------------------------------------------------ #5: text escaped for its destination
def hostile_runs() -> dict[str, dict]:
    run = target_run()
    run["device"] = HOSTILE
    odd = fake_result("improved-modern", 0.5, 0.5, {**JPEG, "label": HOSTILE, "n_test": 100})
    odd["config"]["model"] = "improved|`<!-- results:start -->"  # names a group, and so a row, of its own
    return {"lite-modern": run, "odd": odd}


def test_results_text_cannot_break_or_mark_up_the_readme(tmp_path, capsys):
    _, block = build(tmp_path, hostile_runs())
    readme = tmp_path / "README.md"
    readme.write_text(f"# R\n\n{readme_section.START}\nold\n{readme_section.END}\n\nrest\n")
    argv = ["--readme", str(readme), "--results", str(tmp_path / "results"), "--figures", str(tmp_path)]
    assert readme_section.main(argv) == 0 and readme_section.main(argv) == 0  # regenerates again: markers intact
    text = readme.read_text()
    assert text.count(readme_section.START) == 1 and text.count(readme_section.END) == 1
    assert "<b>" not in block and "<!-- results" not in block and "[a](http" not in block
    escaped = "GPU &lt;b&gt;bold&lt;/b&gt; &amp; \\*x\\* \\[a\\](http://e.x) &lt;!-- results:end --&gt; \\| \\`tick\\`"
    assert escaped in block
    table = block.split("| Run | Optimizer")[1].split("\n\n")[0].splitlines()
    assert len(table) == 2 + 6 + 1 and all(line.startswith("|") for line in table[1:])  # no line break in a row
    assert "improved\\|\\`&lt;!-- results:start --&gt;-modern" in block  # an odd run name: escaped, not code
    assert "Traceback" not in capsys.readouterr().err


def test_markdown_escaping_leaves_ordinary_text_alone():
    plain = "cpu (x86_64, 2 threads); CIFAR-10 (JPEG copy)"
    assert markdown.md(plain) == plain
    assert markdown.md("_a_ b_") == "\\_a\\_ b\\_" and markdown.code("lite-modern-s1") == "`lite-modern-s1`"


def test_results_text_becomes_latex_that_typesets(tmp_path):
    frags, _ = build(tmp_path, hostile_runs())
    for name, text in frags.items():
        assert not re.search(r"[^\x00-\x7f]", text), name  # the paper's fonts have no CJK and no check mark
        assert "\n\n" not in text.split("\\caption{", 1)[-1].split("\\label", 1)[0], name  # no paragraph in a caption
    table = frags["results_table.tex"]
    assert "GPU <b>bold</b> \\& *x* [a](http://e.x)  <!-- results:end --> | `tick` \\textbackslash{} 50\\% \\#1" in (
        table
    )
    assert "??? ? na\\\"{i}ve" in table  # untypesettable characters stand as "?", accents as commands
    assert latex.tex_escape("naïve café\tx\u2028y") == 'na\\"{i}ve caf\\\'{e} x y'


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed (make report installs it)")
def test_the_paper_builds_with_any_label(tmp_path):
    """One pdflatex pass over report.tex with the hostile runs' fragments: a blank line or CJK text
    in a label stopped it before (Unicode character not set up, paragraph ended in a caption)."""
    shutil.copy(facts.ROOT / "report" / "report.tex", tmp_path / "report.tex")
    write_runs(tmp_path / "results", hostile_runs())
    paper.write_inputs(tmp_path / "results", tmp_path / "figures", tmp_path / "generated")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "report.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:]


# ------------------------------------------------------------------ odd folder layouts: a line, never a traceback
def seeds(folders: dict[str, int]) -> dict[str, dict]:
    runs = {}
    for folder, seed in folders.items():
        runs[folder] = target_run(0.80 + seed / 100)
        runs[folder]["config"]["seed"] = seed
    return runs


def test_a_folder_not_named_for_its_run_is_reported_under_its_group_with_a_warning(tmp_path, capsys):
    write_runs(tmp_path / "results", seeds({"run": 0, "lite-modern-s1": 1, "lite-modern-s2": 2}))
    argv = ["--results", str(tmp_path / "results"), "--figures", str(tmp_path), "--out", str(tmp_path / "o")]
    assert paper.main(argv) == 0
    err = capsys.readouterr().err
    assert "run/results.json: its folder is not named for its run (lite-modern); reported as lite-modern" in err
    assert "81.00 $\\pm$ 1.00" in (tmp_path / "o" / "results_table.tex").read_text()  # three seeds, one row


def test_a_second_folder_with_the_same_run_is_not_counted_as_another_seed(tmp_path, capsys):
    write_runs(tmp_path / "results", seeds({"lite-modern": 0, "lite-modern-copy": 0, "lite-modern-s1": 1}))
    runs = facts.load_runs(tmp_path / "results")
    assert runs["lite-modern"]["seeds"]["n"] == 2
    err = capsys.readouterr().err
    assert "lite-modern-copy/results.json: left out: the same run (lite-modern) as lite-modern/results.json" in err


@pytest.mark.parametrize("make", ["directory", "not utf-8", "a list"])
def test_an_unreadable_results_file_is_one_error_line(tmp_path, capsys, make):
    folder = tmp_path / "results" / "lite-modern"
    folder.mkdir(parents=True)
    if make == "directory":
        (folder / "results.json").mkdir()
    else:
        (folder / "results.json").write_bytes(b"\xff\xfe{" if make == "not utf-8" else b"[1, 2]")
    argv = ["--results", str(tmp_path / "results"), "--figures", str(tmp_path), "--out", str(tmp_path / "o")]
    assert paper.main(argv) == 2
    assert readme_section.main(["--stdout", "--results", str(tmp_path / "results"), "--figures", str(tmp_path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") and "lite-modern/results.json" in line for line in err)
