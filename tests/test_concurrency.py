"""Eight threads, each with its own connection to one database file, classify at once with
different models and crops, cache on, for a while (``SMOLQL_STRESS_SECONDS``, default 40; the
issue's full run is 600): every answer equals a single-threaded, cache-off computation, no
thread hangs, and the cache stays consistent (rows for one key never disagree)."""

from __future__ import annotations

import os
import random
import threading
import time
import warnings

import pytest
from conftest import copied, real_jpegs

import smolql

SECONDS = float(os.environ.get("SMOLQL_STRESS_SECONDS", "40"))
THREADS = 8
MODELS = ("efficientnet_lite0", "efficientnet_lite1")


def queries() -> list[str]:
    out = []
    for m in MODELS:
        for c in ("a", "b"):
            out.append(
                f"SELECT file, classify(image, '{m}').label AS l,"
                f" round(classify(image, '{m}').score, 3) AS s FROM {c} ORDER BY file"
            )
            out.append(
                f"SELECT file, classify(crop(image, 20, 20, 160, 160), '{m}').label AS l"
                f" FROM {c} ORDER BY file"
            )
            out.append(
                f"SELECT file, list_transform(classify_topk(image, 3, '{m}'), x -> x.label) AS t"
                f" FROM {c} WHERE width > 100 ORDER BY file"
            )
    return out


@pytest.mark.slow
def test_eight_threads_with_their_own_connections_agree_with_one(tmp_path):
    files = real_jpegs(12)
    db = str(tmp_path / "c.duckdb")
    warnings.simplefilter("ignore")
    with smolql.connect(db, cache="off") as con:
        con.create_catalog("a", str(copied(files[:6], tmp_path / "a")), renditions=(),
                           progress=False)  # fmt: skip
        con.create_catalog("b", str(copied(files[6:], tmp_path / "b")), renditions=(),
                           progress=False)  # fmt: skip
        expected = {q: con.sql(q).to_pylist() for q in queries()}
    wrong: list[str] = []
    failed: list[str] = []
    done = [0] * THREADS
    deadline = time.monotonic() + SECONDS

    def work(n: int) -> None:
        rng = random.Random(n)
        try:
            with smolql.connect(db) as mine:
                while time.monotonic() < deadline:
                    q = rng.choice(list(expected))
                    if mine.sql(q).to_pylist() != expected[q]:
                        wrong.append(q)
                    done[n] += 1
        except Exception as e:  # a failure of any kind is the finding
            failed.append(f"thread {n}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=work, args=(n,), daemon=True) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=SECONDS + 600)
    assert not [t for t in threads if t.is_alive()], "a thread hung (deadlock?)"
    assert failed == [] and wrong == [], (failed[:3], wrong[:3])
    assert all(done), done  # every thread got queries through
    print(f"{sum(done)} queries in {SECONDS:.0f} s by {THREADS} threads: {done}")
    with smolql.connect(db) as con:
        disagree = con.duckdb.execute(
            "SELECT count(*) FROM (SELECT hash, model, weights, plan, roi, k"
            " FROM smolql.udf_cache GROUP BY ALL HAVING count(DISTINCT topk) > 1)"
        ).fetchall()[0][0]
        assert disagree == 0
        for q, rows in expected.items():  # what the cache now answers is still right
            assert con.sql(q).to_pylist() == rows
