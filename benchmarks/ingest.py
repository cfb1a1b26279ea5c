"""Catalog ingest with the three default renditions, SmolQL vs a plain Pillow loop.

Both do the same work for each of the 500 sample JPEGs: read, hash, read the header and EXIF
orientation, decode, downscale to a 161 px short side with an anti-aliased filter, write JPEG
q75, JPEG q95 and PNG renditions, and record the metadata in DuckDB.

    python benchmarks/ingest.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import duckdb
from common import median_rate, report, sample_files
from PIL import Image, ImageOps

import smolql

SPECS = (("jpeg", 75), ("jpeg", 95), ("png", None))


def pillow_loop(files: list[Path], out: Path) -> int:
    """The straightforward single-process way to build the same catalog."""
    con = duckdb.connect(str(out / "baseline.duckdb"))
    con.execute(
        "CREATE TABLE images (path VARCHAR, width INT, height INT, bytes BIGINT,"
        " hash VARCHAR, orientation INT)"
    )
    rows = []
    for f in files:
        data = f.read_bytes()
        digest = hashlib.blake2b(data, digest_size=16).hexdigest()
        with Image.open(f) as im:
            orientation = im.getexif().get(0x0112, 1)
            rgb = ImageOps.exif_transpose(im).convert("RGB")
        scale = 161 / min(rgb.size)
        small = (
            rgb.resize(
                (round(rgb.width * scale), round(rgb.height * scale)), Image.Resampling.LANCZOS
            )
            if scale < 1
            else rgb
        )
        for fmt, quality in SPECS:
            target = out / f"{fmt}{quality or ''}" / f"{digest}.{fmt}"
            target.parent.mkdir(exist_ok=True)
            small.save(target, quality=quality) if quality else small.save(target)
        rows.append((str(f), rgb.width, rgb.height, len(data), digest, orientation))
    con.executemany("INSERT INTO images VALUES (?, ?, ?, ?, ?, ?)", rows)
    con.close()
    return len(files)


def smolql_ingest(source: Path, out: Path) -> int:
    with smolql.connect(str(out / "smolql.duckdb")) as con:
        return con.create_catalog("bench", str(source), progress=False).images


def fresh(run):
    """Run in a new empty output folder each time, so nothing is reused between runs."""

    def wrapped() -> int:
        out = Path(tempfile.mkdtemp(prefix="smolql-bench-"))
        try:
            return run(out)
        finally:
            shutil.rmtree(out, ignore_errors=True)

    return wrapped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    files = sample_files()
    source = files[0].parent
    print(f"{len(files)} images from {source}, {os.cpu_count()} cores, median of {args.repeats}")
    rows = []
    for name, run in (
        ("pillow loop (1 process)", fresh(lambda out: pillow_loop(files, out))),
        ("smolql create_catalog", fresh(lambda out: smolql_ingest(source, out))),
    ):
        rate, runs = median_rate(run, args.repeats)
        rows.append((name, rate, runs))
    report(rows, baseline="pillow loop (1 process)")


if __name__ == "__main__":
    main()
