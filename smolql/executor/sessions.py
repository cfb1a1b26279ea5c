"""Engine sessions kept open between queries of a process.

Opening a session builds the engine (OpenVINO compiles the graph, ONNX Runtime optimises it):
a fixed cost per query that a 500-image query feels. An idle session goes back to a small
pool keyed by everything that makes it (backend, model and weights digest, input size,
precision, threads, batch size) and the next query with that plan takes it. A session is used
by one query at a time (taken out of the pool while it runs). An engine made by calibration
(int8) is keyed by its stamp too: a new calibration replaces the engine file and its stamp,
so a pooled session of the old engine is never taken for the new one. Idle sessions are
closed before the process forks.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

from smolql.backends.base import Session
from smolql.backends.registry import get_backend
from smolql.planner.physical import Plan

KEEP = 2  # idle sessions kept (each holds its engine's memory)

_lock = threading.Lock()
_idle: OrderedDict[tuple, Session] = OrderedDict()


@contextmanager
def session_for(plan: Plan) -> Iterator[Session]:
    """A session for ``plan``'s engine: from the pool, or opened; back to the pool after a
    run that ended well, else closed."""
    backend, spec = get_backend(plan.backend), plan.spec
    stamp = backend.engine_stamp(spec, plan.precision)
    key = None
    if stamp or plan.precision not in backend.capabilities().calibrated:
        key = (
            plan.backend,
            spec.name,
            spec.weights_hash(),
            spec.input_size,
            plan.precision,
            stamp,
            plan.infer_threads,
            plan.batch_size,
        )
    with _lock:
        session = _idle.pop(key, None) if key is not None else None
    if session is None:
        session = backend.open(plan.spec, plan.precision, plan.infer_threads, plan.batch_size)
    done = False
    try:
        yield session
        done = True
    finally:
        if done and key is not None:
            _keep(key, session)
        else:
            session.close()


def _keep(key: tuple, session: Session) -> None:
    with _lock:
        old = _idle.pop(key, None)
        _idle[key] = session
        evicted = [_idle.popitem(last=False)[1] for _ in range(len(_idle) - KEEP)]
    for s in [*evicted, *([old] if old is not None else [])]:
        s.close()


def close_all() -> None:
    """Close every idle session (tests; a process about to fork)."""
    with _lock:
        sessions = list(_idle.values())
        _idle.clear()
    for s in sessions:
        s.close()


def _forget_in_child() -> None:
    global _lock
    _lock = threading.Lock()
    _idle.clear()


# A child forked while an engine is alive can hang in the engine's thread pool (OpenVINO's
# did, here): idle engines are closed before a fork, and a child starts with none.
os.register_at_fork(before=close_all, after_in_child=_forget_in_child)


__all__ = ["close_all", "session_for"]
