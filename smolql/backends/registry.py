"""Backends by name. Each is importable without its engine; availability is asked at run time.

>>> sorted(BACKENDS)
['onnxruntime', 'openvino', 'tensorrt', 'torch', 'torch_cuda']
"""

from __future__ import annotations

from smolql.backends.base import Backend
from smolql.backends.onnxruntime_cpu import OnnxRuntimeBackend
from smolql.backends.openvino_cpu import OpenVinoBackend
from smolql.backends.tensorrt_gpu import TensorRtBackend
from smolql.backends.torch_cpu import TorchCpuBackend
from smolql.backends.torch_cuda import TorchCudaBackend
from smolql.errors import InferenceError
from smolql.suggest import did_you_mean

BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        OnnxRuntimeBackend(),
        OpenVinoBackend(),
        TorchCpuBackend(),
        TorchCudaBackend(),
        TensorRtBackend(),
    )
}


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise InferenceError(f"unknown backend {name!r}{did_you_mean(name, BACKENDS)}")
    backend = BACKENDS[name]
    reason = backend.unavailable_reason()
    if reason:
        raise InferenceError(f"backend {name!r} cannot run here: {reason}")
    return backend


def available() -> dict[str, Backend]:
    return {n: b for n, b in BACKENDS.items() if b.unavailable_reason() is None}
