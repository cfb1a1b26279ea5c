"""SIGKILL at seeded random moments during an ingest, a classification that writes the cache,
``smolql profile`` and ``smolql train``. After each kill the database opens and is consistent
(catalog counts, every rendition row with its file, the cache answering exactly what a fresh
computation gives, profiles and trained models whole or absent); the re-run completes with the
results of an uninterrupted run and leaves no temporary or orphan file.

``SMOLQL_KILL_POINTS`` kills per operation (default 2 here; the issue's full run is 20).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from conftest import copied, real_jpegs

import smolql

pytestmark = pytest.mark.slow
POINTS = int(os.environ.get("SMOLQL_KILL_POINTS", "2"))
RENDITION = "161:jpeg:75"
QUERY = "SELECT file, classify(image).label AS l, classify_topk(image, 3) AS t FROM c ORDER BY 1"


def cli(db: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "smolql.cli", "--db", db, *args]


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, timeout=900)
    return time.perf_counter() - start


def killed(argv: list[str], after: float) -> None:
    """Start ``argv`` and SIGKILL it ``after`` seconds later (if it is still running)."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=after)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def files_under(folder: str) -> set[str]:
    return {os.path.join(r, n) for r, _, names in os.walk(folder) for n in names}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return copied(real_jpegs(40), tmp_path_factory.mktemp("kill") / "img")


@pytest.fixture(scope="module")
def base(tmp_path_factory, images) -> Path:
    """A database with catalog ``c`` (and its renditions) that each run copies."""
    db = tmp_path_factory.mktemp("base") / "base.duckdb"
    subprocess.run(cli(str(db), "catalog", "create", "c", str(images), "--rendition", RENDITION),
                   check=True, capture_output=True)  # fmt: skip
    return db


def copy_of(base: Path, folder: Path) -> str:
    """The base database under ``folder`` (its rendition rows keep naming the base's files,
    which nothing here changes)."""
    folder.mkdir()
    target = folder / "c.duckdb"
    shutil.copy2(base, target)
    return str(target)


def test_kill_during_ingest(tmp_path, images):
    reference = str(tmp_path / "ref.duckdb")
    seconds = timed(cli(reference, "catalog", "create", "c", str(images), "--rendition", RENDITION))
    rows = "SELECT file, hash, width, height FROM c ORDER BY file"
    with smolql.connect(reference) as con:
        want = con.sql(rows).to_pylist()
    rng = random.Random(15)
    for point in range(POINTS):
        db = str(tmp_path / f"i{point}.duckdb")
        argv = cli(db, "catalog", "create", "c", str(images), "--rendition", RENDITION)
        killed(argv, rng.uniform(0.05, 1.0) * seconds)
        with smolql.connect(db) as con:
            if "c" in con.catalogs():
                shown = con.describe_catalog("c")
                n = con.sql("SELECT count(*) AS n FROM c")["n"][0].as_py()
                assert shown["images"] == n
                paths = con.duckdb.execute("SELECT path FROM smolql.renditions").fetchall()
                assert all(os.path.getsize(p) > 0 for (p,) in paths)  # no row without its file
        subprocess.run(argv, check=True, capture_output=True, timeout=900)
        with smolql.connect(db) as con:
            assert con.sql(rows).to_pylist() == want
            kept = {p for (p,) in con.duckdb.execute("SELECT path FROM smolql.renditions")
                    .fetchall()}  # fmt: skip
        assert files_under(db + ".renditions") == kept  # no temporary or orphan file


def test_kill_during_a_query_that_writes_the_cache(tmp_path, base):
    reference = copy_of(base, tmp_path / "ref")
    seconds = timed(cli(reference, "query", QUERY))
    warnings.simplefilter("ignore")
    with smolql.connect(reference) as con:
        want = con.sql(QUERY).to_pylist()
    rng = random.Random(16)
    for point in range(POINTS):
        db = copy_of(base, tmp_path / f"q{point}")
        killed(cli(db, "query", QUERY), rng.uniform(0.05, 1.0) * seconds)
        with smolql.connect(db) as con:
            cached = con.sql(QUERY).to_pylist()  # what the cache holds, completed
            con.sql("SET smolql.cache = off")
            assert cached == con.sql(QUERY).to_pylist() == want  # no partial or wrong rows
        subprocess.run(cli(db, "query", QUERY), check=True, capture_output=True, timeout=900)


def test_kill_during_a_profile(tmp_path, base):
    args = ("profile", "c", "--model", "efficientnet_lite0", "--sample", "12", "--repeats", "1",
            "--precision", "fp32", "--no-smaller-inputs")  # fmt: skip
    reference = copy_of(base, tmp_path / "ref")
    seconds = timed(cli(reference, *args, "--plot", str(tmp_path / "ref.png")))
    plans = "SELECT plan, images, correct FROM smolql.plan_profiles ORDER BY plan"
    with smolql.connect(reference) as con:
        want = con.duckdb.execute(plans).fetchall()
    assert want
    rng = random.Random(17)
    for point in range(POINTS):
        db = copy_of(base, tmp_path / f"p{point}")
        argv = cli(db, *args, "--plot", str(tmp_path / f"p{point}.png"))
        killed(argv, rng.uniform(0.05, 1.0) * seconds)
        with smolql.connect(db) as con:
            got = con.duckdb.execute(plans).fetchall()
            fits = con.duckdb.execute("SELECT count(*) FROM smolql.cost_models").fetchall()[0][0]
        assert got in ([], want) and fits == (1 if got else 0)  # all of a profile, or none
        subprocess.run(argv, check=True, capture_output=True, timeout=900)
        with smolql.connect(db) as con:
            assert con.duckdb.execute(plans).fetchall() == want


def test_kill_during_training(tmp_path, base):
    args = ("train", "c", "--model", "efficientnet_lite0", "--rendition", RENDITION,
            "--epochs", "1", "--limit", "8")  # fmt: skip
    reference = copy_of(base, tmp_path / "ref")
    seconds = timed(cli(reference, *args))
    weights = "SELECT name, weights FROM smolql.trained_models"
    with smolql.connect(reference) as con:
        ((name, ref_weights),) = con.duckdb.execute(weights).fetchall()
    rng = random.Random(18)
    for point in range(POINTS):
        db = copy_of(base, tmp_path / f"t{point}")
        killed(cli(db, *args), rng.uniform(0.05, 1.0) * seconds)
        with smolql.connect(db) as con:
            rows = con.duckdb.execute(weights).fetchall()
            folder = con.models_folder
        assert len(rows) <= 1 and all(os.path.getsize(w) > 0 for _, w in rows)  # whole or none
        subprocess.run(cli(db, *args), check=True, capture_output=True, timeout=900)
        with smolql.connect(db) as con:
            ((again, path),) = con.duckdb.execute(weights).fetchall()
            labels = con.sql(f"SELECT classify(image, '{name}').label AS l FROM c LIMIT 3")
        assert again == name and labels.num_rows == 3
        assert os.path.basename(path) == os.path.basename(ref_weights)  # the same weights
        assert files_under(folder) == {path}  # no temporary or orphan weights
