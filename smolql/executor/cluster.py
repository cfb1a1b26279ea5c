"""The Ray executor: the same physical plan, run over a Ray cluster.

The driver cuts the stage's image references into chunks and hands them to a pool of Ray actors
(:class:`~smolql.executor.ray_worker.Worker`), each of which opened the plan's engine once (the
ONNX export lies in SmolQL's cache folder, which every node of a one-machine or shared-file-
system cluster reads; the driver exports it before the pool starts, so no actor exports it).
Results come back in input order as Arrow batches of :data:`~smolql.executor.base.RESULTS`,
like the local executor's, each with the node that made it and its seconds there (schema
metadata ``smolql.node`` / ``smolql.seconds``) for the progress bar and EXPLAIN ANALYZE.

The pool outlives the query: a driver keeps one pool, for the plan it last ran, and the next
query with that plan starts at once. Ray Data's ``map_batches`` starts its actor pool for every
dataset it runs; ``benchmarks/scaleout.py`` measured it (``$SMOLQL_RAY_MODE=data``) at 50 img/s
against this pool's 124 on the same node, 500 images. The workers are released after
``$SMOLQL_RAY_IDLE_S`` seconds without a query (default 300), so an idle driver does not hold
a shared cluster's CPUs. Each worker gets at most two chunks at a time (backpressure: the
driver holds a bounded number of chunks, whatever the catalog's size).

Faults: a worker that dies (its process killed, its node gone) fails its chunks with
``RayActorError``; the driver gives them to the surviving workers and starts a replacement
wherever the cluster has room, so the query completes with the same rows. Closing the iterator
(LIMIT without ORDER BY) cancels the chunks not yet taken.

On a cluster with GPUs (or with ``$SMOLQL_RAY_SPLIT=1``) decoding runs in CPU tasks, one batch
each, and the workers ask for a GPU and only infer.

Where to connect: the ``ray_address`` setting, else ``$SMOLQL_RAY_ADDRESS``, else ``auto`` (the
cluster this machine runs), unless the process already called ``ray.init``. A worker asks for
``$SMOLQL_RAY_ACTOR_CPUS`` CPUs (default 1) and runs inference on ``$SMOLQL_RAY_ACTOR_THREADS``
threads (default 1) beside one decode thread: the plan's thread split is this machine's, a
node's share is its CPUs.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa

from smolql.errors import ExecutionError
from smolql.executor.base import NODE, RESULTS, SECONDS
from smolql.ops.pipeline import ImageRef
from smolql.planner.physical import Plan

ADDRESS_ENV = "SMOLQL_RAY_ADDRESS"
ACTOR_CPUS_ENV = "SMOLQL_RAY_ACTOR_CPUS"
THREADS_ENV = "SMOLQL_RAY_ACTOR_THREADS"
SPLIT_ENV = "SMOLQL_RAY_SPLIT"
IDLE_ENV = "SMOLQL_RAY_IDLE_S"
MODE_ENV = "SMOLQL_RAY_MODE"  # "data": Ray Data map_batches, an actor pool per query
WAIT_S = 300.0  # how long a query waits for a worker to start before it gives up
IN_FLIGHT = 2  # chunks per worker at a time
START_S = 60.0  # how long a new pool waits for all its workers (then it goes with those up)
INGEST_CHUNK = 16  # files per ingest task


def connect(address: str | None = None) -> None:
    """Connect this process to the Ray cluster (an error saying how, when it cannot)."""
    try:
        import ray
    except ImportError as e:
        raise ExecutionError("the ray executor needs Ray: pip install 'ray[data]==2.60.0'") from e
    if not ray.is_initialized():
        address = address or os.environ.get(ADDRESS_ENV) or "auto"
        try:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ExecutionError(
                f"cannot connect to the Ray cluster at {address!r} (set smolql.ray_address or"
                f" {ADDRESS_ENV}, or start one with `ray start --head`): {e}"
            ) from e


@dataclass
class _Pool:
    """The driver's workers for one plan (one pool per driver: a pool holds its CPUs)."""

    key: tuple
    plan: Plan
    split: bool
    options: dict[str, Any]
    threads: int
    size: int
    live: list[Any] = field(default_factory=list)
    starting: dict[Any, Any] = field(default_factory=dict)  # ready() future -> worker

    def spawn(self) -> None:
        import ray

        from smolql.executor.ray_worker import Worker

        actor = ray.remote(Worker).options(**self.options).remote(self.plan, self.threads)
        self.starting[actor.ready.remote()] = actor

    def settle(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for starting workers; a worker that cannot start is an
        error naming why."""
        import ray

        if not self.starting:
            return
        ready, _ = ray.wait(list(self.starting), num_returns=len(self.starting), timeout=timeout)
        for f in ready:
            actor = self.starting.pop(f)
            try:
                ray.get(f)  # raises what kept the worker from opening the engine
            except ray.exceptions.RayActorError as e:
                raise ExecutionError(f"a Ray worker could not open the engine: {e}") from e
            self.live.append(actor)

    def drop(self, actor: Any) -> None:
        if actor in self.live:
            self.live.remove(actor)


_POOL: _Pool | None = None
_ACTIVE = 0  # stages of this driver running on the pool now
_IDLE: threading.Timer | None = None
_GUARD = threading.RLock()


def _begin() -> None:
    global _ACTIVE, _IDLE
    with _GUARD:
        _ACTIVE += 1
        if _IDLE is not None:
            _IDLE.cancel()
            _IDLE = None


def _end() -> None:
    """After the last running stage, release the workers once they have been idle for
    ``$SMOLQL_RAY_IDLE_S`` seconds (default 300; 0 keeps them while the driver lives)."""
    global _ACTIVE, _IDLE
    seconds = float(os.environ.get(IDLE_ENV, "300"))
    with _GUARD:
        _ACTIVE -= 1
        if _ACTIVE == 0 and seconds > 0:
            _IDLE = threading.Timer(seconds, _release_if_idle)
            _IDLE.daemon = True
            _IDLE.start()


def _release_if_idle() -> None:
    with _GUARD:
        if _ACTIVE == 0:
            release()


def release() -> None:
    """Stop this driver's workers (they also end with the driver, and after an idle time)."""
    global _POOL
    with _GUARD:
        _release()


def _release() -> None:
    global _POOL
    if _POOL is not None:
        import ray

        for actor in [*_POOL.live, *_POOL.starting.values()]:
            with suppress(Exception):  # already gone
                ray.kill(actor)
        _POOL = None


def _pool(plan: Plan, *, start: bool = True) -> _Pool:
    """The workers for ``plan``: the running pool when it serves the same plan, else a new
    one (the old one stopped first, so that its CPUs are free)."""
    global _POOL
    import ray

    res = ray.cluster_resources()
    gpus = int(res.get("GPU", 0))
    split = gpus > 0 or os.environ.get(SPLIT_ENV, "") == "1"
    cpus = float(os.environ.get(ACTOR_CPUS_ENV, "1"))
    threads = int(os.environ.get(THREADS_ENV, "1"))
    normal = replace(plan, decode_workers=1, infer_threads=threads, estimate=None)
    what = (plan.physical.key, plan.spec.weights_hash(), plan.batch_size, threads)
    ctx = ray.get_runtime_context()  # a new cluster or job: new ids, old workers are gone
    key = (ctx.get_node_id(), ctx.get_job_id(), what, split, cpus)
    if _POOL is not None and _POOL.key == key and (_POOL.live or _POOL.starting):
        return _POOL
    release()
    if split:  # workers only infer: on a GPU each, or (forced on CPUs) beside the decode tasks
        options: dict[str, Any] = {"num_gpus": 1, "num_cpus": 0} if gpus else {"num_cpus": 0}
        size = gpus or max(1, int(res.get("CPU", 1)) // 2)
    else:
        options = {"num_cpus": cpus}
        size = max(1, int(res.get("CPU", 1) // cpus))
    options |= {"max_restarts": 0, "max_task_retries": 0}  # the driver re-runs a lost chunk
    pool = _Pool(key, normal, split, options, threads, size)
    if not start:
        return pool  # the sizes and options only (Ray Data starts the actors)
    for _ in range(size):
        pool.spawn()
    pool.settle(START_S)  # a new pool's workers start together: let the first query use all
    _POOL = pool
    return pool


def _chunks(refs: Iterable[ImageRef], size: int) -> Iterator[list[ImageRef]]:
    chunk: list[ImageRef] = []
    for i, ref in enumerate(refs):
        chunk.append(replace(ref, key=i))
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class RayExecutor:
    """``SET smolql.executor = 'ray'``."""

    name = "ray"

    def describe(self, address: str | None = None) -> str:
        connect(address)
        import ray

        nodes = [n for n in ray.nodes() if n.get("Alive")]
        res = ray.cluster_resources()
        gpus = f", {res['GPU']:g} GPUs" if res.get("GPU") else ""
        where = address or os.environ.get(ADDRESS_ENV) or "auto"
        cpus = os.environ.get(ACTOR_CPUS_ENV, "1")
        threads = os.environ.get(THREADS_ENV, "1")
        return (
            f"Ray cluster at {where}: {len(nodes)} nodes, {res.get('CPU', 0):g} CPUs{gpus};"
            f" per worker {cpus} CPU, 1 decode + {threads} inference thread(s)"
        )

    def ingest_files(self, *args: Any, **kwargs: Any) -> Iterator[tuple[int, Any]]:
        return ingest_files(*args, **kwargs)

    def run(
        self,
        plan: Plan,
        refs: Sequence[ImageRef],
        *,
        k: int = 1,
        progress: bool | None = None,
        address: str | None = None,
    ) -> Iterator[pa.RecordBatch]:
        connect(address)
        logging.getLogger("ray").setLevel(logging.ERROR)
        _export_once(plan)
        _begin()
        try:
            yield from self._run(plan, refs, k, progress)
        finally:
            _end()

    def _run(
        self, plan: Plan, refs: Sequence[ImageRef], k: int, progress: bool | None
    ) -> Iterator[pa.RecordBatch]:
        data = os.environ.get(MODE_ENV) == "data"
        if data:
            release()  # Ray Data starts its own actors: free the CPUs
        pool = _pool(plan, start=not data)
        pool.settle(0)
        workers = max(1, pool.size)
        if pool.split:
            size = plan.batch_size
        else:  # whole batches, about two chunks per worker, 8 batches at most; a stage of
            # fewer images than a batch per worker is shared out evenly instead
            per = -(-len(refs) // (2 * workers))
            size = plan.batch_size * min(8, max(1, -(-per // plan.batch_size)))
            size = min(size, max(1, -(-len(refs) // workers)))
        from smolql.executor.progress import NodeProgress

        answers = _dataset if data else _dispatch
        with NodeProgress(len(refs), plan.spec.name, progress) as bar:
            for done in answers(pool, _chunks(refs, size), k):
                bar.update(done.node, done.results.num_rows, done.seconds)
                meta = {NODE: done.node.encode(), SECONDS: str(done.seconds).encode()}
                yield done.results.cast(RESULTS).replace_schema_metadata(meta)


def ingest_files(
    todo: list[tuple[int, str]],
    specs: tuple,
    out_dir: str,
    max_pixels: int,
    workers: int,
    *,
    address: str | None = None,
) -> Iterator[tuple[int, Any]]:
    """Ingest's per-file work as Ray tasks of :data:`INGEST_CHUNK` files (Ray retries a task
    whose worker dies), two tasks in flight per cluster CPU; results as tasks finish. This
    driver's inference workers stop first: they hold the CPUs the tasks need."""
    connect(address)
    import ray

    from smolql.executor.ray_worker import ingest_chunk

    release()  # this driver's inference workers would hold the CPUs the tasks need
    task = ray.remote(ingest_chunk).options(num_cpus=1, max_retries=3)
    window = 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))
    chunks = (todo[i : i + INGEST_CHUNK] for i in range(0, len(todo), INGEST_CHUNK))
    pending: list[Any] = []
    try:
        while True:
            for chunk in chunks:
                pending.append(task.remote(chunk, specs, out_dir, max_pixels))
                if len(pending) >= window:
                    break
            if not pending:
                return
            ready, pending = ray.wait(pending, num_returns=1, timeout=WAIT_S)
            if not ready:
                raise ExecutionError(
                    f"no Ray ingest task finished in {WAIT_S:.0f} s (is the cluster out of CPUs?)"
                )
            try:
                yield from ray.get(ready[0])
            except ray.exceptions.RayError as e:
                raise ExecutionError(f"the Ray cluster failed the ingest: {e}") from e
    finally:
        for f in pending:
            with suppress(Exception):
                ray.cancel(f)


def _dataset(pool: _Pool, chunks: Iterator[list[ImageRef]], k: int) -> Iterator[Any]:
    """``$SMOLQL_RAY_MODE=data``: the references as a Ray Dataset, ``map_batches`` over an
    actor pool of :class:`~smolql.executor.ray_worker.Worker` (started for this query, as
    Ray Data does for every dataset), results in order. Ray Data's streaming executor brings
    its own backpressure and retries; its per-query start costs about 2 s
    (``benchmarks/scaleout.py``), which is why the persistent pool is the default."""
    import pickle

    import ray
    import ray.data

    from smolql.executor.ray_worker import Done, Worker

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    size = 0

    def rows() -> Iterator[dict]:
        nonlocal size
        for chunk in chunks:
            size = max(size, len(chunk))
            for ref in chunk:
                yield {"index": ref.key, "ref": pickle.dumps(replace(ref, key=None)), "k": k}

    items = list(rows())  # Ray Data's from_items takes a list
    if not items:
        return
    blocks = max(1, -(-len(items) // size))
    ds = ray.data.from_items(items, override_num_blocks=blocks)
    # Actors take half a CPU here: Ray Data's own tasks need the rest (a pool holding every
    # CPU deadlocks it).
    ds = ds.map_batches(
        Worker,
        fn_constructor_args=(pool.plan, pool.threads),
        batch_size=size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=pool.size),
        num_cpus=0.5,
    )
    try:
        for table in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            node = table.column("node")[0].as_py() if table.num_rows else ""
            seconds = float(sum(table.column("seconds").to_pylist()))
            results = table.drop_columns(["node", "seconds"]).cast(RESULTS)
            for batch in results.to_batches():
                yield Done(batch, node, seconds * batch.num_rows / max(table.num_rows, 1))
    except ray.exceptions.RayError as e:
        raise ExecutionError(f"the Ray cluster failed the stage: {e}") from e


def _dispatch(pool: _Pool, chunks: Iterator[list[ImageRef]], k: int) -> Iterator[Any]:
    """Chunks to workers (at most :data:`IN_FLIGHT` each, to whichever has room), answers back
    in input order; a worker lost mid-chunk has its chunk re-run by another."""
    import ray

    from smolql.executor.ray_worker import decode

    decode_task = ray.remote(decode).options(num_cpus=1) if pool.split else None
    pending: dict[Any, tuple[int, list[ImageRef], Any]] = {}  # future -> (seq, chunk, worker)
    done: dict[int, Any] = {}
    load: dict[Any, int] = {}
    retry: list[tuple[int, list[ImageRef]]] = []
    seq_next = seq_out = 0
    restarts = 0
    exhausted = False

    def submit(seq: int, chunk: list[ImageRef], actor: Any) -> None:
        if decode_task is not None:
            f = actor.infer.remote(decode_task.remote(pool.plan, chunk), k)
        else:
            f = actor.classify.remote(chunk, k)
        pending[f] = (seq, chunk, actor)
        load[actor] = load.get(actor, 0) + 1

    def room() -> Any:
        free = [a for a in pool.live if load.get(a, 0) < IN_FLIGHT]
        return min(free, key=lambda a: load.get(a, 0)) if free else None

    try:
        while True:
            pool.settle(0)
            while (actor := room()) is not None and (retry or not exhausted):
                if len(pending) + len(done) >= IN_FLIGHT * pool.size + 2:
                    break  # bounded: never more chunks held than the pool can work on
                if retry:
                    submit(*retry.pop(0), actor)
                    continue
                chunk = next(chunks, None)
                if chunk is None:
                    exhausted = True
                    break
                submit(seq_next, chunk, actor)
                seq_next += 1
            if seq_out in done:
                yield done.pop(seq_out)
                seq_out += 1
                continue
            if not pending and not retry and exhausted:
                return
            waiting = list(pending) + list(pool.starting)
            if not waiting:
                raise ExecutionError("every Ray worker was lost and none could be restarted")
            ready, _ = ray.wait(waiting, num_returns=1, timeout=WAIT_S)
            if not ready:
                raise ExecutionError(
                    f"no Ray worker answered in {WAIT_S:.0f} s (is the cluster out of CPUs?)"
                )
            f = ready[0]
            if f not in pending:
                continue  # a worker started: settle() takes it in
            seq, chunk, actor = pending.pop(f)
            load[actor] -= 1
            try:
                done[seq] = ray.get(f)
            except ray.exceptions.RayActorError:
                pool.drop(actor)  # gone with its process or node: its chunks go elsewhere
                retry.append((seq, chunk))
                restarts += 1
                if restarts > 3 * pool.size:
                    raise ExecutionError(
                        f"Ray workers were lost {restarts} times in one stage; giving up"
                    ) from None
                pool.spawn()
            except ray.exceptions.RayError as e:
                raise ExecutionError(f"the Ray cluster failed the stage: {e}") from e
    finally:
        for f in pending:
            with suppress(Exception):  # finished or gone already
                ray.cancel(f)


def _export_once(plan: Plan) -> None:
    """Make the engine's model file exist before the workers start (none exports it)."""
    from smolql.models.export import onnx_path

    if plan.backend in ("onnxruntime", "openvino"):
        onnx_path(plan.spec)
