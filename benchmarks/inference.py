"""Inference throughput and accuracy over the 500 sample images, 2 cores.

    python benchmarks/inference.py [--models efficientnet_lite0 ...] [--repeats 3]

Per model x backend x batch size: inference-only images/s on all cores (I: preprocessed
tensors already in memory), preprocessing-only images/s on all cores (P, per input: the
original JPEGs and the 161 px q75 renditions), the shared-core bound 1 / (1/P + 1/I) (decoding
and inference share the cores, so end to end can be no faster), end-to-end files-to-labels
images/s, and its fraction of the bound and of I. Per model x backend: top-1/top-5 on
the 500 images and top-1 agreement with ONNX Runtime fp32. The naive peer pipeline (PIL +
torchvision transforms + torch eager fp32, batch 32, DataLoader with 2 workers) is measured
end to end in the same run.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import tempfile

import numpy as np
import torch
from common import SAMPLE, host_line, median_seconds, sample_files
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

import smolql
from smolql.backends.registry import available, backends
from smolql.executor.local import classify_stream, softmax_topk
from smolql.models.registry import get_model
from smolql.ops.loader import stream_batches
from smolql.ops.pipeline import ImageRef, Preprocessor
from smolql.planner.cost import split_threads


def labels() -> dict[str, int]:
    with open(SAMPLE / "manifest.csv") as f:
        return {r["file"]: int(r["class_index"]) for r in csv.DictReader(f)}


def median_time(fn, repeats: int) -> float:
    return median_seconds(fn, repeats, warmup=1)


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


def naive_peer(spec, files, repeats: int) -> tuple[float, np.ndarray]:
    torch.set_num_threads(2)
    module = spec.load()
    loader = DataLoader(Naive(files, spec.transform), batch_size=32, num_workers=2)
    preds: list[np.ndarray] = []

    def run() -> None:
        preds.clear()
        with torch.inference_mode():
            for batch in loader:
                preds.append(module(batch).argmax(1).numpy())

    seconds = median_time(run, repeats)
    return len(files) / seconds, np.concatenate(preds)


def preprocess_rate(refs, pre, cores: int, repeats: int) -> float:
    """P: images/s of decoding, resizing and normalising alone, on all cores."""

    def run() -> None:
        for _ in stream_batches(refs, pre, workers=cores):
            pass

    return len(refs) / median_time(run, repeats)


def bound(p: float, i: float) -> float:
    """The shared-core bound on end-to-end images/s."""
    return 1.0 / (1.0 / p + 1.0 / i)


def measure(spec, pre, sessions, tensor, refsets, bs: int, decode_workers: int, repeats: int):
    """Inference-only rate on all cores (with its top-5 predictions) and end-to-end rates
    (``sessions``: the end-to-end one, and one with a thread per core)."""
    session, all_cores = sessions
    logits: list[np.ndarray] = []

    def infer_only() -> None:
        logits.clear()
        for i in range(0, len(tensor), bs):
            logits.append(all_cores.run(tensor[i : i + bs]))

    def e2e(refs) -> None:
        for _ in classify_stream(
            refs, spec, session, pre, batch_size=bs, decode_workers=decode_workers, progress=False
        ):
            pass

    ceiling = len(tensor) / median_time(infer_only, repeats)
    idx, _ = softmax_topk(np.concatenate(logits), 5)
    originals, q75 = refsets
    return {
        "ceiling": ceiling,
        "top5": idx,
        "top1_pred": idx[:, 0],
        "jpeg": len(originals) / median_time(lambda: e2e(originals), repeats),
        "q75": len(q75) / median_time(lambda: e2e(q75), repeats),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["efficientnet_lite0"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[16, 32])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--naive-repeats", type=int, default=1)
    parser.add_argument(
        "--backends",
        nargs="+",
        default=None,
        help="backend/precision pairs to run (e.g. onnxruntime/fp32); default: all available",
    )
    args = parser.parse_args()
    files = sample_files()
    truth = np.array([labels()[f.name] for f in files])
    cores = os.cpu_count() or 1
    decode_workers, infer_threads = split_threads(cores, 1.5, 10.0)
    folder = tempfile.mkdtemp(prefix="smolql-bench-")
    con = smolql.connect(os.path.join(folder, "b.duckdb"))
    con.create_catalog("bench", str(SAMPLE), progress=False)
    q75 = [
        ImageRef(i, p, 1)
        for i, p in con.duckdb.execute(
            "SELECT image_id, path FROM smolql.renditions WHERE spec = '161:jpeg:75'"
            " ORDER BY image_id"
        ).fetchall()
    ]
    originals = [ImageRef(i, str(f), 1) for i, f in enumerate(files, start=1)]
    print(
        f"{host_line()}; {len(files)} images: {decode_workers} decode + {infer_threads} "
        f"inference threads; median of {args.repeats}"
    )
    for name in (n for n in backends() if n not in available()):
        print(f"skipped backend {name}: {backends()[name].unavailable_reason()}")
    for model in args.models:
        spec = get_model(model)
        pre = Preprocessor(spec.transform)
        tensor = np.concatenate([b.tensor.copy() for b in stream_batches(originals, pre)])
        p_jpeg = preprocess_rate(originals, pre, cores, args.repeats)
        p_q75 = preprocess_rate(q75, pre, cores, args.repeats)
        print(
            f"\n== {model} ({spec.transform.crop} px): P jpeg {p_jpeg:.0f}/s, P q75 {p_q75:.0f}/s"
        )
        print(
            f"{'backend':<18}{'batch':>6}{'I/s':>7}{'jpeg/s':>8}{'bound':>7}{'of bnd':>7}"
            f"{'of I':>6}{'q75/s':>7}{'bound':>7}{'of bnd':>7}{'of I':>6}"
            f"{'top-1':>7}{'top-5':>7}{'agree':>7}"
        )
        reference = None
        for backend_name, backend in available().items():
            for precision in backend.capabilities().precisions:
                if args.backends and f"{backend_name}/{precision}" not in args.backends:
                    continue
                for bs in args.batch_sizes:
                    if precision in backend.capabilities().calibrated:
                        continue  # int8 needs calibration images: benchmarks/int8.py
                    session = backend.open(spec, precision, infer_threads, bs)
                    all_cores = (
                        session
                        if infer_threads == cores
                        else backend.open(spec, precision, cores, bs)
                    )
                    row = measure(
                        spec,
                        pre,
                        (session, all_cores),
                        tensor,
                        (originals, q75),
                        bs,
                        decode_workers,
                        args.repeats,
                    )
                    session.close()
                    if reference is None:
                        reference = row["top1_pred"]
                    agree = (row["top1_pred"] == reference).mean()
                    idx = row["top5"]
                    top1 = (idx[:, 0] == truth).mean()
                    top5 = (idx == truth[:, None]).any(axis=1).mean()
                    i, jpeg, small = row["ceiling"], row["jpeg"], row["q75"]
                    b_jpeg, b_q75 = bound(p_jpeg, i), bound(p_q75, i)
                    print(
                        f"{backend_name + '/' + precision:<18}{bs:>6}{i:>7.0f}{jpeg:>8.1f}"
                        f"{b_jpeg:>7.0f}{jpeg / b_jpeg:>7.2f}{jpeg / i:>6.2f}{small:>7.1f}"
                        f"{b_q75:>7.0f}{small / b_q75:>7.2f}{small / i:>6.2f}"
                        f"{top1:>7.3f}{top5:>7.3f}{agree:>7.3f}"
                    )
        naive_rate, naive_pred = naive_peer(spec, files, args.naive_repeats)
        print(
            f"{'naive peer (torch eager fp32, batch 32, 2 loader workers)':<60}"
            f"{naive_rate:>8.1f}/s  top-1 {(naive_pred == truth).mean():.3f}"
        )
    con.close()
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
