"""Inference backends by name: a plain name -> :class:`Backend` dict.

Built-in backends register exactly as a third party's would: through the ``smolql.backends``
entry-point group, whose functions call :func:`register_backend` (the built-ins' is
``smolql.backends.builtin:register``). Every backend is importable without its engine;
whether it can run here is asked at run time.

>>> sorted(backends())
['onnxruntime', 'openvino', 'tensorrt', 'torch', 'torch_cuda']
"""

from __future__ import annotations

import threading
from importlib.metadata import entry_points

from smolql.backends.base import Backend
from smolql.errors import InferenceError
from smolql.suggest import did_you_mean

ENTRY_POINT_GROUP = "smolql.backends"
_BACKENDS: dict[str, Backend] = {}
_loaded = False
_load_lock = threading.RLock()  # plugins load once, whichever thread asks first


def register_backend(backend: Backend, *, replace: bool = False) -> Backend:
    """Add a backend under ``backend.name``; a second one of that name is an error unless
    ``replace``."""
    if backend.name in _BACKENDS and not replace:
        raise InferenceError(f"a backend named {backend.name!r} is already registered")
    _BACKENDS[backend.name] = backend
    return backend


def backends() -> dict[str, Backend]:
    """Every registered backend, whether or not it can run here."""
    _load_plugins()
    return dict(_BACKENDS)


def get_backend(name: str) -> Backend:
    """A backend that can run here, or an error saying why not (and what to install)."""
    registered = backends()
    if name not in registered:
        raise InferenceError(f"unknown backend {name!r}{did_you_mean(name, registered)}")
    backend = registered[name]
    reason = backend.unavailable_reason()
    if reason:
        raise InferenceError(f"backend {name!r} cannot run here: {reason}")
    return backend


def available() -> dict[str, Backend]:
    return {n: b for n, b in backends().items() if b.unavailable_reason() is None}


def _load_plugins() -> None:
    global _loaded
    if _loaded:
        return
    with _load_lock:
        if _loaded:
            return
        try:
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                try:
                    register = ep.load()
                except ImportError as e:
                    raise InferenceError(
                        f"backend plugin {ep.name!r} ({ep.value}) failed to import: {e}"
                    ) from e
                register(register_backend)
        finally:
            _loaded = True  # a broken plugin is reported once; the other backends stay usable
