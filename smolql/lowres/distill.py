"""Label-free low-resolution-aware fine-tuning by feature distillation.

The teacher is the model itself on the original; the student is a copy that sees the same
crop degraded as a rendition degrades it. The student's early layers (everything up to the
*distillation layer*: by default the last module at 1/16 of the input resolution) learn to
produce the features the teacher computes from the original; the layers after it stay
frozen and shared, so the classifier is untouched and what is learnt is how to see through
the degradation, not the classes of the training images. No labels are needed, and a dense
feature target carries far more signal per image than the output distribution, which
matters with a few hundred training images.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from smolql.errors import InferenceError
from smolql.lowres.views import Box, Pair, batch_views
from smolql.models.spec import ModelSpec

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 8  # small batches: more updates (batch-norm statistics are frozen)
    lr: float = 1e-3
    layer: str | None = None  # the distillation layer; None: the last one at stride 16
    min_crop_area: float = 0.4  # random crops cover this much of the image at least
    center_share: float = 0.25  # this share of the views is the evaluation centre crop
    seed: int = 0
    threads: int = 0  # 0: torch's default (one per core)


@dataclass(frozen=True)
class TrainResult:
    state_dict: dict
    layer: str
    epochs: int
    images: int
    seconds: float
    losses: tuple[float, ...]


class _Stop(Exception):
    pass


class Prefix:
    """Run a module only up to ``layer`` and return that layer's output (the rest is skipped
    by stopping the forward pass from a hook)."""

    def __init__(self, module: torch.nn.Module, layer: str) -> None:
        self.module = module
        self.out: torch.Tensor | None = None
        target = dict(module.named_modules())[layer]
        self.handle = target.register_forward_hook(self._grab)

    def _grab(self, _module, _inputs, output) -> None:
        self.out = output
        raise _Stop

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with contextlib.suppress(_Stop):
            self.module(x)
        out, self.out = self.out, None
        return out

    def close(self) -> None:
        self.handle.remove()


def distillation_layer(module: torch.nn.Module, size: int) -> str:
    """The last block to finish whose output is at 1/16 of the input resolution. A block is a
    top-level child or an element of a container (``_blocks.10``, ``layer3.5``,
    ``features.12``), never a layer inside one (whose output may precede a stride)."""
    finished: list[tuple[str, tuple]] = []
    hooks = [
        m.register_forward_hook(
            lambda _m, _i, o, n=name: (
                finished.append((n, tuple(o.shape))) if isinstance(o, torch.Tensor) else None
            )
        )
        for name, m in module.named_modules()
        if name and ("." not in name or name.rpartition(".")[2].isdigit())
    ]
    try:
        with torch.no_grad():
            module(torch.zeros(1, 3, size, size))
    finally:
        for h in hooks:
            h.remove()
    target = math.ceil(size / 16)
    at16 = [n for n, shape in finished if len(shape) == 4 and shape[2] == target]
    if not at16:
        raise InferenceError(
            f"the model has no layer at 1/16 of its {size} px input to distil at:"
            " low-resolution-aware training needs a CNN that downsamples by 16"
        )
    return at16[-1]


def _trainable(module: torch.nn.Module, layer: str, size: int) -> list[torch.nn.Parameter]:
    """Parameters of the modules that run before the distillation layer's output."""
    ran: set[str] = set()
    hooks = [
        m.register_forward_pre_hook(lambda _m, _i, n=name: ran.add(n))
        for name, m in module.named_modules()
    ]
    prefix = Prefix(module, layer)
    try:
        with torch.no_grad():
            prefix(torch.zeros(1, 3, size, size))
    finally:
        prefix.close()
        for h in hooks:
            h.remove()
    return [p for n, p in module.named_parameters() if n.rpartition(".")[0] in ran]


def _box(rng: np.random.Generator, pair: Pair, config: TrainConfig, ratio: float) -> Box:
    aspect = pair.original.shape[1] / pair.original.shape[2]
    if rng.random() < config.center_share:
        return Box.center(aspect, ratio, bool(rng.random() < 0.5))
    return Box.random(rng, aspect, config.min_crop_area)


@contextlib.contextmanager
def steady_heap() -> Iterator[None]:
    """Keep freed memory in the process while training: glibc otherwise returns large tensor
    buffers to the kernel and page-faults them back on every step (in a prototype run, an
    epoch took 40 s without this and 17 s with it). Setting a threshold switches glibc's
    dynamic adjustment off for the rest of the process, so afterwards the thresholds are set
    to the values that adjustment reaches with large buffers (mmap above 32 MiB, trim above
    64 MiB) rather than to the 128 KiB start values."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        yield
        return
    libc.mallopt(M_MMAP_MAX, 0)
    libc.mallopt(M_TRIM_THRESHOLD, 1 << 40)
    try:
        yield
    finally:
        libc.mallopt(M_MMAP_MAX, 65536)
        libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)
        libc.mallopt(M_TRIM_THRESHOLD, 64 << 20)
        libc.malloc_trim(0)


def distil(
    spec: ModelSpec,
    pairs: list[Pair],
    config: TrainConfig,
    say: Callable[[str], None] = lambda _: None,
) -> TrainResult:
    """Fine-tune a copy of ``spec``'s model so that on degraded crops its features at the
    distillation layer match the original model's on the original crops."""
    if not pairs:
        raise ValueError("no training images")
    if config.threads:
        torch.set_num_threads(config.threads)
    size = spec.input_size
    t = spec.transform
    mean = torch.tensor(t.mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(t.std).view(1, 3, 1, 1) * 255
    teacher = spec.load()
    for p in teacher.parameters():
        p.requires_grad_(False)
    student = copy.deepcopy(teacher)
    layer = config.layer or distillation_layer(teacher, size)
    params = _trainable(student, layer, size)
    for p in params:
        p.requires_grad_(True)
    student.eval()  # batch-norm statistics stay the teacher's: a few hundred images are too few
    rng = np.random.default_rng(config.seed)
    ratio = t.crop / t.resize
    torch.manual_seed(config.seed)
    steps_per_epoch = math.ceil(len(pairs) / config.batch_size)
    total = config.epochs * steps_per_epoch
    opt = torch.optim.Adam(params, lr=config.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: 0.5 * (1 + math.cos(math.pi * step / total))
    )
    t_prefix, s_prefix = Prefix(teacher, layer), Prefix(student, layer)
    losses = []
    start = time.perf_counter()
    try:
        with steady_heap():
            for epoch in range(config.epochs):
                order = rng.permutation(len(pairs))
                running = 0.0
                for s in range(0, len(pairs), config.batch_size):
                    chosen = [pairs[i] for i in order[s : s + config.batch_size]]
                    boxes = [_box(rng, p, config, ratio) for p in chosen]
                    x_teacher, x_student = batch_views(chosen, boxes, size, mean, std)
                    with torch.no_grad():
                        target = t_prefix(x_teacher)
                    loss = F.mse_loss(s_prefix(x_student), target) / target.var()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    sched.step()
                    running += float(loss.detach())
                losses.append(running / steps_per_epoch)
                say(
                    f"epoch {epoch + 1}/{config.epochs}: feature loss {losses[-1]:.4f}"
                    f" ({time.perf_counter() - start:.0f} s)"
                )
    finally:
        t_prefix.close()
        s_prefix.close()
    state = {k: v.detach().clone() for k, v in student.state_dict().items()}
    return TrainResult(
        state, layer, config.epochs, len(pairs), time.perf_counter() - start, tuple(losses)
    )
