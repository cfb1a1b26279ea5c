"""The model registry: a plain name -> :class:`ModelSpec` dict.

Built-in models register exactly as a third party would: through the ``smolql.models``
entry-point group, whose functions call :func:`register_model`.

>>> "efficientnet_lite0" in models()
True
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from smolql.errors import InferenceError
from smolql.models.spec import ModelSpec
from smolql.registry import Registry

ENTRY_POINT_GROUP = "smolql.models"


def _weights_from_env(spec: ModelSpec) -> ModelSpec:
    path = os.environ.get(f"SMOLQL_WEIGHTS_{spec.name.upper()}")
    return spec.with_weights(path) if path else spec


_REGISTRY: Registry[ModelSpec] = Registry(
    ENTRY_POINT_GROUP, "model", InferenceError, prepare=_weights_from_env
)


def register_model(spec: ModelSpec, *, replace: bool = False) -> ModelSpec:
    """Add a model; a second model under the same name is an error unless ``replace``.
    ``SMOLQL_WEIGHTS_<NAME>`` gives it a weights file."""
    return _REGISTRY.register(spec, replace=replace)


def set_weights(name: str, path: str) -> ModelSpec:
    """Give a registered model its weights file (e.g. torchvision ResNets)."""
    return _REGISTRY.put(get_model(name).with_weights(path))


def get_model(name: str) -> ModelSpec:
    return _REGISTRY.get(name)


def models() -> Mapping[str, ModelSpec]:
    return _REGISTRY.all()
