"""Measure backends on real images and pick the default: the fastest (backend, precision,
batch size) on this machine whose top-1 agrees with fp32 on at least 99.5% of a sample.

Measurements are stored in ``smolql.backend_profiles`` so they are made once per model
version and machine, not at every start.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import duckdb
import numpy as np

from smolql.backends.cpu import machine_id
from smolql.backends.registry import available
from smolql.errors import InferenceError
from smolql.models.spec import ModelSpec
from smolql.store import SCHEMA, fetch_one

MIN_AGREEMENT = 0.995
BATCH_SIZES = (16, 32)
REFERENCE = ("onnxruntime", "fp32")


@dataclass(frozen=True)
class Measurement:
    backend: str
    precision: str
    batch_size: int
    images_per_s: float
    top1_agreement: float


def candidates() -> list[tuple[str, str]]:
    """Every (backend, precision) usable without calibration: the default is chosen among
    these; calibrated precisions (int8) are plans the profiler measures."""
    return [
        (name, p)
        for name, b in available().items()
        for p in b.capabilities().precisions
        if p not in b.capabilities().calibrated
    ]


def measure(
    spec: ModelSpec, sample: np.ndarray, threads: int, options: list[tuple[str, str]] | None = None
) -> list[Measurement]:
    """Throughput (best of two timed passes over ``sample``; one for a clear loser) and top-1
    agreement with the fp32 reference, for each candidate and batch size."""
    backends = available()
    reference = _top1(backends[REFERENCE[0]].open(spec, REFERENCE[1], threads, 32), sample, 32)
    results: list[Measurement] = []
    for name, precision in options or candidates():
        for batch in BATCH_SIZES:
            session = backends[name].open(spec, precision, threads, batch)
            _top1(session, sample[:batch], batch)  # warm up
            rate, top1 = _timed(session, sample, batch)
            best = max((m.images_per_s for m in results), default=0.0)
            if rate >= 0.5 * best:  # a clear loser is not worth more passes or batch sizes
                rate, top1 = max(_timed(session, sample, batch), (rate, top1), key=lambda r: r[0])
            session.close()
            agreement = float((top1 == reference).mean())
            results.append(Measurement(name, precision, batch, rate, agreement))
            if rate < 0.5 * best:
                break
    return results


def _timed(session, sample: np.ndarray, batch: int) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    top1 = _top1(session, sample, batch)
    return len(sample) / (time.perf_counter() - start), top1


def pick(measurements: list[Measurement]) -> Measurement:
    good = [m for m in measurements if m.top1_agreement >= MIN_AGREEMENT]
    return max(good, key=lambda m: m.images_per_s)


def _top1(session, sample: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate(
        [session.run(sample[i : i + batch]).argmax(axis=1) for i in range(0, len(sample), batch)]
    )


def stored_choice(con: duckdb.DuckDBPyConnection, spec: ModelSpec) -> Measurement | None:
    row = fetch_one(
        con,
        f"SELECT backend, precision, batch_size, images_per_s, top1_agreement"
        f" FROM {SCHEMA}.backend_profiles WHERE model = ? AND weights = ? AND machine = ?"
        " AND chosen",
        [spec.name, spec.weights_hash(), machine_id()],
    )
    return Measurement(*row) if row else None


def with_precision(con: duckdb.DuckDBPyConnection, spec: ModelSpec, precision: str) -> Measurement:
    """The fastest measured (backend, batch size) at an explicitly asked ``precision``; an
    unmeasured precision (int8) goes to the first backend that offers it."""
    row = fetch_one(
        con,
        f"SELECT backend, precision, batch_size, images_per_s, top1_agreement"
        f" FROM {SCHEMA}.backend_profiles WHERE model = ? AND weights = ? AND machine = ?"
        " AND precision = ? ORDER BY images_per_s DESC LIMIT 1",
        [spec.name, spec.weights_hash(), machine_id(), precision],
    )
    if row:
        return Measurement(*row)
    offering = [n for n, b in available().items() if precision in b.capabilities().precisions]
    if not offering:
        raise InferenceError(
            f"no backend here offers precision {precision!r}"
            f" (on this machine: {', '.join(sorted({p for _, p in candidates()}))})"
        )
    return Measurement(offering[0], precision, 32, 0.0, 0.0)


def store(con: duckdb.DuckDBPyConnection, spec: ModelSpec, ms: list[Measurement]) -> Measurement:
    chosen = pick(ms)
    key = [spec.name, spec.weights_hash(), machine_id()]
    con.execute(
        f"DELETE FROM {SCHEMA}.backend_profiles WHERE model = ? AND weights = ? AND machine = ?",
        key,
    )
    for m in ms:
        con.execute(
            f"INSERT INTO {SCHEMA}.backend_profiles VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, now())",
            [*key, *asdict(m).values(), m == chosen],
        )
    return chosen
