"""The model registry: a plain name -> :class:`ModelSpec` dict.

Built-in models register exactly as a third party would: through the ``smolql.models``
entry-point group, whose functions call :func:`register_model`.

>>> "efficientnet_lite0" in models()
True
"""

from __future__ import annotations

import os
import threading
from importlib.metadata import entry_points

from smolql.errors import InferenceError
from smolql.models.spec import ModelSpec
from smolql.suggest import did_you_mean

ENTRY_POINT_GROUP = "smolql.models"
_MODELS: dict[str, ModelSpec] = {}
_loaded = False
# Plugins load once per process, whichever thread asks first; the others wait for it.
_load_lock = threading.RLock()


def register_model(spec: ModelSpec, *, replace: bool = False) -> ModelSpec:
    """Add a model; a second model under the same name is an error unless ``replace``."""
    if spec.name in _MODELS and not replace:
        raise InferenceError(f"a model named {spec.name!r} is already registered")
    _MODELS[spec.name] = _weights_from_env(spec)
    return spec


def set_weights(name: str, path: str) -> ModelSpec:
    """Give a registered model its weights file (e.g. torchvision ResNets)."""
    spec = get_model(name).with_weights(path)
    _MODELS[name] = spec
    return spec


def get_model(name: str) -> ModelSpec:
    _load_plugins()
    if name not in _MODELS:
        raise InferenceError(f"unknown model {name!r}{did_you_mean(name, _MODELS)}")
    return _MODELS[name]


def models() -> dict[str, ModelSpec]:
    _load_plugins()
    return dict(_MODELS)


def _weights_from_env(spec: ModelSpec) -> ModelSpec:
    path = os.environ.get(f"SMOLQL_WEIGHTS_{spec.name.upper()}")
    return spec.with_weights(path) if path else spec


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
                        f"model plugin {ep.name!r} ({ep.value}) failed to import: {e}"
                    ) from e
                register(register_model)
        finally:
            _loaded = True  # a broken plugin is reported once; the other models stay usable
