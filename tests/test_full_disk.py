"""A renditions folder on a full file system (a small tmpfs, mounted by the test as root in a
private mount namespace): the ingest stops with a clear error, every rendition row has its
file, no temporary file is left, and once there is room a re-run finishes the job."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from conftest import copied, real_jpegs

SCRIPT = r"""
import glob, os, subprocess, sys, warnings, smolql
warnings.simplefilter("ignore")
folder, db, full = sys.argv[1:4]
con = smolql.connect(db)
try:
    con.create_catalog("c", folder, renditions=("161:jpeg:95", "161:png"), progress=False)
    print("NO ERROR")
except smolql.Error as e:
    print("ERROR", type(e).__name__, e)
rows = con.duckdb.execute("SELECT path FROM smolql.renditions").fetchall()
print("ROWS", len(rows), "MISSING", sum(not os.path.exists(p) for (p,) in rows))
print("TMP", len(glob.glob(os.path.join(full, "**", "*.tmp-*"), recursive=True)))
subprocess.run(["mount", "-o", "remount,size=64m", full], check=True)
s = con.create_catalog("c", folder, renditions=("161:jpeg:95", "161:png"), progress=False)
rows = con.duckdb.execute("SELECT path FROM smolql.renditions").fetchall()
print("RERUN", s.images, s.skipped, len(rows), sum(not os.path.exists(p) for (p,) in rows))
"""


def test_a_full_renditions_folder_stops_the_ingest_clearly(tmp_path):
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root and util-linux unshare/mount")
    files = real_jpegs(16)
    folder = copied(files, tmp_path / "img")
    full = tmp_path / "full"
    full.mkdir()
    shell = (
        f"mount -t tmpfs -o size=256k tmpfs {full} && exec {sys.executable} -c '{SCRIPT}'"
        f" {folder} {tmp_path / 'f.duckdb'} {full}"
    )
    env = {**os.environ, "SMOLQL_RENDITIONS": str(full)}
    out = subprocess.run(["unshare", "--mount", "sh", "-c", shell], capture_output=True,
                         text=True, env=env, timeout=600)  # fmt: skip
    if "Operation not permitted" in out.stderr and "mount" in out.stderr:
        pytest.skip(f"mounting is not allowed here: {out.stderr.strip()[:200]}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "ERROR StorageFullError no space left for renditions under" in out.stdout
    assert "free space, or set SMOLQL_RENDITIONS" in out.stdout
    assert "MISSING 0" in out.stdout and "TMP 0" in out.stdout
    assert f"RERUN {len(files)} 0 {2 * len(files)} 0" in out.stdout
