"""Bad files never stop an ingest: each is recorded with a reason and the rest ingested."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from images import with_header_size

import smolql


def _make_bad_files(folder: Path, good: bytes) -> dict[str, str]:
    """Write bad files; return file name -> expected words in its reason."""
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (folder / "notes.png").write_text("this is a text file, not a PNG\n")
    (folder / "huge.jpg").write_bytes(with_header_size(good, 60000, 60000))
    return {
        "empty.jpg": "empty file",
        "truncated.jpg": "corrupt or truncated",
        "notes.png": "not a recognised image",
        "huge.jpg": "exceeds the limit",
    }


def test_bad_files_are_recorded_and_the_rest_ingested(con, small_dir):
    good = next(small_dir.iterdir()).read_bytes()
    expected = _make_bad_files(small_dir, good)
    summary = con.create_catalog("photos", str(small_dir), progress=False)
    assert (summary.images, summary.skipped) == (12, 4)
    assert summary.line("photos").startswith("photos: 12 images, 4 skipped (see:")
    errors = {
        os.path.basename(p): reason
        for p, reason in con.duckdb.execute(
            "SELECT path, reason FROM smolql.errors WHERE catalog = 'photos'"
        ).fetchall()
    }
    assert errors.keys() == expected.keys()
    for name, words in expected.items():
        assert words in errors[name], errors[name]
    assert "3,600,000,000 pixels" in errors["huge.jpg"]


def test_pixel_limit_is_configurable(con, small_dir):
    summary = con.create_catalog("photos", str(small_dir), max_pixels=180_000, progress=False)
    sizes = [
        r["w"] * r["h"] for r in con.sql("SELECT width AS w, height AS h FROM photos").to_pylist()
    ]
    assert all(s <= 180_000 for s in sizes)
    assert summary.skipped > 0 and summary.images + summary.skipped == 12


def test_fixed_files_are_picked_up_by_refresh(con, small_dir):
    good = next(small_dir.iterdir()).read_bytes()
    (small_dir / "late.jpg").write_bytes(good[:100])
    assert con.create_catalog("photos", str(small_dir), progress=False).skipped == 1
    (small_dir / "late.jpg").write_bytes(good)
    summary = con.refresh_catalog("photos", progress=False)
    assert (summary.images, summary.skipped) == (13, 0)


def test_unreadable_file_is_skipped_with_permission_denied(tmp_path, small_dir):
    """Root reads every file, so as root the ingest runs without the DAC-override capabilities."""
    locked = small_dir / "locked.jpg"
    locked.write_bytes(next(small_dir.iterdir()).read_bytes())
    locked.chmod(0)
    script = (
        "import smolql, sys; con = smolql.connect(sys.argv[1]);"
        "s = con.create_catalog('photos', sys.argv[2], renditions=(), progress=False);"
        "print(s.line('photos'));"
        "print(con.duckdb.execute('SELECT reason FROM smolql.errors').fetchall())"
    )
    args = [sys.executable, "-c", script, str(tmp_path / "perm.duckdb"), str(small_dir)]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv, "util-linux setpriv is needed to drop root's file capabilities"
        args = [setpriv, "--bounding-set", "-dac_override,-dac_read_search", *args]
    result = subprocess.run(args, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "photos: 12 images, 1 skipped" in result.stdout
    assert "permission denied" in result.stdout


def test_summary_counts_survive_reopening(tmp_path, small_dir):
    (small_dir / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    db = str(tmp_path / "x.duckdb")
    with smolql.connect(db) as con:
        con.create_catalog("photos", str(small_dir), renditions=(), progress=False)
    with smolql.connect(db) as con:
        info = con.describe_catalog("photos")
    assert info["images"] == 12 and info["status"] == "ready"
    assert [os.path.basename(e["path"]) for e in info["errors"]] == ["bad.jpg"]
