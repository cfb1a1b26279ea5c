"""Measure backends on real images and pick the default: the fastest (backend, precision,
batch size) on this machine whose top-1 agrees with fp32 on at least 99.5% of a sample.

Measurements are kept per machine, model, weights and runtimes in the user's cache
(:mod:`smolql.planner.calibration`), shared by every database; a query never measures.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
from tqdm import tqdm

from smolql.backends.registry import available
from smolql.errors import InferenceError
from smolql.models.spec import ModelSpec
from smolql.ops.loader import stream_batches
from smolql.ops.pipeline import ImageRef, Preprocessor
from smolql.planner import rates
from smolql.planner.calibration import Measurement, load, save
from smolql.planner.space import PhysicalPlan
from smolql.planner.targets import Candidate, Targets, rank

MIN_AGREEMENT = 0.995
BATCH_SIZES = (16, 32)
REFERENCE = ("onnxruntime", "fp32")
CALIBRATION_IMAGES = 64


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
    engines = options or candidates()
    if spec.onnx:  # a user's ONNX model: only engines that run ONNX graphs
        engines = [(n, p) for n, p in engines if backends[n].runs_onnx]
    bar = tqdm(total=len(engines) * len(BATCH_SIZES), unit="engine", desc=f"calibrate {spec.name}",
               disable=not sys.stderr.isatty())  # fmt: skip
    for name, precision in engines:
        for batch in BATCH_SIZES:
            bar.update()
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
    bar.close()
    return results


def _timed(session, sample: np.ndarray, batch: int) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    top1 = _top1(session, sample, batch)
    return len(sample) / (time.perf_counter() - start), top1


def pick(measurements: list[Measurement], sample_size: int) -> Measurement:
    """The default engine: the plan chooser's ranking with "no accuracy change" as its target
    (top-1 agreement with fp32 within 1 - MIN_AGREEMENT), fastest first.

    A reduced precision (bf16, fp16) must *show* that it meets the target on ``sample_size``
    images: its disagreement plus the 95% bound of what the sample cannot see (3/n, the rule of
    three) must stay within 1 - MIN_AGREEMENT. 64 calibration images cannot show 0.5%, so on
    them the default stays at full precision (measured on an AVX-512 BF16 host: OpenVINO bf16
    agreed on 64 of 64 photographs but on 99.4% of the 500-image sample); reduced precisions
    remain plans that a profile measures and an accuracy target may choose.

    >>> m = [Measurement("a", "fp32", 32, 100.0, 1.0), Measurement("b", "bf16", 32, 200.0, 1.0)]
    >>> pick(m, 64).backend, pick(m, 1000).backend
    ('a', 'b')
    """
    allowed = 1.0 - MIN_AGREEMENT
    measurements = [
        m
        for m in measurements
        if m.precision == "fp32" or (1.0 - m.top1_agreement) + 3.0 / sample_size <= allowed
    ]
    of = {
        Candidate(
            PhysicalPlan("", backend=m.backend, precision=m.precision),
            m.top1_agreement,
            m.images_per_s,
        ): m
        for m in measurements
    }
    ranked = rank(list(of), Targets(max_accuracy_loss=1.0 - MIN_AGREEMENT), 1.0)
    return of[ranked[0]]


def _top1(session, sample: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate(
        [session.run(sample[i : i + batch]).argmax(axis=1) for i in range(0, len(sample), batch)]
    )


def stored_choice(spec: ModelSpec) -> Measurement | None:
    """This machine's measured default engine for ``spec`` (None: not calibrated yet)."""
    calibration = load(spec)
    return calibration.chosen if calibration else None


def infer_seconds(
    spec: ModelSpec, base: ModelSpec, backend: str, precision: str, batch: int
) -> float | None:
    """Seconds per image of ``spec``'s inference on an engine, from this machine's calibration
    of its base model (the measurement at the nearest batch size), scaled by input pixels for
    another input size; None when the engine was not measured here."""
    calibration = load(base)
    if calibration is None:
        return None
    at = [
        m
        for m in calibration.measurements
        if (m.backend, m.precision) == (backend, precision) and m.images_per_s
    ]
    if not at:
        return None
    m = min(at, key=lambda m: abs(m.batch_size - batch))
    return (spec.input_size / base.input_size) ** 2 / m.images_per_s


def default_choice() -> Measurement:
    """The engine an uncalibrated machine uses: the fp32 reference, batch 32."""
    return Measurement(*REFERENCE, 32, 0.0, 1.0)


def with_precision(spec: ModelSpec, precision: str) -> Measurement:
    """The fastest measured (backend, batch size) at an explicitly asked ``precision``; an
    unmeasured precision (int8) goes to the first backend that offers it."""
    calibration = load(spec)
    measured = calibration.fastest(precision) if calibration else None
    if measured is not None:
        return measured
    offering = [
        n
        for n, b in available().items()
        if precision in b.capabilities().precisions and (b.runs_onnx or not spec.onnx)
    ]
    if not offering:
        raise InferenceError(
            f"no backend here offers precision {precision!r}"
            f" (on this machine: {', '.join(sorted({p for _, p in candidates()}))})"
        )
    return Measurement(offering[0], precision, 32, 0.0, 0.0)


def calibrate_sample(spec: ModelSpec, sample: np.ndarray, threads: int) -> Measurement:
    """Measure every candidate engine on ``sample`` and store the choice for this machine."""
    measurements = measure(spec, sample, threads)
    return save(spec, pick(measurements, len(sample)), measurements).chosen


def calibration_images() -> list[str]:
    """Real photographs every installation has: the ones in scikit-image's wheel."""
    import skimage

    data = os.path.join(os.path.dirname(skimage.__file__), "data")
    return sorted(
        os.path.join(data, f)
        for f in os.listdir(data)
        if f.endswith((".png", ".jpg")) and os.path.getsize(os.path.join(data, f)) > 20_000
    )


def calibrate(spec: ModelSpec, paths: list[str]) -> Measurement:
    """Measure every candidate engine for ``spec`` on up to 64 of ``paths`` (tiled to 64 when
    fewer) and store the choice for this machine."""
    refs = [ImageRef(i, p) for i, p in enumerate(paths[:CALIBRATION_IMAGES])]
    pre = Preprocessor(spec.transform)
    batches = [b.tensor.copy() for b in stream_batches(refs, pre, batch_size=32)]
    if not batches or not sum(len(b) for b in batches):
        raise InferenceError("no calibration image could be decoded")
    sample = np.concatenate(batches)
    sample = np.resize(sample, (CALIBRATION_IMAGES, *sample.shape[1:]))  # tile to full batches
    # The threads a query's inference gets on this machine before its rates are known.
    threads = rates.estimate([], None, model=None, engine="").threads
    return calibrate_sample(spec, sample, threads)
