"""OpenVINO on the CPU: fp32, bf16 where the CPU has bf16 instructions, and int8 over an
NNCF post-training quantisation (see :mod:`smolql.models.quantize`)."""

from __future__ import annotations

from functools import cache

import numpy as np

from smolql.backends.base import Backend, Capabilities, Session
from smolql.models.export import INPUT_NAME, onnx_path
from smolql.models.quantize import (
    OPENVINO_SETTINGS,
    is_quantized,
    openvino_int8_model,
    openvino_int8_path,
    quantize_openvino,
    stamp_of,
)
from smolql.models.spec import ModelSpec

HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8: the unquantised rest in f32


@cache
def _cpu_capabilities() -> tuple[str, ...]:
    import openvino as ov

    return tuple(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def _streams(threads: int, batch_size: int) -> int:
    """Parallel inference streams (OpenVINO's throughput mode): one per thread on up to 2
    threads, one per 2 threads beyond, each with at least 8 images. On 2 threads the two
    counts are within the host's noise (``benchmarks/results/inference-no-bf16-paired.txt``,
    "I/s" against "I oth": Lite0 int8 316/287, 279/276, 319/359 images/s); the inference
    benchmark measures the other count in every run."""
    streams = max(threads // 2, min(threads, 2))
    streams = max(1, min(streams, batch_size // 8))
    while batch_size % streams:
        streams -= 1
    return streams


class OpenVinoSession(Session):
    def __init__(
        self,
        spec: ModelSpec,
        precision: str,
        threads: int,
        batch_size: int,
        streams: int | None = None,
    ) -> None:
        import openvino as ov

        core = ov.Core()
        path = openvino_int8_model(spec) if precision == "int8" else onnx_path(spec)
        model = core.read_model(str(path))
        size = spec.input_size
        streams = streams or _streams(threads, batch_size)
        self.part = batch_size // streams
        # A static batch compiles to faster kernels; a short last batch is padded.
        model.reshape({INPUT_NAME: [self.part, 3, size, size]})
        self.batch_size = batch_size
        self.compiled = core.compile_model(
            model,
            "CPU",
            {
                "INFERENCE_NUM_THREADS": threads,
                "INFERENCE_PRECISION_HINT": HINTS[precision],
                "PERFORMANCE_HINT": "THROUGHPUT" if streams > 1 else "LATENCY",
                "NUM_STREAMS": streams,
            },
        )
        self.requests = [self.compiled.create_infer_request() for _ in range(streams)]
        self.padded: np.ndarray | None = None  # made for the first short or strided batch
        self.backend, self.precision = "openvino", precision

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The batch's parts run at once, one per stream (asynchronous requests), from the
        caller's buffer (no copy unless the batch is short and must be padded)."""
        n = len(batch)
        if n != self.batch_size or not batch.flags.c_contiguous:
            if self.padded is None:
                self.padded = np.empty((self.batch_size, *batch.shape[1:]), np.float32)
            self.padded[:n] = batch
            self.padded[n:] = 0
            batch = self.padded
        for i, request in enumerate(self.requests):
            part = batch[i * self.part : (i + 1) * self.part]
            request.start_async({0: part}, share_inputs=True)
        for request in self.requests:
            request.wait()
        out = np.concatenate([r.get_output_tensor(0).data for r in self.requests])
        return out[:n]


class OpenVinoBackend(Backend):
    name = "openvino"
    runs_onnx = True
    requires = ("openvino",)
    install = "openvino"

    def capabilities(self) -> Capabilities:
        precisions = ("fp32", "bf16") if "BF16" in _cpu_capabilities() else ("fp32",)
        return Capabilities(
            devices=("cpu",),
            precisions=(*precisions, *(("int8",) if _has_nncf() else ())),
            dynamic_batch=False,
            calibrated=("int8",),
        )

    def open(self, spec: ModelSpec, precision: str, threads: int, batch_size: int) -> Session:
        return OpenVinoSession(spec, precision, threads, batch_size)

    def is_calibrated(self, spec: ModelSpec, precision: str) -> bool:
        return precision != "int8" or is_quantized(openvino_int8_path(spec), OPENVINO_SETTINGS)

    def calibrate(self, spec: ModelSpec, precision: str, images: np.ndarray) -> None:
        quantize_openvino(spec, images)

    def engine_stamp(self, spec: ModelSpec, precision: str) -> str:
        return stamp_of(openvino_int8_path(spec)) if precision == "int8" else ""


@cache
def _has_nncf() -> bool:
    import importlib.util

    return importlib.util.find_spec("nncf") is not None
