"""What the student's saved folder must hold to load everywhere: its config records the distillation, and a timm
student is written in timm's own format as well (``timm.create_model("hf-hub:<repo>")`` /
``"local-dir:<folder>"``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

__all__ = [
    "DISTILLATION_CONFIG_KEY",
    "TIMM_PREFIX",
    "export_state_dict",
    "prepare_student_config",
    "read_distillation_info",
    "timm_pretrained_cfg",
]

#: Attribute of the student's config (and key of its ``config.json``) holding the distillation record.
DISTILLATION_CONFIG_KEY = "distillation"
#: Prefix of the timm network's parameters inside ``TimmWrapperForImageClassification``.
TIMM_PREFIX = "timm_model."

# PIL resampling filter ids -> timm interpolation names
_INTERPOLATION = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
# pretrained_cfg entries that describe where timm's original weights came from, not the student's
_SOURCE_KEYS = {
    "url",
    "file",
    "hf_hub_id",
    "hf_hub_filename",
    "source",
    "tag",
    "license",
    "origin_url",
    "paper_ids",
    "paper_name",
    "notes",
    "state_dict",
    "label_names",
    "label_descriptions",
    "label_offset",
    "test_input_size",
    "test_crop_pct",
    "test_pool_size",
    "architecture",
}


def _is_timm_wrapper(model: nn.Module) -> bool:
    return getattr(getattr(model, "config", None), "model_type", None) == "timm_wrapper" and hasattr(
        model, "timm_model"
    )


def _processor_data_config(processor: Any) -> dict[str, Any]:
    """timm's ``input_size``/``mean``/``std``/``interpolation`` from a 🤗 image processor (when it has them)."""
    if processor is None:
        return {}
    processor = getattr(processor, "image_processor", processor)
    data: dict[str, Any] = {}
    mean, std = getattr(processor, "image_mean", None), getattr(processor, "image_std", None)
    if getattr(processor, "do_normalize", True) and mean is not None and std is not None:
        data["mean"], data["std"] = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    size = getattr(processor, "size", None) or {}
    size = size if isinstance(size, Mapping) else getattr(size, "__dict__", {})
    if size.get("height") and size.get("width"):
        data["input_size"] = (3, int(size["height"]), int(size["width"]))
        data["crop_pct"] = 1.0
        data["crop_mode"] = "squash"  # resize to exactly (height, width), like ViTImageProcessor
    resample = getattr(processor, "resample", None)
    resample = getattr(resample, "value", resample)
    if resample in _INTERPOLATION:
        data["interpolation"] = _INTERPOLATION[resample]
    return data


def timm_pretrained_cfg(model: nn.Module, processor: Any = None) -> dict[str, Any]:
    """The ``pretrained_cfg`` that lets timm rebuild and preprocess for a ``TimmWrapperForImageClassification``.

    It starts from the timm network's own ``pretrained_cfg``, drops what describes timm's original weights (source
    URL/tag/license, ImageNet labels, test-time sizes) and sets the student's classes and, when ``processor`` is
    given, its input size, normalisation and resampling.

    Args:
        model: a ``TimmWrapperForImageClassification``.
        processor: the image processor saved beside the student.

    Returns:
        A JSON-ready dict with only :class:`timm.models.PretrainedCfg` fields.
    """
    from timm.models import PretrainedCfg

    allowed = {f.name for f in dataclasses.fields(PretrainedCfg)}
    timm_model = model.timm_model
    source = dict(getattr(timm_model, "pretrained_cfg", None) or {})
    cfg = {k: v for k, v in source.items() if k in allowed and k not in _SOURCE_KEYS and v is not None}
    for key in ("pool_size", "first_conv", "classifier"):  # timm keeps these even when None
        cfg.setdefault(key, source.get(key))
    data = _processor_data_config(processor)
    if "input_size" in data and tuple(data["input_size"][1:]) != tuple(
        source.get("input_size", (0, 0, 0))[1:]
    ):
        cfg["pool_size"] = None  # the recorded pool size belonged to the original resolution
    cfg.update(data)
    cfg["num_classes"] = int(getattr(timm_model, "num_classes", model.config.num_labels))
    cfg["custom_load"] = False
    return {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}


def prepare_student_config(
    model: nn.Module, distillation: Mapping[str, Any] | None = None, processor: Any = None
) -> None:
    """Update a student's config in place just before it is saved.

    * ``config.distillation = distillation`` (see :func:`read_distillation_info`), a plain JSON dict that survives
      ``save_pretrained``/``from_pretrained`` and remote code.
    * For a ``TimmWrapperForImageClassification``: ``config.pretrained_cfg`` (:func:`timm_pretrained_cfg`),
      ``num_features`` and ``model_args = {}`` instead of ``None``, which timm's config reader requires.

    Models without a ``config`` (plain ``nn.Module``) are left alone.

    Args:
        model: the (unwrapped) student.
        distillation: the record to store, or ``None`` to keep the current one.
        processor: the image processor saved beside the student (for timm's preprocessing config).
    """
    config = getattr(model, "config", None)
    if config is None:
        return
    if distillation is not None:
        setattr(config, DISTILLATION_CONFIG_KEY, dict(distillation))
    if _is_timm_wrapper(model):
        config.model_args = dict(config.model_args or {})
        config.pretrained_cfg = timm_pretrained_cfg(model, processor)
        num_features = getattr(model.timm_model, "num_features", None)
        if num_features is not None:
            config.num_features = int(num_features)


def export_state_dict(
    model: nn.Module, state_dict: Mapping[str, Tensor] | None = None
) -> dict[str, Tensor] | None:
    """The state dict to save for ``model``: for a timm wrapper, the keys without the ``timm_model.`` prefix.

    transformers writes that prefix when the wrapper was built in memory (rather than loaded with
    ``from_pretrained``), and timm cannot load such a file. ``from_pretrained`` and the wrapper's
    ``load_state_dict`` (used by Trainer resume) add the prefix back, so both loaders accept the stripped file.

    Args:
        model: the (unwrapped) student.
        state_dict: a state dict gathered by the caller (FSDP / DeepSpeed), else the model's own is used for timm.

    Returns:
        The state dict to pass to ``save_pretrained``, or ``state_dict`` unchanged for every other model.
    """
    if not _is_timm_wrapper(model):
        return None if state_dict is None else dict(state_dict)
    state_dict = model.state_dict() if state_dict is None else state_dict
    return {k.removeprefix(TIMM_PREFIX): v for k, v in state_dict.items()}


def read_distillation_info(config: Any) -> dict[str, Any] | None:
    """The distillation record of a saved student (``config.distillation``), or ``None``.

    It holds ``teacher`` (``name_or_path``, ``architecture``, ``model_class``, ``num_parameters``), ``methods``,
    ``settings`` (the enabled methods' loss settings) and the ``hf_relkd`` version.

    Args:
        config: a ``PretrainedConfig`` or a ``config.json`` dict.
    """
    value = config.get(DISTILLATION_CONFIG_KEY) if isinstance(config, Mapping) else None
    if value is None and not isinstance(config, Mapping):
        value = getattr(config, DISTILLATION_CONFIG_KEY, None)
    return dict(value) if value is not None else None
