"""The system schema is versioned: an older database is migrated when opened, a newer one is
refused with a clear error, and system rows are written by column name."""

from __future__ import annotations

import duckdb
import pytest

import smolql
from smolql.errors import CatalogError
from smolql.storage.schema import SCHEMA_VERSION, insert, schema_version

V1_IMAGES = """CREATE TABLE smolql.images (
    catalog VARCHAR, id INTEGER, file VARCHAR, path VARCHAR, format VARCHAR,
    width INTEGER, height INTEGER, stored_width INTEGER, stored_height INTEGER,
    mode VARCHAR, bytes BIGINT, mtime TIMESTAMP, mtime_ns BIGINT, hash VARCHAR,
    orientation TINYINT, progressive BOOLEAN, subsampling VARCHAR)"""


def test_a_version_1_database_is_migrated_when_opened(tmp_path):
    path = str(tmp_path / "old.duckdb")
    with duckdb.connect(path) as old:
        old.execute("CREATE SCHEMA smolql")
        old.execute(V1_IMAGES)
        old.execute("CREATE TABLE smolql.backend_profiles (model VARCHAR)")
        old.execute("INSERT INTO smolql.images (catalog, id, path) VALUES ('c', 1, '/x.jpg')")
    with smolql.connect(path) as con:
        assert schema_version(con.duckdb) == SCHEMA_VERSION == 4
        columns = {r[0] for r in con.duckdb.execute("DESCRIBE smolql.images").fetchall()}
        assert {"ctime_ns", "inode"} <= columns
        row = con.duckdb.execute("SELECT path, ctime_ns FROM smolql.images").fetchall()
        assert row == [("/x.jpg", None)]  # kept; the new column NULL = unverified
        tables = {r[0] for r in con.duckdb.execute("SHOW TABLES FROM smolql").fetchall()}
        assert "backend_profiles" not in tables and "user_models" in tables


def test_a_database_from_a_newer_smolql_is_refused(tmp_path):
    path = str(tmp_path / "new.duckdb")
    with smolql.connect(path) as con:
        con.duckdb.execute("UPDATE smolql.meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(CatalogError, match="schema version 99, written by a newer SmolQL"):
        smolql.connect(path)
    with duckdb.connect(path) as raw:  # the refused file was let go
        raw.execute("UPDATE smolql.meta SET value = '3' WHERE key = 'schema_version'")
    smolql.connect(path).close()


def test_rows_are_inserted_by_column_name(con):
    insert(con.duckdb, "errors", {"reason": "bad", "catalog": "c"}, now=("recorded",))
    rows = con.duckdb.execute("SELECT catalog, path, reason FROM smolql.errors").fetchall()
    assert rows == [("c", None, "bad")]
