"""The cost model: per-image stage costs from image features, and end-to-end throughput from
stage costs with the stages sharing the cores.

Stage costs (seconds on one core):

* decode = a + b * compressed bytes + c * decoded pixels, per format. Entropy decoding reads
  every byte whatever the DCT scale or crop, while colour conversion, upsampling and IDCT
  output scale with the pixels produced, so both terms are needed.
* resize/normalise = a + b * pixels read + c * output pixels (the fused kernel).

Throughput on ``cores`` cores with ``workers`` decode threads and inference taking
``infer_s`` of wall time per image on its threads:

    steady = 1 / max(pre_s / workers, infer_s + contention * pre_s + overhead_s)

Inference threads use every core, so each CPU-second of preprocessing delays them by
``contention`` seconds: ``1/cores`` with perfect sharing, less when the inference threads
leave cores idle (small int8 kernels, synchronisation), 1 when the parallel kernels wait for
the preempted thread, more when the stages also slow each other down; ``overhead_s`` is the
executor's own per-image work on the inference thread (batch hand-off, softmax, result rows).
Both are fitted to the profiled plans' end-to-end runs, once over all of them and once per
engine kind (backend/precision) that has enough runs: thread pools differ in how they take
being preempted (in a SMOL benchmark run with one shared pair, OpenVINO plans were mostly
over-predicted, by up to 22%, ONNX Runtime ones not).
A finite run also pays for filling the first batch before inference can start.

Images in object storage add a third bound and some CPU: ``fetch_s`` is the store's wall time
per image with the source's requests in flight (1 / the images per second it serves: freshness
check, metadata, bytes), and ``fetch_cpu_s`` the client's CPU per image (HTTP, TLS, the SDK's
Python), which the cores pay like preprocessing. Both are measured per catalog input by the
profiler; local files have neither.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np

MIN_ENGINE_RUNS = 4  # plans of one engine kind needed to fit its own contention
Fetch = tuple[float, float] | None  # (fetch_s, fetch_cpu_s) of a remote input, per image


@dataclass(frozen=True)
class ImageCost:
    """One image's measured preprocessing (one core) and the features that explain it."""

    format: str
    bytes: int
    decoded_pixels: int
    read_pixels: int  # what the resize reads (the decoded region after views)
    output_pixels: int
    decode_s: float
    resize_s: float


@dataclass
class CostModel:
    decode: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    resize: tuple[float, float, float] = (0.0, 0.0, 0.0)
    contention: float = 1.0
    overhead_s: float = 0.0
    cores: int = 1
    # (contention, overhead_s) per engine kind "backend/precision"; others use the pair above
    engines: dict[str, tuple[float, float]] = field(default_factory=dict)

    def decode_s(self, fmt: str, nbytes: float, pixels: float) -> float:
        a, b, c = self.decode.get(fmt) or max(self.decode.values(), key=lambda v: v[2])
        return a + b * nbytes + c * pixels

    def resize_s(self, read_pixels: float, output_pixels: float) -> float:
        a, b, c = self.resize
        return a + b * read_pixels + c * output_pixels

    def preprocess_s(self, images: list[ImageCost]) -> float:
        """Predicted mean decode + resize seconds per image (one core)."""
        if not images:
            return 0.0
        total = sum(
            self.decode_s(i.format, i.bytes, i.decoded_pixels)
            + self.resize_s(i.read_pixels, i.output_pixels)
            for i in images
        )
        return total / len(images)

    def throughput(
        self, pre_s: float, infer_s: float, workers: int, engine: str = "", fetch: Fetch = None
    ) -> float:
        """Steady-state images per second (``fetch``: the input's (fetch_s, fetch_cpu_s))."""
        fetch_s, fetch_cpu_s = fetch or (0.0, 0.0)
        pre_s += fetch_cpu_s
        contention, overhead_s = self.engines.get(engine, (self.contention, self.overhead_s))
        serial = infer_s + contention * pre_s + overhead_s
        return 1.0 / max(pre_s / workers, serial, fetch_s)

    def run_seconds(
        self,
        n: int,
        pre_s: float,
        infer_s: float,
        workers: int,
        batch: int,
        engine: str = "",
        fetch: Fetch = None,
    ) -> float:
        """Predicted wall time for ``n`` images: fill the first batch, then steady state."""
        fetch_s, fetch_cpu_s = fetch or (0.0, 0.0)
        fill = min(batch, n) * max((pre_s + fetch_cpu_s) / workers, fetch_s)
        return fill + n / self.throughput(pre_s, infer_s, workers, engine, fetch)

    def describe_contention(self) -> str:
        """The fitted contention and overhead, overall and per engine kind, for reports."""
        pairs = [("all", (self.contention, self.overhead_s)), *sorted(self.engines.items())]
        return "; ".join(
            f"{k} contention {c:.2f}, overhead {1000 * o:.2f} ms" for k, (c, o) in pairs
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> CostModel:
        raw = json.loads(text)
        raw["decode"] = {k: tuple(v) for k, v in raw["decode"].items()}
        raw["resize"] = tuple(raw["resize"])
        raw["engines"] = {k: tuple(v) for k, v in raw.get("engines", {}).items()}
        return cls(**raw)


def _nonneg_lstsq(x: np.ndarray, y: np.ndarray) -> tuple[float, ...]:
    """Least squares with the coefficients kept >= 0 (a column that would go negative is
    dropped and the rest refitted): a cost never shrinks as work grows."""
    active = list(range(x.shape[1]))
    coef = np.zeros(x.shape[1])
    while active:
        sol, *_ = np.linalg.lstsq(x[:, active], y, rcond=None)
        if (sol >= 0).all():
            coef[active] = sol
            break
        active.pop(int(np.argmin(sol)))
    return tuple(float(c) for c in coef)


def fit_stage_costs(images: list[ImageCost], cores: int) -> CostModel:
    """Fit decode (per format) and resize coefficients to per-image measurements."""
    model = CostModel(cores=cores)
    for fmt in sorted({i.format for i in images}):
        rows = [i for i in images if i.format == fmt]
        x = np.array([[1.0, i.bytes, i.decoded_pixels] for i in rows])
        model.decode[fmt] = _nonneg_lstsq(x, np.array([i.decode_s for i in rows]))
    x = np.array([[1.0, i.read_pixels, i.output_pixels] for i in images])
    model.resize = _nonneg_lstsq(x, np.array([i.resize_s for i in images]))
    return model


@dataclass(frozen=True)
class RunObservation:
    """One profiled plan's end-to-end run: its stage costs and the measured wall time."""

    pre_s: float
    infer_s: float
    workers: int
    batch: int
    images: int
    seconds: float
    engine: str = ""  # "backend/precision"
    fetch: Fetch = None  # (fetch_s, fetch_cpu_s) when the input is in object storage


def fit_contention(model: CostModel, runs: list[RunObservation]) -> CostModel:
    """Fit the contention factor and per-image overhead over all runs, then per engine kind
    with at least :data:`MIN_ENGINE_RUNS` runs."""
    model.contention, model.overhead_s = _fit_pair(model, runs)
    model.engines = {}
    for engine in sorted({r.engine for r in runs}):
        mine = [r for r in runs if r.engine == engine]
        if engine and len(mine) >= MIN_ENGINE_RUNS:
            model.engines[engine] = _fit_pair(model, mine)
    return model


def _fit_pair(model: CostModel, runs: list[RunObservation]) -> tuple[float, float]:
    """The contention factor (0..2) and per-image overhead (0..3 ms) that minimise the squared
    log error of the predicted run times (a grid: two parameters). Contention above 1 means
    preprocessing costs more beside inference than alone (shared caches and memory bandwidth,
    and the interpreter lock for its Python steps)."""
    trial = CostModel(model.decode, model.resize, cores=model.cores)
    best, best_err = (1.0, 0.0), math.inf
    for k in np.linspace(0.0, 2.0, 81):
        for o in np.linspace(0.0, 0.003, 31):
            trial.contention, trial.overhead_s = float(k), float(o)
            err = sum(math.log(_predicted(trial, r) / r.seconds) ** 2 for r in runs)
            if err < best_err:
                best, best_err = (float(k), float(o)), err
    return best


def _predicted(model: CostModel, r: RunObservation) -> float:
    return model.run_seconds(r.images, r.pre_s, r.infer_s, r.workers, r.batch, fetch=r.fetch)


TURNS_UP_TO = 4  # cores up to which decoding and CPU inference take turns on all of them
SIDE_BY_SIDE = 0.95  # beyond: stages side by side if their best split reaches this of the bound


def split_threads(
    cores: int, decode_cost: float, infer_cost: float, *, gpu: bool = False
) -> tuple[int, int]:
    """Decode workers and inference threads for ``cores``, from the per-image costs
    (``decode_cost`` on one core, ``infer_cost`` on all of them).

    Inference on a GPU: every core decodes. On CPU, the shared-core bound 1 / (1/P + 1/I) is
    reached when no core idles while either stage has work. On up to :data:`TURNS_UP_TO`
    cores each stage gets all of them and the two take turns (:func:`takes_turns`): a split of
    so few cores cannot follow the cost ratio (2 cores for a 1:6 ratio leave one idle half the
    time). On more cores the stages run side by side on the split of cores that is fastest
    for their per-image core-seconds, if it reaches :data:`SIDE_BY_SIDE` of the bound (the
    loss is the split's rounding); else they take turns.

    >>> split_threads(2, decode_cost=1.5, infer_cost=10.0)
    (2, 2)
    >>> split_threads(64, decode_cost=1.0, infer_cost=4.0 / 64)
    (13, 51)
    >>> split_threads(8, decode_cost=1.5, infer_cost=7.8 / 8)
    (8, 8)
    >>> split_threads(2, decode_cost=1.5, infer_cost=10.0, gpu=True)
    (2, 1)
    """
    if gpu:
        return cores, 1
    if cores > TURNS_UP_TO:
        c_d, c_i = decode_cost, infer_cost * cores  # core-seconds per image

        def rate(d: int) -> float:
            return min(d / c_d, (cores - d) / c_i)

        best = max(range(1, cores), key=rate)
        if rate(best) >= SIDE_BY_SIDE * cores / (c_d + c_i):
            return best, cores - best
    return cores, cores


TURN_IMAGES = 64  # images decoded in one turn (several batches where a batch is smaller)
TURN_BYTES = 64 << 20  # at most this much of decoded batches in one turn


def turn_batches(batch_size: int, image_bytes: int) -> int:
    """Batches decoded in one turn when the stages take turns: each switch between decoding
    and inference costs the same (threads waking, the model's weights and the decoder's
    tables back in cache, the last image of a turn decoding on one core), so a turn of at
    least :data:`TURN_IMAGES` images pays it less often, within :data:`TURN_BYTES` of memory.

    >>> turn_batches(16, 3 * 224 * 224 * 4), turn_batches(32, 3 * 224 * 224 * 4)
    (4, 2)
    >>> turn_batches(64, 3 * 224 * 224 * 4), turn_batches(16, 3 * 1024 * 1024 * 4)
    (1, 1)
    """
    images = min(TURN_IMAGES, TURN_BYTES // max(image_bytes, 1))
    return max(1, images // batch_size)


def takes_turns(workers: int, threads: int, cores: int, *, gpu: bool = False) -> bool:
    """Whether decoding and CPU inference take turns: together they ask for more threads than
    there are cores, so running side by side would only make them preempt each other
    (inference on a GPU never takes turns: it leaves the cores to decoding)."""
    return not gpu and workers + threads > cores
