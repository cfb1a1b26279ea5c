"""PyTorch eager on the CPU: channels_last, fp32 or bf16 autocast."""

from __future__ import annotations

import numpy as np

from smolql.backends.base import Backend, Capabilities, Session
from smolql.backends.cpu import has_bf16
from smolql.models.spec import ModelSpec


class TorchCpuSession(Session):
    def __init__(self, spec: ModelSpec, precision: str, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.torch = torch
        self.module = spec.load().to(memory_format=torch.channels_last)
        self.backend, self.precision = "torch", precision

    def run(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(memory_format=torch.channels_last)
        with (
            torch.inference_mode(),
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"),
        ):
            return self.module(x).float().numpy()


class TorchCpuBackend(Backend):
    name = "torch"
    requires = ("torch",)
    install = "torch==2.14.1"

    def capabilities(self) -> Capabilities:
        precisions = ("fp32", "bf16") if has_bf16() else ("fp32",)
        return Capabilities(devices=("cpu",), precisions=precisions)

    def open(self, spec: ModelSpec, precision: str, threads: int, batch_size: int) -> Session:
        return TorchCpuSession(spec, precision, threads)
