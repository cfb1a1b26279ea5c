"""Issue 13, everything a user touches around the answers: errors as PEP 249 exceptions with one
line, threads and connections, the cursor, settings, lazy imports, progress, output, the CLI
and the shell."""

from __future__ import annotations

import io
import os
import pty
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest

import smolql
from smolql.errors import ConfigError, InferenceError, InterfaceError, QueryError
from smolql.output import format_table, write_result

CLI = [sys.executable, "-m", "smolql"]


@pytest.fixture
def photos(con, small_dir):
    con.create_catalog("photos", str(small_dir), renditions=(), progress=False)
    con.sql("SET smolql.backend = 'onnxruntime'")
    return con


def closed(con) -> Path:
    """The database file of a connection, closed so that a CLI process can open it."""
    con.close()
    return Path(con.database)


def cli(*args: str, db: Path, stdin: str | None = None, env: dict | None = None):
    return subprocess.run(
        [*CLI, "--db", str(db), *args],
        capture_output=True,
        text=True,
        input=stdin,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


# -- errors: one line, no traceback (items 5, 6, 7) -------------------------------------------


def test_cli_binder_error_with_limit_is_one_line(photos):
    proc = cli("query", "SELECT classify(image).label FROM photos WHERE widht > 1 LIMIT 5",
               db=closed(photos))  # fmt: skip
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("Error: Binder Error")


@pytest.mark.parametrize("target", ["/nonexistent/x.csv", "DIR"])
def test_cli_output_to_a_bad_path_is_a_clear_error(photos, tmp_path, target):
    # Fails before the fix: FileNotFoundError / IsADirectoryError tracebacks.
    target = str(tmp_path) if target == "DIR" else target
    proc = cli("query", "SELECT 1", "--format", "csv", "--output", target,
               db=closed(photos))  # fmt: skip
    assert proc.returncode in (1, 2)
    assert "Traceback" not in proc.stderr and target in proc.stderr


# -- threads and connections (items 8, 9, 10, 20) ---------------------------------------------

THREADS_SCRIPT = """
import sys, threading, smolql
errors = []
def work(db, folder):
    try:
        con = smolql.connect(db, backend="onnxruntime")
        con.create_catalog("p", folder, renditions=(), progress=False)
        assert len(con.sql("SELECT classify(image).label FROM p")) > 0
        con.close()
    except Exception as e:
        errors.append(repr(e))
ts = [threading.Thread(target=work, args=(sys.argv[i], sys.argv[3])) for i in (1, 2)]
[t.start() for t in ts]; [t.join() for t in ts]
print(errors); sys.exit(1 if errors else 0)
"""


@pytest.mark.slow
def test_two_threads_classify_with_their_own_connections(tmp_path, small_dir):
    # Fails before the fix: "unknown model 'efficientnet_lite0'" (lazy registry not thread-safe).
    # A fresh process, so that the model registry is loaded by the racing threads themselves.
    proc = subprocess.run(
        [sys.executable, "-c", THREADS_SCRIPT, str(tmp_path / "a.duckdb"),
         str(tmp_path / "b.duckdb"), str(small_dir)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_threads_may_share_one_connection(photos):
    results, errors = [], []

    def work() -> None:
        try:
            results.append(photos.sql("SELECT classify(image).label AS l FROM photos ORDER BY id"))
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len({r.to_pylist().__repr__() for r in results}) == 1


def test_two_connections_to_one_file_in_one_process(tmp_path):
    # Fails before the fix: "Unique file handle conflict: Cannot attach".
    db = str(tmp_path / "shared.duckdb")
    first, second = smolql.connect(db), smolql.connect(db)
    first.sql("CREATE TABLE t AS SELECT 7 AS a")
    assert second.sql("SELECT a FROM t").to_pylist() == [{"a": 7}]
    first.close()
    assert second.sql("SELECT a FROM t").to_pylist() == [{"a": 7}]
    second.close()
    with smolql.connect(db) as third:
        assert third.sql("SELECT a FROM t").to_pylist() == [{"a": 7}]


def test_cursor_result_is_the_last_statements(con):
    # Fails before the fix: description None and fetchall raised.
    cur = con.cursor()
    cur.execute("CREATE OR REPLACE TABLE t2 AS SELECT 1 a; SELECT * FROM t2")
    assert cur.description[0][0] == "a" and cur.fetchall() == [(1,)]


def test_setoutputsize_and_a_second_close(tmp_path):
    con = smolql.connect(str(tmp_path / "c.duckdb"))
    cur = con.cursor()
    cur.setoutputsize(100)
    cur.setoutputsize(100, 0)
    con.close()
    with pytest.raises(InterfaceError):
        con.close()


# -- settings (item 14) -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "hint"),
    [
        ("precision", "banana", "unknown precision"),
        ("backend", "onnxruntim", "did you mean 'onnxruntime'"),
        ("model", "efficientnet_lite9", "did you mean 'efficientnet_lite2'"),
    ],
)
def test_settings_are_validated_on_assignment(con, name, value, hint):
    with pytest.raises(ConfigError, match=hint):
        con.sql(f"SET smolql.{name} = '{value}'")


def test_an_explicit_precision_is_honoured_with_the_auto_backend(photos):
    from smolql.planner.engines import candidates

    photos.sql("SET smolql.backend = 'auto'")
    photos.sql("SET smolql.precision = 'fp32'")
    plan = "\n".join(photos.sql("EXPLAIN SELECT classify(image) FROM photos")["plan"].to_pylist())
    assert "/fp32," in plan
    offered = {p for _, p in candidates()}
    photos.sql("SET smolql.precision = 'bf16'")
    if "bf16" in offered:
        plan = photos.sql("EXPLAIN SELECT classify(image) FROM photos")["plan"].to_pylist()
        assert "/bf16," in "\n".join(plan)
    else:  # this CPU has no bf16: the explicit setting is rejected, not ignored
        with pytest.raises(InferenceError, match="no backend here offers precision 'bf16'"):
            photos.sql("SELECT classify(image) FROM photos")


def test_a_bound_parameter_is_a_constant_k(photos):
    rows = photos.sql(
        "SELECT classify_topk(image, ?) AS t FROM photos WHERE id = 1", [3]
    ).to_pylist()
    assert len(rows[0]["t"]) == 3
    with pytest.raises(QueryError, match="between 1 and 1000"):
        photos.sql("SELECT classify_topk(image, ?) FROM photos", [0])


# -- cost of a query, progress (items 15, 16) -------------------------------------------------

IMPORTS_SCRIPT = """
import sys, warnings, smolql
con = smolql.connect(sys.argv[1], backend="onnxruntime")  # as when the cache was filled
con.sql("SELECT classify(image).label FROM photos")
try:
    con.sql("SELECT classify(image, 'efficientnet_lite9').label FROM photos")
except smolql.SmolQLError:
    pass
heavy = [m for m in ("torch", "torchvision", "onnxruntime", "openvino", "onnx") if m in sys.modules]
print(heavy)
sys.exit(1 if heavy else 0)
"""


def test_a_cached_or_failing_query_loads_no_inference_runtime(photos):
    # Fails before the fix: naming a model imported torchvision (and with it torch).
    photos.sql("SELECT classify(image).label FROM photos")  # fills the cache
    db = photos.database
    photos.close()
    proc = subprocess.run([sys.executable, "-c", IMPORTS_SCRIPT, db],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_imagenet_labels_equal_torchvisions():
    from torchvision.models import ResNet50_Weights

    from smolql.models.spec import imagenet_labels

    assert list(imagenet_labels()) == ResNet50_Weights.IMAGENET1K_V1.meta["categories"]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_classification_on_a_terminal_shows_progress(photos, monkeypatch):
    # Fails before the fix: SQL stages always ran with the progress bar off.
    screen = _Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    photos.sql("SET smolql.cache = off")
    photos.sql("SELECT classify(image).label FROM photos")
    assert "classify efficientnet_lite0" in screen.getvalue()
    assert "img/s" in screen.getvalue() or "img" in screen.getvalue()


# -- install and docs (item 17) ---------------------------------------------------------------


def test_pandas_and_ipython_are_installed_by_default():
    import tomllib

    deps = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    names = " ".join(deps["dependencies"])
    assert "pandas" in names and "ipython" in names


def test_a_mistyped_database_path_says_it_is_new_and_empty(tmp_path):
    proc = cli("query", "SELECT * FROM photos", db=tmp_path / "typo.duckdb")
    assert proc.returncode == 1
    assert "created a new, empty database" in proc.stderr
    assert "has no catalogs yet" in proc.stderr


# -- output (item 19) -------------------------------------------------------------------------


def test_numbers_print_as_duckdb_prints_them(con):
    table = con.sql(
        "SELECT 6696.0::DOUBLE AS a, round(0.95301, 3)::DOUBLE AS b, 1e-7::DOUBLE AS c,"
        " 0.1::FLOAT AS d"
    )
    text = format_table(table)
    for expected in ("6696.0", "0.953", "1e-07", "0.1 "):
        assert expected in text
    assert "0.0000" not in text


def test_set_echoes_the_value_as_written(con):
    assert con.sql("SET smolql.cache = off").to_pylist() == [{"setting": "cache", "value": "off"}]


def test_wide_characters_keep_the_borders_aligned():
    text = format_table(pa.table({"file": ["猫の写真.jpg", "cat.jpg"], "n": [1, 2]}))
    from smolql.output import width

    lines = text.splitlines()[:-1]
    assert len({width(line) for line in lines}) == 1


def test_blobs_in_json_and_empty_results(con):
    out = io.StringIO()
    write_result(con.sql("SELECT 'x'::BLOB AS b, '\\x00'::BLOB AS z"), "json", None, out)
    assert '"b": "x"' in out.getvalue() and "b'" not in out.getvalue()
    assert format_table(con.sql("CREATE TABLE e (a INTEGER)")) == ""
    empty = format_table(con.sql("SELECT * FROM e"))
    assert "│ a │" in empty and empty.endswith("0 rows")


def test_explain_numbers_stages_in_the_order_they_run(photos):
    plan = photos.sql(
        "EXPLAIN SELECT classify(image, 'efficientnet_lite2').label FROM photos"
        " WHERE classify(image).score > 0.5"
    )["plan"].to_pylist()
    stages = [line for line in plan if line.startswith("Stage")]
    assert stages[0].startswith("Stage 1:") and "efficientnet_lite0" in stages[0]
    assert stages[1].startswith("Stage 2:") and "efficientnet_lite2" in stages[1]


@pytest.mark.slow
def test_explain_analyze_counts_each_image_once_under_limit(imagenet):
    con, _ = imagenet
    con.sql("SET smolql.cache = off")
    con.sql("SET smolql.batch_size = 32")
    try:
        plan = con.sql(
            "EXPLAIN ANALYZE SELECT file FROM imagenet WHERE classify(image).label = 'goldfish'"
            " LIMIT 1"
        )["plan"].to_pylist()
    finally:
        con.sql("RESET smolql.cache")
        con.sql("RESET smolql.batch_size")
    line = next(x for x in plan if "rows from pre-filter" in x)
    rows = int(line.split("pre-filter ")[1].split(",")[0])
    inferred = int(line.split("inferred ")[1].split(",")[0])
    assert inferred <= rows  # before the fix: "pre-filter 128, inferred 192"


def test_cli_warnings_are_one_line(photos, small_dir):
    victim = sorted(small_dir.iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:2000])
    proc = cli("query", "SELECT classify(image).label FROM photos", db=closed(photos))
    assert proc.returncode == 0
    warning = [line for line in proc.stderr.splitlines() if victim.name in line]
    assert warning and warning[0].startswith("Warning: ")
    assert "stats.stages" not in proc.stderr and "warnings.warn" not in proc.stderr


# -- the shell (items 12, 13) -----------------------------------------------------------------


def test_shell_discards_a_half_typed_statement_at_end_of_input(tmp_path):
    db = tmp_path / "s.duckdb"
    with smolql.connect(str(db)) as con:
        con.sql("CREATE TABLE t AS SELECT range AS a FROM range(3)")
    proc = cli("shell", db=db, stdin="DELETE FROM t")
    assert proc.returncode == 0 and "discarded" in proc.stderr
    with smolql.connect(str(db)) as con:
        assert con.sql("SELECT count(*) AS n FROM t").to_pylist() == [{"n": 3}]


def test_shell_unknown_dot_command_and_tables(tmp_path):
    db = tmp_path / "s.duckdb"
    with smolql.connect(str(db)) as con:
        con.sql("CREATE TABLE people AS SELECT 1 AS a")
    proc = cli("shell", db=db, stdin=".bogus\n.tables\n")
    assert "unknown command '.bogus', try .help" in proc.stdout
    assert "people" in proc.stdout and "│ kind" in proc.stdout


def _read(fd: int, seconds: float, until: str) -> str:
    out, end = b"", time.monotonic() + seconds
    while time.monotonic() < end and until.encode() not in out:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                out += os.read(fd, 4096)
            except OSError:
                break
    return out.decode(errors="replace")


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.slow
@pytest.mark.parametrize("ignored", [False, True], ids=["", "started-with-sigint-ignored"])
def test_shell_ctrl_c_cancels_the_query_and_history_is_kept(tmp_path, ignored):
    # Fails before the fix: Ctrl-C (SIGINT) ended the shell with 130; history saved at exit only.
    # ``ignored``: started as a background job's children are, with SIGINT ignored (Python then
    # installs no handler); failed before the shell installed its own (CI run as a background job).
    home = tmp_path / "home"
    home.mkdir()
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [*CLI, "--db", ":memory:", "shell"],
        stdin=slave, stdout=slave, stderr=slave,
        env={**os.environ, "HOME": str(home), "PYTHONFAULTHANDLER": "1"},
        preexec_fn=_ignore_sigint if ignored else None,
    )  # fmt: skip
    os.close(slave)
    try:
        assert "smolql>" in _read(master, 60, "smolql>")
        os.write(master, b"SELECT count(*) FROM range(10000000000) a, range(1000) b;\n")
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)  # what a terminal sends on Ctrl-C
        seen = _read(master, 30, "smolql>")
        if "query cancelled" not in seen:  # show where every thread was
            proc.send_signal(signal.SIGABRT)
            pytest.fail(f"Ctrl-C did not cancel:\n{seen}\n{_read(master, 10, 'Extension modules')}")
        history = (home / ".smolql_history").read_text()
        assert "range(10000000000)" in history  # written before the shell exits
        os.write(master, b"SELECT 41 + 1 AS answer;\n")
        answer = _read(master, 30, "1 row")
        assert "42" in answer
        if "smolql>" not in answer.split("1 row")[-1]:
            _read(master, 30, "smolql>")
        time.sleep(0.5)  # a person presses Ctrl-D at the prompt, once readline is reading
        os.write(master, b"\x04")  # Ctrl-D on an empty line exits
        try:
            assert proc.wait(30) == 0
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)  # the thread stacks, for the failure message
            pytest.fail("the shell did not exit:\n" + _read(master, 10, "Extension modules"))
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
