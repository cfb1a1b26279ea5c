"""A SIGKILL mid-ingest leaves a consistent catalog, and the re-run finishes the job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import SAMPLE, sample_files

import smolql

pytestmark = pytest.mark.slow  # the fast tier is pytest -m 'not slow'


def _count_files(folder: str) -> int:
    return sum(len(names) for _, _, names in os.walk(folder))


def _smolql(*args: str) -> list[str]:
    return [sys.executable, "-m", "smolql.cli", *args]


def test_kill_9_mid_ingest_then_rerun_completes(tmp_path):
    sample_files()  # 500 images, so that the kill lands mid-ingest; skips where missing
    db = str(tmp_path / "crash.duckdb")
    renditions = db + ".renditions"
    proc = subprocess.Popen(
        _smolql("--db", db, "catalog", "create", "photos", str(SAMPLE)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    # 400 of 500 images: past the first commits (each second), short of the last
    while _count_files(renditions) < 1200 and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL

    with smolql.connect(db) as con:
        status = con.describe_catalog("photos")["status"]
        partial = con.duckdb.execute("SELECT count(*) FROM photos").fetchone()[0]
        incomplete = con.duckdb.execute(
            "SELECT count(*) FROM smolql.images i WHERE (SELECT count(*) FROM smolql.renditions"
            " r WHERE r.image_id = i.id) <> 3"
        ).fetchone()[0]
        paths = [p for (p,) in con.duckdb.execute("SELECT path FROM smolql.renditions").fetchall()]
    assert status == "building"
    assert 0 < partial < 500, "the kill should land mid-ingest"
    assert incomplete == 0  # rows are committed only with all their renditions
    assert all(os.path.getsize(p) > 0 for p in paths)

    rerun = subprocess.run(
        _smolql("--db", db, "catalog", "create", "photos", str(SAMPLE)),
        capture_output=True,
        text=True,
        check=True,
    )
    assert "photos: 500 images, 0 skipped" in rerun.stdout
    assert f"{500 - partial} processed, {partial} unchanged" in rerun.stdout
    with smolql.connect(db) as con:
        ids, unique_ids, unique_paths = con.duckdb.execute(
            "SELECT count(*), count(DISTINCT id), count(DISTINCT path) FROM photos"
        ).fetchone()
        files = {p for (p,) in con.duckdb.execute("SELECT path FROM smolql.renditions").fetchall()}
        assert con.describe_catalog("photos")["status"] == "ready"
    assert ids == unique_ids == unique_paths == 500
    on_disk = {os.path.join(r, n) for r, _, names in os.walk(renditions) for n in names}
    assert on_disk == files and len(files) == 1500  # no temp files or orphans left
