"""The command line: `python resnet_lib.py train | predict | export ...`."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import torch

import resnet_lib as rl
from resnet_lib import ARCHS, CLASSES, OPTIMIZERS, RECIPES, SCHEDULES, BudgetError, ConfigError, DataError, TrainConfig
from resnet_lib import TrainingDiverged
from resnet_tools.inference import export_safetensors, load_for_inference, load_pretrained, predict, read_unlabeled
from resnet_tools.inference import write_submission
from resnet_tools.safeio import check_not_an_input


def field_parser(name: str) -> Any:
    """How the command line reads a TrainConfig field from text: int, float, str, or (bool)
    true/false/yes/no/1/0. Shared by the CLI and the benchmark's --set FIELD=VALUE."""
    typ = str({f.name: f.type for f in dataclasses.fields(TrainConfig)}[name])
    if typ == "bool":

        def boolean(text: str) -> bool:
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(f"{name} takes true or false, not {text!r}")
            return text.lower() in ("true", "1", "yes")

        return boolean
    return {"int": int, "float": float}.get(typ, str)


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per TrainConfig field (default None = the recipe's value)."""
    for f in dataclasses.fields(TrainConfig):
        if f.name == "recipe":
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            choices = {"model": tuple(ARCHS), "optimizer": OPTIMIZERS, "schedule": SCHEDULES}.get(f.name)
            parser.add_argument(flag, type=field_parser(f.name), default=None, choices=choices)


def _cmd_train(args: argparse.Namespace) -> None:
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if f.name != "recipe"}
    cfg = TrainConfig.from_recipe(args.recipe, **overrides)
    rl.resolve_device(cfg.device)  # a device this machine lacks: one line now, not after loading the data
    _, res = rl.train_and_evaluate(
        cfg,
        data_dir=args.data_dir,
        out_dir=args.out,
        download=not args.no_download,
        resume=args.resume,
        progress=not args.quiet,
    )
    fin = res["final"]
    val = f"val acc {fin['val_acc']:.2%}, " if fin["val_acc"] is not None else ""
    print(
        f"{cfg.model} {cfg.recipe}: {val}test acc {fin['test_acc']:.2%}{' (flip TTA)' if fin['tta'] else ''}, "
        f"train acc {fin['train_acc']:.2%}, {res['num_params']:,} params, {cfg.epochs} epochs, "
        f"{res['data']['n_train']:,} train images, {res['wall_seconds']:.0f} s on {res['device']} -> {Path(args.out) / 'results.json'}"
    )


def _cmd_predict(args: argparse.Namespace) -> None:
    rl.resolve_device(args.device)  # before loading anything
    check_not_an_input(args.out, {"checkpoint": args.checkpoint, "input": args.input})
    model, stats = load_for_inference(args.checkpoint, args.device)
    images, ids = read_unlabeled(args.input)
    labels, _ = predict(model, images, stats=stats, tta=args.tta)
    write_submission(args.out, ids, labels)
    counts = torch.bincount(labels, minlength=len(CLASSES)).tolist()
    print(f"{len(labels):,} predictions -> {args.out}")
    for name, n in zip(CLASSES, counts):
        print(f"  {name:>10} {n:>7,}  {'#' * round(40 * n / max(1, max(counts)))}")


def _cmd_export(args: argparse.Namespace) -> None:
    check_not_an_input(args.out, {"checkpoint": args.checkpoint})
    out = export_safetensors(args.checkpoint, args.out)
    model, meta = load_pretrained(out, device="cpu")  # prove it loads back
    print(f"{meta['config']['model']} ({meta['num_params']:,} params) -> {out}")


def _where_interrupted(args: argparse.Namespace, started: float) -> str:
    """What an interrupted `train` left: a checkpoint to resume from, or none (stopped before the
    end of its first epoch; a checkpoint older than the run is an earlier run's, which a run that
    does not resume replaces)."""
    ck = Path(args.out) / "checkpoint.pt"
    if ck.is_file() and (args.resume or ck.stat().st_mtime >= started):
        return f" {ck} holds the last completed epoch; rerun with --resume to continue."
    return " It stopped before the end of its first epoch, so no checkpoint was written: rerun to start over."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="resnet_lib.py", description=rl.__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train one model and write results.json + checkpoint.pt")
    train.add_argument("--recipe", choices=tuple(RECIPES), default="modern")
    train.add_argument(
        "--data-dir", default=None, help="folder containing cifar-10-batches-py/ (default: $DATA_DIR or ./data)"
    )
    train.add_argument("--out", default="results/run", help="output folder for results.json and checkpoint.pt")
    train.add_argument("--no-download", action="store_true", help="fail instead of downloading missing data")
    train.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt if it exists")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_config_options(train)
    train.set_defaults(run=_cmd_train)

    pred = sub.add_parser("predict", help="label unlabeled images; write a submission CSV (ID,Labels)")
    pred.add_argument("--checkpoint", required=True, help="checkpoint.pt from training, or an exported .safetensors")
    pred.add_argument("--input", required=True, help=".npy uint8 array, or a pickle of a dict with 'data' (and 'ids')")
    pred.add_argument("--out", default="submission.csv")
    pred.add_argument(
        "--tta", action=argparse.BooleanOptionalAction, default=False, help="flip test-time augmentation"
    )
    pred.add_argument("--device", default="auto")
    pred.set_defaults(run=_cmd_predict)

    exp = sub.add_parser("export", help="write a checkpoint's weights and config as .safetensors")
    exp.add_argument("--checkpoint", required=True)
    exp.add_argument("--out", default="model.safetensors")
    exp.set_defaults(run=_cmd_export)

    args = parser.parse_args(argv)
    started = time.time()
    try:
        args.run(args)
    except (DataError, ConfigError, BudgetError, TrainingDiverged, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted.{_where_interrupted(args, started) if args.command == 'train' else ''}", file=sys.stderr)
        return 130  # the shell's convention for SIGINT
    return 0
