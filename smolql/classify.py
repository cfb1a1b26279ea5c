"""Classify the images of a catalog: choose backend and threads, stream, collect results."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa

from smolql.backends import choose
from smolql.backends.calibration import load as load_calibration
from smolql.backends.registry import get_backend
from smolql.catalog.manage import get_definition
from smolql.config import Settings
from smolql.errors import InferenceError
from smolql.models.registry import get_model
from smolql.models.spec import ModelSpec
from smolql.ops.infer import Prediction, classify_stream, split_threads
from smolql.ops.loader import stream_batches
from smolql.ops.pipeline import ImageRef, Preprocessor
from smolql.plan.space import ORIGINAL, PhysicalPlan, sized

CALIBRATION_IMAGES = 64
RESULT_SCHEMA = pa.schema(
    [
        ("id", pa.int32()),
        ("label", pa.string()),
        ("score", pa.float64()),
        ("class_index", pa.int32()),
        ("model", pa.string()),
        ("error", pa.string()),
    ]
)


@dataclass(frozen=True)
class Plan:
    spec: ModelSpec
    backend: str
    precision: str
    batch_size: int
    decode_workers: int
    infer_threads: int
    rendition: str | None
    scale: int = 1
    engine_source: str = "set explicitly"  # how backend and precision were chosen

    @property
    def physical(self) -> PhysicalPlan:
        """The plan as a point of the plan space (its key names it in caches and profiles)."""
        base = get_model(self.spec.name)
        size = 0 if self.spec.input_size == base.input_size else self.spec.input_size
        source = self.rendition or ORIGINAL
        return PhysicalPlan(self.spec.name, source, self.scale, size, self.backend, self.precision)

    def preprocessor(self) -> Preprocessor:
        return Preprocessor(self.spec.transform, scale_denom=self.scale)


def image_refs(
    con: duckdb.DuckDBPyConnection, catalog: str, rendition: str | None, where: str | None
) -> list[ImageRef]:
    """The catalog's images (or one rendition of them), optionally filtered by SQL ``where``."""
    get_definition(con, catalog)
    cond = f" WHERE {where}" if where else ""
    if rendition is None:
        rows = con.execute(f'SELECT id, path, orientation FROM "{catalog}"{cond} ORDER BY id')
        return [ImageRef(i, p, o) for i, p, o in rows.fetchall()]
    rows = con.execute(
        f'SELECT c.id, r.path FROM "{catalog}" c JOIN smolql.renditions r'
        f" ON r.catalog = '{catalog}' AND r.image_id = c.id AND r.spec = ?"
        f"{cond} ORDER BY c.id",
        [rendition],
    ).fetchall()
    return [ImageRef(i, p, 1) for i, p in rows]  # renditions are stored upright


def make_plan(
    settings: Settings,
    *,
    model: str | None,
    backend: str | None,
    precision: str | None,
    batch_size: int | None,
    rendition: str | None,
    physical: PhysicalPlan | None = None,
) -> Plan:
    """Backend, precision, batch size and threads for a run; ``physical`` (a profiled plan)
    fixes model, input, DCT scale, input size and engine."""
    if physical is not None:
        model, backend, precision = physical.model, physical.backend, physical.precision
        rendition = None if physical.source == ORIGINAL else physical.source
    spec = get_model(model or settings.model)
    backend = backend or settings.backend
    precision = precision or settings.precision
    cores = os.cpu_count() or 1
    decode_workers, infer_threads = split_threads(cores, decode_cost=1.5, infer_cost=10.0)
    engine = "set explicitly"
    if backend == "auto":
        chosen, engine = _machine_choice(spec)
        if precision not in ("auto", chosen.precision):  # an explicit precision is honoured
            chosen, engine = choose.with_precision(spec, precision), "precision set explicitly"
        backend, precision = chosen.backend, chosen.precision
        batch_size = batch_size or settings.batch_size or chosen.batch_size
    else:
        caps = get_backend(backend).capabilities()
        if precision == "auto":
            precision = "fp32" if "fp32" in caps.precisions else caps.precisions[0]
        if precision not in caps.precisions:
            raise InferenceError(
                f"backend {backend!r} offers {', '.join(caps.precisions)} here, not {precision!r}"
            )
    if physical is not None:
        spec = sized(spec, physical.input_size)
        if not batch_size and not settings.batch_size:
            stored = choose.stored_choice(get_model(physical.model))
            batch_size = stored.batch_size if stored else None
    return Plan(
        spec,
        backend,
        precision,
        batch_size or settings.batch_size or 32,
        decode_workers,
        infer_threads,
        rendition,
        physical.scale if physical is not None else 1,
        engine,
    )


class NotCalibratedWarning(UserWarning):
    """This machine has not measured its inference engines for a model yet."""


def _machine_choice(spec: ModelSpec) -> tuple[choose.Measurement, str]:
    """The engine calibrated for this machine, or the fp32 reference and a one-line note."""
    calibration = load_calibration(spec)
    if calibration is not None:
        return calibration.chosen, f"measured on this machine ({calibration.measured})"
    warnings.warn(
        f"{spec.name}: this machine's inference engines are not calibrated yet, so"
        f" {'/'.join(choose.REFERENCE)} runs; `smolql calibrate` measures the fastest once"
        " (about a minute) for every database",
        NotCalibratedWarning,
        stacklevel=3,
    )
    return choose.default_choice(), "default: not calibrated (run `smolql calibrate`)"


def calibration_images() -> list[str]:
    """Real photographs every installation has: the ones in scikit-image's wheel."""
    import skimage

    data = os.path.join(os.path.dirname(skimage.__file__), "data")
    return sorted(
        os.path.join(data, f)
        for f in os.listdir(data)
        if f.endswith((".png", ".jpg")) and os.path.getsize(os.path.join(data, f)) > 20_000
    )


def calibrate(spec: ModelSpec, paths: list[str]) -> choose.Measurement:
    """Measure every candidate engine for ``spec`` on up to 64 of ``paths`` (tiled to 64 when
    fewer) and store the choice for this machine."""
    refs = [ImageRef(i, p) for i, p in enumerate(paths[:CALIBRATION_IMAGES])]
    pre = Preprocessor(spec.transform)
    batches = [b.tensor.copy() for b in stream_batches(refs, pre, batch_size=32)]
    if not batches or not sum(len(b) for b in batches):
        raise InferenceError("no calibration image could be decoded")
    sample = np.concatenate(batches)
    sample = np.resize(sample, (CALIBRATION_IMAGES, *sample.shape[1:]))  # tile to full batches
    _, threads = split_threads(os.cpu_count() or 1, decode_cost=1.5, infer_cost=10.0)
    return choose.calibrate(spec, sample, threads)


def predictions(
    plan: Plan, refs: list[ImageRef], *, k: int = 1, progress: bool | None = None
) -> Iterator[Prediction]:
    """Open the plan's backend session and stream one prediction per ref."""
    session = get_backend(plan.backend).open(
        plan.spec, plan.precision, plan.infer_threads, plan.batch_size
    )
    try:
        yield from classify_stream(
            refs,
            plan.spec,
            session,
            plan.preprocessor(),
            batch_size=plan.batch_size,
            decode_workers=plan.decode_workers,
            k=k,
            total=len(refs),
            progress=progress,
        )
    finally:
        session.close()


def run(plan: Plan, refs: list[ImageRef], *, progress: bool | None = None) -> pa.Table:
    preds = list(predictions(plan, refs, progress=progress))
    preds.sort(key=lambda p: p.key)
    return pa.table(
        {
            "id": [p.key for p in preds],
            "label": [p.label for p in preds],
            "score": [p.score for p in preds],
            "class_index": [p.class_index for p in preds],
            "model": [plan.spec.name] * len(preds),
            "error": [p.error for p in preds],
        },
        schema=RESULT_SCHEMA,
    )
