"""What one `smolql query` costs in a fresh process: wall time and peak memory of a fully cached
classification and of a query that fails on an unknown model, against plain `SELECT 1` (the
baseline: starting Python, SmolQL and DuckDB) in the same run, and whether an inference runtime
was loaded.

    python benchmarks/cli_cost.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from common import sample_files

import smolql

# The child reports its own peak RSS (VmHWM: ru_maxrss would carry over the parent's peak
# across fork and exec) and which inference runtimes it imported.
CHILD = """
import sys
from smolql.cli import main
main(sys.argv[1:])
heavy = [m for m in ("torch", "onnxruntime", "openvino") if m in sys.modules]
hwm = next(ln.split()[1] for ln in open("/proc/self/status") if ln.startswith("VmHWM"))
print("COST", hwm, ",".join(heavy) or "-", file=sys.stderr)
"""

# Every query runs with the engine the cache was filled with.
ENGINE = "SET smolql.backend = 'onnxruntime'; "
QUERIES = {
    "SELECT 1 (baseline)": ENGINE + "SELECT 1",
    "cached classification": ENGINE + "SELECT file, classify(image).label FROM photos",
    "unknown model (error)": ENGINE
    + "SELECT classify(image, 'efficientnet_lite9').label FROM photos",
}


def run(db: str, sql: str) -> tuple[float, float, str]:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, "--db", db, "query", sql],
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("COST"))
    _, kb, heavy = line.split()
    return seconds, int(kb) / 1024, heavy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="smolql-bench-")
    try:
        images = os.path.join(folder, "images")
        os.makedirs(images)
        for f in sample_files()[:20]:
            shutil.copy(f, images)
        db = os.path.join(folder, "p.duckdb")
        with smolql.connect(db) as con:
            con.create_catalog("photos", images, renditions=(), progress=False)
            con.sql(QUERIES["cached classification"])  # fills the cache
        rows: dict[str, list] = {}
        for _ in range(args.repeats):  # round robin: a slow spell hits every query alike
            for name, sql in QUERIES.items():
                rows.setdefault(name, []).append(run(db, sql))
        base = statistics.median(s for s, _, _ in rows["SELECT 1 (baseline)"])
        print(f"{'query':<24}{'median s':>9}{'vs base':>9}{'peak MB':>9}  runtimes loaded")
        for name, runs in rows.items():
            seconds = statistics.median(s for s, _, _ in runs)
            peak = statistics.median(mb for _, mb, _ in runs)
            print(f"{name:<24}{seconds:9.2f}{seconds / base:8.2f}x{peak:9.0f}  {runs[0][2]}")
        print(f"(median of {args.repeats}; 20 sample images; fresh process per run)")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
