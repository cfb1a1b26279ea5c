"""Measure backends on real images and pick the default: the fastest (backend, precision,
batch size) on this machine whose answers are, with 95% confidence, those of fp32 but for at
most 1% of top-1 answers (of labelled answers lost, when the images have labels).

Speed is timed on 64 images; a reduced precision (bf16, fp16) that is faster than fp32 is then
compared with fp32 on up to 1,000 of the catalog's images, streamed in batches, and the
one-sided Clopper-Pearson bound on its rate of changed answers decides
(:mod:`smolql.planner.confidence`); the reason, with its numbers, is kept with the
calibration and shown by EXPLAIN.

Measurements are kept per machine, model, weights and runtimes in the user's cache
(:mod:`smolql.planner.calibration`), shared by every database; a query never measures.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import replace

import numpy as np
from tqdm import tqdm

from smolql.backends.registry import available
from smolql.errors import InferenceError
from smolql.models.spec import ModelSpec
from smolql.ops.loader import preprocessed, stream_batches
from smolql.ops.pipeline import ImageRef, Preprocessor
from smolql.planner import rates
from smolql.planner.calibration import Measurement, load, save
from smolql.planner.confidence import upper_bound
from smolql.planner.space import PhysicalPlan
from smolql.planner.targets import Candidate, Targets, rank

TOLERANCE = 0.01  # a reduced precision may change at most this share of answers (95% conf.)
BATCH_SIZES = (16, 32)
REFERENCE = ("onnxruntime", "fp32")
CALIBRATION_IMAGES = 64  # timed
AGREEMENT_IMAGES = 1000  # compared with fp32, for reduced precisions faster than it


def candidates() -> list[tuple[str, str]]:
    """Every (backend, precision) usable without calibration: the default is chosen among
    these; calibrated precisions (int8) are plans the profiler measures."""
    return [
        (name, p)
        for name, b in available().items()
        for p in b.capabilities().precisions
        if p not in b.capabilities().calibrated
    ]


def profile_precisions() -> tuple[str, ...]:
    """The precisions a profile measures by default: fp32, every reduced float precision a
    backend offers on this machine (bf16 on a CPU with AVX-512 BF16 or AMX), and int8.

    >>> profile_precisions()[0], profile_precisions()[-1]
    ('fp32', 'int8')
    """
    offered = {p for b in available().values() for p in b.capabilities().precisions}
    return ("fp32", *(p for p in ("bf16", "fp16") if p in offered), "int8")


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


def pick(measurements: list[Measurement]) -> tuple[Measurement, str]:
    """The default engine and why: the plan chooser's ranking, fastest first, over fp32 and
    the reduced precisions whose changed answers are bounded within :data:`TOLERANCE` (see
    :func:`verdict`).

    >>> fast = Measurement("b", "bf16", 32, 200.0, 1.0, compared=14)
    >>> m = [Measurement("a", "fp32", 32, 100.0, 1.0), fast]
    >>> chosen, reason = pick(m)
    >>> chosen.precision, reason.startswith("bf16 (b, 2.0x as fast) not used"), "19.26%" in reason
    ('fp32', True, True)
    >>> sure = Measurement("b", "bf16", 32, 200.0, 1.0, compared=1000, disagreements=2)
    >>> pick([m[0], sure])[0].precision
    'bf16'
    """
    sound = [m for m in measurements if m.precision == "fp32" or verdict(m)[0]]
    of = {
        Candidate(
            PhysicalPlan("", backend=m.backend, precision=m.precision),
            1.0 - _changed(m)[0] / max(_changed(m)[1], 1),
            m.images_per_s,
        ): m
        for m in sound
    }
    ranked = rank(list(of), Targets(max_accuracy_loss=TOLERANCE), 1.0)
    chosen = of[ranked[0]]
    return chosen, _reason(chosen, measurements)


def _changed(m: Measurement) -> tuple[int, int]:
    """(answers changed, images compared): labelled answers lost where there were labels,
    else every top-1 answer that differs from fp32's."""
    return (m.losses if m.losses >= 0 else m.disagreements), m.compared


def verdict(m: Measurement) -> tuple[bool, str]:
    """Whether a reduced precision is shown to change at most :data:`TOLERANCE` of answers
    at 95% confidence, and the numbers, in words."""
    k, n = _changed(m)
    if n == 0:
        head = f"{m.precision} ({m.backend}{{speed}}) {{used}}"
        return False, f"{head}: it was not compared with fp32"
    bound = upper_bound(k, n)
    what = "labelled answers" if m.losses >= 0 else "answers"
    verb = "loses" if m.losses >= 0 else "changes"
    text = (
        f"{m.precision} ({m.backend}{{speed}}) {{used}}: it {verb} {k} of {n} {what} against"
        f" fp32: at 95% confidence up to {100 * bound:.2f}%"
    )
    return bound <= TOLERANCE, text


def _reason(chosen: Measurement, measurements: list[Measurement]) -> str:
    """Why ``chosen``'s precision and not a faster one."""
    allowed = f"{100 * TOLERANCE:.0f}%"
    if chosen.precision != "fp32":
        fp32 = max((m.images_per_s for m in measurements if m.precision == "fp32"), default=0)
        speed = f", {chosen.images_per_s / fp32:.1f}x as fast as fp32" if fp32 else ""
        text = verdict(chosen)[1].format(speed=speed, used="used")
        return f"{text}, within the {allowed} allowed"
    faster = [
        m for m in measurements if m.precision != "fp32" and m.images_per_s > chosen.images_per_s
    ]
    if not faster:
        return "fp32: no reduced precision is faster here"
    best = max(faster, key=lambda m: m.images_per_s)
    speed = f", {best.images_per_s / chosen.images_per_s:.1f}x as fast"
    text = verdict(best)[1].format(speed=speed, used="not used")
    if not best.compared:
        return f"{text} (calibrate, or SET smolql.precision = '{best.precision}')"
    return (
        f"{text}, above the {allowed} allowed (calibrate on more images, or SET"
        f" smolql.precision = '{best.precision}')"
    )


def _top1(session, sample: np.ndarray, batch: int) -> np.ndarray:
    """Top-1 of ``sample`` in batches of ``batch``, handed to the engine together as a query
    that takes turns hands over one turn (the sample is one turn, :data:`CALIBRATION_IMAGES`)."""
    batches = [sample[i : i + batch] for i in range(0, len(sample), batch)]
    return np.concatenate([logits.argmax(axis=1) for logits in session.run_many(batches)])


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


def calibrate_sample(
    spec: ModelSpec,
    sample: np.ndarray,
    threads: int,
    paths: list[str] | None = None,
    truth: dict[str, int] | None = None,
) -> Measurement:
    """Measure every candidate engine on ``sample``, compare the faster reduced precisions
    with fp32 on ``paths`` (``truth``: their labels, where known), and store the choice."""
    measurements = measure(spec, sample, threads)
    if paths:
        measurements = agreement(spec, measurements, paths, truth or {}, threads)
    chosen, reason = pick(measurements)
    return save(spec, chosen, measurements, reason).chosen


def agreement(
    spec: ModelSpec,
    measurements: list[Measurement],
    paths: list[str],
    truth: dict[str, int],
    threads: int,
) -> list[Measurement]:
    """``measurements`` with each reduced precision that is faster than fp32 compared with
    fp32 on up to :data:`AGREEMENT_IMAGES` of ``paths`` (streamed: memory stays one batch):
    top-1 answers changed, and labelled answers lost where ``truth`` has the label."""
    backends = available()
    fp32 = max((m.images_per_s for m in measurements if m.precision == "fp32"), default=0.0)
    kinds = sorted(
        {(m.backend, m.precision) for m in measurements if m.precision != "fp32"}
        & {(m.backend, m.precision) for m in measurements if m.images_per_s > fp32}
    )
    if not kinds:
        return measurements
    refs = [ImageRef(i, p) for i, p in enumerate(paths[:AGREEMENT_IMAGES])]
    labels = [truth.get(p) for p in paths[:AGREEMENT_IMAGES]]
    reference = backends[REFERENCE[0]].open(spec, REFERENCE[1], threads, 32)
    sessions = {k: backends[k[0]].open(spec, k[1], threads, 32) for k in kinds}
    counts = {k: [0, 0, 0] for k in kinds}  # compared, changed, lost
    try:
        for batch in stream_batches(refs, Preprocessor(spec.transform), batch_size=32):
            if not batch.keys:
                continue
            x = batch.tensor[: len(batch.keys)]
            want = reference.run(x).argmax(axis=1)
            truths = [labels[key] for key in batch.keys]
            for kind, session in sessions.items():
                got = session.run(x).argmax(axis=1)
                c = counts[kind]
                c[0] += len(got)
                c[1] += int((got != want).sum())
                c[2] += sum(
                    int(t is not None and w == t and g != t)
                    for w, g, t in zip(want, got, truths, strict=True)
                )
    finally:
        reference.close()
        for session in sessions.values():
            session.close()
    labelled = any(t is not None for t in labels)
    return [
        replace(
            m,
            compared=counts[k][0],
            disagreements=counts[k][1],
            losses=counts[k][2] if labelled else -1,
        )
        if (k := (m.backend, m.precision)) in counts
        else m
        for m in measurements
    ]


def calibration_images() -> list[str]:
    """Real photographs every installation has: the ones in scikit-image's wheel."""
    import skimage

    data = os.path.join(os.path.dirname(skimage.__file__), "data")
    return sorted(
        os.path.join(data, f)
        for f in os.listdir(data)
        if f.endswith((".png", ".jpg")) and os.path.getsize(os.path.join(data, f)) > 20_000
    )


def calibrate(
    spec: ModelSpec, paths: list[str], truth: dict[str, int] | None = None
) -> Measurement:
    """Measure every candidate engine for ``spec`` on up to 64 of ``paths`` (tiled to 64 when
    fewer), compare faster reduced precisions with fp32 on up to 1,000 of them (``truth``:
    labels by path, where the catalog has them), and store the choice for this machine."""
    refs = [ImageRef(i, p) for i, p in enumerate(paths[:CALIBRATION_IMAGES])]
    pre = Preprocessor(spec.transform)
    sample = preprocessed(refs, pre)
    if not len(sample):
        raise InferenceError("no calibration image could be decoded")
    sample = np.resize(sample, (CALIBRATION_IMAGES, *sample.shape[1:]))  # tile to full batches
    # The threads a query's inference gets on this machine before its rates are known.
    threads = rates.estimate([], None, model=None, engine="").threads
    return calibrate_sample(spec, sample, threads, paths, truth)
