"""The Ray executor against the local executor, and two Ray nodes against one, in one run.

Runs itself inside a private network namespace (``unshare --net``; root) so that every Ray node
is 127.0.0.1, and starts/stops its own clusters with ``ray start`` / ``ray stop``:

* overhead: one node with this machine's CPUs vs the local executor, same 500 images;
* scale-out: two nodes with 1 CPU each vs one node with 1 CPU (the nodes share one machine,
  the cores are real).

    python benchmarks/scaleout.py [--repeats 3]
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
import warnings
from pathlib import Path

from common import SAMPLE, host_line

BIN = Path(sys.executable).parent
MARK = "SMOLQL_SCALEOUT_INSIDE"


def ray(*args: str, core: int | None = None) -> None:
    pin = ["taskset", "-c", str(core)] if core is not None else []
    subprocess.run([*pin, str(BIN / "ray"), *args], check=True, capture_output=True, timeout=300,
                   env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})  # fmt: skip


def cluster(nodes: int, cpus: int, pin: bool) -> None:
    """``nodes`` Ray nodes of ``cpus`` CPUs; with ``pin``, node i's processes (raylet, workers)
    run on core i only, so that a 1-CPU node has one real core."""
    ray("start", "--head", "--node-ip-address=127.0.0.1", "--port=6379", f"--num-cpus={cpus}",
        "--object-store-memory=200000000", "--include-dashboard=false",
        "--disable-usage-stats", core=0 if pin else None)  # fmt: skip
    for i in range(1, nodes):
        ray("start", "--address=127.0.0.1:6379", f"--num-cpus={cpus}",
            "--object-store-memory=200000000", "--disable-usage-stats",
            core=i if pin else None)  # fmt: skip


def rate(con, sql: str, repeats: int) -> tuple[float, list[float]]:
    start = time.perf_counter()
    con.sql(sql)  # warm: workers started, engine open
    print(f"  first query (starts the workers): {time.perf_counter() - start:.2f} s", flush=True)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        n = len(con.sql(sql))
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates), rates


def inside(repeats: int) -> None:
    import ray as ray_module

    import smolql

    warnings.simplefilter("ignore")
    folder = tempfile.mkdtemp(prefix="smolql-scale-")
    con = smolql.connect(os.path.join(folder, "s.duckdb"), cache="off")
    con.create_catalog("photos", str(SAMPLE), renditions=(), progress=False)
    sql = "SELECT id, classify(image).label FROM photos"
    rows = {}
    rows["local executor (2 cores)"] = rate(con, sql, repeats)
    plan = next(x.strip() for x in con.sql("EXPLAIN " + sql)["plan"].to_pylist() if "plan:" in x)
    con.sql("SET smolql.executor = 'ray'")
    os.environ["SMOLQL_RAY_ADDRESS"] = "127.0.0.1:6379"
    for name, nodes, cpus, pin in (
        ("ray, 1 node x 2 CPUs", 1, os.cpu_count() or 2, False),
        ("ray, 1 node x 1 CPU", 1, 1, True),
        ("ray, 2 nodes x 1 CPU", 2, 1, True),
    ):
        cluster(nodes, cpus, pin)
        try:
            rows[name] = rate(con, sql, repeats)
            if nodes == 1 and not pin:  # Ray Data's map_batches (an actor pool per query)
                os.environ["SMOLQL_RAY_MODE"] = "data"
                rows["ray data map_batches, 1 node x 2 CPUs"] = rate(con, sql, repeats)
                del os.environ["SMOLQL_RAY_MODE"]
        finally:
            ray_module.shutdown()
            ray("stop")
    con.close()
    shutil.rmtree(folder, ignore_errors=True)
    print(host_line())
    print(f"plan: {plan}")
    width = max(map(len, rows))
    for name, (r, runs) in rows.items():
        print(f"{name:<{width}}  {r:7.1f} img/s  [{', '.join(f'{x:.0f}' for x in runs)}]")
    local = rows["local executor (2 cores)"][0]
    print(f"overhead: ray 1 node / local = {rows['ray, 1 node x 2 CPUs'][0] / local:.2f}")
    data = rows["ray data map_batches, 1 node x 2 CPUs"][0]
    print(f"ray data map_batches / local = {data / local:.2f}")
    one, two = rows["ray, 1 node x 1 CPU"][0], rows["ray, 2 nodes x 1 CPU"][0]
    print(f"scale-out: 2 nodes / 1 node = {two / one:.2f}x  (median of {repeats}, 500 images)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if os.environ.get(MARK):
        inside(args.repeats)
        return
    script = f"ip link set lo up && {MARK}=1 exec {sys.executable} {' '.join(sys.argv)}"
    sys.exit(subprocess.run(["unshare", "--net", "bash", "-c", script]).returncode)


if __name__ == "__main__":
    main()
