"""The Ray executor on a real two-node Ray cluster on this machine (issue 17, first part):
same rows as the local executor, also when an inference worker is killed mid-query.

The cluster runs in a private network namespace (``unshare --net``, then ``ip link set lo
up``), where every node is 127.0.0.1 and nothing binds the machine's own address: a head node
and a second node, each started by ``ray start`` as separate processes with one CPU and a
bounded object store, stopped with ``ray stop`` when the driver ends (it is our cluster: the
namespace holds nothing else). The driver classifies a catalog through the local executor, then
through Ray, and compares every row.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import real_jpegs

DRIVER = """
import sys, warnings, smolql
warnings.simplefilter("ignore")
con = smolql.connect(sys.argv[1], cache="off")
con.create_catalog("photos", sys.argv[2], renditions=(), progress=False)
sql = ("SELECT file, classify(image).label AS label, classify(image).class_index AS c,"
       " round(classify(image).score, 4) AS s FROM photos ORDER BY file")
local = con.sql(sql).to_pylist()
import ray
con.sql("SET smolql.executor = 'ray'")
remote = con.sql(sql).to_pylist()
nodes = [n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]]
print("nodes:", len(nodes), sorted(set(nodes)))
print("rows:", len(local), "identical:", local == remote)
explain = con.sql("EXPLAIN " + sql)["plan"].to_pylist()
print("explain:", [x.strip() for x in explain if "xecutor" in x])
top = "SELECT count(*) AS n FROM photos WHERE classify_topk(image, 3)[3].score < 1"
print("topk:", con.sql(top).to_pylist())

# A worker process killed mid-query (SIGKILL to one inference actor of this cluster: a process
# titled ray::MapWorker in this network namespace): Ray restarts it and retries its batches.
import os, signal, threading, time
con.sql("SET smolql.cache = on")
killed = []
def kill_one_actor():
    me = os.readlink("/proc/self/ns/net")
    deadline = time.time() + 120
    while time.time() < deadline and not killed:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().decode(errors="replace")
                if cmd.startswith("ray::MapWorker") and os.readlink(f"/proc/{pid}/ns/net") == me:
                    time.sleep(0.5)  # let it take a batch
                    os.kill(int(pid), signal.SIGKILL)
                    killed.append(pid)
                    return
            except OSError:
                continue
        time.sleep(0.05)
killer = threading.Thread(target=kill_one_actor)
killer.start()
after_kill = con.sql(sql).to_pylist()
killer.join()
rows = con.duckdb.execute("SELECT count(*), count(DISTINCT hash) FROM smolql.udf_cache").fetchall()
print("killed:", len(killed), "identical:", after_kill == local, "cache rows, distinct:", rows[0])
"""

CLUSTER = """
set -e
ip link set lo up
export RAY_USAGE_STATS_ENABLED=0
"$BIN/ray" start --head --node-ip-address=127.0.0.1 --port=6379 --num-cpus=1 \\
    --object-store-memory=200000000 --include-dashboard=false --disable-usage-stats \\
    >"$LOGS/head.log" 2>&1
trap '"$BIN/ray" stop >/dev/null 2>&1' EXIT
"$BIN/ray" start --address=127.0.0.1:6379 --num-cpus=1 --object-store-memory=200000000 \\
    --disable-usage-stats >"$LOGS/node.log" 2>&1
SMOLQL_RAY_ADDRESS=127.0.0.1:6379 "$BIN/python" "$@"
"""


def _can_run_a_cluster() -> str | None:
    try:
        import ray  # noqa: F401
    except ImportError:
        return "Ray is not installed (pip install 'ray[data]==2.60.0'; .ci/run installs it)"
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return "a private network namespace needs root and unshare"
    return None


@pytest.mark.slow
def test_the_ray_executor_gives_the_local_executors_rows_on_two_nodes(tmp_path: Path):
    reason = _can_run_a_cluster()
    if reason:
        pytest.skip(reason)
    folder = tmp_path / "images"
    folder.mkdir()
    files = real_jpegs()
    for f in files:
        shutil.copy2(f, folder / f.name)
    (tmp_path / "drive.py").write_text(textwrap.dedent(DRIVER))
    (tmp_path / "cluster.sh").write_text(textwrap.dedent(CLUSTER))
    bin_dir = str(Path(sys.executable).parent)
    proc = subprocess.run(
        ["unshare", "--net", "bash", str(tmp_path / "cluster.sh"), str(tmp_path / "drive.py"),
         str(tmp_path / "r.duckdb"), str(folder)],
        capture_output=True, text=True, timeout=900,
        env={**os.environ, "BIN": bin_dir, "LOGS": str(tmp_path)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "nodes: 2 ['127.0.0.1']" in out
    assert f"rows: {len(files)} identical: True" in out
    assert "'executor: ray', 'Executor ray: Ray cluster at 127.0.0.1:6379: 2 nodes, 2 CPUs'" in out
    assert f"topk: [{{'n': {len(files)}}}]" in out
    n = len({f.read_bytes() for f in files})  # the cache is keyed by content
    assert f"killed: 1 identical: True cache rows, distinct: ({n}, {n})" in out


def test_the_executor_is_chosen_by_environment_cli_and_connect(monkeypatch, tmp_path):
    import smolql
    from smolql.cli import main

    monkeypatch.setenv("SMOLQL_EXECUTOR", "ray")
    with smolql.connect(":memory:") as con:
        assert con.settings.executor == "ray"
    with smolql.connect(":memory:", executor="local") as con:
        assert con.settings.executor == "local"
    monkeypatch.delenv("SMOLQL_EXECUTOR")
    db = str(tmp_path / "e.duckdb")
    assert (
        main(
            [
                "--executor",
                "ray",
                "query",
                "SELECT current_setting('threads') > 0 AS ok",
                "--db",
                db,
            ]
        )
        == 0
    )
    assert main(["--executor", "rya", "query", "SELECT 1", "--db", db]) == 1
