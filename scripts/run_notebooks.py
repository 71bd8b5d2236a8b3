#!/usr/bin/env python3
"""Run the numbered notebooks in order with papermill: the project's main job.

    python scripts/run_notebooks.py [--data-dir DIR] [--epochs N] [--smoke] [--device DEV] [--resume]
        [--results-dir DIR] [--figures-dir DIR] [--out runs] [--only 02 05] [-p NAME VALUE]...

Each notebook gets the options its `parameters` cell declares (DATA_DIR, EPOCHS, SMOKE,
DEVICE, RESUME, RESULTS_DIR, FIGURES_DIR; -p sets any other); options left out keep the
notebook's defaults (full CIFAR-10, 40 epochs, results/ and figures/ in the repository).
Executed copies are written to --out (runs/, git-ignored). The first failing notebook stops
the run with a message naming it and its failing cell; the exit status is then 1.

Only the notebooks' own runs on all of CIFAR-10 write the record (results/ and figures/, committed);
--smoke writes under runs/smoke/, --epochs N (N != 40) under runs/epochsN/, and other data under
runs/<data>/ (all git-ignored), unless --results-dir / --figures-dir / --out (or $RESULTS_DIR /
$FIGURES_DIR) say otherwise. --resume continues the runs of a run
that was killed before its last epoch (each from its checkpoint.pt).

    python scripts/run_notebooks.py --strip

removes the outputs of the committed notebooks, except those of cells tagged
nbval-check-output (the tests compare them), before committing.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
CHECKED = "nbval-check-output"
# Smoke runs' outputs: git-ignored (runs/), so that they never replace the committed figures.
SMOKE_DIR = ROOT / "runs" / "smoke"
# The recipes' epochs: a run with other epochs is not the record (resnet_tools.record).
RECORD_EPOCHS = 40
# What the notebooks raise (resnet_lib) when a run's checkpoint.pt is of a run killed before its end.
UNFINISHED = "holds an unfinished run"
# Options that `make run` passes on, as the make variables that set them (for the resume hint).
MAKE_VARS = {"data_dir": "DATA_DIR", "epochs": "EPOCHS", "device": "DEVICE", "results_dir": "RESULTS_DIR",
             "figures_dir": "FIGURES_DIR"}


def notebooks(only: list[str] | None = None) -> list[Path]:
    """notebooks/NN_*.ipynb in order; `only` selects by number prefix or file stem."""
    found = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if not only:
        return found
    chosen = [p for p in found if any(p.stem == o or p.stem.startswith(o.zfill(2) + "_") for o in only)]
    missing = [o for o in only if not any(p.stem == o or p.stem.startswith(o.zfill(2) + "_") for p in chosen)]
    if missing:
        raise SystemExit(f"error: no notebook matches {missing}; have: {', '.join(p.stem for p in found)}")
    return chosen


def off_record_dir(smoke: bool, epochs: int | None) -> Path | None:
    """The one folder all notebooks write to when the options alone make a run not the record (05
    must find 02's runs, and 05 takes no EPOCHS); None: each notebook decides from its data."""
    if smoke:
        return SMOKE_DIR
    if epochs is not None and epochs != RECORD_EPOCHS:
        return ROOT / "runs" / f"epochs{epochs}"
    return None


def parse_value(text: str) -> Any:
    """A -p value as papermill's CLI reads it: a Python literal (1, 0.1, True, None, [..]) or else a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def failing_cell(executed: Path, error: Any) -> str:
    """'cell N (In [k], line L: that line)' for the failing cell, N counted in the source notebook."""
    import nbformat

    try:
        nb = nbformat.read(executed, as_version=4)
    except (OSError, ValueError):
        return f"cell In [{error.exec_count}]"
    n = 0
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags or "papermill-error-cell-tag" in tags:
            continue  # added by papermill, not in the source notebook
        n += 1
        errors = [out for out in cell.get("outputs", []) if out.get("output_type") == "error"]
        if errors:
            # IPython's traceback names the cell's failing line: "Cell In[4], line 11".
            frames = (
                re.match(r"Cell In\[\d+\], line (\d+)", re.sub(r"\x1b\[[0-9;]*m", "", t)) for t in errors[0].traceback
            )
            line_no = next((int(m.group(1)) for m in frames if m), 0)
            lines = cell.source.splitlines()
            text = lines[line_no - 1] if 0 < line_no <= len(lines) else next((ln for ln in lines if ln.strip()), "")
            return f"cell {n} (In [{cell.execution_count}], line {line_no or '?'}: {text.strip()[:90]})"
    return f"cell In [{error.exec_count}]"


def resume_command(args: argparse.Namespace, argv: list[str]) -> str:
    """The command that continues this run: the same one with --resume (make run ... RESUME=1 under make)."""
    if args.make:
        given = [f"{var}={shlex.quote(str(getattr(args, opt)))}" for opt, var in MAKE_VARS.items()
                 if getattr(args, opt) is not None]
        return " ".join(["make run", *given, *(["SMOKE=1"] if args.smoke else []), "RESUME=1"])
    script = os.path.relpath(__file__) if not os.path.relpath(__file__).startswith("..") else __file__
    kept = [a for a in argv if a not in ("--resume", "--make")]
    return " ".join(["python", shlex.quote(script), *map(shlex.quote, kept), "--resume"])


def run(paths: list[Path], params: dict[str, Any], out: Path, quiet: bool, resume_hint: str = "",
        implicit: frozenset[str] = frozenset()) -> int:
    """Execute `paths` in order; `implicit` names parameters not asked for (defaults, environment) that
    the chosen notebooks need not declare."""
    import papermill as pm

    out.mkdir(parents=True, exist_ok=True)
    declared = {p: pm.inspect_notebook(str(p)) for p in paths}
    unused = sorted(set(params) - set().union(*(set(d) for d in declared.values())) - implicit)
    if unused:
        print(f"error: no notebook has parameter(s) {unused}", file=sys.stderr)
        return 2
    t_all = time.perf_counter()
    for i, path in enumerate(paths, 1):
        given = {k: v for k, v in params.items() if k in declared[path]}
        executed = out / path.name
        print(f"[{i}/{len(paths)}] {path.relative_to(ROOT)} {given or ''} -> {executed}", flush=True)
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(
                str(path), str(executed), parameters=given, cwd=str(ROOT), progress_bar=False,
                stdout_file=None if quiet else sys.stdout, stderr_file=None if quiet else sys.stderr,
            )
        except pm.PapermillExecutionError as e:
            print(f"\nFAILED: {path.relative_to(ROOT)}, {failing_cell(executed, e)}\n  {e.ename}: {e.evalue}\n"
                  f"  The executed copy, with the traceback, is {executed}", file=sys.stderr)
            if UNFINISHED in str(e.evalue) and resume_hint:
                # resnet_lib's own advice names the library's option; this is the command to type.
                print(f"  To continue the unfinished run from its checkpoint: {resume_hint}", file=sys.stderr)
            return 1
        except Exception as e:  # kernel died, missing kernel, unreadable notebook, ...
            print(f"\nFAILED: {path.relative_to(ROOT)}: {type(e).__name__}: {e}", file=sys.stderr)
            return 1
        print(f"    done in {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"{len(paths)} notebook(s) ran in {time.perf_counter() - t_all:.0f} s; executed copies in {out}")
    return 0


def strip(paths: list[Path]) -> None:
    """Remove outputs and execution counts, except in nbval-checked cells."""
    import nbformat

    for path in paths:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            checked = CHECKED in cell.metadata.get("tags", [])
            # nbval treats a cell without an execution count as never run and refuses its
            # stored outputs, so checked cells keep a (constant) one.
            cell.execution_count = 1 if checked else None
            if not checked:
                cell.outputs = []
            for out in cell.outputs:
                if "execution_count" in out:
                    out["execution_count"] = None
            for key in ("execution", "papermill"):
                cell.metadata.pop(key, None)
        nb.metadata.pop("papermill", None)
        nbformat.write(nb, path)
        print("stripped", path.relative_to(ROOT))


def _parser() -> argparse.ArgumentParser:
    """The command line: the main job's options (make run passes them), then -p for any other parameter."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n", 2)[2])
    ap.add_argument("--data-dir", help="folder containing cifar-10-batches-py/, or an image folder with "
                    "train/<class>/ and test/<class>/ (default: $DATA_DIR or <repo>/data)")
    ap.add_argument("--epochs", type=int, help="epochs of every training run (default: the recipes' 40)")
    ap.add_argument("--smoke", action="store_true", help="tiny, seconds-long configuration (for tests)")
    ap.add_argument("--device", help="auto | cpu | cuda | cuda:N | mps (default: auto)")
    ap.add_argument("--resume", action="store_true",
                    help="continue runs killed before their last epoch from their checkpoint.pt (RESUME=True)")
    ap.add_argument("--results-dir", help="default: <repo>/results (--smoke: <repo>/runs/smoke/results)")
    ap.add_argument("--figures-dir", help="default: <repo>/figures (--smoke: <repo>/runs/smoke/figures)")
    ap.add_argument("--out", help="folder for the executed notebooks (default: runs/; --smoke: runs/smoke/)")
    ap.add_argument("--make", action="store_true", help=argparse.SUPPRESS)  # started by `make run`: for the hints
    ap.add_argument("--only", nargs="+", metavar="NB", help="run only these notebooks (numbers or names), in order")
    ap.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="any other notebook parameter, e.g. -p BATCH_SIZE 256")
    ap.add_argument("--quiet", action="store_true", help="do not stream the notebooks' output")
    ap.add_argument("--strip", action="store_true", help="strip the committed notebooks' outputs and exit")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    argv = sys.argv[1:] if argv is None else argv
    args = ap.parse_args(argv)

    paths = notebooks(args.only)
    if args.strip:
        strip(paths)
        return 0
    # Paths are resolved here, against the caller's working folder, so that the kernel
    # (which runs in the repository root) reads and writes where the caller meant.
    params: dict[str, Any] = {name: parse_value(value) for name, value in args.parameter}
    # The environment's folders too (the kernel would read them relative to the repository).
    folders = (("DATA_DIR", args.data_dir), ("RESULTS_DIR", args.results_dir), ("FIGURES_DIR", args.figures_dir))
    implicit = set()
    for name, value in folders:
        if not value and os.environ.get(name):
            value = os.environ[name]
            implicit.add(name)
        if value:
            params[name] = str(Path(value).expanduser().resolve())
    if args.epochs is not None:
        params["EPOCHS"] = args.epochs
    if args.device:
        params["DEVICE"] = args.device
    if args.smoke:
        params["SMOKE"] = True
    off_record = off_record_dir(args.smoke, args.epochs)
    if off_record is not None:
        for name in ("RESULTS_DIR", "FIGURES_DIR"):
            if name not in params:
                params[name] = str(off_record / name.split("_")[0].lower())
                implicit.add(name)
    if args.resume:
        params["RESUME"] = True
    out = Path(args.out).resolve() if args.out else SMOKE_DIR if args.smoke else ROOT / "runs"
    # Say where the outputs go (the notebooks' own defaults when neither option nor variable is set).
    if "RESULTS_DIR" in params or "FIGURES_DIR" in params:
        where = f"results: {params.get('RESULTS_DIR', 'default')}, figures: {params.get('FIGURES_DIR', 'default')}"
    else:  # resnet_tools.record.output_dirs decides, once the notebook has read the data
        where = (f"results and figures: the record ({ROOT / 'results'}, {ROOT / 'figures'}) for all of "
                 "CIFAR-10, else runs/<data>/")
    print(f"{where}; executed notebooks: {out}", flush=True)
    return run(paths, params, out, args.quiet, resume_command(args, argv), frozenset(implicit))


if __name__ == "__main__":
    sys.exit(main())
