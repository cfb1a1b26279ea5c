"""The Ray executor: the same physical plan, run over a Ray cluster with Ray Data.

The stage's image references become a Ray Dataset (one row per reference: its position and the
pickled reference); ``map_batches`` runs preprocessing and inference in a pool of actors, each
opening the plan's engine once (the ONNX export lies in SmolQL's cache folder, which every node
of a one-machine or shared-filesystem cluster reads; the driver exports it before the pool
starts, so no actor exports it). Results come back in input order as Arrow batches of
:data:`~smolql.executor.base.RESULTS`, like the local executor's; closing the iterator (LIMIT
without ORDER BY) stops consuming and Ray cancels the rest.

Where to connect: ``$SMOLQL_RAY_ADDRESS`` (default ``auto``: the cluster this machine runs),
unless the process already called ``ray.init``. Actors ask for a fraction of a CPU
(``$SMOLQL_RAY_ACTOR_CPUS``, default 0.5) so that Ray Data's read tasks always find a CPU: an
actor pool that takes every CPU deadlocks it. The pool grows to one actor per cluster CPU, each
running inference on ``$SMOLQL_RAY_ACTOR_THREADS`` threads (default 1): the plan's thread split
is this machine's, a node's share is its CPUs.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Iterator, Sequence
from dataclasses import replace

import numpy as np
import pyarrow as pa

from smolql.errors import ExecutionError
from smolql.executor.base import RESULTS
from smolql.ops.pipeline import ImageRef
from smolql.planner.physical import Plan

ADDRESS_ENV = "SMOLQL_RAY_ADDRESS"
ACTOR_CPUS_ENV = "SMOLQL_RAY_ACTOR_CPUS"
THREADS_ENV = "SMOLQL_RAY_ACTOR_THREADS"


class _Infer:
    """One actor: the plan's engine, opened once; a batch of references in, results out."""

    def __init__(self, plan: Plan, k: int) -> None:
        from smolql.backends.registry import get_backend

        self.plan = plan
        self.k = k
        self.pre = self.plan.preprocessor()
        threads = int(os.environ.get(THREADS_ENV, "1"))  # an actor holds a fraction of a CPU
        self.session = get_backend(self.plan.backend).open(
            self.plan.spec, self.plan.precision, threads, self.plan.batch_size
        )
        import ray

        self.node = ray.get_runtime_context().get_node_id()[:8]

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        """The local executor's pipeline on this batch (one decode worker: the actor holds a
        fraction of a CPU); errors name the node."""
        from smolql.executor.local import as_results, classify_stream

        refs = [
            replace(pickle.loads(r), key=int(i))
            for i, r in zip(batch["index"], batch["ref"], strict=True)
        ]
        preds = [
            p if p.error is None else replace(p, error=f"{p.error} (node {self.node})")
            for p in classify_stream(
                refs,
                self.plan.spec,
                self.session,
                self.pre,
                batch_size=len(refs),
                decode_workers=1,
                k=self.k,
                progress=False,
            )
        ]
        return pa.Table.from_batches([as_results(preds)])


def connect() -> None:
    """Connect this process to the Ray cluster (an error saying how, when it cannot)."""
    try:
        import ray
    except ImportError as e:
        raise ExecutionError("the ray executor needs Ray: pip install 'ray[data]==2.60.0'") from e
    if not ray.is_initialized():
        address = os.environ.get(ADDRESS_ENV, "auto")
        try:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        except (ConnectionError, RuntimeError) as e:
            raise ExecutionError(
                f"cannot connect to the Ray cluster at {address!r} (set {ADDRESS_ENV}, or start"
                f" one with `ray start --head`): {e}"
            ) from e


class RayExecutor:
    """``SET smolql.executor = 'ray'``."""

    name = "ray"

    def describe(self) -> str:
        connect()
        import ray

        nodes = [n for n in ray.nodes() if n.get("Alive")]
        res = ray.cluster_resources()
        gpus = f", {res['GPU']:g} GPUs" if res.get("GPU") else ""
        return (
            f"Ray cluster at {os.environ.get(ADDRESS_ENV, 'auto')}: {len(nodes)} nodes,"
            f" {res.get('CPU', 0):g} CPUs{gpus}"
        )

    def run(
        self, plan: Plan, refs: Sequence[ImageRef], *, k: int = 1, progress: bool | None = None
    ) -> Iterator[pa.RecordBatch]:
        connect()
        import ray
        import ray.data

        logging.getLogger("ray").setLevel(logging.ERROR)

        _export_once(plan)
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = bool(progress)
        items = [{"index": i, "ref": pickle.dumps(r)} for i, r in enumerate(refs)]
        actors = max(1, int(ray.cluster_resources().get("CPU", 1)))
        # Blocks of at most one batch: a block's remainder would run as a batch of its own, and
        # engines compiled for a fixed batch pay a full batch for it.
        blocks = max(1, -(-len(items) // plan.batch_size))
        ds = ray.data.from_items(items, override_num_blocks=blocks)
        ds = ds.map_batches(
            _Infer,
            fn_constructor_args=(plan, k),
            batch_size=plan.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=float(os.environ.get(ACTOR_CPUS_ENV, "0.5")),
        )
        try:
            for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
                yield from batch.cast(RESULTS).to_batches()
        except ray.exceptions.RayError as e:
            raise ExecutionError(f"the Ray cluster failed the stage: {e}") from e


def _export_once(plan: Plan) -> None:
    """Make the engine's model file exist before the actors start (none exports it)."""
    from smolql.models.export import onnx_path

    if plan.backend in ("onnxruntime", "openvino"):
        onnx_path(plan.spec)
