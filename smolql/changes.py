"""Whether anything a reused query plan relies on may have changed since it was stamped.

Two witnesses, read in microseconds: a count of the writes this process made through SmolQL
(every statement that is not a UDF query, every catalog, model or profile change: they call
:func:`bump`), and the database file's signature with its write-ahead log's, which every
committed write to a stored table changes, whoever made it (a raw DuckDB handle included;
another process cannot write while this one has the file open). Temporary tables written
through a raw DuckDB handle are the one change neither sees: documented in the README.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

_lock = threading.Lock()
_writes = 0


def bump() -> None:
    """Count a write made through SmolQL (call after it, or before it starts: either is safe)."""
    global _writes
    with _lock:
        _writes += 1


def writes() -> int:
    """The writes counted so far in this process."""
    return _writes


@dataclass(frozen=True)
class Stamp:
    writes: int
    files: tuple


def stamp(database: str | None) -> Stamp:
    """The witnesses now, for the database file ``database`` (None: one in memory, the count
    alone)."""
    files: tuple = ()
    if database is not None:
        files = tuple(_signature(p) for p in (database, database + ".wal"))
    return Stamp(_writes, files)


def _signature(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


__all__ = ["Stamp", "bump", "stamp", "writes"]
