"""A repeated statement reuses its plan and its stage tables only while nothing they rely
on changed (smolql.executor.prepared): every test changes something a reuse could miss and compares
the answer with a connection that caches nothing."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import duckdb
import pytest
from conftest import real_jpegs

import smolql
from smolql import execute
from smolql.watch import WATCHER

pytestmark = pytest.mark.skipif(WATCHER.broken, reason="no inotify on this system")
SQL = "SELECT file, classify(image).label AS l FROM {} ORDER BY file"


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.fixture
def pair(tmp_path: Path):
    """A connection that keeps plans and one that caches nothing, on one database with a
    catalog of six photographs; and the photographs."""
    folder = tmp_path / "photos"
    folder.mkdir()
    files = []
    for i, src in enumerate(real_jpegs(6)):
        files.append(folder / f"{i:02d}.jpg")
        shutil.copyfile(src, files[-1])
    db = str(tmp_path / "p.duckdb")
    with smolql.connect(db) as con, smolql.connect(db, cache="off") as fresh:
        con.create_catalog("photos", str(folder), renditions=(), progress=False)
        yield con, fresh, files


def answers(con, table: str = "photos") -> list[tuple]:
    return [(r["file"], r["l"]) for r in con.sql(SQL.format(table)).to_pylist()]


def reused(con, table: str = "photos") -> bool:
    lines = con.sql(f"EXPLAIN ANALYZE {SQL.format(table)}")["plan"].to_pylist()
    return any(line.strip().startswith("reused:") for line in lines)


def warm(con, table: str = "photos") -> list[tuple]:
    """Run until the stage tables are reusable (the first run infers and writes)."""
    answers(con, table)
    got = answers(con, table)
    assert reused(con, table)
    return got


def test_a_repeated_statement_reuses_its_tables_and_answers_the_same(pair):
    con, fresh, _ = pair
    first = answers(con)
    assert not reused(con) or first == answers(fresh)
    assert warm(con) == answers(fresh) == answers(con)
    before = {r[0] for r in con.duckdb.sql("SELECT table_name FROM duckdb_tables()").fetchall()}
    for _ in range(3):
        assert answers(con) == first
    after = {r[0] for r in con.duckdb.sql("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert after == before  # reuse makes no new tables


def test_an_edited_file_is_classified_again(pair):
    con, fresh, files = pair
    first = warm(con)
    files[0].write_bytes(real_jpegs(8)[7].read_bytes())
    assert not reused(con)
    assert answers(con) == answers(fresh)
    assert answers(con) != first


def test_a_table_changed_through_sql_is_read_again(pair):
    con, fresh, _ = pair
    con.sql("CREATE TABLE pics AS SELECT * FROM photos WHERE file < '03'")
    warm(con, "pics")
    con.sql("INSERT INTO pics SELECT * FROM photos WHERE file >= '03'")
    assert not reused(con, "pics")
    assert answers(con, "pics") == answers(fresh, "pics") == answers(fresh)


def not_kept(con, table: str) -> str:
    lines = con.sql(f"EXPLAIN ANALYZE {SQL.format(table)}")["plan"].to_pylist()
    return next((x for x in lines if x.startswith("Stage results not reused")), "")


UNWITNESSED = {  # what a query reads, made on the connection; a raw-handle write to it; why
    "temporary table": (
        "CREATE TEMP TABLE pics AS SELECT * FROM photos WHERE file < '03'",
        "INSERT INTO pics SELECT * FROM photos WHERE file >= '03'",
        "the temporary table pics",
    ),
    "stored view over a csv file": (
        "CREATE VIEW pics AS SELECT p.* FROM photos p JOIN read_csv('{csv}') USING (file)",
        None,  # the file is rewritten instead
        "outside the database (through the view pics)",
    ),
}


@pytest.mark.parametrize("case", UNWITNESSED)
def test_a_statement_reading_what_leaves_no_trace_is_never_reused(pair, tmp_path, case):
    """A temporary table written through the raw DuckDB handle, or a file a view reads, changes
    with no trace in the database file: the stage results are looked up again every run
    (before, the repeat reused them and answered the new rows with NULL)."""
    con, fresh, _ = pair
    make, write, why = UNWITNESSED[case]
    csv = tmp_path / "picks.csv"
    csv.write_text("file\n00.jpg\n01.jpg\n")
    con.duckdb.execute(make.format(csv=csv))
    first = answers(con, "pics")
    assert answers(con, "pics") == first  # the run a repeat could reuse
    assert len(first) == (3 if write else 2) and all(label for _, label in first)
    assert not reused(con, "pics") and why in not_kept(con, "pics")
    if write:
        con.duckdb.execute(write)  # through the raw handle: no SmolQL statement
    else:
        csv.write_text("file\n00.jpg\n01.jpg\n04.jpg\n05.jpg\n")
    got = answers(con, "pics")
    assert len(got) > len(first) and all(label for _, label in got)
    assert set(got) <= set(answers(fresh))


def test_a_database_in_memory_never_reuses_stage_results(pair):
    _, fresh, files = pair
    with smolql.connect(":memory:") as con:
        con.create_catalog("photos", str(files[0].parent), renditions=(), progress=False)
        con.sql("CREATE TABLE pics AS SELECT * FROM photos WHERE file < '02'")
        assert len(answers(con, "pics")) == len(answers(con, "pics")) == 2
        assert "in memory" in not_kept(con, "pics")
        con.duckdb.execute("INSERT INTO pics SELECT * FROM photos WHERE file >= '02'")
        assert answers(con, "pics") == answers(fresh)


def test_a_stored_table_written_through_the_raw_duckdb_handle_is_read_again(pair):
    con, fresh, _ = pair
    con.sql("CREATE TABLE kept AS SELECT * FROM photos WHERE file < '02'")
    warm(con, "kept")
    con.duckdb.execute("INSERT INTO kept SELECT * FROM photos WHERE file >= '02'")  # not SmolQL
    got = answers(con, "kept")
    assert len(got) == 6
    assert got == answers(fresh, "kept") == answers(fresh)


def test_another_connection_s_write_is_seen(pair, tmp_path):
    con, fresh, _ = pair
    con.sql("CREATE TABLE kept AS SELECT * FROM photos WHERE file < '02'")
    warm(con, "kept")
    with smolql.connect(str(tmp_path / "p.duckdb")) as other:
        other.sql("INSERT INTO kept SELECT * FROM photos WHERE file >= '02'")
    assert answers(con, "kept") == answers(fresh, "kept") == answers(fresh)


def test_parameters_and_settings_are_part_of_the_statement(pair):
    con, fresh, _ = pair
    sql = "SELECT file, classify(image).label AS l FROM photos WHERE file < ? ORDER BY file"
    for bound in ("02", "04", "02", "04"):
        assert con.sql(sql, [bound]).to_pylist() == fresh.sql(sql, [bound]).to_pylist()
    assert len(con.sql(sql, ["02"])) == 2
    warm(con)
    con.sql("SET smolql.cache = 'off'")
    assert not reused(con)
    assert answers(con) == answers(fresh)


def test_old_statements_are_dropped_with_their_tables(pair):
    con, _, _ = pair
    for i in range(20):
        con.sql(f"SELECT file, classify(image).label FROM photos WHERE {i} >= 0")
    temp = con.duckdb.sql(
        "SELECT count(*) FROM duckdb_tables() WHERE temporary AND table_name LIKE '__smolql%'"
    ).fetchall()[0][0]
    assert 1 <= temp <= 16


def test_explain_counts_cached_contents_as_a_run_would(pair):
    con, _, files = pair

    def cached() -> str:
        lines = con.sql(f"EXPLAIN {SQL.format('photos')}")["plan"].to_pylist()
        return next(x.strip() for x in lines if x.strip().startswith("cache:"))

    assert cached() == "cache: 0 of 6 images cached"
    answers(con)
    assert cached() == "cache: 6 of 6 images cached"
    files[0].write_bytes(real_jpegs(8)[7].read_bytes())  # a content never classified
    assert cached() == "cache: 5 of 6 images cached"


def test_a_catalog_that_cannot_be_listed_keeps_the_answer_and_reuses_nothing(pair, monkeypatch):
    con, fresh, _ = pair

    def unreadable(_con):
        raise duckdb.IOException("could not read the catalog")  # a fault in the listing

    monkeypatch.setattr(execute, "relations", unreadable)
    assert answers(con) == answers(con) == answers(fresh)
    assert "could not be listed" in not_kept(con, "photos")
    assert not reused(con)
