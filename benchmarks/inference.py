"""Inference throughput and accuracy over the 500 sample images, on the cores this process
may use (`taskset -c 0 python benchmarks/inference.py` for one).

    python benchmarks/inference.py [--models efficientnet_lite0 ...] [--repeats 3]

Per model x engine x batch size, in rounds (each round measures everything once, so that a
slow spell of the machine shows in all of a round's figures; medians over rounds):
inference-only images/s on all cores (I: preprocessed tensors already in memory, every batch
handed to the engine at once, `Session.run_many`: its best rate alone; OpenVINO also with the
other number of streams, "I oth"), preprocessing-only images/s on all cores (P, per
input: the original JPEGs and the 161 px q75 renditions), the shared-core bound
1 / (1/P + 1/I) (decoding and inference share the cores, so end to end can be no faster),
end-to-end files-to-labels images/s with the executor's schedule (decode workers and
inference threads from the measured P and I: `split_threads`; on few cores the two stages
take turns on all of them), and the median over rounds of its fraction of the bound and of I.
Per model x engine: top-1/top-5 on the 500 images and top-1 agreement with ONNX Runtime fp32;
int8 engines are calibrated on the first 300 images (as a query would: at most 300 of the
catalog). The naive peer pipeline (PIL + torchvision transforms + torch eager fp32, batch 32,
DataLoader with a worker per core) is measured end to end in the same run, and each engine's
end-to-end rate is printed as a multiple of it. Last, the thread split and predicted rate
for 1, 2, 8, 16 and 64 cores from the measured per-image costs (inference assumed to scale
linearly in streams).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable

import numpy as np
import torch
from common import SAMPLE, host_line, sample_files
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

import smolql
from smolql.backends.openvino_cpu import OpenVinoSession
from smolql.backends.registry import available, backends, get_backend
from smolql.config import cores as available_cores
from smolql.execute import stage_plans
from smolql.executor.local import classify_stream, softmax_topk
from smolql.models.quantize import CALIBRATION_IMAGES
from smolql.models.registry import get_model
from smolql.ops.loader import preprocessed, stream_batches
from smolql.ops.pipeline import ImageRef, Preprocessor
from smolql.planner.cost import split_threads, takes_turns

PROJECTED = (1, 2, 8, 16, 64)


def labels() -> dict[str, int]:
    with open(SAMPLE / "manifest.csv") as f:
        return {r["file"]: int(r["class_index"]) for r in csv.DictReader(f)}


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class Naive(Dataset):
    def __init__(self, files, t) -> None:
        self.files = files
        self.tf = T.Compose(
            [T.Resize(t.resize), T.CenterCrop(t.crop), T.ToTensor(), T.Normalize(t.mean, t.std)]
        )

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i):
        with Image.open(self.files[i]) as im:
            return self.tf(im.convert("RGB"))


def naive_runner(spec, files, cores: int) -> Callable[[], np.ndarray]:
    """One pass of the naive peer over ``files``: its top-1 answers. Its loader's worker
    processes are forked once, here, and kept: SmolQL closes its pooled engines before any
    fork (see :mod:`smolql.executor.sessions`), so a peer forking in every round would make the
    query it is paired with open its engine again."""
    torch.set_num_threads(cores)
    module = spec.load()
    loader = DataLoader(
        Naive(files, spec.transform), batch_size=32, num_workers=cores, persistent_workers=True
    )
    next(iter(loader))  # forks the workers

    def run() -> np.ndarray:
        with torch.inference_mode():
            return np.concatenate([module(batch).argmax(1).numpy() for batch in loader])

    return run


def naive_peer(run: Callable[[], np.ndarray], n: int, repeats: int) -> tuple[float, np.ndarray]:
    """The peer's images/s over ``n`` images (median of ``repeats`` passes after a warm-up) and
    its answers."""
    preds = run()  # warm-up
    took = statistics.median(seconds(run) for _ in range(repeats))
    return n / took, preds


def bound(p: float, i: float) -> float:
    """The shared-core bound on end-to-end images/s."""
    return 1.0 / (1.0 / p + 1.0 / i)


def measure(spec, pre, sessions, tensor, refsets, bs: int, cores: int, repeats: int):
    """Rounds of: inference alone on all cores (and, for OpenVINO, with one stream),
    preprocessing alone on all cores, and end to end with the split and schedule the executor
    takes for the measured rates, for each input set. ``sessions``: (inference threads for
    end to end, all cores, one stream or None)."""
    session, all_cores, single = sessions
    logits: list[np.ndarray] = []

    def infer_only(s) -> None:  # every batch at once: the engine's best rate alone
        logits[:] = s.run_many([tensor[i : i + bs] for i in range(0, len(tensor), bs)])

    def preprocess(refs) -> None:
        for _ in stream_batches(refs, pre, batch_size=bs, workers=cores):
            pass

    def e2e(refs, workers: int, turns: bool) -> None:
        for _ in classify_stream(
            refs,
            spec,
            session,
            pre,
            batch_size=bs,
            decode_workers=workers,
            progress=False,
            turns=turns,
        ):
            pass

    rounds: list[dict] = []
    infer_only(all_cores)  # warm-up
    for refs in refsets:
        preprocess(refs)
    for _ in range(repeats):
        r = {"I": len(tensor) / seconds(lambda: infer_only(all_cores))}
        if single is not None:
            r["I1"] = len(tensor) / seconds(lambda: infer_only(single))
        for name, refs in zip(("jpeg", "q75"), refsets, strict=True):
            p = len(refs) / seconds(lambda refs=refs: preprocess(refs))
            workers, threads = split_threads(cores, cores / p, 1.0 / r["I"])
            turns = takes_turns(workers, threads, cores)
            e = len(refs) / seconds(lambda refs=refs, w=workers, t=turns: e2e(refs, w, t))
            r[f"P {name}"], r[name] = p, e
            r[f"of bound {name}"], r[f"of I {name}"] = e / bound(p, r["I"]), e / r["I"]
            r[f"split {name}"] = (workers, threads, turns)
        rounds.append(r)
    infer_only(all_cores)
    idx, _ = softmax_topk(np.concatenate(logits), 5)
    out = {k: statistics.median(r[k] for r in rounds) for k in rounds[0] if "split" not in k}
    out["split"] = rounds[-1]["split jpeg"]
    return out, idx


def projection(p: float, i: float, cores: int) -> list[str]:
    """Split and predicted images/s on other core counts, from this host's per-image costs
    (core-seconds: ``cores / p`` to preprocess, ``cores / i`` to infer; inference assumed to
    scale linearly, in streams), against the linear bound n / (c_d + c_i)."""
    c_d, c_i = cores / p, cores / i
    lines = []
    for n in PROJECTED:
        workers, threads = split_threads(n, c_d, c_i / n)
        if takes_turns(workers, threads, n):
            rate, how = n / (c_d + c_i), f"{n} + {n} taking turns"
        else:
            rate, how = min(workers / c_d, threads / c_i), f"{workers} decode + {threads} infer"
        share = rate / (n / (c_d + c_i))
        lines.append(f"    {n:>3} cores: {how:<26} {rate:>8.0f} img/s, {share:.2f} of bound")
    return lines


def through_sql(
    con,
    model: str,
    files,
    originals,
    truth,
    repeats: int,
    target: float | None = None,
    peer: Callable[[], np.ndarray] | None = None,
    smaller: bool = False,
) -> dict:
    """``SELECT classify(image)`` over the catalog as a user runs it (cache off), with the
    engine the planner picks once this machine is calibrated for the model on the catalog
    (`smolql calibrate --catalog bench`: speed on 64 images, reduced precisions compared with
    fp32 on all 500, counting the labelled answers they lose); with ``target``, the fastest
    plan the catalog's profile (`smolql profile bench`: this model on originals, fp32, the
    reduced float precisions offered here and int8, measured on all 500 images; with
    ``smaller``, smaller input sizes and DCT scales too) finds within
    that accuracy loss (`SET smolql.max_accuracy_loss`). In rounds, each measuring the
    chosen plan's own I (its engine, batch size and inference threads) and its P (its
    preprocessor on all cores), timed before and after the executor alone with that plan and
    the query (the bound from their mean times), and, with
    ``peer``, one pass of the naive peer (the multiple paired per round): images/s, fractions
    of the plan's bound, the engine (and why), top-1."""
    con.calibrate([model], catalog="bench")
    con.sql("SET smolql.cache = 'off'")
    con.sql(f"SET smolql.model = '{model}'")
    sql = "SELECT file, classify(image).class_index AS c FROM bench"
    if target is not None:
        con.profile("bench", models=[model], sample=len(files), smaller_inputs=smaller, repeats=1)
        con.sql(f"SET smolql.max_accuracy_loss = {target}")
    lines = con.sql(f"EXPLAIN {sql}")["plan"].to_pylist()
    reason = "engine:" if target is None else "chosen:"
    why = next((x.strip() for x in lines if x.strip().startswith(reason)), "")
    (stage,) = stage_plans(con.duckdb, con.settings, sql).values()  # the plan the query runs
    plan = stage.plan
    spec, bs, cores = plan.spec, plan.batch_size, available_cores()
    pre = plan.preprocessor()
    session = get_backend(plan.backend).open(spec, plan.precision, plan.infer_threads, bs)
    tensor = preprocessed(originals, pre)

    def infer_only() -> None:  # every batch at once: the engine's best rate alone
        session.run_many([tensor[i : i + bs] for i in range(0, len(tensor), bs)])

    def preprocess() -> None:
        for _ in stream_batches(originals, pre, batch_size=bs, workers=cores):
            pass

    def executor() -> None:
        for _ in classify_stream(
            originals, spec, session, pre, batch_size=bs,
            decode_workers=plan.decode_workers, progress=False, turns=plan.turns,
        ):  # fmt: skip
            pass

    con.sql(sql)  # warm-up
    infer_only()
    rounds = []
    for _ in range(repeats):
        # I and P are timed before and after the executor and the query, in mirrored order, and
        # the bound takes their mean times: the host's speed drifts within a round.
        t_i, t_p = seconds(infer_only), seconds(preprocess)
        r = {"executor": len(originals) / seconds(executor)}
        r["sql"] = len(files) / seconds(lambda: con.sql(sql))
        t_p, t_i = (t_p + seconds(preprocess)) / 2, (t_i + seconds(infer_only)) / 2
        r["I"], r["P"] = len(tensor) / t_i, len(originals) / t_p
        r["bound"] = bound(r["P"], r["I"])
        r["of bound"], r["executor of bound"] = r["sql"] / r["bound"], r["executor"] / r["bound"]
        if peer is not None:
            r["peer"] = len(files) / seconds(peer)
            r["x peer"] = r["sql"] / r["peer"]
        rounds.append(r)
    session.close()
    got = {r["file"]: r["c"] for r in con.sql(sql).to_pylist()}
    out = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    out["rounds"] = rounds
    out["top1"] = float(np.mean([got[f.name] == t for f, t in zip(files, truth, strict=True)]))
    split = f"{plan.decode_workers} + {plan.infer_threads}{' taking turns' if plan.turns else ''}"
    out["engine"] = f"{plan.backend}/{plan.precision}, batch {bs}, {split}"
    out["why"] = why
    con.sql("RESET smolql.max_accuracy_loss")
    return out


def calibrated(backend, spec, precision: str, tensor: np.ndarray) -> None:
    """Make an int8 engine as a query would: on the first (at most) 300 images."""
    if not backend.is_calibrated(spec, precision):
        backend.calibrate(spec, precision, tensor[:CALIBRATION_IMAGES])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["efficientnet_lite0"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[32])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--naive-repeats", type=int, default=1)
    parser.add_argument(
        "--no-sql",
        action="store_true",
        help="skip the SQL row (it calibrates this machine's engines, kept per machine: not"
        " under taskset, whose calibration would replace the whole machine's)",
    )
    parser.add_argument(
        "--backends",
        nargs="+",
        default=None,
        help="backend/precision pairs to run (e.g. onnxruntime/fp32); default: all available",
    )
    parser.add_argument(
        "--paired-peer",
        action="store_true",
        help="time a naive peer pass in every round of the SQL rows (their multiple of the peer"
        " paired per round, as the host's speed drifts)",
    )
    parser.add_argument(
        "--smaller-inputs",
        action="store_true",
        help="the target rows' profile also tries the model at smaller input sizes and DCT"
        " scales (longer; default: originals at the model's input size)",
    )
    parser.add_argument(
        "--targets",
        nargs="*",
        type=float,
        default=[0.01],
        help="accuracy losses (0-1) for more SQL rows: the catalog is profiled and the planner"
        " runs the fastest plan within each (the issue's 'equal accuracy' is 1 point: 0.01)",
    )
    args = parser.parse_args()
    files = sample_files()
    truth = np.array([labels()[f.name] for f in files])
    cores = available_cores()
    folder = tempfile.mkdtemp(prefix="smolql-bench-")
    con = smolql.connect(os.path.join(folder, "b.duckdb"))
    labelled = str(SAMPLE / "manifest.csv")  # class_index: calibration counts lost answers
    con.create_catalog("bench", str(SAMPLE), labels=labelled, progress=False)
    q75 = [
        ImageRef(i, p, 1)
        for i, p in con.duckdb.execute(
            "SELECT image_id, path FROM smolql.renditions WHERE spec = '161:jpeg:75'"
            " ORDER BY image_id"
        ).fetchall()
    ]
    originals = [ImageRef(i, str(f), 1) for i, f in enumerate(files, start=1)]
    print(f"{host_line()}; {len(files)} images; medians of {args.repeats} rounds")
    for name in (n for n in backends() if n not in available()):
        print(f"skipped backend {name}: {backends()[name].unavailable_reason()}")
    for model in args.models:
        spec = get_model(model)
        pre = Preprocessor(spec.transform)
        tensor = preprocessed(originals, pre)
        peer_run = naive_runner(spec, files, cores)  # its workers forked once, for every pass
        naive_rate, naive_pred = naive_peer(peer_run, len(files), args.naive_repeats)
        naive_top1 = (naive_pred == truth).mean()
        print(f"\n== {model} ({spec.transform.crop} px)")
        print(
            f"naive peer (torch eager fp32, batch 32, {cores} loader workers): {naive_rate:.1f}"
            f" img/s, top-1 {naive_top1:.3f}"
        )
        print(
            f"{'engine':<18}{'batch':>6}{'I/s':>6}{'I oth':>6}{'split':>9}{'P jpeg':>7}"
            f"{'jpeg/s':>7}{'bound':>6}{'of bnd':>7}{'of I':>5}{'P q75':>6}{'q75/s':>6}"
            f"{'bound':>6}{'of bnd':>7}{'of I':>5}{'top-1':>6}{'vs peer':>8}{'x peer':>7}"
            f"{'agree':>6}"
        )
        reference, projections = None, []
        for backend_name, backend in available().items():
            if "cpu" not in backend.capabilities().devices:
                continue
            for precision in backend.capabilities().precisions:
                if args.backends and f"{backend_name}/{precision}" not in args.backends:
                    continue
                if precision in backend.capabilities().calibrated:
                    calibrated(backend, spec, precision, tensor)
                for bs in args.batch_sizes:
                    all_cores = backend.open(spec, precision, cores, bs)
                    single = None
                    if backend_name == "openvino":
                        other = 2 if all_cores.streams == 1 else 1
                        single = OpenVinoSession(spec, precision, cores, bs, streams=other)
                    row, idx = measure(
                        spec,
                        pre,
                        (all_cores, all_cores, single),
                        tensor,
                        (originals, q75),
                        bs,
                        cores,
                        args.repeats,
                    )
                    all_cores.close()
                    if single is not None:
                        single.close()
                    if reference is None:
                        reference = idx[:, 0]
                    agree = (idx[:, 0] == reference).mean()
                    top1 = (idx[:, 0] == truth).mean()
                    workers, threads, turns = row["split"]
                    split = f"{workers}+{threads}{'t' if turns else ''}"
                    i1 = f"{row['I1']:>6.0f}" if "I1" in row else f"{'-':>6}"
                    print(
                        f"{backend_name + '/' + precision:<18}{bs:>6}{row['I']:>6.0f}{i1}"
                        f"{split:>9}{row['P jpeg']:>7.0f}{row['jpeg']:>7.1f}"
                        f"{bound(row['P jpeg'], row['I']):>6.0f}{row['of bound jpeg']:>7.2f}"
                        f"{row['of I jpeg']:>5.2f}{row['P q75']:>6.0f}{row['q75']:>6.1f}"
                        f"{bound(row['P q75'], row['I']):>6.0f}{row['of bound q75']:>7.2f}"
                        f"{row['of I q75']:>5.2f}{top1:>6.3f}{100 * (top1 - naive_top1):>+8.1f}"
                        f"{row['jpeg'] / naive_rate:>7.1f}{agree:>6.3f}"
                    )
                    projections.append(
                        (f"{backend_name}/{precision} batch {bs}", row["P jpeg"], row["I"])
                    )
        peer = peer_run if args.paired_peer else None
        for target in [] if args.no_sql else [None, *args.targets]:
            q = through_sql(
                con, model, files, originals, truth, args.repeats, target, peer, args.smaller_inputs
            )
            asked = "" if target is None else f", SET smolql.max_accuracy_loss = {target}"
            paired = (
                f"; paired with a naive peer pass in each round: {q['x peer']:.1f}x (peer"
                f" {q['peer']:.1f} img/s)"
                if peer is not None
                else ""
            )
            print(
                f"SELECT classify(image) through SmolQL (cache off{asked}; the planner's plan"
                f" {q['engine']}; {q['why']}): {q['sql']:.1f} img/s, {q['of bound']:.2f} of"
                f" the plan's bound ({q['bound']:.0f}: I {q['I']:.0f}, P {q['P']:.0f}), the"
                f" executor alone {q['executor']:.1f} img/s ({q['executor of bound']:.2f});"
                f" {q['sql'] / naive_rate:.1f}x the naive peer, top-1 {q['top1']:.3f}"
                f" ({100 * (q['top1'] - naive_top1):+.1f} points){paired}"
            )
            each = [
                f"{r['of bound']:.2f}" + (f" {r['x peer']:.1f}x" if peer is not None else "")
                for r in q["rounds"]
            ]
            what = "of the bound" + (" and x the paired peer" if peer is not None else "")
            print(f"  each round, {what}: {', '.join(each)}")
        print(
            "I oth: OpenVINO with the other number of streams (2 where the executor runs 1);"
            " split: decode workers + inference threads ('t': taking turns on all cores);"
            " vs peer: top-1 points against the naive peer; x peer: end to end (jpeg) over the"
            " naive peer's rate"
        )
        print("projection from this host's per-image costs (originals):")
        for name, p, i in projections:
            print(f"  {name}:")
            print("\n".join(projection(p, i, cores)))
    con.close()
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
