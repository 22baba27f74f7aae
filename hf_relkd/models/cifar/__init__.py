"""CIFAR-100 distillation benchmark model zoo as 🤗 Transformers models (``model_type="relkd_cifar"``)."""

from transformers import AutoConfig, AutoModelForImageClassification

from .configuration_relkd_cifar import (
    CIFAR_ARCHITECTURE_ALIASES,
    CIFAR_ARCHITECTURES,
    CifarConfig,
    canonical_architecture_name,
)
from .modeling_relkd_cifar import (
    CifarForImageClassification,
    CifarPreTrainedModel,
    build_cifar_backbone,
    convert_repdistiller_state_dict,
)


def _register_auto_classes():
    """Register the zoo with the Auto classes (idempotent, safe under module reloads)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING

    if CifarConfig.model_type not in CONFIG_MAPPING:
        AutoConfig.register(CifarConfig.model_type, CifarConfig)
    try:
        registered = MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING[CONFIG_MAPPING[CifarConfig.model_type]]
    except KeyError:
        registered = None
    if registered is None:
        AutoModelForImageClassification.register(CifarConfig, CifarForImageClassification)


_register_auto_classes()

__all__ = [
    "CIFAR_ARCHITECTURES",
    "CIFAR_ARCHITECTURE_ALIASES",
    "CifarConfig",
    "CifarForImageClassification",
    "CifarPreTrainedModel",
    "build_cifar_backbone",
    "canonical_architecture_name",
    "convert_repdistiller_state_dict",
]
