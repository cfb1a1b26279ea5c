"""The local executor: batched, pipelined classification on this machine's cores, where
preprocessing of batch k+1 overlaps inference of batch k, or, where both stages take all the
cores (CPU inference on a few cores), alternates with it.

The decode workers fill batch buffers in the background (:mod:`smolql.ops.loader`) while this
thread runs the model; images that cannot be decoded come out as predictions with an error.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, replace
from itertools import chain, islice

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from smolql.backends.base import Session
from smolql.config import cores
from smolql.executor.base import NODE, RESULTS, SECONDS
from smolql.executor.sessions import session_for
from smolql.models.spec import ModelSpec
from smolql.ops.loader import Batch, stream_batches
from smolql.ops.pipeline import ImageRef, Preprocessor
from smolql.planner.cost import turn_batches
from smolql.planner.physical import Plan
from smolql.sources import io_threads

RESULT_SCHEMA = pa.schema(
    [
        ("id", pa.int32()),
        ("label", pa.string()),
        ("score", pa.float64()),
        ("class_index", pa.int32()),
        ("model", pa.string()),
        ("error", pa.string()),
    ]
)


@dataclass(frozen=True)
class Prediction:
    key: object
    class_index: int | None
    label: str | None
    score: float | None
    topk: tuple[tuple[int, str, float], ...] = ()
    error: str | None = None
    digest: str | None = None  # content hash of the bytes decoded, where the ref asked


def softmax_topk(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and probabilities of the ``k`` best classes per row, best first."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    idx = np.argsort(-p, axis=1)[:, :k]
    return idx, np.take_along_axis(p, idx, axis=1)


def classify_stream(
    refs: Iterable[ImageRef],
    spec: ModelSpec,
    session: Session,
    pre: Preprocessor,
    *,
    batch_size: int,
    decode_workers: int,
    k: int = 1,
    total: int | None = None,
    progress: bool | None = None,
    turns: bool = False,
) -> Iterator[Prediction]:
    """Yield one :class:`Prediction` per ref, in input order within each batch; ``turns``:
    decode a turn of batches only while the engine is idle (both on all cores, see
    :func:`~smolql.planner.cost.takes_turns` and :func:`~smolql.planner.cost.turn_batches`),
    else each batch while the engine runs the one before."""
    refs = iter(refs)
    first = next(refs, None)
    if first is None:
        return
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=total, unit="img", desc=f"classify {spec.name}", disable=not show)
    workers = io_threads(first.path, decode_workers)  # remote images: overlap round trips
    turn = turn_batches(batch_size, 4 * math.prod(pre.output.shape))
    loader = stream_batches(
        chain([first], refs),
        pre,
        batch_size=batch_size,
        workers=workers,
        prefetch=0 if turns else 2,
        turn=turn,
    )
    with bar, closing(loader):
        # Taking turns, a turn's batches are all decoded before the engine starts: they go to
        # it together (no idle stream between them), and the loader decodes the next turn into
        # their buffers only once they are done (when the batch after them is asked for).
        while group := list(islice(loader, turn if turns else 1)):
            logits = iter(session.run_many([b.tensor for b in group if b.keys]))
            for batch in group:
                yield from predictions_of(batch, spec, next(logits) if batch.keys else None, k)
                bar.update(len(batch.keys) + len(batch.errors))


def batch_predictions(batch: Batch, spec: ModelSpec, session: Session, k: int) -> list[Prediction]:
    """One decoded batch through the engine: its errors, then its images' top-k."""
    return predictions_of(batch, spec, session.run(batch.tensor) if batch.keys else None, k)


def predictions_of(
    batch: Batch, spec: ModelSpec, logits: np.ndarray | None, k: int
) -> list[Prediction]:
    """A decoded batch's errors, then its images' top-k from the engine's ``logits``."""
    out = [
        Prediction(err.key, None, None, None, error=f"{err.path}: {err.reason}")
        for err in batch.errors
    ]
    if batch.keys:
        idx, prob = softmax_topk(logits, k)
        for key, digest, row_idx, row_p in zip(batch.keys, batch.digests, idx, prob, strict=True):
            top = tuple(
                (int(i), spec.labels[i], float(p)) for i, p in zip(row_idx, row_p, strict=True)
            )
            out.append(Prediction(key, top[0][0], top[0][1], top[0][2], top, digest=digest))
    return out


def predictions(
    plan: Plan, refs: Sequence[ImageRef], *, k: int = 1, progress: bool | None = None
) -> Iterator[Prediction]:
    """Stream one prediction per ref through a session of the plan's engine (kept open for
    the next query: :mod:`smolql.executor.sessions`)."""
    with session_for(plan) as session:
        yield from classify_stream(
            refs,
            plan.spec,
            session,
            plan.preprocessor(),
            batch_size=plan.batch_size,
            decode_workers=plan.decode_workers,
            k=k,
            total=len(refs),
            progress=progress,
            turns=plan.turns,
        )


class LocalExecutor:
    """The threaded pipeline on this machine (``smolql.executor = 'local'``)."""

    name = "local"

    def describe(self, address: str | None = None) -> str:
        return f"this machine's threads ({cores()} cores)"

    def run(
        self,
        plan: Plan,
        refs: Sequence[ImageRef],
        *,
        k: int = 1,
        progress: bool | None = None,
        address: str | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """Result batches of :data:`~smolql.executor.base.RESULTS`, one per pipeline batch,
        each in input order."""
        indexed = [replace(ref, key=i) for i, ref in enumerate(refs)]
        rows: list[Prediction] = []
        start = time.perf_counter()
        for p in predictions(plan, indexed, k=k, progress=progress):
            rows.append(p)
            if len(rows) >= plan.batch_size:
                yield _here(as_results(rows), start)
                rows, start = [], time.perf_counter()
        if rows:
            yield _here(as_results(rows), start)


def _here(batch: pa.RecordBatch, start: float) -> pa.RecordBatch:
    seconds = str(time.perf_counter() - start).encode()
    return batch.replace_schema_metadata({NODE: b"local", SECONDS: seconds})


def as_results(rows: list[Prediction]) -> pa.RecordBatch:
    """Predictions keyed by input position, as one batch of :data:`RESULTS` in input order."""
    rows.sort(key=lambda p: p.key)
    return pa.RecordBatch.from_pydict(
        {
            "index": [p.key for p in rows],
            "topk": [
                [{"class_index": i, "label": lab, "score": s} for i, lab, s in p.topk]
                if p.error is None
                else None
                for p in rows
            ],
            "error": [p.error for p in rows],
            "digest": [p.digest for p in rows],
        },
        schema=RESULTS,
    )


def run(plan: Plan, refs: list[ImageRef], *, progress: bool | None = None) -> pa.Table:
    """Classify ``refs`` (keyed by catalog id) into a table of :data:`RESULT_SCHEMA`."""
    preds = list(predictions(plan, refs, progress=progress))
    preds.sort(key=lambda p: p.key)
    return pa.table(
        {
            "id": [p.key for p in preds],
            "label": [p.label for p in preds],
            "score": [p.score for p in preds],
            "class_index": [p.class_index for p in preds],
            "model": [plan.spec.name] * len(preds),
            "error": [p.error for p in preds],
        },
        schema=RESULT_SCHEMA,
    )
