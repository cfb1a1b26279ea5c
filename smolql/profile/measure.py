"""Measurements behind a profile: per-image preprocessing on one core, and timed end-to-end
runs through the executor that queries use, each preceded by inference batches timed alone."""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from smolql.backends.registry import get_backend
from smolql.config import cores
from smolql.errors import InferenceError
from smolql.executor.local import classify_stream
from smolql.models.quantize import CALIBRATION_IMAGES as INT8_IMAGES
from smolql.models.registry import get_model
from smolql.models.spec import ModelSpec
from smolql.ops.loader import stream_batches
from smolql.ops.pipeline import ImageRef, Preprocessor
from smolql.planner.cost import Fetch, ImageCost, takes_turns, turn_batches
from smolql.planner.rates import time_image
from smolql.planner.space import ORIGINAL, PhysicalPlan, sized
from smolql.sources import identify, io_threads, is_remote, read

CALIBRATION_IMAGES = 64
FETCH_PASSES = 2
WARMUP_BATCHES = 3  # a fresh ONNX Runtime session runs its first two or three batches slower


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
        costs = [time_image(pre, ref, slot) for ref in refs_for(plan, images)]
        out[key] = costs
    return out


def fetch_costs(plans: list[PhysicalPlan], images: list[SampleImage]) -> dict[str, Fetch]:
    """Per plan input whose files are in object storage: the store's wall seconds per image
    with the source's requests in flight, and this process's CPU seconds per image, over one
    pass of what a query does per image (freshness check, then metadata and bytes)."""
    out: dict[str, Fetch] = {}
    for plan in plans:
        if plan.source in out:
            continue
        paths = [r.path for r in refs_for(plan, images)]
        remote = [p for p in paths if is_remote(p)]
        if not remote:
            out[plan.source] = None
            continue

        def fetch(path: str) -> None:
            with contextlib.suppress(OSError):
                identify(path)
                read(path)

        passes = []
        with ThreadPoolExecutor(io_threads(remote[0], 1)) as pool:
            for _ in range(FETCH_PASSES):  # the best: the first also opens the connections
                cpu, wall = time.process_time(), time.perf_counter()
                list(pool.map(fetch, remote))
                passes.append((time.perf_counter() - wall, time.process_time() - cpu))
        wall, cpu = min(passes)
        out[plan.source] = (wall / len(paths), cpu / len(paths))
    return out


def engine_inputs(plans: list[PhysicalPlan], images: list[SampleImage]) -> dict[tuple, np.ndarray]:
    """Real preprocessed inputs per (model, input size): the first sample images' originals
    (up to 300 where an int8 plan is among ``plans``). They calibrate the int8 engines (once,
    cached beside the export) and time inference."""
    out: dict[tuple, np.ndarray] = {}
    calibrated: set[tuple] = set()
    n = INT8_IMAGES if any(p.precision == "int8" for p in plans) else CALIBRATION_IMAGES
    for plan in plans:
        key = (plan.model, plan.input_size)
        if key in out and (plan.precision != "int8" or (*key, plan.backend) in calibrated):
            continue
        spec = sized(get_model(plan.model), plan.input_size)
        if key not in out:
            base = PhysicalPlan(plan.model, input_size=plan.input_size)
            refs = refs_for(base, images)[:n]
            batches = stream_batches(refs, preprocessor(base, spec))
            out[key] = np.concatenate([b.tensor.copy() for b in batches])
        if plan.precision == "int8":
            get_backend(plan.backend).calibrate(spec, "int8", out[key])
            calibrated.add((*key, plan.backend))
    return out


@dataclass(frozen=True)
class PlanRun:
    """One end-to-end run of a plan, and its engine timed alone just before it."""

    predictions: dict[int, int]
    seconds: float
    infer_s: tuple[float, ...]  # seconds per image of each timed inference batch


def run_plan(
    plan: PhysicalPlan,
    images: list[SampleImage],
    batch_size: int,
    workers: int,
    threads: int,
    inputs: np.ndarray | None = None,
    timed: int = 0,
) -> PlanRun:
    """One end-to-end run: predictions by image id and wall seconds. The session first warms up,
    then runs ``timed`` batches of ``inputs`` (zeros without them) alone: inference cost,
    measured at the same moment as the run, so that a slow spell of the machine shows in both,
    and after the warm-up, as in the run (measured: a fresh ONNX Runtime session's second batch
    is up to a third slower than its fourth)."""
    spec = sized(get_model(plan.model), plan.input_size)
    pre = preprocessor(plan, spec)
    backend = get_backend(plan.backend)
    session = backend.open(spec, plan.precision, threads, batch_size)
    gpu = "cpu" not in backend.capabilities().devices
    turns = takes_turns(workers, threads, cores(), gpu=gpu)
    refs = refs_for(plan, images)
    try:
        if inputs is None:
            tensor = np.zeros((batch_size, *pre.output.shape), np.float32)
        else:
            tensor = np.resize(inputs, (batch_size, *inputs.shape[1:]))
        for _ in range(WARMUP_BATCHES):
            session.run(tensor)
        # Timed as the run hands batches over: a turn's batches together when the stages
        # take turns (an engine with a request queue keeps its streams busy across them).
        group = [tensor] * (turn_batches(batch_size, tensor[0].nbytes) if turns else 1)
        infer_s = []
        for _ in range(timed):
            t0 = time.perf_counter()
            session.run_many(group)
            infer_s.append((time.perf_counter() - t0) / (batch_size * len(group)))
        start = time.perf_counter()
        preds = {
            p.key: p.class_index
            for p in classify_stream(
                refs,
                spec,
                session,
                pre,
                batch_size=batch_size,
                decode_workers=workers,
                progress=False,
                turns=turns,
            )
            if p.error is None
        }
        seconds = time.perf_counter() - start
    finally:
        session.close()
    if not preds:
        raise InferenceError(f"no image of the sample could be classified with {plan.describe()}")
    return PlanRun(preds, seconds, tuple(infer_s))
