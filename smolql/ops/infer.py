"""Batched, pipelined classification: preprocessing of batch k+1 overlaps inference of batch k.

The decode workers fill batch buffers in the background (:mod:`smolql.ops.loader`) while this
thread runs the model; images that cannot be decoded come out as predictions with an error.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from smolql.backends.base import Session
from smolql.models.spec import ModelSpec
from smolql.ops.loader import stream_batches
from smolql.ops.pipeline import ImageRef, Preprocessor


@dataclass(frozen=True)
class Prediction:
    key: object
    class_index: int | None
    label: str | None
    score: float | None
    topk: tuple[tuple[int, str, float], ...] = ()
    error: str | None = None
    digest: str | None = None  # content hash of the bytes decoded, where the ref asked


def split_threads(cores: int, decode_cost: float, infer_cost: float) -> tuple[int, int]:
    """Share ``cores`` between decoding and inference in proportion to their per-image costs,
    at least one each, so that neither stage starves the other.

    >>> split_threads(2, decode_cost=1.5, infer_cost=10.0)
    (1, 2)
    >>> split_threads(8, decode_cost=1.0, infer_cost=1.0)
    (4, 4)
    """
    if cores <= 2:
        return 1, max(1, cores)  # one decoder keeps up with CPU inference; both cores infer
    share = decode_cost / (decode_cost + infer_cost)
    decode = min(cores - 1, max(1, round(cores * share)))
    return decode, cores - decode


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
) -> Iterator[Prediction]:
    """Yield one :class:`Prediction` per ref, in input order within each batch."""
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=total, unit="img", desc=f"classify {spec.name}", disable=not show)
    with bar:
        for batch in stream_batches(refs, pre, batch_size=batch_size, workers=decode_workers):
            for err in batch.errors:
                yield Prediction(err.key, None, None, None, error=f"{err.path}: {err.reason}")
            if batch.keys:
                idx, prob = softmax_topk(session.run(batch.tensor), k)
                rows = zip(batch.keys, batch.digests, idx, prob, strict=True)
                for key, digest, row_idx, row_p in rows:
                    top = tuple(
                        (int(i), spec.labels[i], float(p))
                        for i, p in zip(row_idx, row_p, strict=True)
                    )
                    yield Prediction(key, top[0][0], top[0][1], top[0][2], top, digest=digest)
            bar.update(len(batch.keys) + len(batch.errors))
