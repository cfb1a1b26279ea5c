"""The built-in backends, registered through the ``smolql.backends`` entry-point group like
any plugin's."""

from __future__ import annotations

from collections.abc import Callable

from smolql.backends.base import Backend
from smolql.backends.onnxruntime_cpu import OnnxRuntimeBackend
from smolql.backends.openvino_cpu import OpenVinoBackend
from smolql.backends.tensorrt_gpu import TensorRtBackend
from smolql.backends.torch_cpu import TorchCpuBackend
from smolql.backends.torch_cuda import TorchCudaBackend


def register(register_backend: Callable[[Backend], Backend]) -> None:
    """Entry point of the ``smolql.backends`` group."""
    for backend in (
        OnnxRuntimeBackend(),
        OpenVinoBackend(),
        TorchCpuBackend(),
        TorchCudaBackend(),
        TensorRtBackend(),
    ):
        register_backend(backend)
