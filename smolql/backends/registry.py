"""Inference backends by name: a plain name -> :class:`Backend` dict.

Built-in backends register exactly as a third party's would: through the ``smolql.backends``
entry-point group, whose functions call :func:`register_backend` (the built-ins' is
``smolql.backends.builtin:register``). Every backend is importable without its engine;
whether it can run here is asked at run time.

>>> sorted(backends())
['onnxruntime', 'openvino', 'tensorrt', 'torch', 'torch_cuda']
"""

from __future__ import annotations

from collections.abc import Mapping

from smolql.backends.base import Backend
from smolql.errors import InferenceError
from smolql.registry import Registry

ENTRY_POINT_GROUP = "smolql.backends"
_REGISTRY: Registry[Backend] = Registry(ENTRY_POINT_GROUP, "backend", InferenceError)


def register_backend(backend: Backend, *, replace: bool = False) -> Backend:
    """Add a backend under ``backend.name``; a second one of that name is an error unless
    ``replace``."""
    return _REGISTRY.register(backend, replace=replace)


def backends() -> Mapping[str, Backend]:
    """Every registered backend, whether or not it can run here."""
    return _REGISTRY.all()


def get_backend(name: str) -> Backend:
    """A backend that can run here, or an error saying why not (and what to install)."""
    backend = _REGISTRY.get(name)
    reason = backend.unavailable_reason()
    if reason:
        raise InferenceError(f"backend {name!r} cannot run here: {reason}")
    return backend


def available() -> dict[str, Backend]:
    return {n: b for n, b in backends().items() if b.unavailable_reason() is None}
