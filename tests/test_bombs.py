"""Memory and time bombs: a JPEG whose header claims 30000 x 30000 pixels, a PNG declaring
100000 x 100000, a progressive JPEG with 3,000 repeated (illegal) scans and one with 2,090
legal scans (every coefficient sent bit by bit: written by ``fixtures/manyscans.c``, built
here against the system's libjpeg). At ingest they are skipped with the reason; put in place
of ingested photographs, a query gives NULLs with warnings naming them. Run in a process whose
peak memory is measured: never near the size the headers claim."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import pytest
from conftest import real_jpegs
from PIL import Image


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def bombs(photo: Path) -> dict[str, bytes]:
    small = io.BytesIO()
    Image.new("RGB", (16, 16)).save(small, "JPEG")
    huge_jpeg = bytearray(small.getvalue())
    sof = huge_jpeg.find(b"\xff\xc0")
    struct.pack_into(">HH", huge_jpeg, sof + 5, 30000, 30000)  # height, width in the SOF
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    huge_png = (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + _chunk(b"IEND", b"")
    )  # fmt: skip
    prog = io.BytesIO()
    Image.open(photo).convert("RGB").save(prog, "JPEG", progressive=True, quality=90)
    data = prog.getvalue()
    last_scan = data[data.rfind(b"\xff\xda") : -2]
    scans = data[:-2] + last_scan * 3000 + b"\xff\xd9"
    return {
        "a.jpg": bytes(huge_jpeg),
        "b.png": huge_png,
        "c.jpg": scans,
        "d.jpg": many_legal_scans(1024),
    }


def many_legal_scans(side: int) -> bytes:
    """A ``side`` x ``side`` progressive JPEG with the most scans libjpeg accepts."""
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler to build fixtures/manyscans.c")
    folder = Path(tempfile.mkdtemp(prefix="smolql-scans-"))
    try:
        exe, out = folder / "manyscans", folder / "s.jpg"
        source = Path(__file__).parent / "fixtures" / "manyscans.c"
        subprocess.run([cc, "-O2", "-o", exe, source, "-ljpeg"], check=True)
        made = subprocess.run([exe, str(side), str(side), out], check=True, capture_output=True)
        assert made.stdout.strip() == b"2090"
        return out.read_bytes()
    finally:
        shutil.rmtree(folder)


RUN = """
import sys, warnings, smolql
folder, db, step = sys.argv[1:4]
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    with smolql.connect(db) as con:
        if step == "ingest":
            s = con.create_catalog("c", folder, renditions=("96:jpeg:80",), progress=False)
            print("SKIPPED", s.skipped, sorted(r for _, r in s.reasons))
        else:
            con.sql("SET smolql.cache = off")
            rows = con.sql("SELECT file, classify(image).label AS l FROM c").to_pylist()
            print("NULLS", sorted(r["file"] for r in rows if r["l"] is None))
print("WARNINGS", sorted(str(w.message) for w in caught))
# VmHWM: this program's own peak (ru_maxrss would also count the forked test runner's pages)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
print("PEAK_MB", int(hwm) // 1024)
"""


def run(folder: Path, db: Path, step: str) -> str:
    proc = subprocess.run([sys.executable, "-c", RUN, str(folder), str(db), step],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    peak = int(proc.stdout.rsplit("PEAK_MB ", 1)[1])
    assert peak < 1500, f"peak memory {peak} MB"  # 30000^2 RGB alone would be 2.7 GB
    return proc.stdout


def write(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def test_bombs_are_refused_at_ingest_and_at_query_time(tmp_path):
    photos = real_jpegs(4)
    made = bombs(photos[0])
    at_ingest = write(tmp_path / "ingest", made)
    out = run(at_ingest, tmp_path / "i.duckdb", "ingest")
    assert "SKIPPED 4" in out
    assert "30000x30000 = 900,000,000 pixels exceeds the limit" in out
    assert "100000x100000 = 10,000,000,000 pixels exceeds the limit" in out
    assert "Inconsistent progression sequence" in out
    assert "progressive JPEG with more than 500 scans" in out

    originals = {name: photo.read_bytes() for name, photo in zip(made, photos, strict=True)}
    swapped = write(tmp_path / "swapped", originals)
    assert "SKIPPED 0" in run(swapped, tmp_path / "q.duckdb", "ingest")
    write(swapped, made)  # the world changes under the catalog
    out = run(swapped, tmp_path / "q.duckdb", "query")
    assert "NULLS ['a.jpg', 'b.png', 'c.jpg', 'd.jpg']" in out
    assert "30000x30000 exceeds the pixel limit" in out
    assert "100000x100000 exceeds the pixel limit" in out
    assert "Inconsistent progression sequence" in out
    assert "progressive JPEG with more than 500 scans" in out
