"""Machine calibrations: which inference engine is fastest here, measured once per machine,
model, weights and installed runtimes, and kept in a per-user cache shared by every database.

A calibration is a JSON file under ``<cache>/calibration/`` (``$SMOLQL_CACHE``, else
``$XDG_CACHE_HOME/smolql``, else ``~/.cache/smolql``). Its name hashes everything that would
change the answer: the hardware, the model and its weights and input size, and the versions of
the inference runtimes, so an upgrade or new weights simply find no file and measure again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from smolql.backends.cpu import machine_id
from smolql.models.export import cache_dir
from smolql.models.spec import ModelSpec

RUNTIMES = ("onnxruntime", "openvino", "torch", "tensorrt")
# How the default is chosen from the measurements; a new rule measures again (2: a reduced
# precision must show its agreement on enough images, see smolql.planner.engines.pick).
CHOICE_RULE = 3  # 3: a reduced precision's answer changes are bounded at 95% confidence


@dataclass(frozen=True)
class Measurement:
    backend: str
    precision: str
    batch_size: int
    images_per_s: float
    top1_agreement: float  # on the timing sample
    # A reduced precision's comparison with fp32 on more images (see engines.agreement):
    compared: int = 0  # images compared
    disagreements: int = 0  # top-1 answers that differ from fp32's
    losses: int = -1  # of those, labelled images fp32 got right and this got wrong (-1: no labels)


@dataclass(frozen=True)
class Calibration:
    """A machine's measurements for one model, and the engine chosen from them."""

    chosen: Measurement
    measurements: tuple[Measurement, ...]
    measured: str  # when, ISO 8601 UTC
    reason: str = ""  # why this precision and not a faster one (EXPLAIN shows it)

    def fastest(self, precision: str) -> Measurement | None:
        at = [m for m in self.measurements if m.precision == precision]
        return max(at, key=lambda m: m.images_per_s) if at else None


def folder() -> Path:
    return cache_dir() / "calibration"


@functools.cache
def runtime_versions() -> dict[str, str]:
    """Installed versions of the inference runtimes (read from metadata, not imported; once
    per process: every plan asks, and each look-up scans the installed packages)."""
    out = {}
    for name in RUNTIMES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "-"
    return out


def key(spec: ModelSpec) -> dict[str, object]:
    return {
        "machine": machine_id(),
        "model": spec.name,
        "weights": spec.weights_hash(),
        "input_size": spec.input_size,
        "runtimes": runtime_versions(),
        "rule": CHOICE_RULE,
    }


def path(spec: ModelSpec) -> Path:
    digest = hashlib.sha256(json.dumps(key(spec), sort_keys=True).encode()).hexdigest()[:20]
    return folder() / f"{spec.name}-{digest}.json"


def load(spec: ModelSpec) -> Calibration | None:
    """This machine's calibration of ``spec``, or None when it was never measured (or the
    runtimes, weights or hardware changed since)."""
    try:
        data = json.loads(path(spec).read_text())
        return Calibration(
            Measurement(**data["chosen"]),
            tuple(Measurement(**m) for m in data["measurements"]),
            data["measured"],
            data.get("reason", ""),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save(
    spec: ModelSpec, chosen: Measurement, measurements: list[Measurement], reason: str = ""
) -> Calibration:
    """Write atomically (a killed process never leaves half a file)."""
    calibration = Calibration(
        chosen, tuple(measurements), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), reason
    )
    target = path(spec)
    target.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "key": key(spec),
        "chosen": asdict(chosen),
        "measurements": [asdict(m) for m in measurements],
        "measured": calibration.measured,
        "reason": reason,
    }
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(body, f, indent=1)
    os.replace(tmp, target)
    return calibration
