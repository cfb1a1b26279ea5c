"""A fully cached classification query against DuckDB answering the same question from an
already materialised result table, in one run; and what the freshness check costs.

The catalogs: the 500 sample images, and with `--big N` a second one of N files: copies of
the 500 sample images re-encoded at 128 pixels, in folders of 500 (distinct regular files
whose 500 distinct contents one pass of inference fills the cache for). For each catalog:
the first query (it computes), then medians of the repeated query, of DuckDB selecting the
same column from a table holding the result, of a cached query that must verify every file
again (the watcher told to forget: what a new process pays once), and of the freshness
check's parts in the steady state (reading the kernel's change events; DuckDB matching the
image values to the files vouched for: the pre-filter joined to them, less the pre-filter
alone).

    python benchmarks/cached.py [--repeats 15] [--big 100000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import warnings

from common import SAMPLE, host_line, median_seconds, sample_files

SQL = "SELECT classify(image).label AS label FROM {}"
DRIVER = "SELECT count(*) FROM (SELECT DISTINCT image AS img FROM {}) d"
MATCH = (  # as SmolQL's stage query joins them
    "SELECT count(CASE WHEN w.path = d.img.path AND w.hash = d.img.hash THEN 1 END)"
    " FROM (SELECT DISTINCT image AS img FROM {}) d"
    " LEFT JOIN __bench_verified w ON w.key = hash(d.img.path, d.img.hash)"
)


def measure(con, catalog: str, repeats: int) -> dict[str, float]:
    from smolql.watch import WATCHER

    sql = SQL.format(catalog)
    start = time.perf_counter()
    result = con.sql(sql)
    first = time.perf_counter() - start
    cached = median_seconds(lambda: con.sql(sql), repeats, warmup=1)

    def verify() -> None:
        WATCHER.forget()
        con.sql(sql)

    verifying = median_seconds(verify, max(3, repeats // 3))
    con.sql(sql)
    con.duckdb.register("__result", result)
    con.duckdb.execute("CREATE OR REPLACE TEMP TABLE materialised AS SELECT * FROM __result")
    con.duckdb.unregister("__result")
    duck = median_seconds(
        lambda: con.duckdb.execute("SELECT label FROM materialised").to_arrow_table(), repeats
    )
    drain = median_seconds(WATCHER.verified, repeats)
    con.duckdb.register("__bench_verified", WATCHER.verified())
    alone, match = (
        median_seconds(lambda q=q: con.duckdb.execute(q.format(catalog)).fetchall(), repeats, 1)
        for q in (DRIVER, MATCH)
    )
    return {
        "rows": result.num_rows,
        "first": first,
        "cached": cached,
        "duckdb": duck,
        "verifying": verifying,
        "freshness": drain + max(0.0, match - alone),
    }


def copies(folder: str, n: int) -> str:
    """``n`` files: the sample re-encoded at 128 pixels, copied into folders of 500."""
    from PIL import Image

    files = sample_files()
    small = os.path.join(folder, "small")
    os.makedirs(small)
    for f in files:
        with Image.open(f) as im:
            im = im.convert("RGB")
            im.thumbnail((128, 128))
            im.save(os.path.join(small, f.name), quality=85)
    big = os.path.join(folder, "big")
    for i in range(n):
        sub = os.path.join(big, f"{i // len(files):04d}")
        if i % len(files) == 0:
            os.makedirs(sub)
        name = files[i % len(files)].name
        shutil.copyfile(os.path.join(small, name), os.path.join(sub, name))
    return big


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--big", type=int, default=0, help="files of a second catalog (0: none)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import smolql

    folder = tempfile.mkdtemp(prefix="smolql-cached-")
    try:
        con = smolql.connect(os.path.join(folder, "c.duckdb"))
        con.create_catalog("sample", str(SAMPLE), renditions=(), progress=False)
        catalogs = ["sample"]
        if args.big:
            big = copies(folder, args.big)
            start = time.perf_counter()
            con.create_catalog("big", big, renditions=(), progress=False)
            took = time.perf_counter() - start
            print(f"ingest of {args.big:,} files: {took:.1f} s")
            catalogs.append("big")
        rows = {name: measure(con, name, args.repeats) for name in catalogs}
        con.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"{host_line()}; medians of {args.repeats}")
    head = (
        f"{'rows':>8} {'first s':>8} {'cached ms':>10} {'DuckDB ms':>10} {'ratio':>6}"
        f" {'first/cached':>13} {'freshness ms':>13} {'µs/image':>9} {'share':>6} {'verify ms':>10}"
        f" {'µs/image':>9}"
    )
    print(head)
    for r in rows.values():
        print(
            f"{r['rows']:8,} {r['first']:8.2f} {1000 * r['cached']:10.2f}"
            f" {1000 * r['duckdb']:10.2f} {r['cached'] / r['duckdb']:6.1f}"
            f" {r['first'] / r['cached']:13.0f} {1000 * r['freshness']:13.2f}"
            f" {1e6 * r['freshness'] / r['rows']:9.3f}"
            f" {100 * r['freshness'] / r['cached']:5.0f}% {1000 * r['verifying']:10.1f}"
            f" {1e6 * (r['verifying'] - r['cached']) / r['rows']:9.1f}"
        )
    print(
        "ratio: the cached query's time over DuckDB selecting the result column from a table"
        " that holds it (target <= 2); freshness: reading change events plus DuckDB matching"
        " image values to vouched-for files (the join's own time); share: its part of the"
        " cached query;"
        " verify: a cached query that checks every file again (a new process's first), and"
        " its extra cost per image"
    )


if __name__ == "__main__":
    main()
