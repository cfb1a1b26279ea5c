"""The executor interface: a stage's physical plan and its image references in, Arrow record
batches of results out, in input order; the consumer stops early by closing the iterator.

Executors are registered by name (:mod:`smolql.executor.registry`; the local threaded
pipeline is ``local``, registered as a plugin would be) and chosen with ``SET smolql.executor``.
An executor decides nothing: batch size, threads, engine, decode
scale and source all come in the plan.

Each result row answers one reference: ``index`` is its position in the input, ``topk`` the
model's best classes (best first), ``error`` why it has none, ``digest`` the content hash of
the bytes decoded (where the reference carried the expected file signature). A batch may say
where it was made and how long that took there, in its schema metadata (:data:`NODE`,
:data:`SECONDS`); EXPLAIN ANALYZE sums them per node.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import pyarrow as pa

from smolql.models.spec import TOPK
from smolql.ops.pipeline import ImageRef
from smolql.planner.physical import Plan

RESULTS = pa.schema(
    [
        ("index", pa.int64()),
        ("topk", TOPK),
        ("error", pa.string()),
        ("digest", pa.string()),
    ]
)


NODE = b"smolql.node"
SECONDS = b"smolql.seconds"


class Executor(Protocol):
    name: str

    def run(
        self,
        plan: Plan,
        refs: Sequence[ImageRef],
        *,
        k: int = 1,
        progress: bool | None = None,
        address: str | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """One row per ref (schema :data:`RESULTS`), in input order; ``address`` says where
        (e.g. a cluster's; None: the executor's default). ``address`` is optional: an executor
        whose ``run`` and ``describe`` do not take it is called without it."""
        ...

    def describe(self, address: str | None = None) -> str:
        """Where it runs, for EXPLAIN (e.g. the cluster's nodes and resources)."""
        ...


# Optionally an executor also runs ingest's per-file work (probe, hash, renditions), as
# ``ingest_files(todo, specs, out_dir, max_pixels, workers, *, address)`` yielding
# ``(image_id, Ingested | Skipped)`` (:mod:`smolql.ingest.ingest`); without it files are
# processed on this machine's threads. The driver commits the results either way.


def where(method: Any, address: str | None) -> dict[str, str]:
    """``{"address": address}`` for an executor method that takes it and an address that is
    set; else nothing (executors written before the keyword existed keep working)."""
    if not address:
        return {}
    try:
        params = inspect.signature(method).parameters
    except (TypeError, ValueError):
        return {}
    takes = "address" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
    return {"address": address} if takes else {}
