"""The paper's LaTeX fragments (report/generated/*.tex, \\input by report/report.tex), written
from facts (resnet_tools.report.facts) and their plain words (words); the figures' fragments are
in paper_figures. `python scripts/make_report_inputs.py` runs main.

Missing runs, figures or CSV files are not errors: the fragments say "not run" / "not available",
so the paper builds from a partial or smoke run and says what it lacks. No number is typed here,
except the seed report's own claims (resnet_tools.results.SEED_REPORTED), labelled as the seed's."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import sys
from pathlib import Path
from typing import Any

from resnet_lib import ARCHS, RECIPES, ResNet, TrainConfig, build_model
from resnet_tools.budget import PARAM_BUDGET, count_params
from resnet_tools.dataset import CLASSES
from resnet_tools.report import facts, paper_figures, words
from resnet_tools.report.facts import (
    FULL_RUN_HINT, REGENERATE, ROOT, PerClass, comparable_to_seed, epochs_of, expected_runs, n_seeds, seed_claims,
)
from resnet_tools.report.paper_figures import one_run_each, provenance_brief, provenance_ref
from resnet_tools.report.latex import macro, signed, table_env, tabular, tex, tt_list
from resnet_tools.report.words import (
    JPEG_NOTE, data_brief, data_short, delta_mark, duration, fmt_value, pct, pct_sd, plural, provenance_groups,
)
from resnet_tools.results import ResultsError, best_run, difference_verdict, optimizer_label, run_name
from resnet_tools.results import selection_accuracy
from resnet_tools.safeio import atomic_write, write_json
from resnet_tools.layers import layer_table


def ablation_tex(folder: Path | None = None) -> str:
    base, variants, data = facts.ablation(folder)
    if base is None:
        return "No recipe ablation has been measured in this build.\n"
    rows = [[tex(c) for c in row] for row in words.ablation_rows(base, variants)]
    for row in rows:  # CLI options: "--" would print as an en dash
        row[1] = row[1].replace("--", "-{}-")
    body = tabular(
        "@{}p{0.12\\linewidth}p{0.27\\linewidth}lrrrrp{0.17\\linewidth}@{}",
        [
            "Variant",
            "Change from \\texttt{modern}",
            "Runs (seeds)",
            "Train",
            "Val",
            "Test",
            "$\\Delta$ val",
            "Verdict",
        ],
        rows,
    )
    caption = (
        "Recipe ablation, Lite model, 40 epochs: accuracy (\\%) of the final model, mean $\\pm$ sample standard "
        "deviation over the seeds; train: running accuracy over the last epoch's augmented batches; validation "
        "on the 5{,}000 held-out training images (what a variant is chosen by), test with flip TTA for reporting "
        "only. $\\Delta$ val: points against the baseline; a variant replaces the baseline only where the "
        "difference exceeds twice its standard error over seeds (2~SE in the verdict). " + tex(data)
    )
    summary = words.ablation_summary(base, variants)
    return table_env(body, caption, "tab:ablation", wide=True) + (tex(summary) + "\n" if summary else "")


def seed_readings_tex(folder: Path | None = None) -> str:
    readings, data = facts.seed_readings(folder)
    if not readings:
        return "No reading of the seed report's recipe has been measured in this build.\n"
    # CLI options: "--" would print as an en dash; "<" in OT1 text prints as an inverted "!"
    rows = [[tex(c).replace("--", "-{}-").replace("<", "$<$") for c in row] for row in words.reading_rows(readings)]
    body = tabular(
        # the last column holds a distance or, where not measured, why: it wraps, flush right
        "@{}p{0.16\\linewidth}p{0.3\\linewidth}lrrr>{\\raggedleft\\arraybackslash}p{0.18\\linewidth}@{}",
        ["Reading", "Recipe", "Runs (seeds)", "Train", "Test", "Best test", "Distance"],
        rows,
    )
    caption = (
        "Readings of the seed report's recipe, each against the seed's row for the same model and optimizer "
        f"({tex(words.seed_rows_text())} on official CIFAR-10). Train: running accuracy over the last "
        "epoch's batches; test: "
        "the final model, no TTA (mean $\\pm$ sample standard deviation where a reading ran with several seeds); "
        "best test: the highest per-epoch test accuracy, averaged over the seeds (what a script that keeps its "
        "best test epoch would report; a diagnostic, never used to choose anything); distance: $|\\Delta$train$| + "
        "|\\Delta$test$|$ of the means, in points. " + tex(data)
    )
    closest = words.closest_text(readings)
    return (tex(closest) + "\n" if closest else "") + table_env(body, caption, "tab:readings", wide=True)


def provenance_tex(runs: dict[str, dict[str, Any]]) -> str:
    """One sentence per group of runs: data, epochs, device, wall time."""
    if not runs:
        return (
            "No training run has produced results yet, so this build shows no measured numbers. "
            f"Run \\texttt{{{tex(FULL_RUN_HINT.split('#')[0].strip())}}} and then \\texttt{{make report}}."
        )
    parts = []
    for names, data, epochs, device in provenance_groups(runs):
        wall = sum(runs[n]["wall_seconds"] for n in names)
        parts.append(
            f"{tt_list(names)}: {tex(data)}; "
            f"{plural(epochs, 'epoch')} on {tex(device)}, {tex(duration(wall))} wall time in all."
        )
    return " ".join(parts)


def full_status_tex(runs: dict[str, dict[str, Any]]) -> str:
    """Whether this build's runs are CIFAR-10 results, and how to get them where they are not."""
    full, jpeg, _, everything_full = facts.coverage(runs)
    if everything_full:
        return "All runs in this report used the full official CIFAR-10."
    hint = tex(FULL_RUN_HINT.split("#")[0].strip())
    if full:
        return (
            f"Only {tt_list(full)} used the full official CIFAR-10; "
            "the other runs' numbers are not CIFAR-10 results."
        )
    if jpeg:
        return (
            f"No run used the official CIFAR-10 files. {tt_list(jpeg)} used {tex(JPEG_NOTE)}. "
            f"Runs on the official files come from \\texttt{{{hint}}} (on a GPU machine for the Improved model), "
            "then \\texttt{make report}."
        )
    return (
        "\\textbf{No run in this build used the full CIFAR-10: full-data accuracies have not been measured "
        f"here}}, and none of the numbers below can be compared with the seed report's. "
        f"They are produced by \\texttt{{{hint}}} on a GPU machine, then \\texttt{{make report}}."
    )


def full_status_brief(runs: dict[str, dict[str, Any]]) -> str:
    """One caption sentence: are these CIFAR-10 results?"""
    full, jpeg, _, everything_full = facts.coverage(runs)
    if everything_full:
        return ""
    if full:
        return "Only runs on the full CIFAR-10 give CIFAR-10 results."
    if jpeg:
        return "Full-size runs used the JPEG copy of CIFAR-10: not official CIFAR-10 scores."
    return "\\textbf{No run used the full CIFAR-10: these are not CIFAR-10 results.}" if runs else ""


@functools.lru_cache(maxsize=1)
def arch_tables_tex() -> str:
    """Both layer tables, generated from the code (layer_table), side by side
    (cached: a pure function of the code, and torchinfo takes a while)."""
    blocks = []
    for name in ("lite", "improved"):
        model = build_model(name)
        rows = [
            [tex(r.name), "[" + ", ".join(str(s) for s in r.output_shape) + "]", f"{r.params:,}"]
            for r in layer_table(model)
        ]
        rows.append(["\\midrule Total", "", f"{count_params(model):,}"])
        body = tabular("@{}lrr@{}", ["Layer", "Output", "Params"], rows).replace(
            "\\\\\n\\midrule Total", "\\\\\n\\midrule\nTotal"
        )
        blocks.append(
            f"\\begin{{minipage}}[t]{{0.48\\textwidth}}\\centering\\scriptsize\n"
            f"\\textbf{{{name.capitalize()}}}\\\\[2pt]\n{body}\\end{{minipage}}"
        )
    return (
        "\\begin{table*}[tbp]\n\\centering\n\\caption{Layer tables of the two models, generated from the code "
        "(\\texttt{resnet\\_lib.layer\\_table}) in the seed report's format: output shape for one "
        "$3\\times32\\times32$ image (batch dimension left out), parameters per layer; an RBL row is the "
        "residual block itself (its layers are listed above it).}\\label{tab:arch}\n"
        + "\\hfill".join(blocks)
        + "\n\\end{table*}\n"
    )


RECIPE_FIELDS = [  # (TrainConfig field, row label)
    ("optimizer", "optimizer"),
    ("lr", "peak learning rate"),
    ("momentum", "momentum (SGD)"),
    ("nesterov", "Nesterov (SGD)"),
    ("weight_decay", "weight decay"),
    ("schedule", "schedule"),
    ("schedule_epochs", "schedule length (epochs; 0: the run's)"),
    ("warmup_epochs", "warm-up epochs"),
    ("label_smoothing", "label smoothing"),
    ("crop", "random crop (pad 4)"),
    ("flip", "horizontal flip"),
    ("cutout", "cutout (px)"),
    ("epochs", "epochs"),
    ("batch_size", "batch size"),
    ("tta", "flip TTA at test"),
    ("val_size", "validation split"),
]

def recipes_table_tex() -> str:
    """The two recipes as resnet_lib.RECIPES defines them (Adam's rate for the report recipe
    as TrainConfig.from_recipe sets it)."""
    seed_sgd = TrainConfig.from_recipe("report", device="cpu")
    seed_adam = TrainConfig.from_recipe("report", optimizer="adam", device="cpu")
    reading = TrainConfig.from_recipe("report-kuangliu", device="cpu")
    reading_adam = TrainConfig.from_recipe("report-kuangliu", optimizer="adam", device="cpu")
    modern = TrainConfig.from_recipe("modern", device="cpu")
    rows = []
    for f, label in RECIPE_FIELDS:
        s = fmt_value(getattr(seed_sgd, f))
        k = fmt_value(getattr(reading, f))
        if f == "optimizer":
            s = k = "SGD + momentum / Adam"
        elif f == "lr":
            s = f"{fmt_value(seed_sgd.lr)} / {fmt_value(seed_adam.lr)}"
            k = f"{fmt_value(reading.lr)} / {fmt_value(reading_adam.lr)}"
        m = optimizer_label(dataclasses.asdict(modern)) if f == "optimizer" else fmt_value(getattr(modern, f))
        rows.append([tex(label), tex(s), tex(k), tex(m)])
    body = tabular("@{}llll@{}", ["", "\\texttt{report}", "\\texttt{report-kuangliu}", "\\texttt{modern}"], rows)
    return table_env(
        body,
        "The training recipes as the code defines them (\\texttt{RECIPES}). The seed report "
        "states neither learning rates nor batch size nor weight decay; \\texttt{report} fills "
        "them with common course defaults, \\texttt{report-kuangliu} is kuangliu/pytorch-cifar's recipe without its "
        "augmentation, one reading of the seed's recipe (Table~\\ref{tab:readings}). Every recipe is the same on a "
        "CPU and a GPU.",
        "tab:recipes",
    )


def results_table_tex(runs: dict[str, dict[str, Any]]) -> str:
    expected = expected_runs()
    names = list(expected) + [n for n in runs if n not in expected]
    rows = []
    for name in names:
        res = runs.get(name)
        if res is None:
            rows.append([f"\\texttt{{{tex(name)}}}"] + ["\\multicolumn{10}{l}{\\emph{not measured}}"])
            continue
        c, fin = res["config"], res["final"]
        rows.append(
            [
                f"\\texttt{{{tex(name)}}}",
                tex(optimizer_label(c)),
                f"{res['num_params']:,}",
                tex(pct_sd(res, "train_acc")),
                tex(pct_sd(res, "val_acc")),
                tex(pct_sd(res, "test_acc")) + ("$^\\dagger$" if fin.get("tta") else ""),
                str(n_seeds(res)),
                str(epochs_of(res)),
                tex(data_short(res["data"])),
                tex(res["device"]),
                tex(duration(res["wall_seconds"])),
            ]
        )
    body = tabular(
        "@{}llrrrrrrlll@{}",
        ["Run", "Optimizer", "Params", "Train", "Val", "Test", "Seeds", "Ep.", "Data", "Device", "Wall"],
        rows,
    )
    caption = (
        "Results of every configuration: accuracy (\\%) of the final model, mean $\\pm$ sample standard "
        "deviation over its seeds where it ran with several; train is the running accuracy over the "
        "last epoch's augmented batches; $^\\dagger$ test with flip test-time augmentation. "
        "Produced by: " + provenance_brief(runs) + " " + full_status_brief(runs)
    )
    return table_env(body, caption, "tab:results", wide=True)


def optimizer_tex(runs: dict[str, dict[str, Any]]) -> str:
    """The Improved model under one budget: report recipe with SGD, with Adam, and modern."""
    names = [n for n in expected_runs() if n.startswith("improved-")]
    rows, present = [], [n for n in names if n in runs]
    for name in names:
        res = runs.get(name)
        if res is None:
            rows.append([f"\\texttt{{{tex(name)}}}", "\\multicolumn{7}{l}{\\emph{not measured}}"])
            continue
        c, fin, h = res["config"], res["final"], res["history"]
        val = [v for v in h.get("val_acc", []) if v is not None]
        best = f"{pct(max(val))} ({h['epoch'][h['val_acc'].index(max(val))]})" if val else "--"
        ips = facts.throughput(res)
        rows.append(
            [
                f"\\texttt{{{tex(name)}}}",
                tex(optimizer_label(c)),
                tex(f"{fmt_value(c['lr'])}, {c['schedule']}"),
                pct(fin["train_acc"]),
                pct(fin.get("val_acc")),
                best,
                pct(fin["test_acc"]),
                f"{ips:,.0f}" if ips else "--",
            ]
        )
    body = tabular(
        "@{}lllrrrrr@{}", ["Run", "Optimizer", "lr, schedule", "Train", "Val", "Best val (ep.)", "Test", "img/s"], rows
    )
    out = table_env(
        body,
        "Optimizer comparison on the Improved model (accuracy in \\%, final model; best val: "
        "highest validation accuracy over epochs and its epoch; img/s: median training "
        "throughput). " + provenance_ref({n: runs[n] for n in present}, runs),
        "tab:optimizer",
        wide=True,
    )
    return out + sgd_against_adam_tex(runs, names[0], names[1])


def sgd_against_adam_tex(runs: dict[str, dict[str, Any]], sgd_name: str, adam_name: str) -> str:
    """The report recipe's SGD and Adam runs of the Improved model compared, beside the seed's claim."""
    sgd, adam = runs.get(sgd_name), runs.get(adam_name)
    if sgd and adam:
        vs, va = selection_accuracy(sgd), selection_accuracy(adam)
        n_test = min(sgd["data"]["n_test"], adam["data"]["n_test"])
        hw = max(facts.test_halfwidth(r["final"]["test_acc"], n_test) for r in (sgd, adam))
        diff = 100 * (adam["final"]["test_acc"] - sgd["final"]["test_acc"])
        claims = seed_claims()
        seed_diff = claims[adam_name][1] - claims[sgd_name][1]
        val_text = (
            f"Validation accuracy, the number model selection may use, is {pct(vs)}\\% with SGD and "
            f"{pct(va)}\\% with Adam. "
            if vs is not None and va is not None
            else ""
        )
        return (
            f"\n{val_text}On the test split Adam is {abs(diff):.2f} points "
            f"{'above' if diff >= 0 else 'below'} SGD + momentum ({pct(adam['final']['test_acc'])}\\% against "
            f"{pct(sgd['final']['test_acc'])}\\%); with {n_test:,} test images, one run's accuracy carries a "
            f"95\\% sampling interval of about $\\pm${100 * hw:.2f} points; across seeds: {verdict_text(adam, sgd)}. "
            f"The seed report put Adam {seed_diff:.2f} points ahead (its claim, not our run).\n"
        )
    return (
        "\nThe SGD-against-Adam comparison needs both report-recipe runs of the Improved model; "
        f"{'neither has' if not (sgd or adam) else 'one has not'} been run in this build.\n"
    )


def seed_comparison_tex(runs: dict[str, dict[str, Any]]) -> str:
    """The seed report's claims beside our repetitions of its runs (and the modern recipe)."""
    claims = seed_claims()
    rows = []
    for name, (s_train, s_test) in claims.items():
        res = runs.get(name)
        model = name.split("-")[0]
        modern = runs.get(run_name(TrainConfig.from_recipe("modern", model=model)))
        ours = (pct(res["final"]["train_acc"]), pct(res["final"]["test_acc"])) if res else ("--", "--")
        delta = (
            signed(100 * res["final"]["test_acc"] - s_test) + delta_mark(res).replace("‡", "$^\\ddagger$")
            if res and comparable_to_seed(res)
            else "n/c"
        )
        mod = (
            pct(modern["final"]["test_acc"]) + "$^\\dagger$"
            if modern and modern["final"].get("tta")
            else (pct(modern["final"]["test_acc"]) if modern else "--")
        )
        prod = f"{tex(data_short(res['data']))}, {epochs_of(res)} ep." if res else "\\emph{not measured}"
        rows.append(
            [f"\\texttt{{{tex(name)}}}", f"{s_train:.2f}", f"{s_test:.2f}", ours[0], ours[1], delta, mod, prod]
        )
    body = tabular(
        "@{}lrrrrrrl@{}",
        [
            "Run",
            "\\multicolumn{2}{c}{Seed report}",
            "Ours train",
            "Ours test",
            "$\\Delta$ test",
            "Modern test",
            "Our data, epochs",
        ],
        rows,
    )
    body = body.replace("\\midrule", "& train & test & & & & & \\\\\n\\midrule", 1)
    present = {n: runs[n] for n in claims if n in runs}
    caption = (
        "The seed report's numbers (its claims, copied from its results table) beside our repetitions of "
        "the same runs, and the same model with the \\texttt{modern} recipe (accuracy in \\%; "
        "$^\\dagger$ flip TTA). $\\Delta$ is shown only for runs on all 60,000 CIFAR-10 images with the seed's "
        f"{RECIPES['report']['epochs']} epochs; n/c: not comparable; $^\\ddagger$ on the JPEG copy of CIFAR-10, a "
        "different data version from the seed's (JPEG-compressed pixels). Our runs: "
        + provenance_brief(present)
        + " "
        + full_status_brief(runs)
    )
    return table_env(body, caption, "tab:seed", wide=True)


def seed_discussion_tex(runs: dict[str, dict[str, Any]]) -> str:
    """Generated sentences for the discussion: comparable runs, or why there are none."""
    claims = seed_claims()
    sentences = []
    for name, (_, s_test) in claims.items():
        res = runs.get(name)
        if res and comparable_to_seed(res):
            d = 100 * res["final"]["test_acc"] - s_test
            sentences.append(
                f"\\texttt{{{tex(name)}}} reaches {pct(res['final']['test_acc'])}\\% test accuracy "
                f"against the seed's {s_test:.2f}\\% ({signed(d)} points)."
            )
    if not sentences:
        sentences.append(
            "None of this build's runs repeats a seed run on the full CIFAR-10 for "
            f"{RECIPES['report']['epochs']} epochs, so the seed's figures can be neither confirmed nor "
            "refuted here; Table~\\ref{tab:seed} shows them beside our numbers only for orientation."
        )
    sentences += recipe_gain_sentences(runs)
    return " ".join(sentences) + "\n"


def recipe_gain_sentences(runs: dict[str, dict[str, Any]]) -> list[str]:
    """Per model, modern recipe against the report recipe (SGD), where both ran on the same
    data for the same epochs: validation and test differences."""
    out = []
    for model in ARCHS:
        old = runs.get(run_name(TrainConfig.from_recipe("report", model=model)))
        new = runs.get(run_name(TrainConfig.from_recipe("modern", model=model)))
        if not (old and new) or data_brief(old["data"]) != data_brief(new["data"]) or epochs_of(old) != epochs_of(new):
            continue
        vo, vn = selection_accuracy(old), selection_accuracy(new)
        val = f"validation {pct(vo)}\\% $\\to$ {pct(vn)}\\%, " if vo is not None and vn is not None else ""
        out.append(
            f"On the same data ({tex(data_brief(new['data']))}) and budget ({plural(epochs_of(new), 'epoch')}), "
            f"the \\texttt{{modern}} recipe moves {model.capitalize()} from {val}test "
            f"{pct(old['final']['test_acc'])}\\% $\\to$ {pct(new['final']['test_acc'])}\\% "
            f"({signed(100 * (new['final']['test_acc'] - old['final']['test_acc']))} points) against the "
            f"\\texttt{{report}} recipe with SGD: {verdict_text(new, old)}."
        )
    return out


def verdict_text(a: dict[str, Any], b: dict[str, Any]) -> str:
    """Whether a test-accuracy difference is a finding (difference_verdict), in words."""
    v = difference_verdict(a, b)
    return tex(v.text) + (", a difference that holds up" if v.holds else ", so it is not established as a finding")


def extremes(acc: dict[str, float], value: float) -> str:
    """'class is cat' or 'classes are cat and dog' (every class at `value`)."""
    names = [tex(c) for c, v in acc.items() if v == value]
    if len(names) == 1:
        return f"class is {names[0]}"
    return f"classes are {', '.join(names[:-1])} and {names[-1]}"


def per_class_tex(runs: dict[str, dict[str, Any]], per_class: PerClass | None) -> str:
    if per_class is None or not per_class.accuracy:
        return (
            "Per-class numbers are not available in this build: notebook 05 (evaluation) has not written "
            "\\texttt{per\\_class\\_accuracy.csv} to the results folder.\n"
        )
    cols = [n for n in per_class.accuracy if n in runs] + [n for n in per_class.accuracy if n not in runs]
    rows = []
    for cls in CLASSES:
        vals = [per_class.accuracy[n][cls] for n in cols]
        top = max(vals)
        bold = len(cols) > 1 and min(vals) < top  # no winner to mark when all runs tie
        rows.append([tex(cls)] + [f"\\textbf{{{v:.1f}}}" if bold and v == top else f"{v:.1f}" for v in vals])
    header = ["Class"] + [f"\\rotatebox{{60}}{{\\texttt{{{tex(n)}}}}}" for n in cols]
    body = tabular("@{}l" + "r" * len(cols) + "@{}", header, rows)
    known = {n: runs[n] for n in cols if n in runs}
    caption = (
        "Test accuracy (\\%) per class and run, from notebook 05's re-evaluation of each checkpoint "
        "(flip TTA where the recipe uses it); bold: best run per class. " + one_run_each(known, runs)
    )
    out = table_env(body, caption, "tab:perclass", wide=len(cols) > 5)
    if per_class.stale:
        out += (
            f"\\textbf{{Warning:}} the per-class file is older than the results of "
            f"{tt_list(per_class.stale)}; rerun notebook 05.\n"
        )
    focus = facts.per_class_focus(runs, per_class, cols)
    if focus is None:
        return out
    hi, lo = focus.best, focus.worst
    easy, hard = extremes(focus.accuracy, hi), extremes(focus.accuracy, lo)
    mean_by_class = {c: sum(per_class.accuracy[n][c] for n in cols) / len(cols) for c in CLASSES}
    avg_lo = min(mean_by_class.values())
    out += (
        f"\nWe look closest at \\texttt{{{tex(focus.run)}}}, the run with the highest validation accuracy of "
        "those in the table (one seed per configuration). "
        f"Its easiest {easy} ({hi:.1f}\\%) and its hardest {hard} ({lo:.1f}\\%), "
        f"a spread of {hi - lo:.1f} points. "
    )
    if focus.top_pair:
        p = focus.top_pair
        out += (
            f"Its most confused pair is {tex(p['a'])}/{tex(p['b'])}: {p['ab']} {tex(p['a'])} images predicted as "
            f"{tex(p['b'])} and {p['ba']} the other way, {p['pct']:.1f}\\% of the two classes' test images. "
        )
    if len(cols) > 1:
        out += f"Averaged over the {len(cols)} runs, the hardest {extremes(mean_by_class, avg_lo)} ({avg_lo:.1f}\\%)."
    return out + "\n"


def targets_tex(runs: dict[str, dict[str, Any]]) -> str:
    rows = [[tex(c).replace(">=", "$\\ge$") for c in row] for row in words.target_rows(runs)]
    body = tabular("@{}llll@{}", ["Run", "Target (\\%)", "Measured (\\%)", "Verdict"], rows)
    caption = (
        "The targets set for this repository's 40-epoch recipes on the full-size JPEG copy of CIFAR-10: mean test "
        f"accuracy (flip TTA) over {facts.TARGET_SEEDS} seeds. "
        "Measured values are the results in Table~\\ref{tab:results}."
    )
    return table_env(body, caption, "tab:targets")


def limitations_tex(runs: dict[str, dict[str, Any]]) -> str:
    items, cov = [], facts.coverage(runs)
    if not runs:
        items.append("No run has been made: this build reports no measured accuracy at all.")
    elif not cov.full and cov.jpeg:
        items.append(f"No run used the official CIFAR-10 files; the full-size runs used {tex(JPEG_NOTE)}.")
    elif not cov.full:
        items.append(
            "No run used the full CIFAR-10, so this build measures no CIFAR-10 test accuracy; "
            "its numbers show that the pipeline learns, nothing more."
        )
    short = sorted({epochs_of(r) for r in runs.values() if epochs_of(r) < RECIPES["report"]["epochs"]})
    if short:
        items.append(
            f"Runs of {'/'.join(map(str, short))} epoch{'s' if short != [1] else ''} are far shorter than the "
            f"{RECIPES['report']['epochs']} the recipes and the seed use."
        )
    subset = [n for n, r in runs.items() if r["config"].get("train_subset")]
    if subset:
        who = "Every run" if len(subset) == len(runs) else tt_list(subset)
        items.append(f"{who} trained on a random subset of the training images (\\texttt{{train\\_subset}}).")
    if cov.missing:
        items.append(f"Not measured in this build: {tt_list(cov.missing)}.")
    single = [n for n, r in runs.items() if n_seeds(r) < 2]
    if single:
        who = "Each configuration" if len(single) == len(runs) else tt_list(single)
        items.append(
            f"{who} ran once, with one seed: the seed-to-seed spread, which can exceed small "
            "differences between configurations, is not measured, and no difference is called a finding."
        )
    items += [
        "The seed report gives no learning rates, batch size or weight decay; the \\texttt{report} recipe fills "
        "them with common defaults, so it repeats the seed's setup only as far as the report describes it.",
        "We hold out a validation split of the training images for model selection, so our models train on "
        "fewer images than the seed's, which (as far as its report says) used all of them.",
        "Training accuracy is a running average over one epoch's augmented batches (with label smoothing in the "
        "\\texttt{modern} recipe), not the accuracy of the final model on clean training images.",
    ]
    return "\\begin{itemize}\n" + "\n".join(f"\\item {i}" for i in items) + "\n\\end{itemize}\n"


def abstract_tex(runs: dict[str, dict[str, Any]]) -> str:
    """The abstract's sentence on results: the best full-data run, or what this build lacks."""
    cov = facts.coverage(runs)
    full, jpeg = {n: runs[n] for n in cov.full}, {n: runs[n] for n in cov.jpeg}
    if full:
        best = best_run(full) or next(iter(full))
        r = full[best]
        return (
            f"On the full CIFAR-10, the run with the highest validation accuracy, \\texttt{{{tex(best)}}} "
            f"({epochs_of(r)} epochs), reaches {pct(r['final']['test_acc'])}\\% test accuracy "
            f"with {r['num_params']:,} parameters. "
        )
    if jpeg:
        best = best_run(jpeg) or next(iter(jpeg))
        r, missing = jpeg[best], cov.missing
        return (
            f"On the JPEG copy of CIFAR-10 (all 60,000 images, JPEG-compressed; not official scores), the run with "
            f"the highest validation accuracy, \\texttt{{{tex(best)}}} ({epochs_of(r)} epochs), reaches "
            f"{pct(r['final']['test_acc'])}\\% test accuracy with {r['num_params']:,} parameters"
            + (f"; {tt_list(missing)} were not measured yet. " if missing else ". ")
        )
    if runs:
        epochs = sorted({epochs_of(r) for r in runs.values()})
        return (
            "This build contains only short runs on reduced data "
            f"({'/'.join(map(str, epochs))} epoch{'s' if epochs != [1] else ''}; see Table~\\ref{{tab:results}}): "
            "it measures no CIFAR-10 accuracy, and its numbers must not be read as such. "
        )
    return "This build contains no training runs yet, so it reports no accuracy. "


def numbers_tex(runs: dict[str, dict[str, Any]]) -> str:
    """Macros for the prose: everything from the code or the results, nothing typed."""
    lite, improved = build_model("lite"), build_model("improved")
    resnet18 = ResNet((64, 128, 256, 512), (2, 2, 2, 2), allow_over_budget=True)  # CIFAR ResNet-18, same code
    claims = seed_claims()
    names = list(expected_runs())
    finished = sorted(str(r.get("finished", ""))[:10] for r in runs.values() if r.get("finished"))
    lines = [
        "% Generated by scripts/make_report_inputs.py: do not edit.",
        macro("ParamBudget", f"{PARAM_BUDGET:,}"),
        macro("LiteParams", f"{count_params(lite):,}"),
        macro("ImprovedParams", f"{count_params(improved):,}"),
        macro("LiteBudgetShare", f"{100 * count_params(lite) / PARAM_BUDGET:.1f}\\%"),
        macro("ImprovedBudgetShare", f"{100 * count_params(improved) / PARAM_BUDGET:.1f}\\%"),
        macro("ResNetEighteenParams", f"{count_params(resnet18):,}"),
        macro("LiteWidths", "/".join(map(str, ARCHS["lite"][0]))),
        macro("ImprovedWidths", "/".join(map(str, ARCHS["improved"][0]))),
        macro("SeedEpochs", str(RECIPES["report"]["epochs"])),
        macro("ModernBatch", str(RECIPES["modern"]["batch_size"])),
        macro("SeedLiteSGDTest", f"{claims[names[0]][1]:.2f}\\%"),
        macro("SeedImprovedSGDTest", f"{claims[names[2]][1]:.2f}\\%"),
        macro("SeedImprovedAdamTest", f"{claims[names[3]][1]:.2f}\\%"),
        macro("NumRuns", str(len(runs))),
        macro("NumExpectedRuns", str(len(names))),
        macro(
            "ResultsDate",
            (
                f"results dated {finished[0]}" + (f" to {finished[-1]}" if finished[-1] != finished[0] else "")
                if finished
                else "no results yet"
            ),
        ),
        # one command per line: "a && b" -> "a &&\\ b"
        macro(
            "RegenerateCommand",
            "\\texttt{" + " \\&\\&\\\\ ".join(tex(c.strip()) for c in REGENERATE.split("&&")) + "}",
        ),
        macro("FullRunCommand", f"\\texttt{{{tex(FULL_RUN_HINT.split('#')[0].strip())}}}"),
    ]
    return "\n".join(lines) + "\n"


def write_inputs(results_dir: Path, figures_dir: Path, out_dir: Path, tex_dir: Path | None = None) -> dict[str, Any]:
    """Write every fragment into out_dir; return the manifest (also written as manifest.json)."""
    tex_dir = tex_dir or out_dir.parent
    runs = facts.load_runs(results_dir)
    per_class = facts.load_per_class(results_dir, runs)
    figs = facts.collect_figures(figures_dir, runs)
    files = {
        "numbers.tex": numbers_tex(runs),
        "abstract.tex": abstract_tex(runs) + "\n",
        "provenance.tex": provenance_tex(runs) + (" " + full_status_tex(runs) if runs else "") + "\n",
        "arch_tables.tex": arch_tables_tex(),
        "recipes_table.tex": recipes_table_tex(),
        "results_table.tex": results_table_tex(runs),
        "targets.tex": targets_tex(runs),
        "optimizer.tex": optimizer_tex(runs),
        "seed_comparison.tex": seed_comparison_tex(runs),
        "seed_discussion.tex": seed_discussion_tex(runs),
        "seed_readings.tex": seed_readings_tex(),
        "ablation.tex": ablation_tex(),
        "per_class.tex": per_class_tex(runs, per_class),
        "fig_data.tex": paper_figures.data_figures_tex(figs, tex_dir),
        "fig_curves.tex": paper_figures.curve_figures_tex(figs, runs, tex_dir),
        "fig_optimizer.tex": paper_figures.optimizer_figure_tex(figs, runs, tex_dir),
        "fig_confusion.tex": paper_figures.confusion_figures_tex(figs, runs, tex_dir),
        "limitations.tex": limitations_tex(runs),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        atomic_write(out_dir / name, "w", lambda f, text=text: f.write(text))
    manifest = {
        "results_dir": str(results_dir),
        "figures_dir": str(figures_dir),
        "runs": list(runs),
        "missing_runs": facts.coverage(runs).missing,
        "full_cifar10_runs": facts.coverage(runs).full,
        "per_class": per_class is not None,
        "figures": sorted(figs.found),
        "missing_figures": figs.missing,
        "figures_older_than_results": figs.older_than,
        "files": sorted(files),
    }
    write_json(manifest, out_dir / "manifest.json")
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--results",
        default=os.environ.get("RESULTS_DIR") or str(ROOT / "results"),
        help="folder of <run>/results.json (default: $RESULTS_DIR or results/)",
    )
    ap.add_argument(
        "--figures",
        default=os.environ.get("FIGURES_DIR") or str(ROOT / "figures"),
        help="folder of the notebooks' figures (default: $FIGURES_DIR or figures/)",
    )
    ap.add_argument("--out", default=str(ROOT / "report" / "generated"), help="folder for the LaTeX fragments")
    ap.add_argument(
        "--tex-dir",
        default=None,
        help="folder pdflatex runs in (figure paths are relative to it; " "default: the parent of --out)",
    )
    args = ap.parse_args(argv)
    try:
        m = write_inputs(
            Path(args.results), Path(args.figures), Path(args.out), Path(args.tex_dir) if args.tex_dir else None
        )
    except ResultsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"report inputs -> {args.out}: {len(m['runs'])} run(s) ({', '.join(m['runs']) or 'none'}), "
        f"{len(m['figures'])} figure(s); not run: {', '.join(m['missing_runs']) or 'none'}; "
        f"full CIFAR-10 runs: {', '.join(m['full_cifar10_runs']) or 'none'}"
    )
    return 0


