"""PyTorch on an NVIDIA GPU: fp16, with the forward pass captured in a CUDA graph per batch
size (replays skip Python and kernel-launch overhead)."""

from __future__ import annotations

import numpy as np

from smolql.backends.base import Backend, Capabilities, Session
from smolql.models.spec import ModelSpec


class TorchCudaSession(Session):
    def __init__(self, spec: ModelSpec, precision: str, batch_size: int) -> None:
        import torch

        self.torch = torch
        dtype = torch.float16 if precision == "fp16" else torch.float32
        self.dtype = dtype
        self.module = spec.load().to("cuda", dtype=dtype).to(memory_format=torch.channels_last)
        size = spec.input_size
        self.static_in = torch.zeros(batch_size, 3, size, size, device="cuda", dtype=dtype)
        self.graph = None
        try:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.inference_mode(), torch.cuda.stream(stream):
                for _ in range(3):  # warm up before capture
                    self.module(self.static_in)
            torch.cuda.current_stream().wait_stream(stream)
            self.graph = torch.cuda.CUDAGraph()
            with torch.inference_mode(), torch.cuda.graph(self.graph):
                self.static_out = self.module(self.static_in)
        except RuntimeError:
            self.graph = None  # some models cannot be captured: run eagerly
        self.batch_size = batch_size
        self.backend, self.precision = "torch_cuda", precision

    def run(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        n = len(batch)
        x = torch.from_numpy(np.ascontiguousarray(batch)).to("cuda", self.dtype, non_blocking=True)
        with torch.inference_mode():
            if self.graph is not None and n == self.batch_size:
                self.static_in.copy_(x)
                self.graph.replay()
                out = self.static_out
            else:
                out = self.module(x.contiguous(memory_format=torch.channels_last))
            return out.float().cpu().numpy()


class TorchCudaBackend(Backend):
    name = "torch_cuda"
    requires = ("torch",)
    install = "torch==2.14.1"

    def device_problem(self) -> str | None:
        import torch

        if not torch.cuda.is_available():
            return "no CUDA GPU is visible to PyTorch (torch.cuda.is_available() is False)"
        return None

    def capabilities(self) -> Capabilities:
        return Capabilities(devices=("cuda",), precisions=("fp16", "fp32"), max_batch=1024)

    def open(self, spec: ModelSpec, precision: str, threads: int, batch_size: int) -> Session:
        return TorchCudaSession(spec, precision, batch_size)
