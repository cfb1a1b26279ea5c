"""The SMOL figure on this machine: accuracy vs end-to-end throughput (all cores) for the
naive peer pipeline, SmolQL's plans, low-resolution-aware models and the planner's choices.

    python benchmarks/smol.py [--models efficientnet_lite0 ...] [--train-models ...]

The 500 sample images are split by position: even -> catalog ``train`` (low-res-aware
training only), odd -> catalog ``heldout`` (everything measured). Writes
``benchmarks/results/smol.md`` (tables), ``smol.csv`` and ``smol.png``.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

from common import REPO, SAMPLE, sample_files
from inference import naive_peer, naive_runner

import smolql
from smolql.errors import QueryError
from smolql.models.registry import get_model
from smolql.profile.chart import frontier
from smolql.profile.run import MAX_ERROR

RESULTS = REPO / "benchmarks" / "results"
NAIVE_REPEATS = 3  # the naive peer takes 10-40 s a run; median of 3


def split_catalogs(con, work: Path) -> None:
    files = sample_files()
    for name, part in (("train", files[0::2]), ("heldout", files[1::2])):
        folder = work / name
        folder.mkdir()
        for f in part:
            (folder / f.name).symlink_to(f)
        con.create_catalog(name, str(folder), labels=str(SAMPLE / "manifest.csv"), progress=False)


def run_target(con, setting: str, value: float, repeats: int) -> dict | None:
    """The planner's choice for one target: timed SQL over the held-out catalog (cache off);
    None when no plan meets the target (the error says which plans come closest)."""
    con.sql("SET smolql.cache = off")
    con.sql(f"SET smolql.{setting} = {value}")
    try:
        explained = con.sql("EXPLAIN SELECT classify(image) FROM heldout")
    except QueryError as e:
        print(f"{setting} = {value}: {e}", file=sys.stderr)
        con.sql(f"RESET smolql.{setting}")
        con.sql("RESET smolql.cache")
        return None
    try:
        chosen = next(
            line.split("chosen: ", 1)[1]
            for line in explained.column("plan").to_pylist()
            if "chosen: " in line
        )
        times, rows = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            rows = con.sql(
                "SELECT class_index AS truth, classify(image).class_index AS pred FROM heldout"
            ).to_pylist()
            times.append(time.perf_counter() - start)
    finally:
        con.sql(f"RESET smolql.{setting}")
        con.sql("RESET smolql.cache")
    correct = sum(r["truth"] == r["pred"] for r in rows)
    return {
        "target": f"{setting} = {value:g}",
        "plan": chosen.rsplit(" (accuracy", 1)[0],
        "correct": correct,
        "images": len(rows),
        "per_s": len(rows) / statistics.median(times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--models",
        nargs="+",
        default=["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"],
    )
    parser.add_argument("--train-models", nargs="+", default=["efficientnet_lite0"])
    parser.add_argument(
        "--renditions", nargs="+", default=["161:jpeg:75", "161:jpeg:95", "161:png"]
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="smolql-smol-"))
    cores = os.cpu_count() or 1
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    con = smolql.connect(str(work / "smol.duckdb"))
    try:
        split_catalogs(con, work)
        # The baseline first, in the process as it starts (before training changes its heap).
        heldout = con.sql("SELECT path, class_index FROM heldout ORDER BY path").to_pylist()
        files = [Path(r["path"]) for r in heldout]
        truth = [r["class_index"] for r in heldout]
        naive = {}
        for model in args.models:
            peer = naive_runner(get_model(model), files, cores)
            rate, preds = naive_peer(peer, len(files), NAIVE_REPEATS)
            correct = int(sum(int(p) == t for p, t in zip(preds, truth, strict=True)))
            naive[model] = (rate, correct, len(files))
        say(f"# SMOL figure: {cores} cores, 250 training / 250 held-out ImageNet sample images\n")

        say("## Low-resolution-aware training (label-free distillation on `train`)\n")
        say("| model | images | epochs | seconds |")
        say("|---|---|---|---|")
        for model in args.train_models:
            for rendition in args.renditions:
                o = con.train(
                    "train", model=model, rendition=rendition, epochs=args.epochs, say=print
                )
                say(f"| {o.model} | {o.images} | {args.epochs} | {o.seconds:.0f} |")

        report = con.profile(
            "heldout", models=args.models, sample=250, repeats=args.repeats, say=print
        )
        profiles = report.profiles
        by_key = {p.plan.key: p for p in profiles}

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            targets = [
                run_target(con, "min_accuracy", round(c / n, 3), args.repeats)
                for _, c, n in naive.values()
            ]
            targets += [
                run_target(con, "max_accuracy_loss", 0.01, args.repeats),
                run_target(con, "max_accuracy_loss", 0.03, args.repeats),
                run_target(con, "min_throughput", 200, args.repeats),
            ]

        say("\n## Recovery of the rendition loss on the 250 held-out images (fp32, native size)\n")
        say("| model | rendition | original | naive rendition | low-res-aware | loss recovered |")
        say("|---|---|---|---|---|---|")
        for model in args.train_models:
            orig = by_key[f"{model}|original|dct1|native|{profiles[0].plan.backend}/fp32"]
            for rendition in args.renditions:
                base = next(
                    p
                    for p in profiles
                    if p.plan.model == model
                    and p.plan.source == rendition
                    and not p.plan.input_size
                    and p.plan.precision != "int8"
                )
                tuned = next(
                    p
                    for p in profiles
                    if p.plan.model == f"{model}@{rendition}"
                    and not p.plan.input_size
                    and p.plan.precision != "int8"
                )
                loss = orig.correct - base.correct
                gain = tuned.correct - base.correct
                share = f"{gain}/{loss} = {gain / loss:.0%}" if loss > 0 else "no loss"
                say(
                    f"| {model} | {rendition} | {orig.correct}/250 | {base.correct}/250 |"
                    f" {tuned.correct}/250 | {share} |"
                )

        say("\n## Accuracy vs end-to-end throughput (held-out, images/s, median of runs)\n")
        say("| pipeline | plan | top-1 | images/s | cost model | error |")
        say("|---|---|---|---|---|---|")
        rows = []
        for model, (rate, correct, n) in naive.items():
            rows.append(
                (
                    "naive peer (PIL + torchvision + torch eager)",
                    model + " on original",
                    correct / n,
                    rate,
                    None,
                )
            )
        marks = frontier(report)
        for p, m in zip(profiles, marks, strict=True):
            kind = (
                "SmolQL, low-res-aware model"
                if "@" in p.plan.model
                else "SmolQL, original"
                if p.plan.source == "original"
                else "SmolQL, rendition (naive model)"
            )
            rows.append(
                (
                    kind + (" *" if m else ""),
                    p.plan.describe(),
                    p.accuracy,
                    p.measured_per_s,
                    p.predicted_per_s,
                )
            )
        for t in filter(None, targets):
            rows.append(
                (f"planner: {t['target']}", t["plan"], t["correct"] / t["images"], t["per_s"], None)
            )
        for kind, plan, acc, rate, pred in rows:
            err = f"{100 * (pred / rate - 1):+.1f}%" if pred else ""
            pred_s = f"{pred:.1f}" if pred else ""
            say(f"| {kind} | {plan} | {acc:.3f} | {rate:.1f} | {pred_s} | {err} |")
        say("\n(* = on the Pareto frontier of the profiled plans)")

        say("\n## Planner vs naive peer at equal or better accuracy\n")
        say(
            "| naive peer | top-1 | images/s | planner target | SmolQL plan | top-1 | images/s |"
            " ratio |"
        )
        say("|---|---|---|---|---|---|---|---|")
        for (model, (rate, correct, n)), t in zip(naive.items(), targets, strict=False):
            if t is None:
                say(f"| {model} | {correct / n:.3f} | {rate:.1f} | (no plan met the target) |")
                continue
            acc = t["correct"] / t["images"]
            flag = "" if acc >= correct / n else " (below on held-out)"
            say(
                f"| {model} | {correct / n:.3f} | {rate:.1f} | {t['target']} | {t['plan']} |"
                f" {acc:.3f}{flag} | {t['per_s']:.1f} | **{t['per_s'] / rate:.1f}x** |"
            )

        errors = [abs(p.error) for p in profiles]
        say(
            f"\nCost model: median |error| {100 * statistics.median(errors):.1f}%, largest"
            f" {100 * max(errors):.1f}% over {len(profiles)} plans"
            f" ({sum(e <= MAX_ERROR for e in errors)} within {100 * MAX_ERROR:.0f}%);"
            f" {report.cost.describe_contention()} per image"
        )
        write_outputs(out, rows, lines, naive, targets, report)
    finally:
        con.close()
        shutil.rmtree(work, ignore_errors=True)


def write_outputs(out: Path, rows, lines, naive, targets, report) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (out / "smol.md").write_text("\n".join(lines) + "\n")
    with open(out / "smol.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["pipeline", "plan", "top1", "images_per_s", "predicted_per_s"])
        for kind, plan, acc, rate, pred in rows:
            w.writerow(
                [
                    kind.rstrip(" *"),
                    plan,
                    f"{acc:.4f}",
                    f"{rate:.2f}",
                    f"{pred:.2f}" if pred else "",
                ]
            )
    fig, ax = plt.subplots(figsize=(10, 6.5), dpi=110)
    styles = {
        "naive peer": ("x", "black"),
        "SmolQL, original": ("o", "tab:blue"),
        "SmolQL, rendition (naive model)": ("s", "tab:orange"),
        "SmolQL, low-res-aware model": ("D", "tab:green"),
        "planner": ("*", "tab:red"),
    }
    seen = set()
    for kind, _plan, acc, rate, _ in rows:
        key = next(k for k in styles if kind.startswith(k))
        marker, colour = styles[key]
        ax.scatter(
            rate,
            acc,
            marker=marker,
            color=colour,
            s=90 if key == "planner" else 30,
            label=None if key in seen else key,
            zorder=3 if key == "planner" else 2,
        )
        seen.add(key)
    front = sorted(
        (p.measured_per_s, p.accuracy)
        for p, m in zip(report.profiles, frontier(report), strict=True)
        if m
    )
    ax.plot(*zip(*front, strict=True), "k--", lw=0.8, label="Pareto frontier (SmolQL plans)")
    ax.set_xscale("log")
    ax.set_xlabel("end-to-end throughput, images/s (log scale), 2 CPU cores")
    ax.set_ylabel("top-1 accuracy, 250 held-out ImageNet images")
    ax.set_title("SmolQL on this machine: accuracy vs throughput")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "smol.png")
    print(f"wrote {out / 'smol.md'}, {out / 'smol.csv'}, {out / 'smol.png'}", file=sys.stderr)


if __name__ == "__main__":
    main()
