"""Configuration of the CIFAR-100 distillation benchmark model zoo (RepDistiller / CRD architectures).

This file is self-contained (it imports only ``transformers``) so that it can be shipped as Hugging Face
remote code next to ``modeling_relkd_cifar.py``.
"""

from transformers import PretrainedConfig

# Canonical architecture names, in the spelling used by the CRD / RepDistiller benchmark.
CIFAR_ARCHITECTURES = (
    "resnet8",
    "resnet14",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "resnet8x4",
    "resnet32x4",
    "wrn_16_1",
    "wrn_16_2",
    "wrn_40_1",
    "wrn_40_2",
    "vgg8",
    "vgg11",
    "vgg13",
    "vgg16",
    "vgg19",
    "ResNet50",
    "MobileNetV2",
    "ShuffleV1",
    "ShuffleV2",
)

# Extra (lower-case) spellings accepted for the canonical names above.
CIFAR_ARCHITECTURE_ALIASES = {
    "mobile_half": "MobileNetV2",
    "mobilenetv2_cifar": "MobileNetV2",
    "resnet50_cifar": "ResNet50",
    "shufflenetv1": "ShuffleV1",
    "shufflenetv2": "ShuffleV2",
    "vgg8_bn": "vgg8",
    "vgg11_bn": "vgg11",
    "vgg13_bn": "vgg13",
    "vgg16_bn": "vgg16",
    "vgg19_bn": "vgg19",
}

_LOOKUP = {name.lower(): name for name in CIFAR_ARCHITECTURES}
_LOOKUP.update(CIFAR_ARCHITECTURE_ALIASES)


def canonical_architecture_name(name):
    """Return the canonical zoo name for ``name`` (case-insensitive, aliases accepted) or ``None``."""
    if not isinstance(name, str):
        return None
    return _LOOKUP.get(name.strip().lower())


class CifarConfig(PretrainedConfig):
    r"""Configuration for [`CifarForImageClassification`].

    Args:
        architecture (`str`, defaults to `"resnet8x4"`):
            One of the CIFAR benchmark architectures (case-insensitive, aliases such as `mobile_half` accepted):
            resnet8/14/20/32/44/56/110, resnet8x4, resnet32x4, wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2,
            vgg8/11/13/16/19 (with BatchNorm), ResNet50, MobileNetV2 (`mobile_half`), ShuffleV1, ShuffleV2.
            The name is stored in its canonical spelling.
        num_channels (`int`, defaults to 3):
            Number of input image channels.
        image_size (`int`, defaults to 32):
            Nominal input resolution (informational; all models use global average pooling).
        num_labels (`int`, defaults to 100 when neither `num_labels` nor `id2label` is given):
            Number of classes.
    """

    model_type = "relkd_cifar"

    def __init__(self, architecture="resnet8x4", num_channels=3, image_size=32, **kwargs):
        canonical = canonical_architecture_name(architecture)
        if canonical is None:
            raise ValueError(
                f"Unknown CIFAR architecture {architecture!r}. Expected one of: {', '.join(CIFAR_ARCHITECTURES)} "
                f"(aliases: {', '.join(sorted(CIFAR_ARCHITECTURE_ALIASES))})."
            )
        self.architecture = canonical
        self.num_channels = int(num_channels)
        self.image_size = int(image_size)
        if kwargs.get("num_labels") is None and not kwargs.get("id2label"):
            kwargs.pop("num_labels", None)
            kwargs["num_labels"] = 100
        super().__init__(**kwargs)


CifarConfig.register_for_auto_class()

__all__ = ["CIFAR_ARCHITECTURES", "CIFAR_ARCHITECTURE_ALIASES", "CifarConfig", "canonical_architecture_name"]
