"""What runs on the Ray cluster's nodes: the inference worker (an actor that opens the plan's
engine once and keeps it across queries) and the decode task that feeds a GPU worker.

On CPU nodes a worker runs the local executor's pipeline on a chunk of references (decoding the
next batch while the engine runs this one); on GPU nodes decoding runs in CPU tasks
(:func:`decode`) and the worker only infers (:meth:`Worker.infer`): the SMOL split. Every
answer is a :class:`Done`: a result batch of :data:`~smolql.executor.base.RESULTS`, the node
that made it and the seconds it took there. Errors name the node.
"""

from __future__ import annotations

import pickle
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa

from smolql.executor.local import Prediction, as_results, batch_predictions, classify_stream
from smolql.ops.loader import Batch, ImageError, stream_batches
from smolql.ops.pipeline import ImageRef
from smolql.planner.physical import Plan


@dataclass(frozen=True)
class Done:
    results: pa.RecordBatch
    node: str
    seconds: float


def node_name() -> str:
    """This process's Ray node: its address and the first characters of its id."""
    import ray

    ctx = ray.get_runtime_context()
    return f"{ray.util.get_node_ip_address()}/{ctx.get_node_id()[:6]}"


def _on(node: str, preds: list[Prediction]) -> list[Prediction]:
    return [p if p.error is None else replace(p, error=f"{p.error} (node {node})") for p in preds]


class Worker:
    """One inference worker: the plan's engine on ``threads`` threads, opened once."""

    def __init__(self, plan: Plan, threads: int) -> None:
        from smolql.backends.registry import get_backend

        self.plan = plan
        self.pre = plan.preprocessor()
        self.session = get_backend(plan.backend).open(
            plan.spec, plan.precision, threads, plan.batch_size
        )
        self.node = node_name()

    def ready(self) -> str:
        """Where it runs (answered once the engine is open)."""
        return self.node

    def classify(self, refs: list[ImageRef], k: int) -> Done:
        """Decode and infer ``refs`` (keyed by input position), overlapping the two."""
        start = time.perf_counter()
        preds = classify_stream(
            refs,
            self.plan.spec,
            self.session,
            self.pre,
            batch_size=self.plan.batch_size,
            decode_workers=1,
            k=k,
            progress=False,
        )
        out = as_results(_on(self.node, list(preds)))
        return Done(out, self.node, time.perf_counter() - start)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        """Ray Data's ``map_batches``: rows of (index, pickled reference, k) in, results out
        with the node and seconds as columns."""
        refs = [
            replace(pickle.loads(r), key=int(i))
            for i, r in zip(batch["index"], batch["ref"], strict=True)
        ]
        done = self.classify(refs, int(batch["k"][0]))
        n = done.results.num_rows
        table = pa.Table.from_batches([done.results])
        table = table.append_column("node", pa.array([done.node] * n))
        return table.append_column("seconds", pa.array([done.seconds / max(n, 1)] * n))

    def infer(self, decoded: Decoded, k: int) -> Done:
        """A batch a :func:`decode` task prepared."""
        start = time.perf_counter()
        batch = Batch(decoded.keys, decoded.tensor, decoded.errors, decoded.digests)
        preds = _on(decoded.node, batch_predictions(batch, self.plan.spec, self.session, k))
        seconds = decoded.seconds + time.perf_counter() - start
        return Done(as_results(preds), f"{decoded.node}+{self.node}", seconds)


@dataclass(frozen=True)
class Decoded:
    keys: list
    tensor: np.ndarray
    errors: list[ImageError]
    digests: list[str | None]
    node: str
    seconds: float


def decode(plan: Plan, refs: list[ImageRef]) -> Decoded:
    """Decode and preprocess one batch of references (a CPU task feeding a GPU worker)."""
    start = time.perf_counter()
    keys: list = []
    tensors: list[np.ndarray] = []
    errors: list[ImageError] = []
    digests: list[str | None] = []
    for b in stream_batches(refs, plan.preprocessor(), batch_size=len(refs) or 1, workers=1):
        keys += b.keys
        tensors.append(b.tensor.copy())  # the loader's buffer is reused
        errors += b.errors
        digests += b.digests
    tensor = np.concatenate(tensors) if tensors else np.empty((0,), np.float32)
    return Decoded(keys, tensor, errors, digests, node_name(), time.perf_counter() - start)


def ingest_chunk(
    items: list[tuple[int, str]], specs: tuple, out_dir: str, max_pixels: int
) -> list[tuple[int, Any]]:
    """Ingest's per-file work on a node (a Ray task); a file it cannot read names the node."""
    from smolql.ingest.worker import Skipped, ingest_file

    node = node_name()
    out = []
    for image_id, path in items:
        result = ingest_file(path, specs, out_dir, max_pixels)
        if isinstance(result, Skipped):
            result = replace(result, reason=f"{result.reason} (node {node})")
        out.append((image_id, result))
    return out
