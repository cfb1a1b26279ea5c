"""Stream images as normalised float32 NCHW batches, decoding on all cores with bounded memory.

Worker threads decode straight into slots of preallocated batch buffers (the C decoders release
the GIL). At most ``prefetch + 1`` buffers exist, so memory stays bounded however large the
input; batch k+1 is decoded while the caller works on batch k. Or decoding and the caller take
turns (``prefetch=0``): a turn decodes ``turn`` batches on all workers, then the caller has
them all while the decoders wait (``turn`` buffers).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice

import numpy as np

from smolql.config import cores
from smolql.errors import DecodeError
from smolql.ops.pipeline import ImageRef, Preprocessor


@dataclass(frozen=True)
class ImageError:
    key: object
    path: str
    reason: str


@dataclass
class Batch:
    """``tensor[i]`` is the image ``keys[i]`` (content hash ``digests[i]`` where its ref asked
    for one); images that failed are in ``errors`` instead.

    ``tensor`` is a view into a pooled buffer, valid until the next batch is requested; copy it
    to keep it longer.
    """

    keys: list
    tensor: np.ndarray
    errors: list[ImageError]
    digests: list[str | None] = field(default_factory=list)


_DONE = object()


def stream_batches(
    refs: Iterable[ImageRef],
    pre: Preprocessor,
    *,
    batch_size: int = 32,
    workers: int | None = None,
    prefetch: int = 2,
    turn: int = 1,
) -> Iterator[Batch]:
    """Yield :class:`Batch` es in input order; bad images never break a batch. ``prefetch``:
    batches decoded ahead while the caller works; 0: none, decoding and the caller take turns,
    ``turn`` batches a turn (the next turn is decoded when the caller asks for the batch after
    this turn's last; fewer, longer turns pay less for each switch between the stages)."""
    shape = (batch_size, *pre.output.shape)
    group = 1 if prefetch else max(turn, 1)  # batches decoded together, yielded together
    free: queue.Queue[np.ndarray] = queue.Queue()
    for _ in range(prefetch + 1 if prefetch else group):
        free.put(np.empty(shape, np.float32))
    pending: queue.Queue = queue.Queue(maxsize=max(prefetch, 1))
    stop = threading.Event()
    pool = ThreadPoolExecutor(workers or cores(), thread_name_prefix="smolql-decode")
    feeder = threading.Thread(
        target=_feed,
        args=(iter(refs), pre, batch_size, group, free, pending, pool, stop),
        daemon=True,
    )
    feeder.start()
    try:
        while True:
            item = pending.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            batches = [_collect(chunk, buffer, futures) for chunk, buffer, futures in item]
            yield from batches
            for _chunk, buffer, _futures in item:
                free.put(buffer)
    finally:
        stop.set()
        _drain(pending, free)
        pool.shutdown(wait=True, cancel_futures=True)


def preprocessed(refs: Iterable[ImageRef], pre: Preprocessor) -> np.ndarray:
    """Every image of ``refs`` that decodes, preprocessed into one array in input order (copied
    out of the loader's reused buffers): a sample held whole, as calibration needs."""
    parts = [b.tensor.copy() for b in stream_batches(refs, pre) if len(b.tensor)]
    return np.concatenate(parts) if parts else np.empty((0, *pre.output.shape), np.float32)


def _feed(refs, pre, batch_size, group, free, pending, pool, stop) -> None:
    """Submit ``group`` batches' images as soon as as many buffers are free; hand each group
    of (images, buffer, futures) on in order."""
    try:
        while not stop.is_set():
            chunks = [c for c in (list(islice(refs, batch_size)) for _ in range(group)) if c]
            if not chunks:
                break
            item = []
            for chunk in chunks:
                buffer = free.get()
                if stop.is_set():
                    return
                futures = [pool.submit(_one, pre, ref, buffer[i]) for i, ref in enumerate(chunk)]
                item.append((chunk, buffer, futures))
            _put(pending, item, stop)
    except BaseException as e:  # surfaced in the consumer
        _put(pending, e, stop)
        return
    _put(pending, _DONE, stop)


def _put(q: queue.Queue, item: object, stop: threading.Event) -> None:
    """Put, unless the consumer has gone away (then drop the item)."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _one(pre: Preprocessor, ref: ImageRef, slot: np.ndarray) -> tuple[str | None, str | None]:
    """(error reason, content hash) of one image."""
    try:
        return None, pre.run(ref, slot)
    except DecodeError as e:
        return e.message, None
    except MemoryError:
        return "out of memory while decoding", None
    except Exception as e:  # a decoder choking on odd data must not break the batch
        return f"cannot decode: {type(e).__name__}: {e}", None


def _collect(chunk: list[ImageRef], buffer: np.ndarray, futures: list[Future]) -> Batch:
    results = [f.result() for f in futures]
    ok = [i for i, (r, _) in enumerate(results) if r is None]
    errors = [ImageError(chunk[i].key, chunk[i].path, r) for i, (r, _) in enumerate(results) if r]
    if len(ok) < len(chunk):
        buffer[: len(ok)] = buffer[ok]  # move the good images together, in order
    digests = [results[i][1] for i in ok]
    return Batch([chunk[i].key for i in ok], buffer[: len(ok)], errors, digests)


def _drain(pending: queue.Queue, free: queue.Queue) -> None:
    """After an early exit: cancel queued work and wake a feeder waiting for a buffer."""
    free.put(np.empty(0))
    while True:
        try:
            item = pending.get_nowait()
        except queue.Empty:
            return
        if isinstance(item, list):
            for _chunk, _buffer, futures in item:
                for f in futures:
                    f.cancel()
