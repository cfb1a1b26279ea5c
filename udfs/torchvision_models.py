"""Built-in torchvision classifiers; their weights come from a file the user gives."""

from __future__ import annotations

from collections.abc import Callable

from smolql.models.spec import ModelSpec, imagenet_labels
from smolql.ops.transform import IMAGENET_MEAN, IMAGENET_STD, Transform

ARCHITECTURES = ("resnet18", "resnet34", "resnet50", "mobilenet_v3_large")


def _builder(arch: str) -> Callable[[str], object]:
    def build(weights: str):
        import torch
        import torchvision

        model = getattr(torchvision.models, arch)(weights=None)
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        return model

    return build


def register(register_model: Callable[[ModelSpec], ModelSpec]) -> None:
    """Entry point of the ``smolql.models`` group."""
    for arch in ARCHITECTURES:
        register_model(
            ModelSpec(
                name=arch,
                build=_builder(arch),
                transform=Transform(256, 224, IMAGENET_MEAN, IMAGENET_STD),
                labels=imagenet_labels(),
                family="torchvision",
                description=f"torchvision {arch}, ImageNet-1k (weights from a file you give)",
            )
        )
