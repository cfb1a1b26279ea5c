"""ONNX Runtime on the CPU: fp32 over the cached ONNX export, and int8 over its calibrated
static quantisation (see :mod:`smolql.models.quantize`)."""

from __future__ import annotations

import numpy as np

from smolql.backends.base import Backend, Capabilities, Session
from smolql.backends.cpu import has_vnni
from smolql.models.export import INPUT_NAME, onnx_path
from smolql.models.quantize import (
    int8_model,
    int8_path,
    is_quantized,
    ort_settings,
    quantize,
    stamp_of,
)
from smolql.models.spec import ModelSpec


class OrtSession(Session):
    def __init__(self, spec: ModelSpec, precision: str, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Decode threads share the cores: idle inference threads must sleep, not spin.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        path = int8_model(spec, not has_vnni()) if precision == "int8" else onnx_path(spec)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.backend, self.precision = "onnxruntime", precision

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {INPUT_NAME: np.ascontiguousarray(batch)})[0]


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    runs_onnx = True
    requires = ("onnxruntime",)
    install = "onnxruntime"

    def capabilities(self) -> Capabilities:
        return Capabilities(devices=("cpu",), precisions=("fp32", "int8"), calibrated=("int8",))

    def open(self, spec: ModelSpec, precision: str, threads: int, batch_size: int) -> Session:
        return OrtSession(spec, precision, threads)

    def is_calibrated(self, spec: ModelSpec, precision: str) -> bool:
        return precision != "int8" or is_quantized(int8_path(spec), ort_settings(not has_vnni()))

    def calibrate(self, spec: ModelSpec, precision: str, images: np.ndarray) -> None:
        quantize(spec, images, reduce_range=not has_vnni())

    def engine_stamp(self, spec: ModelSpec, precision: str) -> str:
        return stamp_of(int8_path(spec)) if precision == "int8" else ""
