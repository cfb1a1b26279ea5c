"""``smolql shell``: read SQL statements (ending in ``;``) and print their results.

Ctrl-C cancels the running query (or the statement being typed) and returns to the prompt;
Ctrl-D on an empty prompt exits, and on a half-typed statement discards it, which never runs.
Every line is appended to the history file as it is entered, so a crash loses none. An
interactive shell handles Ctrl-C itself even where it was started with SIGINT ignored (a
background job or ``nohup``, whose children Python leaves without a handler).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

import pyarrow as pa

from smolql.connection import Connection
from smolql.errors import SmolQLError
from smolql.output import format_table

HISTORY = os.path.expanduser("~/.smolql_history")
HISTORY_LINES = 1000
CANCEL_WAIT_S = 30  # how long a cancelled query may take to wind down
HELP = """Enter SQL ending with ';'. Commands: .catalogs  .tables  .help  .quit"""
TABLES_SQL = (
    "SELECT schema_name AS schema, table_name AS name, 'table' AS kind FROM duckdb_tables()"
    " WHERE NOT internal UNION ALL SELECT schema_name, view_name, 'view' FROM duckdb_views()"
    " WHERE NOT internal ORDER BY 1, 2;"
)


def run_shell(con: Connection) -> int:
    interactive = sys.stdin.isatty()
    previous = None
    if interactive and threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return _loop(con, interactive)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _loop(con: Connection, interactive: bool) -> int:
    if interactive:
        _load_history()
        print(f"SmolQL shell on {con.database}. {HELP}")
    buffer: list[str] = []
    while True:
        try:
            line = input("smolql> " if not buffer else "   ...> ") if interactive else _read()
        except EOFError:
            if not buffer or not "".join(buffer).strip():
                break
            buffer = []
            print("\n(unfinished statement discarded: it had no ';')", file=sys.stderr)
            if not interactive:
                break
            continue
        except KeyboardInterrupt:
            buffer = []
            print()
            continue
        if interactive:
            _append_history()
        if not buffer and line.strip().startswith("."):
            if _command(con, line.strip()):
                break
            continue
        buffer.append(line)
        if line.rstrip().endswith(";"):
            _run("\n".join(buffer), con)
            buffer = []
    return 0


def _read() -> str:
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line.rstrip("\n")


def _run(sql: str, con: Connection) -> None:
    try:
        table = _execute(con, sql)
        if table.column_names == ["plan"]:
            print("\n".join(table.column("plan").to_pylist()))
        elif table.num_columns:
            print(format_table(table, max_rows=200))
    except SmolQLError as e:
        print(f"Error: {e}")
        if getattr(e, "context", ""):
            print(e.context)
    except KeyboardInterrupt:
        print("\nquery cancelled")
    except Exception as e:  # a bug must not end the session: one line, and go on
        print(f"Internal error: {type(e).__name__}: {e} (a bug; please report it)")


def _execute(con: Connection, sql: str) -> pa.Table:
    """Run ``sql`` on a worker thread: the prompt's thread stays in Python, where Ctrl-C
    arrives even while DuckDB's C code or an inference engine runs; it then stops both."""
    outcome: dict[str, object] = {}

    def work() -> None:
        try:
            outcome["table"] = con.sql(sql)
        except BaseException as e:  # handed to the prompt's thread
            outcome["error"] = e

    worker = threading.Thread(target=work, name="smolql-shell-query", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.05)
    except KeyboardInterrupt:
        _cancel(con, worker)
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["table"]


def _cancel(con: Connection, worker: threading.Thread) -> None:
    """DuckDB stops through its interrupt; Python code (the inference loop) through an
    exception raised in the worker at its next bytecode. The interrupt repeats until the worker
    ends: a statement that reached DuckDB just after the first one would otherwise run on."""
    con.interrupt()  # first: the worker may be inside DuckDB, where no exception reaches it
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(worker.ident), ctypes.py_object(KeyboardInterrupt)
    )
    deadline = time.monotonic() + CANCEL_WAIT_S
    while worker.is_alive() and time.monotonic() < deadline:
        con.interrupt()
        worker.join(0.05)


def _command(con: Connection, command: str) -> bool:
    """Run a dot command; return True to quit."""
    if command in (".quit", ".exit"):
        return True
    if command == ".catalogs":
        print("\n".join(con.catalogs()) or "(no catalogs)")
    elif command == ".tables":
        _run(TABLES_SQL, con)
    elif command == ".help":
        print(HELP)
    else:
        print(f"unknown command {command.split()[0]!r}, try .help")
    return False


def _load_history() -> None:
    try:
        import readline

        readline.read_history_file(HISTORY)
        readline.set_history_length(HISTORY_LINES)
        readline.write_history_file(HISTORY)  # keeps the file at the last HISTORY_LINES
    except (ImportError, OSError):
        pass


def _append_history() -> None:
    """Write the line just entered at once (a crash or a kill loses nothing)."""
    try:
        import readline

        if not os.path.exists(HISTORY):
            open(HISTORY, "a").close()
        readline.append_history_file(1, HISTORY)
    except (ImportError, OSError):
        pass
