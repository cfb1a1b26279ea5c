"""Scale: N varied small images (generated), at N = 10,000 and 100,000 by default.

The generator writes JPEGs (crops of the sample photographs at 48-320 px, quality 50-95,
4:4:4 / 4:2:2 / 4:2:0, one in five progressive), PNGs (one in seven) and a few broken files
(one in two hundred: truncated). Each step runs in its own process, whose peak memory (VmHWM)
is reported: ingest (rate), `SELECT count(*) ... WHERE classify(image).label = ...` (the first
run infers every image), `con.stream(...)` over all rows (cached), the repeated count query (in a
new process, which checks every file once; then again in that process, where the kernel's
change events vouch for them), and the cache's size.

    python benchmarks/scale.py [--sizes 10000 100000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

from common import host_line, sample_files

STEP = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
import smolql
db, step, folder = sys.argv[1:4]
out = {}
start = time.perf_counter()
with smolql.connect(db) as con:
    if step == "ingest":
        s = con.create_catalog("big", folder, renditions=(), progress=False)
        out.update(images=s.images, skipped=s.skipped)
    elif step in ("count", "repeat"):
        q = "SELECT count(*) AS n FROM big WHERE classify(image).label = 'tench'"
        out["n"] = con.sql(q)["n"][0].as_py()
        if step == "repeat":  # once more in this process: its files are vouched for now
            again = time.perf_counter()
            assert con.sql(q)["n"][0].as_py() == out["n"]
            out["again_s"] = time.perf_counter() - again
    elif step == "stream":
        rows = 0
        for batch in con.stream("SELECT file, classify(image).label AS l FROM big"):
            rows += batch.num_rows
        out["rows"] = rows
    elif step == "cache":
        q = "SELECT count(*) FROM smolql.udf_cache"
        out["cache_rows"] = con.duckdb.execute(q).fetchall()[0][0]
out["seconds"] = time.perf_counter() - start
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
out["peak_mb"] = int(hwm) / 1024
print(json.dumps(out))
"""


STEPS = ("ingest", "count", "stream", "repeat", "cache")


def _write(job: tuple[str, int, int, list[str]]) -> None:
    from PIL import Image

    folder, start, count, sources = job
    rng = random.Random(start)
    photos = [Image.open(p).convert("RGB") for p in rng.sample(sources, 8)]
    for i in range(start, start + count):
        im = rng.choice(photos)
        w, h = rng.randint(48, 320), rng.randint(48, 320)
        x, y = rng.randint(0, max(0, im.width - w)), rng.randint(0, max(0, im.height - h))
        crop = im.crop((x, y, x + w, y + h))
        sub = os.path.join(folder, f"{i // 1000:03d}")
        os.makedirs(sub, exist_ok=True)
        buf = io.BytesIO()
        if i % 7 == 3:
            crop.save(buf, "PNG")
            name = f"{i:06d}.png"
        else:
            crop.save(buf, "JPEG", quality=rng.randint(50, 95), subsampling=rng.choice((0, 1, 2)),
                      progressive=rng.random() < 0.2)  # fmt: skip
            name = f"{i:06d}.jpg"
        data = buf.getvalue()
        if i % 200 == 17:
            data = data[: len(data) // 3]  # broken
        with open(os.path.join(sub, name), "wb") as f:
            f.write(data)


def generate(folder: str, n: int) -> float:
    sources = [str(p) for p in sample_files()]
    chunk = 2000
    jobs = [(folder, s, min(chunk, n - s), sources) for s in range(0, n, chunk)]
    start = time.perf_counter()
    with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(_write, jobs))
    os.sync()  # the ingest reads files at rest, not against the generator's writeback
    return time.perf_counter() - start


def step(db: str, name: str, folder: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", STEP, db, name, folder], capture_output=True,
                          text=True, check=True)  # fmt: skip
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--keep", help="keep the generated images and databases here")
    parser.add_argument("--steps", nargs="+", default=list(STEPS), choices=STEPS)
    args = parser.parse_args()
    root = args.keep or tempfile.mkdtemp(prefix="smolql-scale-")
    results = {}
    try:
        for n in args.sizes:
            folder, db = os.path.join(root, f"img{n}"), os.path.join(root, f"s{n}.duckdb")
            made = generate(folder, n)
            r = {"generate_s": made}
            for name in args.steps:
                r[name] = step(db, name, folder)
                print(n, name, r[name], flush=True)
            r["db_mb"] = os.path.getsize(db) / 1e6
            results[n] = r
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(host_line())
    if set(args.steps) == set(STEPS):
        table(results)
    summary(results, [s for s in args.steps if s != "cache"])


def table(results: dict) -> None:
    print(f"{'N':>8} {'ingest img/s':>12} {'MB':>6} {'count s':>8} {'MB':>6} {'stream s':>9}"
          f" {'MB':>6} {'repeat s':>9} {'MB':>6} {'again s':>8} {'cache rows':>10}"
          f" {'db MB':>6}")  # fmt: skip
    for n, r in results.items():
        i, c, s, p = r["ingest"], r["count"], r["stream"], r["repeat"]
        print(f"{n:8,} {i['images'] / i['seconds']:12.0f} {i['peak_mb']:6.0f} {c['seconds']:8.1f}"
              f" {c['peak_mb']:6.0f} {s['seconds']:9.2f} {s['peak_mb']:6.0f} {p['seconds']:9.2f}"
              f" {p['peak_mb']:6.0f} {p['again_s']:8.3f} {r['cache']['cache_rows']:10,}"
              f" {r['db_mb']:6.1f}")  # fmt: skip


def summary(results: dict, steps: list[str]) -> None:
    if len(results) >= 2:
        small, big = (results[n] for n in sorted(results)[:1] + sorted(results)[-1:])
        for name in steps:
            print(f"peak memory {name}: +{big[name]['peak_mb'] - small[name]['peak_mb']:.0f} MB"
                  f" from {min(results):,} to {max(results):,} images (target +300)")  # fmt: skip
        if "ingest" not in steps:
            return
        rate = [r["ingest"]["images"] / r["ingest"]["seconds"] for r in (small, big)]
        print(
            f"ingest rate at {max(results):,} / at {min(results):,}: {rate[1] / rate[0]:.2f}"
            " (target >= 0.8)"
        )


if __name__ == "__main__":
    main()
