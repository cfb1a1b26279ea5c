"""Preprocessing throughput over the 500 sample JPEGs, 2 threads, images/s (median of runs).

    python benchmarks/preprocess.py [--repeats 5] [--workers 2]

(a) naive: PIL + torchvision Resize(256), CenterCrop(224), ToTensor, Normalize, DataLoader
    with 2 workers; (b) full decode + SmolQL's fused resize/normalise; (c) centre-crop partial
decode + fused; (d) DCT 1/2-scaled decode + fused; (e) the 161 px renditions (JPEG q75, q95,
PNG) + fused; (f) the partial decodes of (c) alone, the floor no preprocessing can beat.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from common import median_rate, report, sample_files
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

import smolql
from smolql.ops.loader import stream_batches
from smolql.ops.pipeline import ImageRef, Preprocessor
from smolql.ops.transform import IMAGENET_MEAN, IMAGENET_STD, Transform

TRANSFORM = Transform(256, 224, IMAGENET_MEAN, IMAGENET_STD)
BATCH = 32


class NaiveDataset(Dataset):
    def __init__(self, files: list[Path]) -> None:
        self.files = files
        self.tf = T.Compose(
            [
                T.Resize(256),
                T.CenterCrop(224),
                T.ToTensor(),
                T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.files[i]) as im:
            return self.tf(im.convert("RGB"))


def naive(files: list[Path], workers: int):
    loader = DataLoader(NaiveDataset(files), batch_size=BATCH, num_workers=workers)

    def run() -> int:
        return sum(len(batch) for batch in loader)

    return run


def smolql_stream(refs: list[ImageRef], pre: Preprocessor, workers: int):
    def run() -> int:
        return sum(
            len(b.keys) for b in stream_batches(refs, pre, batch_size=BATCH, workers=workers)
        )

    return run


def decode_only(refs: list[ImageRef], pre: Preprocessor, workers: int):
    """Read, plan and decode exactly what (c) decodes, and nothing else."""

    def one(ref: ImageRef) -> None:
        with open(ref.path, "rb") as f:
            data = f.read()
        pre.plan(data, ref).decode.apply(data)

    def run() -> int:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, refs))
        return len(refs)

    return run


def rendition_refs(folder: str, files: list[Path]) -> dict[str, list[ImageRef]]:
    """Build the catalog's 161 px renditions once (not timed) and point refs at them."""
    con = smolql.connect(os.path.join(folder, "bench.duckdb"))
    con.create_catalog("bench", str(files[0].parent), progress=False)
    rows = con.sql(
        "SELECT spec, image_id, path FROM smolql.renditions ORDER BY image_id"
    ).to_pylist()
    con.close()
    refs: dict[str, list[ImageRef]] = {}
    for r in rows:
        refs.setdefault(r["spec"], []).append(ImageRef(r["image_id"], r["path"], orientation=1))
    return refs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    files = sample_files()
    refs = [ImageRef(i, str(f), orientation=1) for i, f in enumerate(files)]
    folder = tempfile.mkdtemp(prefix="smolql-bench-")
    try:
        renditions = rendition_refs(folder, files)
        partial = Preprocessor(TRANSFORM)
        cases = [
            ("(a) naive PIL+torchvision", naive(files, args.workers)),
            (
                "(b) full decode + fused",
                smolql_stream(refs, Preprocessor(TRANSFORM, partial=False), args.workers),
            ),
            ("(c) partial decode + fused", smolql_stream(refs, partial, args.workers)),
            (
                "(d) DCT 1/2 decode + fused",
                smolql_stream(refs, Preprocessor(TRANSFORM, scale_denom=2), args.workers),
            ),
            *[
                (f"(e) {spec} + fused", smolql_stream(r, partial, args.workers))
                for spec, r in sorted(renditions.items())
            ],
            ("(f) partial decode only", decode_only(refs, partial, args.workers)),
        ]
        print(
            f"{len(files)} images, {args.workers} threads, batch {BATCH}, median of {args.repeats}"
        )
        rows = [(name, *median_rate(run, args.repeats)) for name, run in cases]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    report(rows, baseline="(a) naive PIL+torchvision")
    rates = {name: rate for name, rate, _ in rows}
    c, f = rates["(c) partial decode + fused"], rates["(f) partial decode only"]
    print(f"\n(c) reaches {c / f:.2f} of (f), the partial-decode floor")
    print(f"(c) / (a) = {c / rates['(a) naive PIL+torchvision']:.2f}x (target >= 3.0)")
    q75 = rates.get("(e) 161:jpeg:75 + fused", float("nan"))
    print(f"(e, q75) / (a) = {q75 / rates['(a) naive PIL+torchvision']:.2f}x (target >= 7)")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
