"""Profile every plan of a catalog on a random sample: accuracy, stage costs and end-to-end
throughput, then fit the cost model and check its predictions against the measured runs.

Stage costs are shared by the plans that use the same component: decode and resize/normalise
per (source, DCT scale, input size), measured once on one core; inference per (model, input
size, backend/precision) at the plan's batch size and threads, timed alone after a warm-up just
before each of the plan's end-to-end runs (through the same pipelined executor queries use), in
every round, and kept as the median of all those timings.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import duckdb

from smolql.backends.cpu import machine_id
from smolql.backends.registry import available
from smolql.config import PROFILE_SAMPLE
from smolql.config import cores as available_cores
from smolql.errors import CatalogError
from smolql.ingest.manage import get_definition, label_column
from smolql.models.registry import get_model
from smolql.models.spec import ModelSpec
from smolql.planner.cost import (
    CostModel,
    Fetch,
    ImageCost,
    RunObservation,
    fit_contention,
    fit_stage_costs,
)
from smolql.planner.engines import stored_choice
from smolql.planner.space import ORIGINAL, PhysicalPlan, enumerate_plans
from smolql.profile.measure import (
    SampleImage,
    cost_key,
    engine_inputs,
    fetch_costs,
    infer_key,
    run_plan,
    stage_costs,
)
from smolql.storage.images import rendition_paths
from smolql.storage.profiles import replace_profiles

MAX_ERROR = 0.15  # the cost model must predict measured throughput within this
TIMED_BATCHES = 2  # inference batches timed alone before each end-to-end run
ENGINE_TIMINGS = 6  # at least this many per engine and round (an engine with one plan: 6)


@dataclass(frozen=True)
class Options:
    models: tuple[str, ...] = ()
    sample: int = PROFILE_SAMPLE
    precisions: tuple[str, ...] = ("fp32", "int8")
    smaller_inputs: bool = True
    labels: str | None = None  # a label column; None: ``class_index`` if the catalog has one
    seed: int = 42
    repeats: int = 3  # end-to-end runs per plan; the median is kept (the machine is noisy)


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
    fetch: dict[str, Fetch] = field(default_factory=dict)  # per input in object storage

    def describe_fetch(self) -> str:
        """The measured object-storage reads, one phrase per remote input ('' if none)."""
        return "; ".join(
            f"{src} from object storage: {1 / f[0]:.0f} images/s served,"
            f" {1000 * f[1]:.2f} ms client CPU per image"
            for src, f in sorted(self.fetch.items())
            if f and f[0] > 0
        )

    @property
    def max_error(self) -> float:
        return max((abs(p.error) for p in self.profiles), default=0.0)


def profile_catalog(
    con: duckdb.DuckDBPyConnection,
    catalog: str,
    options: Options,
    *,
    defaults: dict[str, tuple[str, str, int]],
    split: tuple[int, int],
    trained_for: dict[str, str] | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> Report:
    """Measure every plan (see :func:`smolql.planner.space.enumerate_plans`) and store them.

    ``defaults`` maps each model to its measured default (backend, precision, batch size);
    its plans use that engine, plus int8 on every backend offering it when asked (``int8``).
    ``split`` is the planner's (decode workers, inference threads) for this catalog."""
    label_col = label_column(con, catalog, options.labels)
    images = _sample(con, catalog, label_col, options.sample, options.seed)
    if not images:
        raise CatalogError(f"catalog {catalog!r} has no images to profile")
    plans = _plan_space(con, catalog, options, defaults, trained_for, say)
    batch = {name: d[2] for name, d in defaults.items()}
    cores = available_cores()
    workers, threads = split
    runs = len(plans) * len(images) * options.repeats
    say(
        f"profiling {len(plans)} plans on {len(images)} sampled images of {catalog!r},"
        f" {options.repeats} rounds: {runs:,} image runs, roughly"
        f" {_minutes(runs / _rough_rate(options.models))} (refined after the first round)"
    )

    costs = stage_costs(plans, images)
    fetches = fetch_costs(plans, images)
    model = fit_stage_costs([c for cs in costs.values() for c in cs], cores)
    inputs = engine_inputs(plans, images)

    if label_col:
        basis, truth = f"{label_col} labels", {i.id: i.label for i in images}
    else:
        ref = _reference_plan(plans, [get_model(m) for m in options.models])
        basis = f"agreement with {ref.describe()}"
        truth = run_plan(ref, images, batch[ref.model], workers, threads).predictions
    report = Report(catalog, basis, len(images), cost=model, fetch=fetches)
    # Rounds over all plans rather than repeats of one: a slow spell of a shared machine then
    # hits different plans in different rounds, and the median drops it.
    preds: dict[PhysicalPlan, dict[int, int]] = {}
    times: dict[PhysicalPlan, list[float]] = {plan: [] for plan in plans}
    infer_times: dict[tuple, list[float]] = {infer_key(plan): [] for plan in plans}
    sharing = Counter(infer_key(plan) for plan in plans)
    started = time.monotonic()
    for round_ in range(options.repeats):
        if round_ == 1:
            took = time.monotonic() - started
            say(f"round 1 took {took:.0f} s: about {_minutes(took * (options.repeats - 1))} left")
        say(f"round {round_ + 1}/{options.repeats}")
        for plan in plans:
            if not round_:
                say(f"  {plan.describe()}")
            engine = infer_key(plan)
            run = run_plan(
                plan,
                images,
                batch[plan.model],
                workers,
                threads,
                inputs[(plan.model, plan.input_size)],
                timed=max(TIMED_BATCHES, math.ceil(ENGINE_TIMINGS / sharing[engine])),
            )
            preds.setdefault(plan, run.predictions)
            times[plan].append(run.seconds)
            infer_times[engine].extend(run.infer_s)
    observations = []
    for plan in plans:
        seconds = statistics.median(times[plan])
        measured = costs[cost_key(plan)]
        infer_s = statistics.median(infer_times[infer_key(plan)])
        pre_s = model.preprocess_s(measured)
        n = len(preds[plan])
        observations.append(
            RunObservation(
                pre_s,
                infer_s,
                workers,
                batch[plan.model],
                n,
                seconds,
                plan.engine,
                fetches[plan.source],
            )
        )
        report.profiles.append(
            _profile(plan, preds[plan], truth, seconds, measured, infer_s, batch)
        )
    fit_contention(model, observations)
    for prof, obs in zip(report.profiles, observations, strict=True):
        prof.predicted_per_s = obs.images / model.run_seconds(
            obs.images, obs.pre_s, obs.infer_s, obs.workers, obs.batch, obs.engine, obs.fetch
        )
    _mark_reference(report)
    store(con, report)
    return report


def _rough_rate(models: tuple[str, ...]) -> float:
    """Images/s to expect of one plan end to end, before any was run: half the slowest
    model's calibrated inference rate (decoding shares the cores), else 50."""
    rates = [m.images_per_s for m in map(stored_choice, map(get_model, models)) if m]
    return max(min(rates) / 2, 1.0) if rates and min(rates) else 50.0


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _plan_space(
    con: duckdb.DuckDBPyConnection,
    catalog: str,
    options: Options,
    defaults: dict[str, tuple[str, str, int]],
    trained_for: dict[str, str] | None,
    say: Callable[[str], None],
) -> list[PhysicalPlan]:
    """The plans to profile: every model's inputs, scales, sizes and engines."""
    specs = [get_model(m) for m in options.models]
    engines = {
        spec.name: _engines(defaults[spec.name][:2], options.precisions, say) for spec in specs
    }
    return enumerate_plans(
        specs,
        [ORIGINAL, *get_definition(con, catalog).renditions],
        engines,
        source_short_side=statistics.median(_short_sides(con, catalog)),
        input_sizes=options.smaller_inputs,
        trained_for=trained_for,
    )


def _profile(
    plan: PhysicalPlan,
    preds: dict[int, int],
    truth: dict,
    seconds: float,
    measured: list[ImageCost],
    infer_s: float,
    batch: dict[str, int],
) -> PlanProfile:
    scored = [k for k in preds if truth.get(k) is not None]
    correct = sum(preds[k] == truth[k] for k in scored)
    return PlanProfile(
        plan,
        get_model(plan.model).weights_hash(),
        batch[plan.model],
        len(scored),
        int(correct),
        correct / len(scored) if scored else 0.0,
        1000 * statistics.fmean(c.decode_s for c in measured),
        1000 * statistics.fmean(c.resize_s for c in measured),
        1000 * infer_s,
        statistics.fmean(c.bytes for c in measured),
        statistics.fmean(c.decoded_pixels for c in measured),
        len(preds) / seconds,
    )


def _engines(
    default: tuple[str, str], precisions: tuple[str, ...], say: Callable[[str], None]
) -> list[tuple[str, str]]:
    """The (backend, precision) pairs to profile per requested precision: the model's measured
    default backend where it offers a float precision, else the first available backend that
    does; a calibrated precision (int8) on every backend that offers it (the default backend's
    int8 need not be the fastest: on a CPU with VNNI and no bf16, whose default was OpenVINO
    fp32, ONNX Runtime's int8 inferred 1.4-2.8x as fast as OpenVINO's,
    ``benchmarks/results/inference-no-bf16.txt``)."""
    out = []
    for precision in precisions:
        if precision == default[1]:
            out.append(default)
            continue
        backends = available()
        calibrated = any(precision in b.capabilities().calibrated for b in backends.values())
        offer = [
            name
            for name, b in backends.items()
            if precision in b.capabilities().precisions
            and calibrated == (precision in b.capabilities().calibrated)
        ]
        if not offer:
            say(f"no backend offers {precision} on this machine: skipped")
        elif calibrated:
            out += [(name, precision) for name in offer]
        else:
            out.append((default[0] if default[0] in offer else offer[0], precision))
    return out


def _sample(con, catalog: str, label_col: str | None, n: int, seed: int) -> list[SampleImage]:
    label = f'"{label_col}"' if label_col else "NULL"
    rows = con.execute(
        f'SELECT id, path, orientation, {label} FROM "{catalog}"'
        f" ORDER BY hash(id + {int(seed)}) LIMIT {int(n)}"
    ).fetchall()
    rends = rendition_paths(con, catalog)
    return [
        SampleImage(i, p, o, None if lab is None else int(lab), rends.get(i, {}))
        for i, p, o, lab in sorted(rows)
    ]


def _short_sides(con, catalog: str) -> list[int]:
    rows = con.execute(f'SELECT least(width, height) FROM "{catalog}"').fetchall()
    return [r[0] for r in rows] or [0]


def _reference_plan(plans: list[PhysicalPlan], specs: list[ModelSpec]) -> PhysicalPlan:
    """Without labels, the reference is the largest base model on originals, fp32."""
    biggest = max((s for s in specs if not s.base), key=lambda s: s.input_size)
    return next(p for p in plans if p.model == biggest.name and p.is_reference_input())


def _mark_reference(report: Report) -> None:
    candidates = [p for p in report.profiles if p.plan.is_reference_input()]
    if candidates:
        max(candidates, key=lambda p: (p.accuracy, -p.plan.input_size)).reference = True


def store(con: duckdb.DuckDBPyConnection, report: Report) -> None:
    rows = [
        {
            "plan": p.plan.key,
            "model": p.plan.model,
            "weights": p.weights,
            "source": p.plan.source,
            "scale": p.plan.scale,
            "input_size": p.plan.input_size,
            "backend": p.plan.backend,
            "precision": p.plan.precision,
            "batch_size": p.batch_size,
            "images": p.images,
            "correct": p.correct,
            "accuracy": p.accuracy,
            "accuracy_basis": report.basis,
            "reference": p.reference,
            "decode_ms": p.decode_ms,
            "resize_ms": p.resize_ms,
            "infer_ms": p.infer_ms,
            "bytes": p.bytes,
            "decoded_pixels": p.decoded_pixels,
            "measured_per_s": p.measured_per_s,
            "predicted_per_s": p.predicted_per_s,
        }
        for p in report.profiles
    ]
    replace_profiles(
        con, report.catalog, machine_id(), rows, report.cost.to_json(), report.max_error
    )
