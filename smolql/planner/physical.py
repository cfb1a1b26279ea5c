"""The physical plan of a stage, decided before anything runs: model, source (original or
rendition), DCT scale, input size, engine (backend/precision), batch size and thread split.
EXPLAIN prints it; the executor runs exactly it."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace

from smolql.backends.registry import get_backend
from smolql.config import Settings, cores
from smolql.errors import InferenceError
from smolql.models.quantize import CALIBRATION_IMAGES
from smolql.models.registry import get_model
from smolql.models.spec import ModelSpec
from smolql.ops.pipeline import Preprocessor
from smolql.planner import engines as choose
from smolql.planner import rates, targets
from smolql.planner.calibration import load as load_calibration
from smolql.planner.cost import CostModel, takes_turns, turn_batches
from smolql.planner.space import ORIGINAL, PhysicalPlan, sized

UNCALIBRATED = "default: not calibrated (run `smolql calibrate`)"
PROFILED = "the plan choice's, from the catalog's profile (see plan choice)"


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
    estimate: rates.Estimate | None = None  # the cost model's prediction, per image
    turns: bool = False  # decoding and inference take turns on all cores (cost.takes_turns)

    @property
    def physical(self) -> PhysicalPlan:
        """The plan as a point of the plan space (its key names it in caches and profiles)."""
        base = get_model(self.spec.name)
        size = 0 if self.spec.input_size == base.input_size else self.spec.input_size
        source = self.rendition or ORIGINAL
        return PhysicalPlan(self.spec.name, source, self.scale, size, self.backend, self.precision)

    @property
    def turn_images(self) -> int:
        """Images decoded in one turn when the stages take turns (:func:`turn_batches`)."""
        shape = self.preprocessor().output.shape
        return self.batch_size * turn_batches(self.batch_size, 4 * math.prod(shape))

    def preprocessor(self) -> Preprocessor:
        return Preprocessor(self.spec.transform, scale_denom=self.scale)


def make_plan(
    settings: Settings,
    *,
    model: str | None,
    backend: str | None,
    precision: str | None,
    batch_size: int | None,
    rendition: str | None,
    physical: PhysicalPlan | None = None,
    headers: list[rates.Header] | None = None,
    profile_costs: CostModel | None = None,
    profiled: targets.Candidate | None = None,
) -> Plan:
    """Backend, precision, batch size and threads for a run; ``physical`` (a profiled plan)
    fixes model, input, DCT scale, input size and engine, and ``profiled`` (its profile) the
    batch size it was measured at and its measured inference rate. ``headers`` (a sample of the
    images the plan reads) and the catalog's profiled cost model, where there is one, make the
    cost prediction and the decode/inference thread split."""
    engine = "set explicitly"
    if physical is not None:
        model, backend, precision = physical.model, physical.backend, physical.precision
        rendition = None if physical.source == ORIGINAL else physical.source
        engine = PROFILED
    spec = get_model(model or settings.model)
    backend = backend or settings.backend
    precision = precision or settings.precision
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
            batch_size = profiled.batch_size if profiled else 0
            if not batch_size:  # no profile given: the model's calibrated batch size
                stored = choose.stored_choice(get_model(physical.model))
                batch_size = stored.batch_size if stored else None
    batch = batch_size or settings.batch_size or 32
    scale = physical.scale if physical is not None else 1
    infer_s = choose.infer_seconds(spec, get_model(spec.name), backend, precision, batch)
    infer_basis = "calibrated inference rate"
    if profiled is not None and profiled.infer_s > 0:
        # The profile timed this very engine (model, input size, backend/precision) on this
        # machine; the calibration has no int8 engine and only the model's own input size.
        infer_s, infer_basis = profiled.infer_s, "the profile's inference rate"
    gpu = "cpu" not in get_backend(backend).capabilities().devices
    machine = rates.load()
    costs = profile_costs if profile_costs is not None and profile_costs.decode else machine
    estimate = rates.estimate(
        rates.planned(headers or [], spec.transform, scale),
        infer_s,
        model=costs,
        engine=f"{backend}/{precision}",
        gpu=gpu,
        infer_basis=infer_basis,
    )
    if profile_costs is not None and costs is profile_costs:
        estimate = replace(estimate, basis=estimate.basis + ", refined by the catalog's profile")
    return Plan(
        spec,
        backend,
        precision,
        batch,
        estimate.workers,
        estimate.threads,
        rendition,
        scale,
        engine,
        estimate,
        takes_turns(estimate.workers, estimate.threads, cores(), gpu=gpu),
    )


class NotCalibratedWarning(UserWarning):
    """This machine has not measured its inference engines for a model yet."""


def _machine_choice(spec: ModelSpec) -> tuple[choose.Measurement, str]:
    """The engine calibrated for this machine, or the fp32 reference and a one-line note."""
    calibration = load_calibration(spec)
    if calibration is not None:
        why = f"; {calibration.reason}" if calibration.reason else ""
        return calibration.chosen, f"measured on this machine ({calibration.measured}){why}"
    return choose.default_choice(), UNCALIBRATED


def warn_if_uncalibrated(plan: Plan) -> None:
    """Say in one line, when a plan is about to infer, that its engine is the uncalibrated
    default (planning alone, EXPLAIN or a cached query does not need the calibration)."""
    if plan.engine_source == UNCALIBRATED:
        warnings.warn(
            f"{plan.spec.name}: this machine's inference engines are not calibrated yet, so"
            f" {'/'.join(choose.REFERENCE)} runs; `smolql calibrate` measures the fastest once"
            " (about a minute) for every database",
            NotCalibratedWarning,
            stacklevel=3,
        )


IN_DUCKDB = "duckdb"
PATHS = {  # how a stage meets its image values, as EXPLAIN says it
    IN_DUCKDB: "in DuckDB (catalog image values joined to the files vouched for and to the"
    " cache; only changed, unwatchable or uncached ones come to Python)",
    "crop": "general (a crop region: every image value is resolved in Python)",
    "function": "general (a function with no SQL value: every image value is resolved in Python)",
    "fallback": "general (the image argument is no catalog image value: resolved in Python)",
}


@dataclass(frozen=True)
class StagePlan:
    """Everything decided about a stage before it runs: the target-driven plan choice and the
    physical plan. EXPLAIN prints it; the executor runs exactly it."""

    choice: targets.Choice
    plan: Plan
    executor: str = "local"
    path: str = ""  # how the stage meets its image values: a key of PATHS (the executor's)
    pending: str = ""  # what the first run must make before inference (an int8 engine)

    def lines(self) -> list[str]:
        p = self.plan
        lines = [
            f"  plan: {p.physical.describe()}, batch={p.batch_size}"
            f" ({p.decode_workers} decode + {p.infer_threads} inference threads"
            f"{f', taking turns of {p.turn_images} images' if p.turns else ''})",
            f"  engine: {p.engine_source}",
        ]
        if self.pending:
            lines.append(f"  engine not made yet: {self.pending}")
        lines.append(f"  executor: {self.executor}")
        if self.path:
            lines.append(f"  stage path: {PATHS[self.path]}")
        return lines

    def cost_lines(self, todo: int) -> list[str]:
        """The cost model's prediction for ``todo`` images to infer."""
        e = self.plan.estimate
        if e is None:
            return []
        return [
            f"  est. cost: {e.seconds(todo, self.plan.batch_size):.2f} s for {todo} images"
            f" ({e.per_s:.0f} img/s pipelined;"
            f" per image decode {1000 * e.decode_s:.2f} ms, resize/normalise"
            f" {1000 * e.resize_s:.2f} ms, inference {1000 * e.infer_s:.2f} ms)",
            f"  cost basis: {e.basis}",
        ]


def plan_stage(
    settings: Settings,
    model: str,
    choice: targets.Choice,
    headers: list[rates.Header] | None = None,
    profile_costs: CostModel | None = None,
    *,
    catalog: str | None = None,
    path: str = "",
) -> StagePlan:
    """The physical plan of one stage calling ``model`` over ``catalog`` (no image is read:
    it depends on settings, targets, this machine's calibration and the catalog's header
    statistics); ``path``: how the executor will meet the stage's image values."""
    plan = make_plan(
        settings,
        model=model,
        backend=None,
        precision=None,
        batch_size=None,
        rendition=None,
        physical=choice.plan,
        headers=headers,
        profile_costs=profile_costs,
        profiled=choice.chosen,
    )
    return StagePlan(choice, plan, settings.executor, path, _pending(plan, catalog))


def _pending(plan: Plan, catalog: str | None) -> str:
    """What the first run makes before inference: an engine that needs calibrating."""
    if get_backend(plan.backend).is_calibrated(plan.spec, plan.precision):
        return ""
    where = f"of catalog {catalog!r}" if catalog else "(none: a catalog is needed)"
    return (
        f"the first run calibrates {plan.backend}/{plan.precision} on at most"
        f" {CALIBRATION_IMAGES} images {where}, once"
    )
