"""Which local files have stayed untouched since SmolQL last looked at them (Linux inotify).

Checking that every image of a catalog is still what was ingested costs one ``stat`` per file
per query; at 100,000 images that is most of a cached query's time. Like git's fsmonitor, a
process can instead ask the kernel to report changes: a file whose signature was checked after
its folder was watched, and that has had no event since, still has that signature.

What is watched, per folder of a verified file: the folder itself (writes, attribute changes,
creations, deletions and renames of its entries) and each of its ancestors (a renamed,
deleted or replaced ancestor, symlinks included, puts other files at the same paths). Only
local file systems qualify (inotify says nothing of changes made by another NFS client);
files with several hard links (written through a path in a folder not watched) and symlinks
(their target may live anywhere) never do. A lost event queue (overflow) forgets everything:
the next query checks every file again. Not seen by inotify: writes through a shared memory
map (``mmap``); SmolQL treats image files as written by ``write``.
"""

from __future__ import annotations

import ctypes
import os
import stat
import struct
import sys
import threading
from collections.abc import Iterable

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x2, 0x4, 0x8
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
IN_DELETE_SELF, IN_MOVE_SELF, IN_UNMOUNT, IN_Q_OVERFLOW, IN_IGNORED = (
    0x400,
    0x800,
    0x2000,
    0x4000,
    0x8000,
)
IN_ONLYDIR, IN_MASK_ADD = 0x01000000, 0x20000000
FOLDER = (
    IN_MODIFY
    | IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
)
ANCESTOR = IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF
SELF_GONE = IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT | IN_IGNORED
_EVENT = struct.Struct("iIII")

# statfs f_type of file systems whose every change passes through this kernel.
LOCAL_FS = {
    0xEF53,  # ext2/3/4
    0x58465342,  # xfs
    0x9123683E,  # btrfs
    0x01021994,  # tmpfs
    0x794C7630,  # overlayfs
    0x2FC12FC1,  # zfs
    0xF2F52010,  # f2fs
}

# A verified file: its signature was the one a catalog recorded with ``hash`` (and
# ``orientation``), checked after its folder was watched.
SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("hash", pa.string()),
        ("orientation", pa.int32()),
        ("bytes", pa.int64()),
        ("mtime_ns", pa.int64()),
        ("ctime_ns", pa.int64()),
        ("inode", pa.int64()),
    ]
)
Verified = tuple[str, int | None, tuple[int, int, int, int]]  # hash, orientation, signature


class _Statfs(ctypes.Structure):
    _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_byte * 112)]


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        libc.statfs.argtypes = [ctypes.c_char_p, ctypes.POINTER(_Statfs)]
        return libc
    except (OSError, AttributeError):
        return None


class Watcher:
    """One inotify instance and the files verified under it, for the whole process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._libc = _libc()
        self._fd = -1
        self._dirs: dict[int, str] = {}  # watch descriptor -> folder
        self._watched: dict[str, int] = {}  # folder -> the events watched there now
        self._local: dict[str, bool] = {}  # folder -> on a local file system
        self._table = SCHEMA.empty_table()  # the files verified, one row per path
        self._keyed: tuple[pa.Table, pa.Table] | None = None  # (table, it with keys)
        self._generation = 0  # grows whenever a vouched-for file stops being vouched for
        self.broken = self._libc is None

    def generation(self) -> int:
        """A number that grows whenever a file vouched for before stops being vouched for
        (read after pending events): equal numbers mean every file vouched for at the first
        reading still is."""
        with self._lock:
            self._drain()
            return self._generation

    def verified(self) -> pa.Table:
        """The files unchanged since verified (``SCHEMA``), after reading pending events, with
        ``key``: DuckDB's ``hash(path, hash)``, which a query joins on (one integer instead of
        two strings; rows whose keys collide are left out: never vouched for, never wrong)."""
        with self._lock:
            self._drain()
            if self._keyed is None or self._keyed[0] is not self._table:
                self._keyed = (self._table, _with_keys(self._table))
            return self._keyed[1]

    def watch(self, paths: Iterable[str]) -> set[str]:
        """Watch the folders of ``paths`` (and their ancestors); return the folders that are
        watched now. Call before checking the files' signatures."""
        with self._lock:
            ok = set()
            for folder in {os.path.dirname(p) for p in paths if p.startswith("/")}:
                if self._watch_folder(folder):
                    ok.add(folder)
            return ok

    def add(self, files: Iterable[tuple[str, Verified]]) -> None:
        """Vouch for files found as verified after :meth:`watch`: each is checked again here,
        under the lock that reading events takes, so that no change between that check and
        this one can have been read (and lost) by another thread meanwhile."""
        with self._lock:
            self._drain()  # a file vouched for already stays so only while no event says
            rows = {}
            for path, verified in files:
                if self._watched.get(os.path.dirname(path), 0) & FOLDER != FOLDER:
                    continue  # its folder's watch was lost meanwhile (an event said so)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                signature = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
                if trustworthy(st) and signature == verified[2]:
                    rows[path] = verified
            if rows:
                self._table = pa.concat_tables([_without(self._table, set(rows)), _table(rows)])

    def forget(self) -> None:
        """Drop every verified file (tests; a caller that cannot trust the events)."""
        with self._lock:
            self._table = SCHEMA.empty_table()
            self._generation += 1

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        self._reset()

    def _open(self) -> bool:
        if self._fd < 0 and not self.broken:
            fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
            if fd < 0:
                self.broken = True
            self._fd = fd
        return not self.broken

    def _watch_folder(self, folder: str) -> bool:
        if self._watched.get(folder, 0) & FOLDER == FOLDER:
            return True
        if not self._open() or not self._is_local(folder):
            return False
        parts = folder.rstrip("/").split("/")
        chain = ["/".join(parts[:i]) or "/" for i in range(1, len(parts))]
        return all(self._add(a, ANCESTOR) for a in chain) and self._add(folder, FOLDER)

    def _add(self, folder: str, mask: int) -> bool:
        if self._watched.get(folder, 0) & mask == mask:
            return True
        wd = self._libc.inotify_add_watch(
            self._fd, os.fsencode(folder), mask | IN_ONLYDIR | IN_MASK_ADD
        )
        if wd < 0:
            return False
        self._dirs[wd] = folder
        self._watched[folder] = self._watched.get(folder, 0) | mask
        return True

    def _is_local(self, folder: str) -> bool:
        if folder not in self._local:
            buf = _Statfs()
            ok = self._libc.statfs(os.fsencode(folder), ctypes.byref(buf)) == 0
            self._local[folder] = ok and buf.f_type in LOCAL_FS
        return self._local[folder]

    def _drain(self) -> None:
        if self._fd < 0:
            return
        try:
            events = _read_events(self._fd)
        except (OSError, _Lost):  # an unusable instance, or events lost: trust nothing
            self._reset()
            return
        gone: set[str] = set()
        for wd, mask, name in events:
            folder = self._dirs.get(wd)
            if folder is None:
                continue
            if mask & SELF_GONE:
                gone.add(folder)
                if mask & IN_IGNORED:
                    del self._dirs[wd]
            if name:
                gone.add(os.path.join(folder, os.fsdecode(name)))
        if gone:
            self._invalidate(gone)

    def _invalidate(self, paths: set[str]) -> None:
        """Forget the files at ``paths`` and, for a watched folder's path, under it (the
        folder and its descendants are watched afresh, and their files verified again)."""
        folders = tuple(p + "/" for p in paths if p in self._watched)
        before = self._table.num_rows
        self._table = _without(self._table, paths, folders)
        if self._table.num_rows != before:
            self._generation += 1
        for folder in [d for d in self._watched if d + "/" in folders or d.startswith(folders)]:
            del self._watched[folder]

    def _reset(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -1
        self._dirs.clear()
        self._watched.clear()
        self._table = SCHEMA.empty_table()
        self._generation += 1


class _Lost(Exception):
    """The kernel's event queue overflowed: some changes are unknown."""


def _read_events(fd: int) -> list[tuple[int, int, bytes]]:
    """Every pending event: (watch descriptor, mask, entry name or b"")."""
    events = []
    while True:
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            return events
        except InterruptedError:
            continue
        offset = 0
        while offset < len(data):
            wd, mask, _, size = _EVENT.unpack_from(data, offset)
            if mask & IN_Q_OVERFLOW:
                raise _Lost
            events.append((wd, mask, data[offset + 16 : offset + 16 + size].rstrip(b"\0")))
            offset += 16 + size


def trustworthy(st: os.stat_result) -> bool:
    """A regular file with one link: every write to it passes through its folder."""
    return stat.S_ISREG(st.st_mode) and st.st_nlink == 1


def _with_keys(table: pa.Table) -> pa.Table:
    con = duckdb.connect()  # in memory; DuckDB's hash() is the same in every connection
    try:
        con.register("verified", table)
        return con.sql(
            "SELECT *, hash(path, hash) AS key FROM verified"
            " QUALIFY count(*) OVER (PARTITION BY key) = 1"
        ).to_arrow_table()
    finally:
        con.close()


def _without(table: pa.Table, paths: set[str], folders: tuple[str, ...] = ()) -> pa.Table:
    """``table`` less the rows at ``paths`` and under ``folders`` (each ending in ``/``)."""
    if not table.num_rows or not (paths or folders):
        return table
    column = table.column("path")
    drop = pc.is_in(column, value_set=pa.array(list(paths), pa.string()))
    for folder in folders:
        drop = pc.or_(drop, pc.starts_with(column, folder))
    return table.filter(pc.invert(drop)) if pc.any(drop).as_py() else table


def _table(files: dict[str, Verified]) -> pa.Table:
    rows = list(files.values())
    return pa.Table.from_arrays(
        [
            pa.array(list(files), pa.string()),
            pa.array([r[0] for r in rows], pa.string()),
            pa.array([r[1] for r in rows], pa.int32()),
        ]
        + [pa.array([r[2][i] for r in rows], pa.int64()) for i in range(4)],
        schema=SCHEMA,
    )


WATCHER = Watcher()
# A forked child shares the parent's event queue: were it to read events, the parent would
# miss them. It starts its own watcher instead (knowing nothing verified).
os.register_at_fork(after_in_child=WATCHER.after_fork)
