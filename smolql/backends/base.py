"""The backend interface: capability flags, availability with a reason, and sessions."""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from smolql.models.spec import ModelSpec


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do on this machine; the planner reads these, never the class."""

    devices: tuple[str, ...]
    precisions: tuple[str, ...]
    max_batch: int = 256
    dynamic_batch: bool = True
    calibrated: tuple[str, ...] = ()  # precisions that need calibration images first (int8)


class Session(ABC):
    """A model loaded on a backend at one precision, ready to run batches."""

    backend: str
    precision: str

    @abstractmethod
    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits (N, classes) float32 for a (N, 3, H, W) float32 batch."""

    def run_many(self, batches: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Logits for each of several batches, all ready at once (an engine with asynchronous
        requests keeps them all in flight, with no idle stream between batches)."""
        return [self.run(b) for b in batches]

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


class Backend(ABC):
    name: str
    requires: tuple[str, ...] = ()  # importable modules it needs
    install: str = ""  # what to pip install when they are missing
    runs_onnx: bool = False  # runs an ONNX graph (a user's ONNX model needs this)

    def unavailable_reason(self) -> str | None:
        """None if the backend can run here, else why not (shown when it is skipped)."""
        for module in self.requires:
            if importlib.util.find_spec(module) is None:
                return f"{module} is not installed (pip install {self.install or module})"
        return self.device_problem()

    def device_problem(self) -> str | None:
        """Why the hardware cannot run this backend, if it cannot."""
        return None

    @abstractmethod
    def capabilities(self) -> Capabilities: ...

    @abstractmethod
    def open(self, spec: ModelSpec, precision: str, threads: int, batch_size: int) -> Session: ...

    def is_calibrated(self, spec: ModelSpec, precision: str) -> bool:
        """Whether a ``calibrated`` precision's engine exists for ``spec`` here."""
        return precision not in self.capabilities().calibrated

    def calibrate(self, spec: ModelSpec, precision: str, images: np.ndarray) -> None:
        """Make a ``calibrated`` precision's engine from ``images`` (N, 3, H, W) float32."""
        raise NotImplementedError(f"{self.name} has no calibrated precision {precision!r}")

    def engine_stamp(self, spec: ModelSpec, precision: str) -> str:
        """What tells the versions of a ``calibrated`` precision's engine apart (a new
        calibration changes it); "" for an engine made from the model alone, or none made."""
        return ""
