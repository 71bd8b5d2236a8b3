"""The command line: `python resnet_lib.py train | predict | export ...`."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import torch

import resnet_lib as rl
from resnet_lib import RECIPES, TrainConfig, TrainingDiverged
from resnet_tools import job
from resnet_tools.budget import BudgetError
from resnet_tools.dataset import CLASSES
from resnet_tools.devices import resolve_device
from resnet_tools.distributed import RankFailure
from resnet_tools.errors import ConfigError, DataError
from resnet_tools.inference import export_safetensors, load_pretrained, predict, read_unlabeled
from resnet_tools.inference import LAYOUTS, write_submission
from resnet_tools.inference import load_for_inference_with_config, tta_label
from resnet_tools.renamed import RECIPE_ALIASES, current_recipe
from resnet_tools.results import confusion_matrix, merge_seeds, run_dir, run_name
from resnet_tools.safeio import atomic_write, check_not_an_input, check_output_file, check_writable, shown_path
from resnet_tools.evaluation import evaluate


def field_parser(name: str) -> Any:
    """How the command line reads a TrainConfig field from text: int, float, str, or (bool)
    true/false/yes/no/1/0. Shared by the CLI and the benchmark's --set FIELD=VALUE."""
    typ = str({f.name: f.type for f in dataclasses.fields(TrainConfig)}[name])
    if typ in ("bool", "bool | None"):

        auto = ("auto", "none") if typ == "bool | None" else ()

        def boolean(text: str) -> bool | None:
            if text.lower() not in ("true", "false", "1", "0", "yes", "no", *auto):
                raise ValueError(f"{name} takes true or false{' or auto' if auto else ''}, not {text!r}")
            return None if text.lower() in auto else text.lower() in ("true", "1", "yes")

        return boolean
    return {"int": int, "float": float}.get(typ, str)


def config_field_help(name: str) -> str:
    """A TrainConfig field's help from its metadata (resnet_lib._opt): its choices (a | b | c) and then
    its help text."""
    f = {f.name: f for f in dataclasses.fields(TrainConfig)}[name]
    choices = " | ".join(f.metadata.get("choices") or ())
    return " ".join(part for part in (choices, f.metadata.get("help", "")) if part)


def _shown(value: Any) -> str:
    if value is None:  # bf16's automatic default
        return "auto"
    return str(value).lower() if isinstance(value, bool) else f"{value:g}" if isinstance(value, float) else str(value)


def config_option_help(name: str) -> str:
    """--help text of a TrainConfig option: its help in TrainConfig, then its default: the
    recipes' values where the recipes set it, else TrainConfig's."""
    default = {f.name: f.default for f in dataclasses.fields(TrainConfig)}[name]
    per_recipe = {}
    for recipe, values in RECIPES.items():
        if name in values:
            per_recipe[recipe] = _shown(values[name])
    if not per_recipe:
        shown = _shown(default)
    elif len(set(per_recipe.values())) == 1 and len(per_recipe) == len(RECIPES):
        shown = f"{next(iter(per_recipe.values()))} in every recipe"
    else:
        shown = ", ".join(f"{recipe} {v}" for recipe, v in per_recipe.items())
    text = f"{config_field_help(name) or name.replace('_', ' ')} (default: {shown})"
    return text.replace("%", "%%")  # argparse formats help strings with %


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per TrainConfig field (default None = the recipe's value), with the choices and help
    of the field's metadata and its defaults."""
    group = parser.add_argument_group("training options (TrainConfig fields; each overrides the recipe)")
    for f in dataclasses.fields(TrainConfig):
        if f.name == "recipe":
            continue
        flag = "--" + f.name.replace("_", "-")
        helptext = config_option_help(f.name)
        if f.type in ("bool", bool, "bool | None"):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=helptext)
        else:
            choices = tuple(f.metadata["choices"]) if f.metadata.get("choices") else None
            metavar = {"int": "N", "float": "X"}.get(str(f.type), "NAME") if choices is None else None
            metavar = "PATH" if f.name in ("init_from", "teacher") else metavar
            group.add_argument(
                flag, type=field_parser(f.name), default=None, choices=choices, metavar=metavar, help=helptext
            )


def _recipe_name(text: str) -> str:
    """--recipe's value under its current name; an old one (seed) is still taken, with a note on stderr,
    so commands written before the rename keep working (and resume their runs)."""
    if text in RECIPE_ALIASES:
        print(f"note: recipe {text!r} is now called {current_recipe(text)!r}; training as that", file=sys.stderr)
    return current_recipe(text)


def _seed_list(text: str) -> list[int]:
    """--seeds 0,1,2 -> [0, 1, 2] (distinct non-negative integers)."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 0,1,2, got {text!r}") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct non-negative seeds such as 0,1,2, got {text!r}")
    return seeds


def _train_one(cfg: TrainConfig, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    _, res = job.train_and_evaluate(
        cfg,
        data_dir=args.data_dir,
        out_dir=out,
        download=not args.no_download,
        resume=args.resume,
        progress=not args.quiet,
    )
    if res["distributed"]["world_size"] > 1 and os.environ.get("RANK", "0") != "0":
        return  # one summary, from rank 0
    fin = res["final"]
    how = tta_label(fin["tta"])
    val = f"val acc {fin['val_acc']:.2%} ({how}), " if fin["val_acc"] is not None else ""
    print(
        f"{cfg.model} {cfg.recipe} seed {cfg.seed}: {val}test acc {fin['test_acc']:.2%} ({how}), "
        f"train acc {fin['train_acc']:.2%} (running, augmented), {res['num_params']:,} params, {cfg.epochs} epochs, "
        f"{res['data']['n_train']:,} train images, {res['wall_seconds']:.0f} s on {res['device']} -> "
        f"{out / 'results.json'}"
    )
    return res


def _check_out(cfg: TrainConfig, args: argparse.Namespace) -> None:
    """--out checked as train_and_evaluate checks its out_dir, after the config and the device (a bad
    one fails without creating the folder), but with the option named: the library cannot name it.
    The config was checked when from_recipe built it; only the device is left to try first."""
    resolve_device(cfg.device)
    check_writable(Path(args.out), "--out")


def _cmd_train(args: argparse.Namespace) -> None:
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if f.name != "recipe"}
    if args.seeds is None:
        cfg = TrainConfig.from_recipe(args.recipe, **overrides)
        _check_out(cfg, args)
        _train_one(cfg, args, Path(args.out))
        return
    if args.seed is not None:
        raise ConfigError("give --seed or --seeds, not both")
    configs = [TrainConfig.from_recipe(args.recipe, **{**overrides, "seed": seed}) for seed in args.seeds]
    _check_out(configs[0], args)
    runs = {run_name(cfg): _train_one(cfg, args, run_dir(args.out, cfg)) for cfg in configs}
    if None in runs.values():
        return  # a rank other than 0 under torchrun: rank 0 prints the summary
    for group, m in merge_seeds(runs).items():
        fin, std = m["final"], m["final_std"]
        print(
            f"{group}, {m['seeds']['n']} seeds: test acc {100 * fin['test_acc']:.2f} +- {100 * std['test_acc']:.2f}"
            f" (mean +- std), val acc "
            + (f"{100 * fin['val_acc']:.2f} +- {100 * std['val_acc']:.2f}" if fin["val_acc"] is not None else "--")
        )


def _cmd_predict(args: argparse.Namespace) -> None:
    resolve_device(args.device)  # before loading anything
    check_not_an_input(args.out, {"checkpoint": args.checkpoint, "input": args.input})
    check_output_file(args.out, "--out")
    model, stats, config = load_for_inference_with_config(args.checkpoint, args.device)
    # Unless told, predict as the run was evaluated (its config's tta), so it matches its reported accuracy.
    tta = bool(config.get("tta", False)) if args.tta is None else args.tta
    images, ids = read_unlabeled(args.input, layout=args.layout)
    labels, _ = predict(model, images, stats=stats, tta=tta)
    write_submission(args.out, ids, labels)
    counts = torch.bincount(labels, minlength=len(CLASSES)).tolist()
    why = "as the run was evaluated" if args.tta is None else "as asked"
    print(f"{len(labels):,} predictions ({tta_label(tta)}, {why}) -> {shown_path(args.out)}")
    for name, n in zip(CLASSES, counts):
        print(f"  {name:>10} {n:>7,}  {'#' * round(40 * n / max(1, max(counts)))}")


def _cmd_evaluate(args: argparse.Namespace) -> None:
    """Score a checkpoint or export on labelled data: accuracy, per-class accuracy, and the
    confusion matrix as CSV (rows = true class, columns = predicted)."""
    resolve_device(args.device)
    check_not_an_input(args.out, {"checkpoint": args.checkpoint, "data-dir": args.data_dir})
    check_output_file(args.out, "--out")
    model, stats, config = load_for_inference_with_config(args.checkpoint, args.device)
    data = rl.load_cifar10(args.data_dir, download=False)
    if tuple(data.classes) != CLASSES:
        raise DataError(f"{args.data_dir}: classes {', '.join(data.classes)} are not CIFAR-10's {', '.join(CLASSES)}")
    tta = bool(config.get("tta", False)) if args.tta is None else args.tta
    ev = evaluate(model, data, args.split, tta=tta, stats=stats)
    cm = confusion_matrix(ev.labels, ev.predictions)
    rows = ["true \\ predicted," + ",".join(CLASSES)]
    rows += [f"{name}," + ",".join(str(int(n)) for n in row) for name, row in zip(CLASSES, cm)]
    text = "\n".join(rows) + "\n"
    atomic_write(Path(args.out), "w", lambda f: f.write(text))
    print(f"{data.label}, {args.split} split: {len(ev.labels):,} images, "
          f"accuracy {ev.accuracy:.2%} ({tta_label(tta)})")
    for name, row, i in zip(CLASSES, cm, range(len(CLASSES))):
        print(f"  {name:>10} {100 * row[i] / max(1, row.sum()):6.2f}%  of {int(row.sum()):,}")
    print(f"confusion matrix -> {shown_path(args.out)}")


def _cmd_export(args: argparse.Namespace) -> None:
    check_not_an_input(args.out, {"checkpoint": args.checkpoint})
    check_output_file(args.out, "--out")
    out = export_safetensors(args.checkpoint, args.out)
    model, meta = load_pretrained(out, device="cpu")  # prove it loads back
    print(f"{meta['config']['model']} ({meta['num_params']:,} params) -> {shown_path(out)}")


def _where_interrupted(args: argparse.Namespace, started: float) -> str:
    """What an interrupted `train` left: a checkpoint to resume from, or none (stopped before the
    end of its first epoch; a checkpoint older than the run is an earlier run's, which a run that
    does not resume replaces)."""
    ck = Path(args.out) / "checkpoint.pt"
    if ck.is_file() and (args.resume or ck.stat().st_mtime >= started):
        return f" {ck} holds the last completed epoch; rerun with --resume to continue."
    return " It stopped before the end of its first epoch, so no checkpoint was written: rerun to start over."


def _add_inference_options(p: argparse.ArgumentParser) -> None:
    """--tta and --device, as predict and evaluate take them."""
    p.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="flip test-time augmentation (default: what the run was evaluated with, its config's tta)",
    )
    p.add_argument(
        "--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default: auto = cuda, then mps, then cpu)"
    )


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, wrapping help text without breaking names at hyphens (report-kuangliu)."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def _add_train(sub: Any) -> None:
    """The train command: its run options, then every TrainConfig field as an option."""
    train = sub.add_parser(
        "train",
        formatter_class=_HelpFormatter,
        help="train one model; write results.json, checkpoint.pt, history.csv and TensorBoard events",
    )
    train.add_argument(
        "--recipe",
        type=_recipe_name,
        choices=tuple(RECIPES),
        default="modern",
        help="the preset the training options start from: report = the seed report's setup (old name: seed), "
        "modern = the best 40-epoch recipe (default: modern)",
    )
    train.add_argument(
        "--data-dir",
        default=None,
        help="folder containing cifar-10-batches-py/, or an image folder with train/<class>/ and test/<class>/ "
        "(default: $DATA_DIR or ./data)",
    )
    train.add_argument(
        "--out",
        default="results/run",
        help="output folder for results.json, checkpoint.pt, history.csv and TensorBoard event files "
        "(default: results/run; with --seeds: the results folder, each seed's run in OUT/<run name>)",
    )
    train.add_argument(
        "--seeds",
        type=_seed_list,
        default=None,
        metavar="0,1,2",
        help="train once per seed (mean +- std at the end); run names get -s<k> for k > 0",
    )
    train.add_argument("--no-download", action="store_true", help="fail instead of downloading missing data")
    train.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt if it exists")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_config_options(train)
    train.set_defaults(run=_cmd_train)


def _add_predict(sub: Any) -> None:
    """The predict command: label unlabeled images into a submission CSV."""
    pred = sub.add_parser(
        "predict", formatter_class=_HelpFormatter, help="label unlabeled images; write a submission CSV (ID,Labels)"
    )
    pred.add_argument("--checkpoint", required=True, help="checkpoint.pt from training, or an exported .safetensors")
    pred.add_argument(
        "--input",
        required=True,
        help="a PNG/JPEG image, a folder of them (any depth, e.g. an image folder's test/), a .npy uint8 array, "
        "a .npz (one array, or 'data', 'x' or 'images' and optional 'ids') or a pickle of a dict with 'data' "
        "(and 'ids'), told apart by content",
    )
    pred.add_argument(
        "--layout",
        choices=LAYOUTS,
        default=None,
        help="how flat (N, 3072) rows are ordered: nchw = 1024 R, 1024 G, 1024 B (CIFAR-10's batch files), "
        "nhwc = RGB per pixel. Needed for flat rows in .npy and .npz; a pickle's flat rows are nchw unless "
        "told. (N, 32, 32, 3) and (N, 3, 32, 32) arrays say their own layout",
    )
    pred.add_argument("--out", default="submission.csv", help="the CSV to write (default: submission.csv)")
    _add_inference_options(pred)
    pred.set_defaults(run=_cmd_predict)


def _add_evaluate(sub: Any) -> None:
    """The evaluate command: score a checkpoint or export on labelled data."""
    ev = sub.add_parser(
        "evaluate", formatter_class=_HelpFormatter, help="score a checkpoint or export on labelled data"
    )
    ev.add_argument("--checkpoint", required=True, help="checkpoint.pt (or best.pt) from training, or a .safetensors")
    ev.add_argument(
        "--data-dir",
        required=True,
        help="labelled data: a folder with cifar-10-batches-py/, or an image folder with train/ and test/",
    )
    ev.add_argument("--split", choices=("test", "train"), default="test", help="which split to score (default: test)")
    ev.add_argument("--out", default="confusion_matrix.csv", help="the confusion matrix CSV (default: %(default)s)")
    _add_inference_options(ev)
    ev.set_defaults(run=_cmd_evaluate)


def _add_export(sub: Any) -> None:
    """The export command: a checkpoint's weights and config as .safetensors."""
    exp = sub.add_parser(
        "export", formatter_class=_HelpFormatter, help="write a checkpoint's weights and config as .safetensors"
    )
    exp.add_argument("--checkpoint", required=True, help="checkpoint.pt from training")
    exp.add_argument(
        "--out", default="model.safetensors", help="the .safetensors file to write (default: model.safetensors)"
    )
    exp.set_defaults(run=_cmd_export)


def _parser() -> argparse.ArgumentParser:
    """The command line: one subcommand each for train, predict, evaluate and export (in --help's order)."""
    parser = argparse.ArgumentParser(
        prog="resnet_lib.py", description=rl.__doc__.split("\n")[0], formatter_class=_HelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_train, _add_predict, _add_evaluate, _add_export):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    started = time.time()
    try:
        with _sigterm_as_interrupt():
            args.run(args)
    except (DataError, ConfigError, BudgetError, TrainingDiverged, RankFailure, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        word = "terminated" if isinstance(e, Terminated) else "interrupted"
        print(f"{word}.{_where_interrupted(args, started) if args.command == 'train' else ''}", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130  # the shell's convention: 128 + the signal's number
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, a batch scheduler's time limit, a closed session), raised where Ctrl-C would
    be: the last checkpoint is kept, the lock released and the resume command printed."""


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    def raise_terminated(signum: int, frame: Any) -> None:
        raise Terminated()

    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # `python resnet_lib.py ...` and `python -m resnet_tools.cli ...` run here
    sys.exit(main())
