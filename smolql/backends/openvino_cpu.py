"""OpenVINO on the CPU: fp32, bf16 where the CPU has bf16 instructions, and int8 over an
NNCF post-training quantisation (see :mod:`smolql.models.quantize`)."""

from __future__ import annotations

from collections.abc import Sequence
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
REQUESTS_PER_STREAM = 2  # asynchronous requests in flight per stream (see OpenVinoSession)


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
    """A compiled model with a queue of asynchronous requests, each a part of a batch: two per
    stream, so a stream that finishes its part starts the next at once instead of waiting for
    the other streams at the end of every batch."""

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
        self.streams = streams or _streams(threads, batch_size)
        self.part = batch_size // self.streams
        # A static batch compiles to faster kernels; a short last part is padded.
        model.reshape({INPUT_NAME: [self.part, 3, size, size]})
        self.compiled = core.compile_model(
            model,
            "CPU",
            {
                "INFERENCE_NUM_THREADS": threads,
                "INFERENCE_PRECISION_HINT": HINTS[precision],
                "PERFORMANCE_HINT": "THROUGHPUT" if self.streams > 1 else "LATENCY",
                "NUM_STREAMS": self.streams,
            },
        )
        self.classes = self.compiled.output(0).get_partial_shape()[1].get_length()
        self.queue = ov.AsyncInferQueue(self.compiled, REQUESTS_PER_STREAM * self.streams)
        self.queue.set_callback(_copy_out)
        self.backend, self.precision = "openvino", precision

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.run_many([batch])[0]

    def run_many(self, batches: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Every part of every batch through the queue, from the caller's buffers (a short or
        strided part is copied, padded); the queue is drained before returning."""
        outs = [np.empty((len(b), self.classes), np.float32) for b in batches]
        kept = []  # copied parts, alive until their requests finish
        for batch, out in zip(batches, outs, strict=True):
            for lo in range(0, len(batch), self.part):
                part = batch[lo : lo + self.part]
                if len(part) < self.part or not part.flags.c_contiguous:
                    whole = np.zeros((self.part, *batch.shape[1:]), np.float32)
                    whole[: len(part)] = part
                    kept.append(part := whole)
                self.queue.start_async({0: part}, (out, lo), share_inputs=True)
        self.queue.wait_all()
        return outs


def _copy_out(request, where: tuple[np.ndarray, int]) -> None:
    """A finished request's logits into its batch's output, before the request is reused."""
    out, lo = where
    logits = request.get_output_tensor(0).data
    rows = out[lo : lo + len(logits)]  # fewer at the end of a short batch (its part was padded)
    rows[:] = logits[: len(rows)]


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
