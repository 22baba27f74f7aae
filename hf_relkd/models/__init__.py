"""Model factory: the CIFAR distillation benchmark zoo plus any ``timm`` architecture, as 🤗 models.

>>> from hf_relkd.models import create_model
>>> teacher = create_model("resnet32x4", num_labels=100)  # CifarForImageClassification
>>> student = create_model("resnet8x4", num_labels=100)
>>> other = create_model("resnet18", num_labels=10)  # timm architecture -> TimmWrapperForImageClassification
"""

import difflib

import torch
import transformers

from .cifar import (
    CIFAR_ARCHITECTURE_ALIASES,
    CIFAR_ARCHITECTURES,
    CifarConfig,
    CifarForImageClassification,
    canonical_architecture_name,
    convert_repdistiller_state_dict,
)

#: Canonical names of the CIFAR benchmark architectures (RepDistiller / CRD spelling).
CIFAR_MODELS = CIFAR_ARCHITECTURES

_TIMM_PREFIXES = ("timm/", "timm:", "hf-hub:timm/", "hf_hub:timm/")


def list_cifar_models() -> list[str]:
    """Canonical names of the CIFAR benchmark architectures (see also ``CIFAR_ARCHITECTURE_ALIASES``)."""
    return list(CIFAR_MODELS)


def _label_kwargs(num_labels: int, id2label: dict[int, str] | None) -> dict:
    if id2label is None:
        return {"num_labels": int(num_labels)}
    id2label = {int(k): str(v) for k, v in id2label.items()}
    if len(id2label) != num_labels:
        raise ValueError(f"id2label has {len(id2label)} entries but num_labels={num_labels}")
    return {"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}


def _unknown_model_error(name: str) -> ValueError:
    candidates = [n.lower() for n in CIFAR_MODELS] + list(CIFAR_ARCHITECTURE_ALIASES)
    close = difflib.get_close_matches(str(name).lower(), candidates, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return ValueError(
        f"Unknown model name {name!r}.{hint} Expected a CIFAR benchmark model (case-insensitive): "
        f"{', '.join(CIFAR_MODELS)} (aliases: {', '.join(sorted(CIFAR_ARCHITECTURE_ALIASES))}), "
        "or any timm architecture known to `timm.list_models()` (e.g. 'resnet18', 'vit_tiny_patch16_224'); "
        "prefix a name with 'timm/' to force the timm model when it clashes with a zoo name."
    )


def _create_timm_model(
    name: str, num_labels: int, id2label: dict[int, str] | None, pretrained: bool, model_args: dict
) -> transformers.PreTrainedModel:
    import timm

    if not timm.is_model(name):
        raise _unknown_model_error(name)
    config = transformers.TimmWrapperConfig(
        architecture=name, model_args=dict(model_args) or None, **_label_kwargs(num_labels, id2label)
    )
    # Build the timm network ourselves so it keeps timm's own initialisation (the wrapper's post_init would
    # re-draw every conv/linear weight from N(0, 0.02) and undo e.g. zero-init of residual BNs), or timm's
    # pretrained weights if asked for. The wrapper shell is created on the meta device when possible (no
    # allocation, no init) and then receives the real network.
    timm_model = timm.create_model(name, pretrained=pretrained, num_classes=config.num_labels, **model_args)
    try:
        with torch.device("meta"):
            model = transformers.TimmWrapperForImageClassification(config)
    except Exception:  # some timm constructors need real tensors (e.g. `.item()` on a schedule)
        model = transformers.TimmWrapperForImageClassification(config)
    model.timm_model = timm_model
    return model


def create_model(
    name: str, num_labels: int, id2label: dict[int, str] | None = None, **kwargs
) -> transformers.PreTrainedModel:
    """Create an image classifier by name, with random weights.

    Args:
        name: a CIFAR benchmark architecture (case-insensitive; see :func:`list_cifar_models`, aliases
            ``mobile_half``/``mobilenetv2_cifar`` -> ``MobileNetV2``, ``resnet50_cifar`` -> ``ResNet50``,
            ``shufflev1``/``shufflev2``), giving a :class:`CifarForImageClassification`; otherwise any
            architecture known to ``timm`` (optionally prefixed ``timm/`` to bypass the zoo), giving a
            ``transformers.TimmWrapperForImageClassification``.
        num_labels: number of classes.
        id2label: optional class names (``len(id2label)`` must equal ``num_labels``).
        **kwargs: for zoo models, extra ``CifarConfig`` fields (e.g. ``num_channels``); for timm models,
            ``timm.create_model`` arguments stored as ``TimmWrapperConfig.model_args`` (e.g. ``drop_rate``).
            ``pretrained=True`` (timm only) downloads timm's pretrained backbone from the Hub; the classifier is
            re-initialised for ``num_labels``.

    Raises:
        ValueError: unknown name (the message lists the zoo names), or ``pretrained=True`` for a zoo model.
    """
    if not isinstance(name, str) or not name.strip():
        raise _unknown_model_error(name)
    name = name.strip()
    pretrained = bool(kwargs.pop("pretrained", False))

    forced_timm = name.lower().startswith(_TIMM_PREFIXES)
    canonical = None if forced_timm else canonical_architecture_name(name)
    if canonical is not None:
        if pretrained:
            raise ValueError(
                f"No pretrained weights are bundled for the CIFAR zoo model {canonical!r}; train it, load a saved "
                "folder with `AutoModelForImageClassification.from_pretrained`, or import a benchmark checkpoint "
                "with `convert_repdistiller_state_dict`."
            )
        config = CifarConfig(architecture=canonical, **_label_kwargs(num_labels, id2label), **kwargs)
        return CifarForImageClassification(config)

    if forced_timm:
        name = name.split("/", 1)[1] if "/" in name else name.split(":", 1)[1]
    return _create_timm_model(name, num_labels, id2label, pretrained, kwargs)


__all__ = [
    "CIFAR_ARCHITECTURE_ALIASES",
    "CIFAR_MODELS",
    "CifarConfig",
    "CifarForImageClassification",
    "convert_repdistiller_state_dict",
    "create_model",
    "list_cifar_models",
]
