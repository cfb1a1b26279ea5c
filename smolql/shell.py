"""``smolql shell``: read SQL statements (ending in ``;``) and print their results."""

from __future__ import annotations

import os
import sys

from smolql.connection import Connection
from smolql.errors import SmolQLError
from smolql.output import format_table

HISTORY = os.path.expanduser("~/.smolql_history")
HELP = """Enter SQL ending with ';'. Commands: .catalogs  .tables  .help  .quit"""


def run_shell(con: Connection) -> int:
    interactive = sys.stdin.isatty()
    if interactive:
        _load_history()
        print(f"SmolQL shell on {con.database}. {HELP}")
    buffer: list[str] = []
    while True:
        try:
            line = input("smolql> " if not buffer else "   ...> ") if interactive else _read()
        except EOFError:
            break
        except KeyboardInterrupt:
            buffer = []
            print()
            continue
        if not buffer and line.strip().startswith("."):
            if _command(con, line.strip()):
                break
            continue
        buffer.append(line)
        if line.rstrip().endswith(";"):
            _run("\n".join(buffer), con)
            buffer = []
    if buffer and "".join(buffer).strip():
        _run("\n".join(buffer), con)
    if interactive:
        _save_history()
    return 0


def _read() -> str:
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line.rstrip("\n")


def _run(sql: str, con: Connection) -> None:
    try:
        table = con.sql(sql)
        if table.column_names == ["plan"]:
            print("\n".join(table.column("plan").to_pylist()))
        else:
            print(format_table(table, max_rows=200))
    except SmolQLError as e:
        print(f"Error: {e}")
        if getattr(e, "context", ""):
            print(e.context)


def _command(con: Connection, command: str) -> bool:
    """Run a dot command; return True to quit."""
    if command in (".quit", ".exit"):
        return True
    if command == ".catalogs":
        print("\n".join(con.catalogs()) or "(no catalogs)")
    elif command == ".tables":
        _run("SHOW ALL TABLES;", con)
    else:
        print(HELP)
    return False


def _load_history() -> None:
    try:
        import readline

        readline.read_history_file(HISTORY)
    except (ImportError, OSError):
        pass


def _save_history() -> None:
    try:
        import readline

        readline.set_history_length(1000)
        readline.write_history_file(HISTORY)
    except (ImportError, OSError):
        pass
