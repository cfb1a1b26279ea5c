"""The driver bound: how many result rows per second the driver takes into DuckDB.

With the Ray executor, inference scales with the cluster but every result row still lands on
the driver: the stage reads it, the cache stores it, the stage table and the final query use
it. This feeds the driver synthetic result batches through a registered executor that answers
at once (so only the driver's work is timed) over a catalog of N real (small, generated) JPEG
files, against a baseline of plain DuckDB inserting the same number of result rows from Arrow.
From the driver's rate and a node's images/s it prints the cluster size at which the driver,
not inference, becomes the limit.

    python benchmarks/driver.py [--images 10000] [--node-rate 58] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence

import cv2
import duckdb
import numpy as np
import pyarrow as pa
from common import host_line

import smolql
from smolql.executor.base import RESULTS
from smolql.executor.registry import register_executor

CHUNK = 1024


class Instant:
    """An executor whose results cost nothing: one fixed top-1 answer per reference."""

    name = "instant"

    def describe(self, address: str | None = None) -> str:
        return "synthetic results (benchmarks/driver.py)"

    def run(self, plan, refs: Sequence, *, k=1, progress=None, address=None) -> Iterator:
        top = {"class_index": 0, "label": plan.spec.labels[0], "score": 0.5}
        topk = pa.array([[top] * k] * CHUNK, RESULTS.field("topk").type)
        empty = pa.nulls(CHUNK, pa.string())
        for start in range(0, len(refs), CHUNK):
            n = min(CHUNK, len(refs) - start)
            index = pa.array(np.arange(start, start + n, dtype=np.int64))
            cols = [index, topk.slice(0, n), empty.slice(0, n), empty.slice(0, n)]
            yield pa.RecordBatch.from_arrays(cols, schema=RESULTS)


def make_images(folder: str, n: int) -> None:
    """``n`` distinct small JPEGs (48 to 160 px a side)."""
    rng = np.random.default_rng(0)
    for i in range(n):
        h, w = (int(x) for x in rng.integers(48, 161, 2))
        img = np.zeros((h, w, 3), np.uint8)
        img[:] = rng.integers(0, 256, 3, dtype=np.uint8)
        img[: 1 + i % h, : 1 + (i // h) % w] = 255 - img[0, 0]  # distinct content
        cv2.imwrite(os.path.join(folder, f"{i:07d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 80])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--node-rate", type=float, default=58.0, help="one node's images/s")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    register_executor(Instant(), replace=True)
    folder = tempfile.mkdtemp(prefix="smolql-driver-")
    try:
        os.mkdir(os.path.join(folder, "img"))
        make_images(os.path.join(folder, "img"), args.images)
        con = smolql.connect(os.path.join(folder, "d.duckdb"))
        con.create_catalog("big", os.path.join(folder, "img"), renditions=(), progress=False)
        con.sql("SET smolql.executor = 'instant'")
        sql = "SELECT id, classify(image).label FROM big"
        con.sql(sql)  # warm: model spec, plan
        smol = []
        for _ in range(args.repeats):
            con.duckdb.execute("DELETE FROM smolql.udf_cache")
            start = time.perf_counter()
            n = len(con.sql(sql))
            smol.append(n / (time.perf_counter() - start))
        raw = baseline(args.images, args.repeats)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(host_line())
    s, r = statistics.median(smol), statistics.median(raw)
    print(f"{args.images} images, median of {args.repeats}:")
    print(f"  smolql driver (stage + cache + final query)  {s:10.0f} rows/s  {runs(smol)}")
    print(f"  duckdb insert of the result rows (baseline)  {r:10.0f} rows/s  {runs(raw)}")
    print(f"  ratio smolql / baseline: {s / r:.3f}")
    print(
        f"driver bound: at {args.node_rate:.0f} images/s per node the driver is the limit from"
        f" about {s / args.node_rate:.0f} nodes"
    )


def baseline(n: int, repeats: int) -> list[float]:
    """Plain DuckDB: the same number of result rows (hash, top-1 list) inserted from Arrow."""
    top = pa.array([[{"class_index": 0, "label": "tench", "score": 0.5}]] * n)
    rows = pa.table({"hash": [f"{i:064x}" for i in range(n)], "topk": top})
    con = duckdb.connect()
    con.register("rows", rows)
    out = []
    for _ in range(repeats):
        con.execute("CREATE OR REPLACE TABLE t (hash VARCHAR, topk STRUCT(class_index INTEGER,"
                    " label VARCHAR, score DOUBLE)[])")  # fmt: skip
        start = time.perf_counter()
        con.execute("INSERT INTO t SELECT * FROM rows")
        out.append(n / (time.perf_counter() - start))
    return out


def runs(rates: list[float]) -> str:
    return "[" + ", ".join(f"{x:.0f}" for x in rates) + "]"


if __name__ == "__main__":
    main()
