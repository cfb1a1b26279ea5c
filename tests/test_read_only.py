"""Read-only databases: several processes read one file at once; a process that wants to write
while another has the file open is told what to do; a file this process may not write opens
read-only by itself, its queries work (results computed, not cached) and writes fail clearly."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings

import pytest
from conftest import copied, real_jpegs

import smolql

SQL = "SELECT file, classify(image).label AS l FROM photos ORDER BY file"
HOLD = """
import sys, time, warnings, smolql
warnings.simplefilter("ignore")
db, mode, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
try:
    con = smolql.connect(db, read_only=(mode == "ro"))
except smolql.Error as e:
    print("ERROR", e, flush=True)
    sys.exit(0)
print("OPEN", con.read_only, con.sql(sys.argv[4]).to_pylist(), flush=True)
time.sleep(seconds)
con.close()
"""


def start(db: str, mode: str, seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOLD, db, mode, str(seconds), SQL],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def opened(proc: subprocess.Popen) -> str:
    return proc.stdout.readline()  # blocks until the process has opened (or failed)


@pytest.fixture
def db(tmp_path) -> tuple[str, list]:
    path = str(tmp_path / "r.duckdb")
    warnings.simplefilter("ignore")
    with smolql.connect(path) as con:
        con.create_catalog("photos", str(copied(real_jpegs(4), tmp_path / "img")),
                           renditions=(), progress=False)  # fmt: skip
        expected = con.sql(SQL).to_pylist()  # computed and cached
    return path, expected


def test_several_readers_at_once_and_a_writer_is_told_what_to_do(db):
    path, expected = db
    readers = [start(path, "ro", 4.0) for _ in range(3)]
    lines = [opened(r) for r in readers]
    assert all(line.startswith("OPEN True") and str(expected) in line for line in lines), lines
    writer = start(path, "rw", 0)
    said = opened(writer)
    writer.wait(timeout=120)
    assert said.startswith("ERROR cannot open database: process") and "has it open" in said
    assert "read_only=True" in said
    for r in readers:
        assert r.wait(timeout=120) == 0, r.stderr.read()
    with smolql.connect(path) as con:  # the readers are gone: writable again
        assert not con.read_only and con.sql(SQL).to_pylist() == expected


def test_a_reader_is_told_when_a_writer_holds_the_file(db):
    path, _ = db
    writer = start(path, "rw", 4.0)
    assert opened(writer).startswith("OPEN False")
    reader = start(path, "ro", 0)
    said = opened(reader)
    assert said.startswith("ERROR cannot open database: process") and "for writing" in said
    assert writer.wait(timeout=120) == 0 and reader.wait(timeout=120) == 0


def test_a_file_this_process_may_not_write_opens_read_only(db):
    """As root, the process runs without the DAC-override capabilities (root writes anything)."""
    path, expected = db
    os.chmod(path, 0o444)
    script = (
        "import sys, warnings, smolql; warnings.simplefilter('ignore')\n"
        "con = smolql.connect(sys.argv[1])\n"
        "print('READ_ONLY', con.read_only)\n"
        f"print('ROWS', con.sql({SQL!r}).to_pylist())\n"
        "n = 'SELECT count(*) FROM smolql.udf_cache'\n"
        "before = con.duckdb.execute(n).fetchall()\n"
        "crop = con.sql('SELECT classify(crop(image, 0, 0, 60, 60)).label AS l FROM photos')\n"
        "print('CROP', crop.num_rows, con.duckdb.execute(n).fetchall() == before)\n"
        "try:\n"
        "    con.create_catalog('more', '.', progress=False)\n"
        "except smolql.Error as e:\n"
        "    print('WRITE', type(e).__name__, e)\n"
    )
    args = [sys.executable, "-c", script, path]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv, "util-linux setpriv is needed to drop root's file capabilities"
        args = [setpriv, "--bounding-set", "-dac_override,-dac_read_search", *args]
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=300)
    finally:
        os.chmod(path, 0o644)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "READ_ONLY True" in out.stdout
    assert f"ROWS {expected}" in out.stdout
    assert "CROP 4 True" in out.stdout  # computed, not cached (the file cannot take it)
    assert "WRITE CatalogError cannot create a catalog: the database is open read-only" in (
        out.stdout
    )


def test_read_only_needs_an_existing_current_database(tmp_path):
    with pytest.raises(smolql.Error, match="no such file"):
        smolql.connect(str(tmp_path / "none.duckdb"), read_only=True)
    plain = tmp_path / "plain.duckdb"
    import duckdb

    duckdb.connect(str(plain)).close()
    with pytest.raises(smolql.Error, match="no SmolQL schema"):
        smolql.connect(str(plain), read_only=True)
