"""PEP 249 conformance of smolql.connect, with plain DuckDB SQL and SmolQL UDF queries."""

from __future__ import annotations

import datetime as dt
import warnings

import pytest

import smolql


@pytest.fixture
def db(tmp_path):
    con = smolql.connect(str(tmp_path / "d.duckdb"))
    yield con
    con.close()


def test_module_globals_and_exceptions():
    assert (smolql.apilevel, smolql.threadsafety, smolql.paramstyle) == ("2.0", 1, "qmark")
    for name in (
        "Warning",
        "Error",
        "InterfaceError",
        "DatabaseError",
        "DataError",
        "OperationalError",
        "IntegrityError",
        "InternalError",
        "ProgrammingError",
        "NotSupportedError",
    ):
        assert getattr(smolql, name) is getattr(smolql.Connection, name)
    assert issubclass(smolql.ProgrammingError, smolql.DatabaseError)
    assert issubclass(smolql.DatabaseError, smolql.Error)
    assert issubclass(smolql.ParseError, smolql.ProgrammingError)
    assert issubclass(smolql.DecodeError, smolql.DataError)


def test_type_objects_and_constructors(db):
    cur = db.cursor()
    cur.execute("SELECT 'a' AS s, 1 AS i, 2.5 AS f, DATE '2024-01-02' AS d, 'x'::BLOB AS b")
    codes = [d[1] for d in cur.description]
    assert codes[0] == smolql.STRING and codes[1] == smolql.NUMBER and codes[2] == smolql.NUMBER
    assert codes[3] == smolql.DATETIME and codes[4] == smolql.BINARY
    assert codes[0] != smolql.NUMBER
    assert all(len(d) == 7 for d in cur.description)
    assert smolql.Date(2024, 1, 2) == dt.date(2024, 1, 2)
    assert smolql.DateFromTicks(0).year in (1969, 1970)
    assert isinstance(smolql.TimestampFromTicks(0), dt.datetime)
    assert isinstance(smolql.TimeFromTicks(0), dt.time)
    assert smolql.Binary(b"x") == b"x"


def test_fetch_methods_and_arraysize(db):
    cur = db.cursor()
    cur.execute("SELECT range AS n FROM range(10)")
    assert cur.fetchone() == (0,)
    cur.arraysize = 3
    assert cur.fetchmany() == [(1,), (2,), (3,)]
    assert cur.fetchmany(2) == [(4,), (5,)]
    assert cur.fetchall() == [(6,), (7,), (8,), (9,)]
    assert cur.fetchone() is None
    cur.execute("SELECT range AS n FROM range(3)")
    assert [r for r in cur] == [(0,), (1,), (2,)]
    cur.execute("SELECT range AS n FROM range(5)")
    assert cur.fetch_arrow_table().num_rows == 5
    cur.execute("SELECT range AS n FROM range(5)")
    assert list(cur.fetch_df()["n"]) == [0, 1, 2, 3, 4]
    cur.execute("SELECT range AS n FROM range(20)")
    assert sum(b.num_rows for b in cur.fetch_record_batches(batch_size=6)) == 20


def test_dml_rowcount_transactions_and_executemany(db):
    cur = db.cursor()
    cur.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name VARCHAR)")
    assert cur.description is None
    cur.executemany("INSERT INTO t VALUES (?, ?)", [(1, "a"), (2, "b"), (3, "c")])
    assert cur.rowcount == 3
    cur.execute("UPDATE t SET name = 'z' WHERE id >= ?", [2])
    assert cur.rowcount == 2
    cur.execute("BEGIN")
    cur.execute("DELETE FROM t")
    db.rollback()
    assert db.cursor().execute("SELECT count(*) FROM t").fetchone() == (3,)
    cur.execute("BEGIN")
    db.cursor().execute("DELETE FROM t WHERE id = 1")  # same transaction: another cursor
    db.commit()
    assert cur.execute("SELECT count(*) FROM t").fetchone() == (2,)
    with pytest.raises(smolql.IntegrityError):
        cur.execute("INSERT INTO t VALUES (2, 'dup')")
    db.commit()  # nothing open: a no-op


@pytest.mark.parametrize(
    "hostile", ["'; DROP TABLE t; --", "a' OR '1'='1", "/* comment */", "x\\'y", "?", ":name"]
)
def test_parameters_are_bound_never_interpolated(db, hostile):
    cur = db.cursor()
    cur.execute("CREATE OR REPLACE TABLE t AS SELECT 'safe' AS v")
    cur.execute("INSERT INTO t VALUES (?)", [hostile])
    assert cur.execute("SELECT v FROM t WHERE v = ?", [hostile]).fetchall() == [(hostile,)]
    assert cur.execute("SELECT count(*) FROM t WHERE v = :v", {"v": hostile}).fetchone() == (1,)
    assert cur.execute("SELECT count(*) FROM t").fetchone() == (2,)


def test_closed_connection_and_cursor_raise(tmp_path):
    con = smolql.connect(str(tmp_path / "c.duckdb"))
    cur = con.cursor()
    cur.close()
    with pytest.raises(smolql.InterfaceError):
        cur.execute("SELECT 1")
    con.close()
    with pytest.raises(smolql.InterfaceError):
        con.cursor()
    with pytest.raises(smolql.InterfaceError):
        con.commit()


def test_errors_map_onto_pep249(db):
    cur = db.cursor()
    with pytest.raises(smolql.ProgrammingError) as err:
        cur.execute("SELEC 1")
    assert isinstance(err.value, smolql.ParseError)
    with pytest.raises(smolql.ProgrammingError):
        cur.execute("SELECT * FROM nowhere")
    with pytest.raises(smolql.NotSupportedError):
        cur.callproc("p")
    with pytest.raises(smolql.ProgrammingError, match="no result set"):
        cur.execute("CREATE TABLE x (a INT)").fetchall()
    cur.setinputsizes([1])
    cur.setoutputsize(1)


def test_udf_queries_through_the_cursor_and_data_error(db, small_dir):
    db.create_catalog("photos", str(small_dir), renditions=(), progress=False)
    cur = db.cursor()
    cur.execute("SET smolql.backend = 'onnxruntime'")
    cur.execute(
        "SELECT id, classify(image).label AS label FROM photos WHERE id <= ? ORDER BY id", [3]
    )
    assert [d[0] for d in cur.description] == ["id", "label"]
    rows = cur.fetchall()
    assert len(rows) == 3 and all(isinstance(r[1], str) for r in rows)
    victim = sorted(small_dir.iterdir())[5]
    victim.write_bytes(victim.read_bytes()[:3000])
    cur.execute("SET smolql.on_error = 'fail'")
    with pytest.raises(smolql.DataError):
        cur.execute("SELECT classify(image).label FROM photos")


def test_pandas_read_sql(db):
    import pandas as pd

    db.cursor().execute("CREATE TABLE p AS SELECT range AS n FROM range(4)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pandas prefers SQLAlchemy, works without
        frame = pd.read_sql("SELECT n FROM p WHERE n > ?", db, params=[1])
    assert list(frame["n"]) == [2, 3]


def test_second_process_gets_a_clear_error(tmp_path):
    import subprocess
    import sys

    path = str(tmp_path / "locked.duckdb")
    con = smolql.connect(path)
    script = "import smolql, sys; smolql.connect(sys.argv[1])"
    result = subprocess.run([sys.executable, "-c", script, path], capture_output=True, text=True)
    con.close()
    assert result.returncode != 0
    assert "OperationalError" in result.stderr or "CatalogError" in result.stderr
    assert "lock" in result.stderr.lower()


def test_sql_stream_execute_and_cursors_share_one_transaction(tmp_path):
    # Issue 14, point 6: before, con.sql() and con.stream() opened a fresh DuckDB cursor and ran
    # outside a transaction begun with con.execute("BEGIN").
    con = smolql.connect(str(tmp_path / "tx.duckdb"))
    con.sql("CREATE TABLE t (a INTEGER)")
    con.execute("BEGIN")
    con.sql("INSERT INTO t VALUES (1)")
    con.cursor().execute("INSERT INTO t VALUES (2)")
    seen = con.stream("SELECT count(*) AS n FROM t").read_all().to_pylist()
    assert seen == [{"n": 2}]  # the stream sees the transaction's own rows
    con.rollback()
    assert con.sql("SELECT count(*) AS n FROM t").to_pylist() == [{"n": 0}]
    con.close()
