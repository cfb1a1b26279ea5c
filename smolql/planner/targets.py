"""Choose a plan for a classification call from the catalog's stored profiles.

* ``smolql.min_accuracy`` (absolute) and ``smolql.max_accuracy_loss`` (below the reference plan's
  accuracy) pick the fastest plan that meets them;
* ``smolql.min_throughput`` (images/s) alone picks the most accurate plan that reaches it
  (with an accuracy target too, it is one more constraint on the fastest plan);
* no target: the call's model on originals at full quality (the behaviour without profiles).

With a target but no profile for the catalog on this machine, the full-quality plan runs and
the choice says why: profiling takes minutes, which a query should not spend unasked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb

from smolql.backends.cpu import machine_id
from smolql.errors import QueryError
from smolql.models.registry import get_model, models
from smolql.planner.space import ORIGINAL, PhysicalPlan
from smolql.storage.profiles import profiles as stored_profiles

RUNNERS_UP = 3


@dataclass(frozen=True)
class Candidate:
    plan: PhysicalPlan
    accuracy: float
    per_s: float  # images/s counted on: the lower of the prediction and the profiled median
    reference: bool = False
    batch_size: int = 0  # the batch size the profile ran the plan at (0: not profiled)
    infer_s: float = 0.0  # the profile's median inference seconds per image (0: not profiled)

    def describe(self) -> str:
        return f"{self.plan.describe()} (accuracy {self.accuracy:.3f}, {self.per_s:.0f} img/s)"


@dataclass(frozen=True)
class Choice:
    plan: PhysicalPlan | None  # None: the full-quality default plan
    chosen: Candidate | None = None
    runners_up: tuple[Candidate, ...] = ()
    target: str = ""
    note: str = ""
    basis: str = ""

    def lines(self) -> list[str]:
        """EXPLAIN's account of the choice."""
        if self.chosen is None:
            return [f"  plan choice: {self.note}"] if self.note else []
        out = [
            f"  plan choice ({self.target}; accuracy = {self.basis}):",
            f"    chosen: {self.chosen.describe()}",
        ]
        out += [f"    runner-up: {c.describe()}" for c in self.runners_up]
        return out


@dataclass(frozen=True)
class Targets:
    min_accuracy: float | None = None
    max_accuracy_loss: float | None = None
    min_throughput: float | None = None

    @property
    def any(self) -> bool:
        return any(
            v is not None for v in (self.min_accuracy, self.max_accuracy_loss, self.min_throughput)
        )

    def describe(self) -> str:
        parts = []
        if self.min_accuracy is not None:
            parts.append(f"min_accuracy {self.min_accuracy}")
        if self.max_accuracy_loss is not None:
            parts.append(f"max_accuracy_loss {self.max_accuracy_loss}")
        if self.min_throughput is not None:
            parts.append(f"min_throughput {self.min_throughput:g} img/s")
        return ", ".join(parts)


@dataclass
class Profiles:
    candidates: list[Candidate] = field(default_factory=list)
    basis: str = ""


def load(con: duckdb.DuckDBPyConnection, catalog: str) -> Profiles:
    """The catalog's profiled plans on this machine whose model weights are unchanged."""
    known = models()
    out = Profiles()
    for row in stored_profiles(con, catalog, machine_id()):
        spec = known.get(row["model"])
        if spec is None or not spec.weights or spec.weights_hash() != row["weights"]:
            continue  # a model since changed or gone
        per_s = min(row["predicted_per_s"], row["measured_per_s"])
        plan = PhysicalPlan.from_key(row["plan"])
        out.candidates.append(
            Candidate(
                plan,
                row["accuracy"],
                per_s,
                row["reference"],
                row["batch_size"] or 0,
                (row["infer_ms"] or 0.0) / 1000,
            )
        )
        out.basis = row["accuracy_basis"]
    return out


def compatible(candidates: list[Candidate], model: str, explicit: bool) -> list[Candidate]:
    """Plans a call may use: its own model and the models trained from it; without an explicit
    model, any model with the same labels."""
    spec = get_model(model)
    known = models()

    def allowed(name: str) -> bool:
        other = known.get(name)
        if other is None:
            return False
        if name == model or other.base == model:
            return True
        return not explicit and other.labels == spec.labels

    return [c for c in candidates if allowed(c.plan.model)]


def rank(pool: list[Candidate], targets: Targets, reference_accuracy: float) -> list[Candidate]:
    """The candidates that meet ``targets``, best first: the fastest under an accuracy target
    (a loss is measured from ``reference_accuracy``), else the most accurate. Plan choice and
    the machine's default engine (:func:`smolql.planner.engines.pick`) both rank with it."""
    ok = list(pool)
    if targets.min_accuracy is not None:
        ok = [c for c in ok if c.accuracy >= targets.min_accuracy]
    if targets.max_accuracy_loss is not None:
        ok = [c for c in ok if reference_accuracy - c.accuracy <= targets.max_accuracy_loss + 1e-12]
    if targets.min_throughput is not None:
        ok = [c for c in ok if c.per_s >= targets.min_throughput]
    if targets.min_accuracy is not None or targets.max_accuracy_loss is not None:
        return sorted(ok, key=lambda c: (-c.per_s, -c.accuracy))
    return sorted(ok, key=lambda c: (-c.accuracy, -c.per_s))


def choose(
    profiles: Profiles,
    targets: Targets,
    *,
    catalog: str,
    model: str,
    explicit: bool,
    originals_only: bool = False,
) -> Choice:
    if not targets.any:
        return Choice(None)
    pool = compatible(profiles.candidates, model, explicit)
    if originals_only:
        pool = [c for c in pool if c.plan.source == ORIGINAL]
    if not pool:
        return Choice(
            None,
            target=targets.describe(),
            note=f"no plan profiles for catalog {catalog!r} on this machine (run `smolql profile"
            f" {catalog}`): running {model} on originals at full quality",
        )
    refs = [c for c in pool if c.plan.is_reference_input()]
    reference = max(refs or pool, key=lambda c: c.accuracy)
    ranked = rank(pool, targets, reference.accuracy)
    if not ranked:
        best_acc = max(pool, key=lambda c: (c.accuracy, c.per_s))
        fastest = max(pool, key=lambda c: (c.per_s, c.accuracy))
        raise QueryError(
            f"no profiled plan for catalog {catalog!r} meets {targets.describe()}: the most"
            f" accurate is {best_acc.describe()}; the fastest is {fastest.describe()}"
        )
    return Choice(
        ranked[0].plan,
        ranked[0],
        tuple(ranked[1 : 1 + RUNNERS_UP]),
        targets.describe(),
        basis=profiles.basis,
    )
