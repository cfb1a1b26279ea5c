"""The smolql command line, run as a user would: a real process, real files, real output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest


def smolql(*args: str, cwd: Path | None = None, env: dict | None = None, stdin: str | None = None):
    return subprocess.run(
        [sys.executable, "-m", "smolql", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        input=stdin,
    )


@pytest.fixture
def db(tmp_path, small_dir) -> str:
    path = str(tmp_path / "cli.duckdb")
    labels = tmp_path / "labels.csv"
    names = sorted(p.name for p in small_dir.iterdir())
    labels.write_text("file,class_index\n" + "".join(f"{n},{i}\n" for i, n in enumerate(names)))
    result = smolql(
        "--db",
        path,
        "catalog",
        "create",
        "photos",
        str(small_dir),
        "--labels",
        str(labels),
        "--rendition",
        "96:jpeg:80",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("photos: 12 images, 0 skipped")
    return path


@pytest.mark.slow
def test_catalog_list_show_refresh_drop(db, small_dir):
    listing = smolql("catalog", "list", "--db", db)
    assert "photos" in listing.stdout and "ready" in listing.stdout and "12" in listing.stdout
    show = smolql("--db", db, "catalog", "show", "photos")
    assert "96:jpeg:80  12 files" in show.stdout and str(small_dir) in show.stdout
    (small_dir / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    refresh = smolql("--db", db, "catalog", "refresh", "photos")
    assert "photos: 12 images, 1 skipped" in refresh.stdout
    assert "broken.jpg" in refresh.stderr
    assert "broken.jpg" in smolql("--db", db, "catalog", "show", "photos").stdout
    assert smolql("--db", db, "catalog", "drop", "photos").returncode == 0
    assert "0 rows" in smolql("--db", db, "catalog", "list").stdout


def test_query_formats(db, tmp_path):
    sql = "SELECT id, file, class_index, image FROM photos ORDER BY id LIMIT 3"
    table = smolql("--db", db, "query", sql)
    assert table.returncode == 0 and "image(photos#1)" in table.stdout and "3 rows" in table.stdout
    csv = smolql("--db", db, "query", sql, "--format", "csv").stdout.splitlines()
    assert csv[0] == '"id","file","class_index","image"' and len(csv) == 4
    rows = json.loads(smolql("--db", db, "query", sql, "--format", "json").stdout)
    assert rows[0]["image"]["catalog"] == "photos" and rows[0]["class_index"] == 0
    out = tmp_path / "r.parquet"
    assert (
        smolql("--db", db, "query", sql, "--format", "parquet", "--output", str(out)).returncode
        == 0
    )
    assert pq.read_table(out).num_rows == 3


def test_sql_error_shows_message_and_position_without_traceback(db):
    result = smolql("--db", db, "query", "SELECT id,\n  file FORM photos")
    assert result.returncode == 1
    assert "Parser Error: syntax error" in result.stderr
    assert "(line 2, column" in result.stderr
    assert "Traceback" not in result.stderr
    unknown = smolql("--db", db, "query", "SELECT * FROM phtos")
    assert (
        unknown.returncode == 1 and "phtos" in unknown.stderr and "Traceback" not in unknown.stderr
    )


def test_missing_source_is_a_clear_error(tmp_path):
    result = smolql("--db", str(tmp_path / "x.duckdb"), "catalog", "create", "x", "/no/such/dir")
    assert result.returncode == 1
    assert "not a directory or a glob (file /no/such/dir)" in result.stderr


def test_database_location_flag_env_and_default(tmp_path, small_dir):
    assert smolql("catalog", "create", "a", str(small_dir), cwd=tmp_path).returncode == 0
    assert (tmp_path / "smolql.duckdb").exists()
    assert (tmp_path / "smolql.duckdb.renditions").is_dir()
    env_db = tmp_path / "env.duckdb"
    result = smolql(
        "catalog", "create", "b", str(small_dir), env={"SMOLQL_DB": str(env_db)}, cwd=tmp_path
    )
    assert result.returncode == 0 and env_db.exists()
    listed = smolql("query", "SELECT name FROM smolql.catalogs", env={"SMOLQL_DB": str(env_db)})
    assert "b" in listed.stdout and " a " not in listed.stdout


def test_shell_runs_statements_and_survives_errors(db):
    script = (
        "SELECT count(*) AS n\nFROM photos;\nSELECT nope FROM photos;\n.catalogs\nSELECT 7 AS x;\n"
    )
    result = smolql("--db", db, "shell", stdin=script)
    assert result.returncode == 0
    assert "│ 12 │" in result.stdout
    assert "Error: Binder Error" in result.stdout
    assert "photos" in result.stdout and "│ 7 │" in result.stdout


@pytest.mark.slow
def test_demo_builds_a_catalog_of_real_photographs(tmp_path):
    result = smolql("--db", str(tmp_path / "demo.duckdb"), "demo")
    assert result.returncode == 0, result.stderr
    assert "demo: 14 images, 0 skipped" in result.stdout
    for name in ("chelsea.jpg", "coffee.jpg", "astronaut.jpg", "161:jpeg:75"):
        assert name in result.stdout


def test_query_output_follows_stdout_redirected_after_import(tmp_path):
    """The CLI writes to the sys.stdout of the moment (it once kept the one of import time,
    so a redirection, a notebook or pytest's capture did not see query results)."""
    import contextlib
    import io

    from smolql.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["query", "SELECT 41 + 1 AS answer", "--db", str(tmp_path / "o.duckdb")]) == 0
    assert "answer" in buf.getvalue() and "42" in buf.getvalue()
