"""TensorRT on an NVIDIA GPU: an fp16 engine built from the cached ONNX export with a dynamic
batch profile, serialised to the cache so it is built once per GPU and model version."""

from __future__ import annotations

import importlib.util

import numpy as np

from smolql.backends.base import Backend, Capabilities, Session
from smolql.errors import InferenceError
from smolql.models.export import INPUT_NAME, cache_dir, export_key, onnx_path
from smolql.models.spec import ModelSpec

MAX_BATCH = 256


def engine_path(spec: ModelSpec, precision: str):
    import tensorrt as trt
    import torch

    gpu = torch.cuda.get_device_name().replace(" ", "_")
    name = f"{spec.name}-{export_key(spec)}-{precision}-{gpu}-trt{trt.__version__}.engine"
    return cache_dir() / "tensorrt" / name


def build_engine(spec: ModelSpec, precision: str) -> bytes:
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path(spec).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise InferenceError(f"TensorRT could not parse the ONNX export: {errors}")
    config = builder.create_builder_config()
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    size = spec.input_size
    profile = builder.create_optimization_profile()
    profile.set_shape(
        INPUT_NAME, (1, 3, size, size), (64, 3, size, size), (MAX_BATCH, 3, size, size)
    )
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise InferenceError(f"TensorRT failed to build an engine for {spec.name!r}")
    return bytes(serialized)


class TensorRtSession(Session):
    def __init__(self, spec: ModelSpec, precision: str) -> None:
        import tensorrt as trt
        import torch

        path = engine_path(spec, precision)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(build_engine(spec, precision))
            tmp.replace(path)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        self.context = self.engine.create_execution_context()
        self.output_name = next(
            self.engine.get_tensor_name(i)
            for i in range(self.engine.num_io_tensors)
            if self.engine.get_tensor_mode(self.engine.get_tensor_name(i))
            == trt.TensorIOMode.OUTPUT
        )
        self.classes = len(spec.labels)
        self.torch = torch
        self.backend, self.precision = "tensorrt", precision

    def run(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(batch)).cuda()
        out = torch.empty((len(batch), self.classes), device="cuda", dtype=torch.float32)
        self.context.set_input_shape(INPUT_NAME, tuple(x.shape))
        self.context.set_tensor_address(INPUT_NAME, x.data_ptr())
        self.context.set_tensor_address(self.output_name, out.data_ptr())
        stream = torch.cuda.current_stream()
        self.context.execute_async_v3(stream.cuda_stream)
        stream.synchronize()
        return out.cpu().numpy()


class TensorRtBackend(Backend):
    name = "tensorrt"
    runs_onnx = True
    requires = ("torch",)
    install = "torch==2.14.1"

    def device_problem(self) -> str | None:
        import torch

        if not torch.cuda.is_available():
            return "no CUDA GPU is visible (TensorRT needs an NVIDIA GPU)"
        if importlib.util.find_spec("tensorrt") is None:
            return "tensorrt is not installed (pip install tensorrt)"
        return None

    def capabilities(self) -> Capabilities:
        return Capabilities(devices=("cuda",), precisions=("fp16", "fp32"), max_batch=MAX_BATCH)

    def open(self, spec: ModelSpec, precision: str, threads: int, batch_size: int) -> Session:
        return TensorRtSession(spec, precision)
