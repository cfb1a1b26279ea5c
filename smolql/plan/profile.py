"""Profile every plan of a catalog on a random sample: accuracy, stage costs and end-to-end
throughput, then fit the cost model and check its predictions against the measured runs.

Stage costs are measured once per component and shared by the plans that use it: decode and
resize/normalise per (source, DCT scale, input size) on one core, inference per (model, input
size, backend/precision) at the plan's batch size and threads. Each plan is then run end to
end through the same pipelined executor queries use, which gives its accuracy and its
measured throughput.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import duckdb
import numpy as np

from smolql.backends.cpu import machine_id
from smolql.backends.registry import get_backend
from smolql.catalog.manage import get_definition
from smolql.errors import CatalogError, InferenceError
from smolql.models.quantize import quantize
from smolql.models.registry import get_model
from smolql.models.spec import ModelSpec
from smolql.ops.infer import classify_stream, split_threads
from smolql.ops.loader import stream_batches
from smolql.ops.pipeline import ImageRef, Preprocessor
from smolql.plan.cost import (
    CostModel,
    ImageCost,
    RunObservation,
    fit_contention,
    fit_stage_costs,
)
from smolql.plan.space import ORIGINAL, PhysicalPlan, enumerate_plans, sized
from smolql.store import SCHEMA

DEFAULT_SAMPLE = 200
CALIBRATION_IMAGES = 64
MAX_ERROR = 0.15  # the cost model must predict measured throughput within this


@dataclass(frozen=True)
class Options:
    models: tuple[str, ...] = ()
    sample: int = DEFAULT_SAMPLE
    precisions: tuple[str, ...] = ("fp32", "int8")
    smaller_inputs: bool = True
    labels: str | None = None  # a label column; None: ``class_index`` if the catalog has one
    seed: int = 42


@dataclass
class PlanProfile:
    plan: PhysicalPlan
    weights: str
    batch_size: int
    images: int
    correct: int
    accuracy: float
    decode_ms: float
    resize_ms: float
    infer_ms: float
    bytes: float
    decoded_pixels: float
    measured_per_s: float
    predicted_per_s: float = 0.0
    reference: bool = False

    @property
    def error(self) -> float:
        """Relative error of the cost model's prediction."""
        return self.predicted_per_s / self.measured_per_s - 1.0


@dataclass
class Report:
    catalog: str
    basis: str  # what accuracy means: "class_index labels" or "agreement with <plan>"
    sample: int
    profiles: list[PlanProfile] = field(default_factory=list)
    cost: CostModel = field(default_factory=CostModel)

    @property
    def max_error(self) -> float:
        return max((abs(p.error) for p in self.profiles), default=0.0)


@dataclass(frozen=True)
class _Image:
    id: int
    path: str
    orientation: int
    label: int | None
    renditions: dict[str, str]


def profile_catalog(
    con: duckdb.DuckDBPyConnection,
    catalog: str,
    options: Options,
    *,
    defaults: dict[str, tuple[str, str, int]],
    trained_for: dict[str, str] | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> Report:
    """Measure every plan (see :func:`smolql.plan.space.enumerate_plans`) and store them.

    ``defaults`` maps each model to its measured default (backend, precision, batch size);
    its plans use that engine, plus ONNX Runtime int8 when ``int8`` is among the precisions."""
    definition = get_definition(con, catalog)
    label_col = _label_column(con, catalog, options.labels)
    images = _sample(con, catalog, label_col, options.sample, options.seed)
    if not images:
        raise CatalogError(f"catalog {catalog!r} has no images to profile")
    specs = [get_model(m) for m in options.models]
    sources = [ORIGINAL, *definition.renditions]
    engines = {}
    for spec in specs:
        backend, precision, _ = defaults[spec.name]
        engines[spec.name] = [(backend, precision)] if precision in options.precisions else []
        if "int8" in options.precisions:
            engines[spec.name].append(("onnxruntime", "int8"))
    batch = {name: d[2] for name, d in defaults.items()}
    short = statistics.median(_short_sides(con, catalog))
    plans = enumerate_plans(
        specs,
        sources,
        engines,
        source_short_side=short,
        input_sizes=options.smaller_inputs,
        trained_for=trained_for,
    )
    cores = os.cpu_count() or 1
    workers, threads = split_threads(cores, decode_cost=1.5, infer_cost=10.0)
    say(f"profiling {len(plans)} plans on {len(images)} sampled images of {catalog!r}")

    costs = _stage_costs(plans, images, say)
    model = fit_stage_costs([c for cs in costs.values() for c in cs], cores)
    infer = _inference_costs(plans, images, batch, threads, say)

    basis = f"{label_col} labels" if label_col else ""
    reference_preds: dict[int, int] | None = None
    if not label_col:
        ref = _reference_plan(plans, specs)
        basis = f"agreement with {ref.describe()}"
        reference_preds = _run(ref, images, batch[ref.model], workers, threads)[0]
    report = Report(catalog, basis, len(images), cost=model)
    observations = []
    for plan in plans:
        say(f"  {plan.describe()}")
        batch_size = batch[plan.model]
        preds, seconds = _run(plan, images, batch_size, workers, threads)
        truth = {i.id: i.label for i in images} if label_col else reference_preds
        scored = [k for k in preds if truth.get(k) is not None]
        correct = sum(preds[k] == truth[k] for k in scored)
        key = _cost_key(plan)
        measured = costs[key]
        pre_s = model.preprocess_s(measured)
        observations.append(
            RunObservation(pre_s, infer[_infer_key(plan)], workers, batch_size, len(preds), seconds)
        )
        report.profiles.append(
            PlanProfile(
                plan,
                get_model(plan.model).weights_hash(),
                batch_size,
                len(scored),
                int(correct),
                correct / len(scored) if scored else 0.0,
                1000 * statistics.fmean(c.decode_s for c in measured),
                1000 * statistics.fmean(c.resize_s for c in measured),
                1000 * infer[_infer_key(plan)],
                statistics.fmean(c.bytes for c in measured),
                statistics.fmean(c.decoded_pixels for c in measured),
                len(preds) / seconds,
            )
        )
    fit_contention(model, observations)
    for prof, obs in zip(report.profiles, observations, strict=True):
        prof.predicted_per_s = obs.images / model.run_seconds(
            obs.images, obs.pre_s, obs.infer_s, obs.workers, obs.batch
        )
    _mark_reference(report)
    store(con, report)
    return report


def _label_column(con, catalog: str, wanted: str | None) -> str | None:
    columns = {r[0]: r[1] for r in con.execute(f'DESCRIBE "{catalog}"').fetchall()}
    if wanted:
        if wanted not in columns:
            raise CatalogError(f"catalog {catalog!r} has no column {wanted!r} to score against")
        return wanted
    if "INT" in columns.get("class_index", ""):
        return "class_index"
    return None


def _sample(con, catalog: str, label_col: str | None, n: int, seed: int) -> list[_Image]:
    label = f'"{label_col}"' if label_col else "NULL"
    rows = con.execute(
        f'SELECT id, path, orientation, {label} FROM "{catalog}"'
        f" ORDER BY hash(id + {int(seed)}) LIMIT {int(n)}"
    ).fetchall()
    rends: dict[int, dict[str, str]] = {}
    for image_id, spec, path in con.execute(
        f"SELECT image_id, spec, path FROM {SCHEMA}.renditions WHERE catalog = ?", [catalog]
    ).fetchall():
        rends.setdefault(image_id, {})[spec] = path
    return [
        _Image(i, p, o, None if lab is None else int(lab), rends.get(i, {}))
        for i, p, o, lab in sorted(rows)
    ]


def _short_sides(con, catalog: str) -> list[int]:
    rows = con.execute(f'SELECT least(width, height) FROM "{catalog}"').fetchall()
    return [r[0] for r in rows] or [0]


def refs_for(plan: PhysicalPlan, images: list[_Image]) -> list[ImageRef]:
    if plan.source == ORIGINAL:
        return [ImageRef(i.id, i.path, i.orientation) for i in images]
    return [
        ImageRef(
            i.id,
            i.renditions.get(plan.source, i.path),
            1 if plan.source in i.renditions else i.orientation,
        )
        for i in images
    ]


def preprocessor(plan: PhysicalPlan, spec: ModelSpec) -> Preprocessor:
    return Preprocessor(sized(spec, plan.input_size).transform, scale_denom=plan.scale)


def _cost_key(plan: PhysicalPlan) -> tuple:
    return (plan.model, plan.source, plan.scale, plan.input_size)


def _infer_key(plan: PhysicalPlan) -> tuple:
    return (plan.model, plan.input_size, plan.backend, plan.precision)


def _stage_costs(plans, images, say) -> dict[tuple, list[ImageCost]]:
    """Decode and resize/normalise of every sample image on one core, best of two passes."""
    out: dict[tuple, list[ImageCost]] = {}
    for plan in plans:
        key = _cost_key(plan)
        if key in out:
            continue
        pre = preprocessor(plan, get_model(plan.model))
        slot = np.empty(pre.output.shape, np.float32)
        costs = []
        for ref in refs_for(plan, images):
            with open(ref.path, "rb") as f:
                data = f.read()
            best = None
            for _ in range(2):
                t0 = time.perf_counter()
                ip = pre.plan(data, ref)
                pixels = ip.decode.apply(data)
                t1 = time.perf_counter()
                for view in ip.views:
                    pixels = view.apply(pixels)
                ip.resize.apply(pixels, slot)
                t2 = time.perf_counter()
                if best is None or t2 - t0 < best[0] + best[1]:
                    best = (t1 - t0, t2 - t1)
            costs.append(
                ImageCost(
                    ip.decode.format,
                    len(data),
                    ip.decoded_pixels,
                    pixels.shape[0] * pixels.shape[1],
                    pre.output.shape[1] * pre.output.shape[2],
                    *best,
                )
            )
        out[key] = costs
    return out


def _inference_costs(plans, images, batch: dict[str, int], threads: int, say) -> dict[tuple, float]:
    """Seconds of inference wall time per image, per (model, input size, engine)."""
    out: dict[tuple, float] = {}
    for plan in plans:
        key = _infer_key(plan)
        if key in out:
            continue
        batch_size = batch[plan.model]
        spec = sized(get_model(plan.model), plan.input_size)
        refs = refs_for(PhysicalPlan(plan.model, input_size=plan.input_size), images)
        pre = preprocessor(PhysicalPlan(plan.model, input_size=plan.input_size), spec)
        sample = np.concatenate(
            [b.tensor.copy() for b in stream_batches(refs[:CALIBRATION_IMAGES], pre)]
        )
        if plan.precision == "int8":
            say(f"  calibrating int8 {spec.name} at {spec.input_size} px")
            quantize(spec, sample)
        session = get_backend(plan.backend).open(spec, plan.precision, threads, batch_size)
        try:
            tensor = np.resize(sample, (batch_size, *sample.shape[1:]))
            session.run(tensor)  # warm up
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                session.run(tensor)
                times.append(time.perf_counter() - t0)
        finally:
            session.close()
        out[key] = min(times) / batch_size
    return out


def _run(plan: PhysicalPlan, images, batch_size: int, workers: int, threads: int):
    """One end-to-end run: predictions by image id and wall seconds."""
    spec = sized(get_model(plan.model), plan.input_size)
    session = get_backend(plan.backend).open(spec, plan.precision, threads, batch_size)
    refs = refs_for(plan, images)
    try:
        session.run(np.zeros((batch_size, *preprocessor(plan, spec).output.shape), np.float32))
        start = time.perf_counter()
        preds = {
            p.key: p.class_index
            for p in classify_stream(
                refs,
                spec,
                session,
                preprocessor(plan, spec),
                batch_size=batch_size,
                decode_workers=workers,
                progress=False,
            )
            if p.error is None
        }
        seconds = time.perf_counter() - start
    finally:
        session.close()
    if not preds:
        raise InferenceError(f"no image of the sample could be classified with {plan.describe()}")
    return preds, seconds


def _reference_plan(plans: list[PhysicalPlan], specs: list[ModelSpec]) -> PhysicalPlan:
    """Without labels, the reference is the largest base model on originals, fp32."""
    biggest = max(specs, key=lambda s: s.input_size)
    return next(p for p in plans if p.model == biggest.name and p.is_reference_input())


def _mark_reference(report: Report) -> None:
    candidates = [p for p in report.profiles if p.plan.is_reference_input()]
    if candidates:
        max(candidates, key=lambda p: (p.accuracy, -p.plan.input_size)).reference = True


def store(con: duckdb.DuckDBPyConnection, report: Report) -> None:
    machine = machine_id()
    con.execute("BEGIN")
    try:
        con.execute(
            f"DELETE FROM {SCHEMA}.plan_profiles WHERE catalog = ? AND machine = ?",
            [report.catalog, machine],
        )
        con.execute(
            f"DELETE FROM {SCHEMA}.cost_models WHERE catalog = ? AND machine = ?",
            [report.catalog, machine],
        )
        for p in report.profiles:
            con.execute(
                f"INSERT INTO {SCHEMA}.plan_profiles VALUES"
                " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now())",
                [
                    report.catalog,
                    machine,
                    p.plan.key,
                    p.plan.model,
                    p.weights,
                    p.plan.source,
                    p.plan.scale,
                    p.plan.input_size,
                    p.plan.backend,
                    p.plan.precision,
                    p.batch_size,
                    p.images,
                    p.correct,
                    p.accuracy,
                    report.basis,
                    p.reference,
                    p.decode_ms,
                    p.resize_ms,
                    p.infer_ms,
                    p.bytes,
                    p.decoded_pixels,
                    p.measured_per_s,
                    p.predicted_per_s,
                ],
            )
        con.execute(
            f"INSERT INTO {SCHEMA}.cost_models VALUES (?, ?, ?, ?, now())",
            [report.catalog, machine, report.cost.to_json(), report.max_error],
        )
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
