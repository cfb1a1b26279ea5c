"""The model registry, weights supplied by the user, and the cached ONNX export."""

from __future__ import annotations

import os

import pytest

from smolql.errors import InferenceError
from smolql.models import export
from smolql.models.registry import get_model, models, register_model, set_weights


def test_builtins_register_through_the_entry_point_group():
    from importlib.metadata import entry_points

    names = {ep.name for ep in entry_points(group="smolql.models")}
    assert {"efficientnet_lite", "torchvision"} <= names
    registered = models()
    for name in (
        "efficientnet_lite0",
        "efficientnet_lite1",
        "efficientnet_lite2",
        "resnet18",
        "resnet34",
        "resnet50",
        "mobilenet_v3_large",
    ):
        assert name in registered
    lite1 = registered["efficientnet_lite1"]
    assert (lite1.transform.resize, lite1.transform.crop) == (274, 240)
    assert len(lite1.labels) == 1000 and lite1.labels[1] == "goldfish"


def test_duplicates_and_unknown_names_are_errors():
    with pytest.raises(InferenceError, match="already registered"):
        register_model(get_model("efficientnet_lite0"))
    with pytest.raises(InferenceError, match="did you mean 'resnet50'"):
        get_model("resnet5O")


def test_torchvision_model_needs_user_weights_and_loads_them_safely(tmp_path):
    import torch
    import torchvision

    with pytest.raises(InferenceError, match="needs a weights file"):
        get_model("resnet18").load()
    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    spec = set_weights("resnet18", str(path))
    module = spec.load()
    with torch.inference_mode():
        assert module(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)
    bad = tmp_path / "evil.pth"
    torch.save({"weights": object()}, bad)  # not loadable with weights_only=True
    with pytest.raises(InferenceError, match="cannot load model"):
        set_weights("resnet18", str(bad)).load()


def test_onnx_export_is_cached_by_weights_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("SMOLQL_CACHE", str(tmp_path))
    spec = get_model("efficientnet_lite0")
    first = export.onnx_path(spec)
    stamp = first.stat().st_mtime_ns
    assert export.onnx_path(spec) == first and first.stat().st_mtime_ns == stamp
    assert spec.weights_hash()[:8] not in first.name  # key mixes hash, shape and opset
    assert first.name.startswith("efficientnet_lite0-") and os.path.getsize(first) > 1_000_000
