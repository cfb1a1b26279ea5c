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
)
from smolql.models.spec import ModelSpec

HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8: the unquantised rest in f32


@cache
def _cpu_capabilities() -> tuple[str, ...]:
    import openvino as ov

    return tuple(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


class OpenVinoSession(Session):
    def __init__(self, spec: ModelSpec, precision: str, threads: int, batch_size: int) -> None:
        import openvino as ov

        core = ov.Core()
        path = openvino_int8_model(spec) if precision == "int8" else onnx_path(spec)
        model = core.read_model(str(path))
        size = spec.input_size
        # A static batch compiles to faster kernels; a short last batch is padded.
        model.reshape({INPUT_NAME: [batch_size, 3, size, size]})
        self.batch_size = batch_size
        self.compiled = core.compile_model(
            model,
            "CPU",
            {
                "INFERENCE_NUM_THREADS": threads,
                "INFERENCE_PRECISION_HINT": HINTS[precision],
                "PERFORMANCE_HINT": "LATENCY",
            },
        )
        self.request = self.compiled.create_infer_request()
        self.backend, self.precision = "openvino", precision

    def run(self, batch: np.ndarray) -> np.ndarray:
        n = len(batch)
        if n != self.batch_size:
            padded = np.zeros((self.batch_size, *batch.shape[1:]), np.float32)
            padded[:n] = batch
            batch = padded
        result = self.request.infer({0: np.ascontiguousarray(batch)})
        return np.array(next(iter(result.values()))[:n])


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


@cache
def _has_nncf() -> bool:
    import importlib.util

    return importlib.util.find_spec("nncf") is not None
