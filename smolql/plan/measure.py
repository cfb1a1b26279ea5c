"""Measurements behind a profile: per-image preprocessing on one core, inference per batch
on its threads, and timed end-to-end runs through the executor that queries use."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import numpy as np

from smolql.backends.registry import get_backend
from smolql.errors import InferenceError
from smolql.models.quantize import quantize
from smolql.models.registry import get_model
from smolql.models.spec import ModelSpec
from smolql.ops.infer import classify_stream
from smolql.ops.loader import stream_batches
from smolql.ops.pipeline import ImageRef, Preprocessor
from smolql.plan.cost import ImageCost
from smolql.plan.space import ORIGINAL, PhysicalPlan, sized

CALIBRATION_IMAGES = 64


@dataclass(frozen=True)
class SampleImage:
    """A sampled catalog image: its original, label and rendition files."""

    id: int
    path: str
    orientation: int
    label: int | None
    renditions: dict[str, str]


def refs_for(plan: PhysicalPlan, images: list[SampleImage]) -> list[ImageRef]:
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


def cost_key(plan: PhysicalPlan) -> tuple:
    """Preprocessing depends on the input and the transform, not on the weights."""
    return (get_model(plan.model).transform, plan.source, plan.scale, plan.input_size)


def infer_key(plan: PhysicalPlan) -> tuple:
    return (plan.model, plan.input_size, plan.backend, plan.precision)


def stage_costs(
    plans: list[PhysicalPlan], images: list[SampleImage]
) -> dict[tuple, list[ImageCost]]:
    """Decode and resize/normalise of every sample image on one core, best of two passes."""
    out: dict[tuple, list[ImageCost]] = {}
    for plan in plans:
        key = cost_key(plan)
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


def inference_costs(
    plans: list[PhysicalPlan], images: list[SampleImage], batch: dict[str, int], threads: int
) -> dict[tuple, float]:
    """Seconds of inference wall time per image, per (model, input size, engine)."""
    out: dict[tuple, float] = {}
    for plan in plans:
        key = infer_key(plan)
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
            quantize(spec, sample)
        session = get_backend(plan.backend).open(spec, plan.precision, threads, batch_size)
        try:
            tensor = np.resize(sample, (batch_size, *sample.shape[1:]))
            session.run(tensor)  # warm up
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                session.run(tensor)
                times.append(time.perf_counter() - t0)
        finally:
            session.close()
        out[key] = statistics.median(times) / batch_size
    return out


def run_plan(
    plan: PhysicalPlan, images: list[SampleImage], batch_size: int, workers: int, threads: int
) -> tuple[dict[int, int], float]:
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
