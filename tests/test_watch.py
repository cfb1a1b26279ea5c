"""Cached queries trust files the kernel has reported no change to (smolql.watch), and only
those: each test changes files in a way a watch could miss if built carelessly (through
another hard link, a symlink's target, a renamed ancestor folder, a same-size write with
the mtime set back) and checks the cached answer against a cache-off computation."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from conftest import real_jpegs

import smolql
from smolql.executor import cached
from smolql.watch import WATCHER

pytestmark = pytest.mark.skipif(WATCHER.broken, reason="no inotify on this system")
SQL = "SELECT file, classify(image).label AS l FROM photos ORDER BY file"


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def answers(con) -> dict[str, str | None]:
    return {r["file"]: r["l"] for r in con.sql(SQL).to_pylist()}


def verified() -> set[str]:
    return set(WATCHER.verified().column("path").to_pylist())


def make(folder: Path, n: int = 6) -> list[Path]:
    folder.mkdir(parents=True)
    out = []
    for i, src in enumerate(real_jpegs(n)):
        out.append(folder / f"{i:02d}.jpg")
        shutil.copyfile(src, out[-1])
    return out


def ran(con) -> str:
    """What EXPLAIN ANALYZE says the stage did (counts only)."""
    lines = con.sql(f"EXPLAIN ANALYZE {SQL}")["plan"].to_pylist()
    line = next(x for x in lines if "rows from pre-filter" in x)
    return line.split(", ", 1)[1].rsplit(", ", 1)[0]


def check(con, fresh) -> dict[str, str | None]:
    got = answers(con)
    assert got == answers(fresh)
    return got


def test_a_cached_query_trusts_watched_files_until_they_change(tmp_path):
    files = make(tmp_path / "photos")
    db = str(tmp_path / "w.duckdb")
    with smolql.connect(db) as con, smolql.connect(db, cache="off") as fresh:
        con.create_catalog("photos", str(tmp_path / "photos"), renditions=(), progress=False)
        first = check(con, fresh)
        assert {str(f) for f in files} <= verified()  # the first query verified them
        assert ran(con) == f"cached {len(files)}, inferred 0, errors 0, files checked 0"
        # Same size, the mtime set back: only the event tells.
        st = files[0].stat()
        other = min((p.read_bytes() for p in real_jpegs(20)), key=len)  # zero-padded to size
        assert len(other) < st.st_size
        files[0].write_bytes((other + b"\0" * st.st_size)[: st.st_size])
        os.utime(files[0], ns=(st.st_atime_ns, st.st_mtime_ns))
        assert str(files[0]) not in verified()
        assert ran(con) == "cached 5, inferred 1, errors 0, files checked 1"
        second = check(con, fresh)
        assert second[files[0].name] != first[files[0].name]
        files[1].unlink()
        assert check(con, fresh)[files[1].name] is None
        shutil.copyfile(real_jpegs(1)[0], files[1])  # back, under a new inode
        assert check(con, fresh)[files[1].name] == first[files[0].name]


def test_files_written_through_another_link_are_never_trusted(tmp_path):
    files = make(tmp_path / "photos", 3)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.link(files[0], elsewhere / "same.jpg")
    os.remove(files[1])
    os.symlink(real_jpegs(2)[1], files[1])  # the catalog names a symlink
    db = str(tmp_path / "w.duckdb")
    with smolql.connect(db) as con, smolql.connect(db, cache="off") as fresh:
        con.create_catalog("photos", str(tmp_path / "photos"), renditions=(), progress=False)
        before = check(con, fresh)
        trusted = verified()
        assert str(files[2]) in trusted
        assert str(files[0]) not in trusted and str(files[1]) not in trusted
        with open(elsewhere / "same.jpg", "r+b") as f:  # in place, through the other link
            f.write(real_jpegs(5)[4].read_bytes())
        after = check(con, fresh)
        assert after[files[0].name] != before[files[0].name]


def test_a_renamed_ancestor_folder_forgets_what_was_under_it(tmp_path):
    root = tmp_path / "a"
    files = make(root / "photos", 3)
    db = str(tmp_path / "w.duckdb")
    with smolql.connect(db) as con, smolql.connect(db, cache="off") as fresh:
        con.create_catalog("photos", str(root / "photos"), renditions=(), progress=False)
        before = check(con, fresh)
        assert str(files[0]) in verified()
        root.rename(tmp_path / "b")  # an ancestor: the files' own folder sends nothing
        assert not {str(f) for f in files} & verified()
        make(root / "photos", 0)
        for i, f in enumerate(files):  # other photographs at the same paths
            shutil.copyfile(real_jpegs(6)[5 - i], f)
        after = check(con, fresh)
        assert after != before


def test_a_forked_child_reads_no_event_of_its_parent(tmp_path):
    files = make(tmp_path / "photos", 2)
    db = str(tmp_path / "w.duckdb")
    with smolql.connect(db) as con, smolql.connect(db, cache="off") as fresh:
        con.create_catalog("photos", str(tmp_path / "photos"), renditions=(), progress=False)
        check(con, fresh)
        code = (
            "import os, sys\n"
            "from smolql.watch import WATCHER\n"
            f"WATCHER.watch([{str(files[1])!r}])\n"
            "st = os.lstat(sys.argv[1])\n"
            "sig = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)\n"
            "WATCHER.add([(sys.argv[1], ('h', 1, sig))])\n"
            "assert WATCHER.verified().num_rows == 1\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    open(sys.argv[1], 'ab').write(b'x')\n"
            "    WATCHER.verified()\n"  # its own instance: the parent's queue is not read
            "    os._exit(0)\n"
            "os.waitpid(pid, 0)\n"
            "print(WATCHER.verified().column('path').to_pylist())\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, str(files[1])], capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == "[]"  # the parent saw the child's write


QUEUE = Path("/proc/sys/fs/inotify/max_queued_events")


@pytest.mark.skipif(not os.access(QUEUE, os.W_OK), reason="cannot set max_queued_events here")
def test_a_lost_event_queue_forgets_every_file(tmp_path):
    files = make(tmp_path / "photos", 2)
    code = (
        "import os, sys\n"
        "from smolql.watch import WATCHER\n"
        "a = sys.argv[1]\n"
        "WATCHER.watch([a])\n"
        "st = os.lstat(a)\n"
        "WATCHER.add([(a, ('h', 1, (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)))])\n"
        "assert WATCHER.verified().num_rows == 1\n"
        "for i in range(64):\n"  # entries of the folder other than the verified file
        "    open(os.path.join(os.path.dirname(a), f'n{i}.txt'), 'w').close()\n"
        "print(WATCHER.verified().num_rows)\n"
    )
    before = QUEUE.read_text()
    QUEUE.write_text("16")  # read by inotify_init: only the child's new instance gets it
    try:
        out = subprocess.run(
            [sys.executable, "-c", code, str(files[0])],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
    finally:
        QUEUE.write_text(before)
    assert out.stdout.strip() == "0"  # its events were not all read: it trusts nothing


def test_two_catalogs_of_one_folder_share_their_answers(tmp_path, monkeypatch):
    monkeypatch.setattr(cached, "CHUNK", 3)  # one path's two values land in different chunks
    make(tmp_path / "photos", 4)
    db = str(tmp_path / "w.duckdb")
    both = "SELECT {} FROM (SELECT image FROM photos UNION ALL SELECT image FROM again) ORDER BY l"
    with smolql.connect(db) as con, smolql.connect(db, cache="off") as fresh:
        for name in ("photos", "again"):
            con.create_catalog(name, str(tmp_path / "photos"), renditions=(), progress=False)
        for call in (
            "classify(image).label AS l",
            "classify(crop(image, 0, 0, 64, 64)).label AS l",
        ):
            WATCHER.forget()  # once resolved in Python (in chunks), once vouched for
            for _ in range(2):
                got = con.sql(both.format(call))["l"].to_pylist()
                assert got == fresh.sql(both.format(call))["l"].to_pylist()
                assert len(got) == 8 and None not in got and got[0::2] == got[1::2]
