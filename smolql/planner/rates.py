"""This machine's component rates, and a plan's predicted cost from them before it runs.

Rates are measured once per machine (``smolql calibrate``, beside the engine calibration in the
per-user cache): decode and resize/normalise of real photographs on one core at every DCT scale,
fitted into :class:`~smolql.planner.cost.CostModel`'s per-format and resize coefficients. A
plan's preprocessing is then predicted for *any* catalog from its own header statistics (format,
bytes, width, height, orientation of a sample of its rows), through the same geometry the
executor plans each image with, so no pixel is decoded; inference per image comes from the
engine's calibrated rate, scaled by input pixels for other input sizes. The cost model combines
them into pipelined throughput on this machine's cores (contention and overhead as fitted by the
catalog's profile when there is one), and the decode/inference thread split follows from the
same per-image costs.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from smolql.backends.cpu import machine_id
from smolql.config import cores as available_cores
from smolql.ops.geometry import plan_image
from smolql.ops.pipeline import ImageRef, Preprocessor
from smolql.ops.steps import ImagePlan
from smolql.ops.transform import SourceInfo, Transform
from smolql.planner.calibration import folder
from smolql.planner.cost import CostModel, ImageCost, fit_stage_costs, split_threads
from smolql.sources import read

DCT_SCALES = (1, 2, 4)
RATE_IMAGES = 32  # images the preprocessing rates are measured on
# Per-image costs (seconds on one core) assumed before this machine is calibrated: a 500x375
# JPEG decodes in about 1.5 ms and a 224-px EfficientNet-Lite0 infers in about 10 ms here.
DEFAULT_DECODE_S, DEFAULT_RESIZE_S, DEFAULT_INFER_S = 0.0015, 0.00025, 0.010
# Contention of preprocessing with inference before a profile fits it: perfect sharing of the
# cores (1/cores; the SMOL benchmark fitted 0.50 on 2 cores) and 0.3 ms of executor overhead.
DEFAULT_OVERHEAD_S = 0.0003


@dataclass(frozen=True)
class Header:
    """What the catalog knows of one image without reading it."""

    format: str
    bytes: int
    width: int  # stored
    height: int
    orientation: int = 1


@dataclass(frozen=True)
class Estimate:
    """A plan's predicted costs: per image on one core (decode, resize) and on the inference
    threads, the thread split, and the pipelined throughput."""

    decode_s: float
    resize_s: float
    infer_s: float
    workers: int
    threads: int
    per_s: float
    basis: str  # where the rates came from

    def seconds(self, n: int, batch: int) -> float:
        """Wall time for ``n`` images: filling the first batch, then the steady state."""
        if n <= 0:
            return 0.0
        return min(batch, n) * (self.decode_s + self.resize_s) / self.workers + n / self.per_s


def features(plan: ImagePlan, nbytes: int) -> ImageCost:
    """The cost model's features of one planned image (times zero: a prediction's input)."""
    spec = plan.decode.output()
    for view in plan.views:
        spec = view.output(spec)
    out = plan.resize.output(spec).shape
    return ImageCost(
        plan.decode.format,
        nbytes,
        plan.decoded_pixels,
        spec.shape[0] * spec.shape[1],
        out[1] * out[2],
        0.0,
        0.0,
    )


def planned(headers: list[Header], transform: Transform, scale: int) -> list[ImageCost]:
    """Features of each header's image under a plan's transform and DCT scale (remembered for
    the last few header samples: a repeated query plans the same images again)."""
    return list(_planned(tuple(headers), transform, scale))


@functools.lru_cache(maxsize=32)
def _planned(headers: tuple[Header, ...], transform: Transform, scale: int) -> tuple:
    out = []
    for h in headers:
        info = SourceInfo(h.format, h.width, h.height, h.orientation or 1)
        try:
            out.append(features(plan_image(info, transform, scale_denom=scale), h.bytes))
        except ValueError:
            continue  # an image the plan cannot take is an error row, not a cost
    return tuple(out)


def time_image(pre: Preprocessor, ref: ImageRef, slot: np.ndarray) -> ImageCost:
    """Decode and resize/normalise of one image on this thread, best of two passes."""
    data, _ = read(ref.path)
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
    f = features(ip, len(data))
    return ImageCost(f.format, f.bytes, f.decoded_pixels, f.read_pixels, f.output_pixels, *best)


def measure(paths: list[str], transform: Transform) -> list[ImageCost]:
    """Per-image costs of ``paths`` on one core at each DCT scale."""
    costs = []
    for scale in DCT_SCALES:
        pre = Preprocessor(transform, scale_denom=scale)
        slot = np.empty(pre.output.shape, np.float32)
        costs += [time_image(pre, ImageRef(i, p), slot) for i, p in enumerate(paths)]
    return costs


@functools.cache
def _libraries() -> dict[str, str]:  # once per process: each look-up scans the installed files
    out = {}
    for name in ("smolql", "opencv-python-headless", "numpy", "pillow"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "-"
    return out


def path() -> Path:
    key = {"machine": machine_id(), "libraries": _libraries()}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return folder() / f"rates-{digest}.json"


def save(model: CostModel) -> None:
    target = path()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(model.to_json())
    os.replace(tmp, target)


def load() -> CostModel | None:
    """This machine's measured preprocessing rates (None: not calibrated)."""
    try:
        return CostModel.from_json(path().read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None


def calibrate(paths: list[str], transform: Transform) -> CostModel:
    """Measure and store this machine's preprocessing rates on ``paths``."""
    n = available_cores()
    model = fit_stage_costs(measure(paths, transform), n)
    model.contention, model.overhead_s = 1.0 / n, DEFAULT_OVERHEAD_S
    save(model)
    return model


def estimate(
    images: list[ImageCost],
    infer_s: float | None,
    *,
    model: CostModel | None,
    engine: str,
    cores: int | None = None,
    gpu: bool = False,
    infer_basis: str = "calibrated inference rate",
) -> Estimate:
    """Predict a plan: preprocessing from ``model``'s rates over the catalog's planned images,
    inference ``infer_s`` per image (None: not calibrated; ``gpu``: on a GPU; ``infer_basis``:
    where it was measured), pipelined on ``cores`` (default: those this process may use)."""
    cores = cores or available_cores()
    basis = []
    if model is not None and model.decode and images:
        decode_s = sum(model.decode_s(i.format, i.bytes, i.decoded_pixels) for i in images)
        resize_s = sum(model.resize_s(i.read_pixels, i.output_pixels) for i in images)
        decode_s, resize_s = decode_s / len(images), resize_s / len(images)
        basis.append("measured preprocessing rates")
    else:
        decode_s, resize_s = DEFAULT_DECODE_S, DEFAULT_RESIZE_S
        model = CostModel(contention=1.0 / cores, overhead_s=DEFAULT_OVERHEAD_S, cores=cores)
        basis.append("default preprocessing rates")
    if infer_s is None:
        infer_s = DEFAULT_INFER_S
        basis.append("default inference rate")
    else:
        basis.append(infer_basis)
    workers, threads = split_threads(cores, decode_s + resize_s, infer_s, gpu=gpu)
    per_s = model.throughput(decode_s + resize_s, infer_s, workers, engine)
    return Estimate(decode_s, resize_s, infer_s, workers, threads, per_s, ", ".join(basis))
