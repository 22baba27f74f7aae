"""Students on the Hub: model cards, training-curve plots and the save-time preparation that makes a distilled
student load with ``AutoModelForImageClassification``, ``pipeline("image-classification")`` and (timm students)
``timm.create_model("hf-hub:...")``.

:class:`~hf_relkd.RelationalDistillationTrainer` uses this at every ``save_model``, checkpoint and ``push_to_hub``;
the functions also work on plain data (a config dict and a ``log_history``) to render cards outside a trainer.
"""

from .card import (
    CARD_TEMPLATE_NAME,
    CITATIONS,
    DEFAULT_LICENSE,
    METHOD_INFO,
    EvalSummary,
    MethodInfo,
    ModelCardOptions,
    ModelInfo,
    build_card_data,
    card_template_path,
    describe_model,
    enabled_methods,
    framework_versions,
    loss_formula,
    method_settings,
    render_model_card,
    summarize_evaluations,
    training_recipe,
)
from .export import (
    DISTILLATION_CONFIG_KEY,
    export_state_dict,
    prepare_student_config,
    read_distillation_info,
    timm_pretrained_cfg,
)
from .plots import PLOT_FILENAME, plot_training_curves

__all__ = [
    "CARD_TEMPLATE_NAME",
    "CITATIONS",
    "DEFAULT_LICENSE",
    "DISTILLATION_CONFIG_KEY",
    "METHOD_INFO",
    "PLOT_FILENAME",
    "EvalSummary",
    "MethodInfo",
    "ModelCardOptions",
    "ModelInfo",
    "build_card_data",
    "card_template_path",
    "describe_model",
    "enabled_methods",
    "export_state_dict",
    "framework_versions",
    "loss_formula",
    "method_settings",
    "plot_training_curves",
    "prepare_student_config",
    "read_distillation_info",
    "render_model_card",
    "summarize_evaluations",
    "timm_pretrained_cfg",
    "training_recipe",
]
