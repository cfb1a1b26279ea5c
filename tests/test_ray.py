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
import os, sys, warnings, smolql
warnings.simplefilter("ignore")
con = smolql.connect(sys.argv[1], cache="off")
con.create_catalog("photos", sys.argv[2], renditions=(), progress=False)
sql = ("SELECT file, classify(image).label AS label, classify(image).class_index AS c,"
       " round(classify(image).score, 4) AS s FROM photos ORDER BY file")
local = con.sql(sql).to_pylist()
import ray
con.create_catalog("loc", sys.argv[3], renditions=("96:jpeg:80",), progress=False)
con.sql("SET smolql.executor = 'ray'")
remote = con.sql(sql).to_pylist()
analyze = con.sql("EXPLAIN ANALYZE " + sql)["plan"].to_pylist()  # both workers are up now
print(*analyze, sep=chr(10))
print("per node:", len([x for x in analyze if x.strip().startswith("node 127.0.0.1/")]))

# Ingest on Ray (probe, hash, renditions as Ray tasks; the driver commits) equals local ingest.
import hashlib
con.create_catalog("dist", sys.argv[3], renditions=("96:jpeg:80",), progress=False)
images = ("SELECT id, file, path, format, width, height, stored_width, stored_height, mode, bytes,"
          " mtime_ns, hash, orientation, progressive, subsampling FROM smolql.images"
          " WHERE catalog = ? ORDER BY id")
rend = ("SELECT image_id, spec, width, height, bytes, hash, path FROM smolql.renditions"
        " WHERE catalog = ? ORDER BY image_id")
def rendered(catalog):
    rows = con.duckdb.execute(rend, [catalog]).fetchall()
    return [(*r[:-1], hashlib.sha256(open(r[-1], "rb").read()).hexdigest()) for r in rows]
errors = "SELECT catalog, path, reason FROM smolql.errors ORDER BY catalog"
errors = con.duckdb.execute(errors).fetchall()
print("ingest identical:", con.duckdb.execute(images, ["loc"]).fetchall()
      == con.duckdb.execute(images, ["dist"]).fetchall(), rendered("loc") == rendered("dist"),
      len(rendered("dist")))
print("ingest errors:", [(c, os.path.basename(p), "(node 127.0.0.1/" in r) for c, p, r in errors])
nodes = [n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]]
print("nodes:", len(nodes), sorted(set(nodes)))
print("rows:", len(local), "identical:", local == remote)
explain = con.sql("EXPLAIN " + sql)["plan"].to_pylist()
print("explain:", [x.strip() for x in explain if "xecutor" in x])
top = "SELECT count(*) AS n FROM photos WHERE classify_topk(image, 3)[3].score < 1"
print("topk:", con.sql(top).to_pylist())

# Images in object storage (a real S3 server in this namespace, on the port the nodes were
# told): ingest tasks and workers on every node read them through the catalog source.
import boto3
from s3server import moto_server
with moto_server(port=int(os.environ["AWS_ENDPOINT_URL"].rpartition(":")[2])) as url:
    client = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
    client.create_bucket(Bucket="ray")
    for name in sorted(os.listdir(sys.argv[3])):
        client.upload_file(os.path.join(sys.argv[3], name), "ray", "photos/" + name)
    con.create_catalog("s3c", "s3://ray/photos/", renditions=("96:jpeg:80",), progress=False)
    on_s3 = "SELECT file, classify(image).label AS label FROM {} ORDER BY file"
    same_content = images.replace(" path,", "").replace(" mtime_ns,", "")  # where differs
    con.sql("SET smolql.cache = off")
    same = con.sql(on_s3.format("s3c")).to_pylist() == con.sql(on_s3.format("loc")).to_pylist()
    print("s3 identical:", same, rendered("s3c") == rendered("loc"),
          con.duckdb.execute(same_content, ["s3c"]).fetchall()
          == con.duckdb.execute(same_content, ["loc"]).fetchall())

# LIMIT without ORDER BY: inference stops once enough rows qualify.
con.sql("SET smolql.cache = off")
limit = "SELECT file FROM photos WHERE classify(image).score > 0 LIMIT 5"
got = con.sql(limit).to_pylist()
inferred = [x for x in con.sql("EXPLAIN ANALYZE " + limit)["plan"].to_pylist() if "inferred" in x]
print("limit:", len(got), int(inferred[0].split("inferred ")[1].split(",")[0]) < 500)

# The GPU split (decode in CPU tasks, workers only infer), forced onto this CPU cluster.
os.environ["SMOLQL_RAY_SPLIT"] = "1"
split = con.sql(sql).to_pylist()
del os.environ["SMOLQL_RAY_SPLIT"]
print("split identical:", split == local)

# Ray Data: the references as a dataset, map_batches over an actor pool started per query.
os.environ["SMOLQL_RAY_MODE"] = "data"
data = con.sql(sql).to_pylist()
del os.environ["SMOLQL_RAY_MODE"]
print("ray data identical:", data == local)

# A worker process killed mid-query (SIGKILL to one inference worker of this cluster: a process
# titled ray::Worker in this network namespace): its chunks go to the other worker, a
# replacement starts, the rows are the same and the cache holds one row per content.
import random, signal, subprocess, threading, time
me = os.readlink("/proc/self/ns/net")
def ours(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().decode(errors="replace")
        return cmd if os.readlink(f"/proc/{pid}/ns/net") == me else ""
    except OSError:
        return ""
def pids(prefix):
    return [int(p) for p in filter(str.isdigit, os.listdir("/proc")) if ours(p).startswith(prefix)]
con.sql("SET smolql.cache = on")
killed = []
def busy():
    # wait (60 s at most) until a worker runs a chunk: the query is under way
    deadline = time.time() + 60
    while time.time() < deadline and not pids("ray::Worker.classify"):
        time.sleep(0.02)
def kill_one_worker():
    busy()
    for pid in pids("ray::Worker.classify")[:1]:
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
killer = threading.Thread(target=kill_one_worker)
killer.start()
after_kill = con.sql(sql).to_pylist()
killer.join()
cache = "SELECT count(*), count(DISTINCT hash) FROM smolql.udf_cache"
rows = con.duckdb.execute(cache).fetchall()
print("killed:", len(killed), "identical:", after_kill == local, "cache rows, distinct:", rows[0])

# The driver killed mid-query (SIGKILL at a seeded moment while it writes the cache): the
# database opens, the cache has no duplicate or partial row, a re-run gives the same rows.
con.duckdb.execute("DELETE FROM smolql.udf_cache")
con.close()
code = ("import warnings, smolql; warnings.simplefilter('ignore');"
        f"con = smolql.connect({sys.argv[1]!r}, executor='ray'); print('go', flush=True);"
        f"con.sql({sql!r})")
child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
assert child.stdout.readline().strip() == "go"
time.sleep(random.Random(17).uniform(1.0, 3.0))
child.kill()
child.wait()
con = smolql.connect(sys.argv[1], executor="ray")
rows = con.duckdb.execute(cache).fetchall()[0]
again = con.sql(sql).to_pylist()
final = con.duckdb.execute(cache).fetchall()[0]
print("driver killed:", child.returncode, "no duplicates:", rows[0] == rows[1],
      "identical:", again == local, "cache after:", final)

# Idle workers are released ($SMOLQL_RAY_IDLE_S) so that a quiet driver frees the cluster.
os.environ["SMOLQL_RAY_IDLE_S"] = "1"
con.duckdb.execute("DELETE FROM smolql.udf_cache")
con.sql(sql)
before = len(pids("ray::Worker"))
time.sleep(4)
print("idle release:", before > 0, len(pids("ray::Worker")) == 0)
del os.environ["SMOLQL_RAY_IDLE_S"]

# A node killed mid-query (SIGKILL to the second node's raylet and its workers): the query
# completes on the head node with the same rows.
con.duckdb.execute("DELETE FROM smolql.udf_cache")
other = [n for n in ray.nodes() if n["Alive"] and "node:__internal_head__" not in n["Resources"]]
socket = other[0]["RayletSocketName"]
def ppid(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rpartition(") ")[2].split()[1])
    except OSError:
        return None
nodes_killed = []
def kill_node():
    busy()
    raylet = [p for p in pids("/") if "raylet" in ours(p).split(chr(0))[0]
              and socket in ours(p)]
    for pid in raylet:
        children = [int(c) for c in filter(str.isdigit, os.listdir("/proc")) if ppid(c) == pid]
        for c in [pid, *children]:
            os.kill(c, signal.SIGKILL)
        nodes_killed.append(pid)
killer = threading.Thread(target=kill_node)
killer.start()
after_node = con.sql(sql).to_pylist()
killer.join()
alive = len([n for n in ray.nodes() if n["Alive"]])
print("node killed:", len(nodes_killed), "identical:", after_node == local)
"""

CLUSTER = """
set -e
ip link set lo up
export RAY_USAGE_STATS_ENABLED=0
# The S3 server the driver starts in this namespace; every node reads through it.
export AWS_ENDPOINT_URL=http://127.0.0.1:5555 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
export AWS_DEFAULT_REGION=us-east-1 PYTHONPATH="$TESTS"
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
    few = tmp_path / "few"  # for the ingest comparison: 40 images and a broken file
    few.mkdir()
    for f in files[:40]:
        shutil.copy2(f, few / f.name)
    (few / "broken.jpg").write_bytes(files[0].read_bytes()[:300])
    (tmp_path / "drive.py").write_text(textwrap.dedent(DRIVER))
    (tmp_path / "cluster.sh").write_text(textwrap.dedent(CLUSTER))
    bin_dir = str(Path(sys.executable).parent)
    proc = subprocess.run(
        ["unshare", "--net", "bash", str(tmp_path / "cluster.sh"), str(tmp_path / "drive.py"),
         str(tmp_path / "r.duckdb"), str(folder), str(few)],
        capture_output=True, text=True, timeout=900,
        env={**os.environ, "BIN": bin_dir, "LOGS": str(tmp_path),
             "TESTS": str(Path(__file__).parent)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    print(out)  # the figures: EXPLAIN ANALYZE per node
    assert "nodes: 2 ['127.0.0.1']" in out
    assert f"rows: {len(files)} identical: True" in out
    assert (
        "'executor: ray', 'Executor ray: Ray cluster at 127.0.0.1:6379: 2 nodes, 2 CPUs;"
        " per worker 1 CPU, 1 decode + 1 inference thread(s)'" in out
    )
    assert f"topk: [{{'n': {len(files)}}}]" in out
    assert "split identical: True" in out
    assert "ray data identical: True" in out
    assert "limit: 5 True" in out
    assert f"ingest identical: True True {len(files[:40])}" in out
    assert "s3 identical: True True True" in out
    assert "ingest errors: [('dist', 'broken.jpg', True), ('loc', 'broken.jpg', False)]" in out
    n = len({f.read_bytes() for f in files})  # the cache is keyed by content
    assert f"killed: 1 identical: True cache rows, distinct: ({n}, {n})" in out
    assert "per node: 2" in out  # EXPLAIN ANALYZE: images/s of each node
    assert f"driver killed: -9 no duplicates: True identical: True cache after: ({n}, {n})" in out
    assert "node killed: 1 identical: True" in out
    assert "idle release: True True" in out


def test_gpu_workers_ask_for_a_gpu_each_on_a_gpu_cluster(small_dir, tmp_path):
    """On a cluster with GPUs the workers ask for ``num_gpus=1`` and decoding runs in CPU
    tasks (the split itself also runs in the two-node test, forced onto CPUs)."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this machine: a GPU Ray cluster cannot run here")
    reason = _can_run_a_cluster()
    if reason:
        pytest.skip(reason)
    import ray

    import smolql
    from smolql.executor import cluster

    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, _node_ip_address="127.0.0.1")
    try:
        con = smolql.connect(str(tmp_path / "g.duckdb"), cache="off")
        con.create_catalog("p", str(small_dir), renditions=(), progress=False)
        sql = "SELECT file, classify(image).label AS label FROM p ORDER BY file"
        local = con.sql(sql).to_pylist()
        con.sql("SET smolql.executor = 'ray'")
        assert con.sql(sql).to_pylist() == local
        assert cluster._POOL is not None and cluster._POOL.split
        assert cluster._POOL.options["num_gpus"] == 1
        con.close()
    finally:
        cluster.release()
        ray.shutdown()


def test_the_executor_is_chosen_by_environment_cli_and_connect(monkeypatch, tmp_path):
    import smolql
    from smolql.cli import main

    monkeypatch.setenv("SMOLQL_EXECUTOR", "ray")
    with smolql.connect(":memory:") as con:
        assert con.settings.executor == "ray"
    with smolql.connect(":memory:", executor="local") as con:
        assert con.settings.executor == "local"
    with smolql.connect(":memory:", executor="ray", ray_address="127.0.0.1:9") as con:
        assert con.settings.ray_address == "127.0.0.1:9"
        con.sql("SET smolql.ray_address = 'ray://10.0.0.1:10001'")
        assert con.settings.ray_address == "ray://10.0.0.1:10001"
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
