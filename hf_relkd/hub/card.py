"""Model cards for distilled students: gather what a run knows and render ``model_cards/student_card.md``.

Everything here works from plain Python data (a ``TrainingArguments.to_dict()``-style mapping, a
``trainer.state.log_history`` list and two :class:`ModelInfo` records), so cards can be rendered and tested without a
trainer::

    from hf_relkd.hub import ModelCardOptions, ModelInfo, render_model_card

    card = render_model_card(
        student=ModelInfo("resnet8x4", "CifarForImageClassification", 1_234_564, kind="zoo", num_labels=100),
        teacher=ModelInfo("resnet32x4", "CifarForImageClassification", 7_433_860, kind="zoo", name_or_path="me/t"),
        config=trainer.args.to_dict(),
        log_history=trainer.state.log_history,
        options=ModelCardOptions(dataset_name="uoft-cs/cifar100", eval_split="test"),
    )
    card.save("student/README.md")

:class:`~hf_relkd.RelationalDistillationTrainer` does this at every save (see its ``create_model_card``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.resources
import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

__all__ = [
    "CARD_TEMPLATE_NAME",
    "CITATIONS",
    "DEFAULT_LICENSE",
    "EvalSummary",
    "METHOD_INFO",
    "MethodInfo",
    "ModelCardOptions",
    "ModelInfo",
    "build_card_data",
    "card_template_path",
    "describe_model",
    "enabled_methods",
    "framework_versions",
    "loss_formula",
    "method_settings",
    "render_model_card",
    "summarize_evaluations",
    "training_recipe",
]

#: File name of the Jinja template, in the top-level ``model_cards/`` folder (``hf_relkd/model_cards/`` once installed).
CARD_TEMPLATE_NAME = "student_card.md"
#: License written in the card metadata unless ``ModelCardOptions.license`` says otherwise.
DEFAULT_LICENSE = "apache-2.0"
_TEMPLATE_PACKAGE = "hf_relkd.model_cards"

# ----------------------------------------------------------------------------------------------------------------------
# citations and methods
# ----------------------------------------------------------------------------------------------------------------------
#: BibTeX entries, by key: one per method and one for hf_relkd.
CITATIONS: dict[str, str] = {
    "kd": textwrap.dedent(
        """\
        @article{hinton2015distilling,
          title   = {Distilling the Knowledge in a Neural Network},
          author  = {Hinton, Geoffrey and Vinyals, Oriol and Dean, Jeff},
          journal = {arXiv preprint arXiv:1503.02531},
          year    = {2015}
        }"""
    ),
    "rkd": textwrap.dedent(
        """\
        @inproceedings{park2019relational,
          title     = {Relational Knowledge Distillation},
          author    = {Park, Wonpyo and Kim, Dongju and Lu, Yan and Cho, Minsu},
          booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
          pages     = {3967--3976},
          year      = {2019}
        }"""
    ),
    "rrd": textwrap.dedent(
        """\
        @article{giakoumoglou2024relational,
          title   = {Relational Representation Distillation},
          author  = {Giakoumoglou, Nikolaos and Stathaki, Tania},
          journal = {arXiv preprint arXiv:2407.12073},
          year    = {2024}
        }"""
    ),
    "vrm": textwrap.dedent(
        """\
        @inproceedings{zhang2025vrm,
          title     = {{VRM}: Knowledge Distillation via Virtual Relation Matching},
          author    = {Zhang, Weijia and Xie, Fei and Cai, Weidong and Ma, Chao},
          booktitle = {Proceedings of the IEEE/CVF International Conference on Computer Vision (ICCV)},
          pages     = {2707--2717},
          year      = {2025},
          note      = {arXiv:2502.20760}
        }"""
    ),
    "hf_relkd": textwrap.dedent(
        """\
        @software{hf_relkd,
          title  = {hf\\_relkd: Relational Knowledge Distillation for Image Classifiers with the Hugging Face Trainer},
          author = {{hf\\_relkd contributors}},
          url    = {https://github.com/hf-relkd/hf_relkd},
          year   = {2026}
        }"""
    ),
}


@dataclass(frozen=True)
class MethodInfo:
    """How a distillation method is described in a card.

    Attributes:
        title: human-readable name.
        paper: short reference (authors, venue, arXiv id).
        fields: the ``RelationalDistillationConfig`` fields that configure it, shown when it is enabled.
    """

    title: str
    paper: str
    fields: tuple[str, ...]


#: Card descriptions of the built-in methods. Methods registered by users fall back to the config fields that start
#: with ``"<name>_"``.
METHOD_INFO: dict[str, MethodInfo] = {
    "kd": MethodInfo(
        "Hinton KD (softened-logit distillation)",
        "Hinton, Vinyals & Dean, 2015, arXiv:1503.02531",
        ("kd_weight", "kd_temperature"),
    ),
    "rkd": MethodInfo(
        "RKD (Relational Knowledge Distillation)",
        "Park, Kim, Lu & Cho, CVPR 2019",
        ("rkd_distance_weight", "rkd_angle_weight"),
    ),
    "rrd": MethodInfo(
        "RRD (Relational Representation Distillation)",
        "Giakoumoglou & Stathaki, 2024, arXiv:2407.12073",
        (
            "rrd_weight",
            "rrd_student_temperature",
            "rrd_teacher_temperature",
            "rrd_queue_size",
            "rrd_embed_dim",
            "rrd_enqueue_before_loss",
        ),
    ),
    "vrm": MethodInfo(
        "VRM (Virtual Relation Matching)",
        "Zhang, Xie, Cai & Ma, ICCV 2025, arXiv:2502.20760",
        (
            "vrm_inter_sample_weight",
            "vrm_inter_class_weight",
            "vrm_prune_percentile",
            "vrm_zsnorm",
            "vrm_adaptor",
            "vrm_virtual_ce",
            "vrm_student_views",
        ),
    ),
}
# methods whose loss reads penultimate embeddings / relates samples of a batch
_FEATURE_METHODS = {"rkd", "rrd"}
_RELATIONAL_METHODS = {"rkd", "rrd", "vrm"}


# ----------------------------------------------------------------------------------------------------------------------
# plain records
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class ModelInfo:
    """Identity of a network, as shown in the card and stored in ``config.distillation``.

    Attributes:
        architecture: architecture name (zoo/timm name such as ``"resnet8x4"``, else the model class).
        model_class: Python class name (``"CifarForImageClassification"``, ``"TimmWrapperForImageClassification"``).
        num_parameters: number of parameters.
        kind: ``"zoo"`` (hf_relkd CIFAR zoo), ``"timm"`` (``TimmWrapperForImageClassification``), ``"transformers"``
            (another 🤗 model) or ``"torch"`` (a plain ``nn.Module``).
        name_or_path: Hub id or local folder it was loaded from, when known.
        num_labels: number of classes, when known.
        label_names: class names (index order), when the config has real ones.
    """

    architecture: str
    model_class: str
    num_parameters: int
    kind: str = "torch"
    name_or_path: str | None = None
    num_labels: int | None = None
    label_names: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (without the label names, which the config already holds)."""
        return {
            "name_or_path": self.name_or_path,
            "architecture": self.architecture,
            "model_class": self.model_class,
            "num_parameters": int(self.num_parameters),
        }


@dataclass
class ModelCardOptions:
    """What a card cannot infer from the trainer: where the data came from, license, names.

    :class:`~hf_relkd.RelationalDistillationTrainer` keeps one in ``trainer.model_card_options``; values passed to
    ``create_model_card`` / ``push_to_hub`` are stored there and reused at every later save.

    Attributes:
        dataset_name: Hub id of the dataset (e.g. ``"uoft-cs/cifar100"``), written to ``datasets:`` and the
            model-index.
        dataset_config: dataset configuration name, if any.
        eval_split: split the evaluation ran on (e.g. ``"test"``).
        license: license id (default ``apache-2.0``).
        model_name: name shown in the card (default: the Hub repo name or the output folder name).
        repo_id: Hub id used in the quick-start snippet (default: the trainer's ``hub_model_id``).
        tags: extra tags.
        language: optional language metadata.
        base_model: optional ``base_model`` metadata (e.g. the timm checkpoint the student was initialised from).
        description: an extra paragraph appended to the model description.
    """

    dataset_name: str | None = None
    dataset_config: str | None = None
    eval_split: str | None = None
    license: str = DEFAULT_LICENSE
    model_name: str | None = None
    repo_id: str | None = None
    tags: list[str] = field(default_factory=list)
    language: str | list[str] | None = None
    base_model: str | list[str] | None = None
    description: str | None = None

    def update(self, **values: Any) -> ModelCardOptions:
        """Set the given fields (``None`` values are ignored; ``tags`` are appended). Returns ``self``.

        Raises:
            TypeError: a name that is not a field.
        """
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise TypeError(f"Unknown model card option(s) {unknown}; valid: {sorted(names)}.")
        for name, value in values.items():
            if value is None:
                continue
            if name == "tags":
                for tag in [value] if isinstance(value, str) else list(value):
                    if tag not in self.tags:
                        self.tags.append(tag)
            else:
                setattr(self, name, value)
        return self


@dataclass
class EvalSummary:
    """Evaluation results read from a ``log_history`` (accuracies as logged, i.e. fractions in [0, 1]).

    Attributes:
        last: metrics of the last evaluation (``accuracy``, ``top5_accuracy``, ``teacher_accuracy``,
            ``teacher_top5_accuracy``, ``teacher_agreement``; only those logged), ``{}`` if none.
        last_epoch / last_step: when the last evaluation ran.
        best: the best value over all evaluations of each student metric (``accuracy``, ``top5_accuracy``,
            ``teacher_agreement``).
        best_epoch / best_step: when the best top-1 accuracy was reached.
        num_evaluations: number of evaluations that reported an accuracy.
    """

    last: dict[str, float] = field(default_factory=dict)
    last_epoch: float | None = None
    last_step: int | None = None
    best: dict[str, float] = field(default_factory=dict)
    best_epoch: float | None = None
    best_step: int | None = None
    num_evaluations: int = 0

    @property
    def has_results(self) -> bool:
        """Whether any evaluation reported a student accuracy."""
        return "accuracy" in self.last


_EVAL_KEYS = ("accuracy", "top5_accuracy", "teacher_accuracy", "teacher_top5_accuracy", "teacher_agreement")
_BEST_KEYS = ("accuracy", "top5_accuracy", "teacher_agreement")


def _finite(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def summarize_evaluations(log_history: Sequence[Mapping[str, Any]], prefix: str = "eval_") -> EvalSummary:
    """Last and best evaluation metrics in a ``trainer.state.log_history``.

    Args:
        log_history: the Trainer's log entries (evaluation entries carry ``eval_accuracy`` etc.).
        prefix: metric prefix of the evaluation entries.

    Returns:
        An :class:`EvalSummary` (empty when no entry has ``{prefix}accuracy``).
    """
    summary = EvalSummary()
    best_accuracy = -math.inf
    for entry in log_history:
        accuracy = _finite(entry.get(f"{prefix}accuracy"))
        if accuracy is None:
            continue
        summary.num_evaluations += 1
        summary.last = {
            key: value for key in _EVAL_KEYS if (value := _finite(entry.get(f"{prefix}{key}"))) is not None
        }
        summary.last_epoch = _finite(entry.get("epoch"))
        summary.last_step = int(entry["step"]) if entry.get("step") is not None else None
        for key in _BEST_KEYS:
            if key in summary.last:
                summary.best[key] = max(summary.best.get(key, -math.inf), summary.last[key])
        if accuracy > best_accuracy:
            best_accuracy = accuracy
            summary.best_epoch, summary.best_step = summary.last_epoch, summary.last_step
    return summary


def enabled_methods(config: Mapping[str, Any], methods: Sequence[str] | None = None) -> list[str]:
    """The distillation methods a run used.

    Args:
        config: ``RelationalDistillationConfig.to_dict()`` (or any mapping with its fields).
        methods: the methods that actually ran (e.g. ``trainer.distillation_methods.keys()``); when given it wins.

    Returns:
        Method names: ``methods`` if given, else those of KD/RKD/RRD/VRM with a positive weight in ``config``.
    """
    if methods is not None:
        return list(methods)
    from ..trainer.config import METHOD_DEFAULT_WEIGHTS

    return [
        name
        for name, weights in METHOD_DEFAULT_WEIGHTS.items()
        if any((_finite(config.get(weight)) or 0.0) > 0 for weight in weights)
    ]


def _field_help() -> dict[str, str]:
    from ..trainer.config import RelationalDistillationConfig

    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(RelationalDistillationConfig)}


def method_settings(config: Mapping[str, Any], methods: Sequence[str] | None = None) -> dict[str, Any]:
    """The loss settings of the enabled methods only.

    Args:
        config: the training config as a mapping.
        methods: the methods that ran (default: inferred from the weights, see :func:`enabled_methods`).

    Returns:
        ``{"ce_weight": ..., "methods": {name: {field: value}}, "shared": {field: value}}``. ``shared`` holds the
        settings common to the relational/feature methods (``relation_scope``, feature modules) when any runs.
    """
    methods = enabled_methods(config, methods)
    per_method: dict[str, dict[str, Any]] = {}
    for name in methods:
        info = METHOD_INFO.get(name)
        names = info.fields if info else tuple(k for k in config if k.startswith(f"{name}_"))
        per_method[name] = {k: config[k] for k in names if k in config}
    shared: dict[str, Any] = {}
    if set(methods) & _RELATIONAL_METHODS and "relation_scope" in config:
        shared["relation_scope"] = config["relation_scope"]
    if set(methods) & _FEATURE_METHODS:
        for key in ("student_feature_module", "teacher_feature_module"):
            if key in config:
                shared[key] = config[key]
    if config.get("teacher_dtype") not in (None, "auto"):
        shared["teacher_dtype"] = config["teacher_dtype"]
    return {"ce_weight": config.get("ce_weight"), "methods": per_method, "shared": shared}


def _precision(config: Mapping[str, Any]) -> str:
    if config.get("bf16"):
        return "bf16 mixed precision"
    if config.get("fp16"):
        return "fp16 mixed precision"
    return "fp32"


def _schedule(config: Mapping[str, Any]) -> str:
    decay_epochs = config.get("lr_decay_epochs")
    if decay_epochs:
        epochs = ", ".join(f"{e:g}" for e in decay_epochs)
        text = f"multi-step: learning rate × {config.get('lr_decay_rate', 0.1):g} at epochs {epochs}"
    else:
        scheduler = config.get("lr_scheduler_type", "linear")
        text = str(getattr(scheduler, "value", scheduler))
    warmup_steps = config.get("warmup_steps") or 0
    warmup_ratio = config.get("warmup_ratio") or 0
    if warmup_steps and warmup_steps >= 1:
        text += f", linear warm-up over {warmup_steps:g} steps"
    elif warmup_ratio or (warmup_steps and warmup_steps < 1):
        text += f", linear warm-up over {100 * (warmup_ratio or warmup_steps):g}% of the steps"
    return text


def training_recipe(
    config: Mapping[str, Any],
    *,
    num_processes: int = 1,
    optimizer: str | None = None,
    global_step: int | None = None,
    epoch: float | None = None,
) -> dict[str, str]:
    """The training recipe as ``{label: value}`` lines for the card.

    Args:
        config: the training config as a mapping (``TrainingArguments.to_dict()``).
        num_processes: data-parallel processes (``trainer.args.world_size``).
        optimizer: a description of the optimizer actually used (default: ``config["optim"]``).
        global_step / epoch: how far training went (``trainer.state``), when known.
    """
    per_device = int(config.get("per_device_train_batch_size", 8))
    accumulation = int(config.get("gradient_accumulation_steps", 1) or 1)
    optim = optimizer or str(getattr(config.get("optim"), "value", config.get("optim", "adamw_torch")))
    recipe = {
        "Optimizer": optim,
        "Learning rate": f"{config.get('learning_rate', 5e-5):g}",
        "Weight decay": f"{config.get('weight_decay', 0.0):g}",
        "Schedule": _schedule(config),
    }
    max_steps = int(config.get("max_steps", -1) or -1)
    if max_steps > 0:
        recipe["Length"] = f"{max_steps} optimizer steps (max_steps)"
    else:
        recipe["Length"] = f"{config.get('num_train_epochs', 3):g} epochs"
    if global_step:
        trained = f"{global_step} optimizer steps"
        if epoch is not None:
            trained += f" ({epoch:.4g} epochs)"
        recipe["Trained for"] = trained
    recipe["Batch size"] = (
        f"{per_device} per device × {num_processes} process{'es' if num_processes != 1 else ''} × "
        f"{accumulation} accumulation step{'s' if accumulation != 1 else ''} = "
        f"{per_device * num_processes * accumulation} global"
    )
    recipe["Precision"] = _precision(config)
    recipe["Processes"] = str(num_processes)
    recipe["Gradient accumulation"] = str(accumulation)
    if config.get("seed") is not None:
        recipe["Seed"] = str(config["seed"])
    return recipe


def framework_versions() -> dict[str, str]:
    """Versions of the libraries that produced the model (a library that is not installed is left out)."""
    import importlib.metadata

    versions = {}
    for name in ("hf_relkd", "transformers", "torch", "timm", "huggingface_hub", "datasets"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    if "hf_relkd" not in versions:  # running from a source checkout
        from .. import __version__

        versions["hf_relkd"] = __version__
    return versions


# ----------------------------------------------------------------------------------------------------------------------
# models
# ----------------------------------------------------------------------------------------------------------------------
def _unwrap_module(model: Any) -> Any:
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None or inner is model:
            return model
        model = inner


def describe_model(model: Any, name_or_path: str | None = None) -> ModelInfo:
    """A :class:`ModelInfo` for a 🤗, timm-wrapped, CIFAR-zoo or plain PyTorch classifier.

    Args:
        model: the network (DDP / ``torch.compile`` wrappers are looked through).
        name_or_path: overrides ``config._name_or_path``.
    """
    model = _unwrap_module(model)
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    model_class = type(model).__name__
    if model_type == "relkd_cifar":
        kind, architecture = "zoo", str(config.architecture)
    elif model_type == "timm_wrapper":
        kind, architecture = "timm", str(config.architecture)
    elif config is not None and hasattr(config, "to_dict"):
        kind = "transformers"
        architecture = (getattr(config, "architectures", None) or [model_class])[0]
        if model_type and model_type not in architecture.lower():
            architecture = f"{architecture} ({model_type})"
    else:
        kind, architecture = "torch", model_class
    num_labels = getattr(config, "num_labels", None)
    label_names = None
    id2label = getattr(config, "id2label", None)
    if id2label:
        names = [str(id2label[i]) for i in sorted(id2label)]
        if not all(n == f"LABEL_{i}" for i, n in enumerate(names)):
            label_names = names
    return ModelInfo(
        architecture=architecture,
        model_class=model_class,
        num_parameters=sum(p.numel() for p in model.parameters()),
        kind=kind,
        name_or_path=name_or_path or getattr(config, "_name_or_path", None) or None,
        num_labels=int(num_labels) if num_labels else None,
        label_names=label_names,
    )


# ----------------------------------------------------------------------------------------------------------------------
# rendering
# ----------------------------------------------------------------------------------------------------------------------
def card_template_path(name: str = CARD_TEMPLATE_NAME) -> Path:
    """Path of a card template, for both install layouts.

    A wheel ships the top-level ``model_cards/`` folder as the package ``hf_relkd.model_cards`` (and an editable
    install made from the current ``pyproject.toml`` maps it there too); a source checkout, or an editable install
    made before that mapping existed, has it beside the ``hf_relkd`` package folder.

    Args:
        name: template file name.

    Returns:
        The template's filesystem path.

    Raises:
        FileNotFoundError: the template is in neither place.
    """
    candidates: list[Path] = []
    try:
        resource = importlib.resources.files(_TEMPLATE_PACKAGE) / name
    except ModuleNotFoundError:
        pass
    else:
        if isinstance(resource, Path):  # a package on the filesystem (not inside a zip)
            candidates.append(resource)
    from .. import __file__ as package_init

    candidates.append(Path(package_init).resolve().parent.parent / "model_cards" / name)
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"Model card template {name!r} not found (looked in {', '.join(str(p) for p in candidates)}); the "
        "hf_relkd installation is incomplete: reinstall it."
    )


def _pct(value: float | None) -> str:
    if value is None:
        return "not measured"
    return f"{100 * value:.2f}%" if value <= 1.0 else f"{value:.2f}%"


def _when(epoch: float | None, step: int | None) -> str:
    parts = []
    if epoch is not None:
        parts.append(f"epoch {epoch:.4g}")
    if step is not None:
        parts.append(f"step {step}")
    return ", ".join(parts)


def _params(n: int) -> str:
    if n >= 1e6:
        return f"{n:,} ({n / 1e6:.2f} M)"
    if n >= 1e3:
        return f"{n:,} ({n / 1e3:.1f} K)"
    return f"{n:,}"


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


_LOSS_TERMS: dict[str, tuple[tuple[str, str], ...]] = {
    "kd": (("kd_weight", "KD"),),
    "rkd": (("rkd_distance_weight", "RKD distance"), ("rkd_angle_weight", "RKD angle")),
    "rrd": (("rrd_weight", "RRD"),),
    "vrm": (("vrm_inter_sample_weight", "VRM inter-sample"), ("vrm_inter_class_weight", "VRM inter-class")),
}


def loss_formula(config: Mapping[str, Any], methods: Sequence[str] | None = None) -> str:
    """The training loss as a weighted sum, e.g. ``"1 × CE + 1 × KD (T = 4) + 1 × RRD"``.

    Args:
        config: the training config as a mapping.
        methods: the methods that ran (default: inferred from the weights).
    """
    terms = []
    if (_finite(config.get("ce_weight")) or 0.0) > 0:
        terms.append(f"{_fmt(config['ce_weight'])} × CE")
    for name in enabled_methods(config, methods):
        parts = _LOSS_TERMS.get(name)
        if parts is None:
            terms.append(name)
            continue
        for weight, label in parts:
            if (_finite(config.get(weight)) or 0.0) > 0:
                if name == "kd" and config.get("kd_temperature") is not None:
                    label += f" (T = {_fmt(config['kd_temperature'])})"
                terms.append(f"{_fmt(config[weight])} × {label}")
    return " + ".join(terms) if terms else "0"


def _size_sentence(reduction: float) -> str:
    if not math.isfinite(reduction):
        return "The size reduction is unknown."
    if reduction >= 1:
        return f"The teacher has **{reduction:.2f}×** the student's parameters (size reduction ×{reduction:.2f})."
    return f"The student is **{1 / reduction:.2f}×** larger than the teacher (no size reduction)."


def _eval_results(summary: EvalSummary, options: ModelCardOptions) -> list[EvalResult]:
    if not summary.has_results:
        return []
    dataset = options.dataset_name
    metrics = [
        ("accuracy", "accuracy", "Top-1 Accuracy"),
        ("top5_accuracy", "top_5_accuracy", "Top-5 Accuracy"),
        ("teacher_accuracy", "teacher_accuracy", "Teacher Top-1 Accuracy"),
        ("teacher_top5_accuracy", "teacher_top_5_accuracy", "Teacher Top-5 Accuracy"),
    ]
    return [
        EvalResult(
            task_type="image-classification",
            task_name="Image Classification",
            dataset_type=dataset or "custom",
            dataset_name=dataset or "custom dataset",
            dataset_config=options.dataset_config,
            dataset_split=options.eval_split,
            metric_type=metric_type,
            metric_name=metric_name,
            metric_value=round(summary.last[key], 6),
        )
        for key, metric_type, metric_name in metrics
        if summary.last.get(key) is not None
    ]


def build_card_data(
    *,
    model_name: str,
    methods: Sequence[str],
    summary: EvalSummary,
    options: ModelCardOptions,
    extra_tags: Sequence[str] = (),
    library_name: str = "transformers",
) -> ModelCardData:
    """The YAML metadata of a student card.

    Args:
        model_name: name of the model (needed by the model-index).
        methods: distillation methods used (each becomes a tag).
        summary: evaluation results; the model-index is written only when it has some.
        options: dataset, license, language, base model and extra tags.
        extra_tags: more tags (e.g. the model's ``model_tags``).
        library_name: ``"transformers"`` (zoo, timm and 🤗 students); ``"pytorch"`` for a plain ``nn.Module``.
    """
    tags: list[str] = []
    for tag in [
        "hf_relkd",
        "knowledge-distillation",
        *methods,
        "image-classification",
        *extra_tags,
        *options.tags,
    ]:
        if tag and tag not in tags:
            tags.append(tag)
    eval_results = _eval_results(summary, options)
    return ModelCardData(
        language=options.language,
        license=options.license,
        library_name=library_name,
        pipeline_tag="image-classification",
        tags=tags,
        datasets=[options.dataset_name] if options.dataset_name else None,
        metrics=["accuracy"],
        base_model=options.base_model,
        model_name=model_name,
        eval_results=eval_results or None,
    )


def _quickstart(student: ModelInfo, repo: str) -> dict[str, str]:
    """Code snippets that load the saved folder / Hub repo."""
    snippets: dict[str, str] = {}
    pipeline_code = textwrap.dedent(
        f"""\
        from PIL import Image
        from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

        model_id = "{repo}"  # or the local folder written by trainer.save_model()
        """
    )
    usage = textwrap.dedent(
        """\
        classifier = pipeline("image-classification", model=model_id{extra})
        print(classifier(Image.open("image.png")))

        processor = AutoImageProcessor.from_pretrained(model_id)
        model = AutoModelForImageClassification.from_pretrained(model_id{extra}).eval()
        logits = model(**processor(images=Image.open("image.png"), return_tensors="pt")).logits
        print(model.config.id2label[logits.argmax(-1).item()])
        """
    )
    if student.kind == "zoo":
        snippets["With hf_relkd installed (`pip install hf_relkd`)"] = (
            pipeline_code.replace(
                "from PIL import Image\n",
                "from PIL import Image\nimport hf_relkd.models  # registers the CIFAR zoo with the Auto classes\n",
            )
            + "\n"
            + usage.format(extra="")
        )
        snippets["Without hf_relkd (only `transformers`): the modelling code ships in the repo"] = (
            pipeline_code + "\n" + usage.format(extra=", trust_remote_code=True")
        )
    elif student.kind == "torch":
        snippets["Load the weights into the same `nn.Module` class"] = textwrap.dedent(
            f"""\
            from safetensors.torch import load_file

            model = {student.model_class}(...)  # the class the student was built with
            model.load_state_dict(load_file("model.safetensors"))
            """
        )
    else:
        snippets["With 🤗 Transformers"] = pipeline_code + "\n" + usage.format(extra="")
    if student.kind == "timm":
        snippets["With timm"] = textwrap.dedent(
            f"""\
            import timm
            from PIL import Image

            model = timm.create_model("hf-hub:{repo}", pretrained=True).eval()  # or "local-dir:/path/to/folder"
            config = timm.data.resolve_data_config({{}}, model=model)  # the student's input size and normalisation
            transform = timm.data.create_transform(**config)
            logits = model(transform(Image.open("image.png").convert("RGB")).unsqueeze(0))
            """
        )
    return snippets


def _description(
    model_name: str,
    student: ModelInfo,
    teacher: ModelInfo,
    methods: Sequence[str],
    options: ModelCardOptions,
) -> str:
    method_names = [METHOD_INFO[m].title if m in METHOD_INFO else m for m in methods]
    how = f"plus {' + '.join(method_names)}" if method_names else "only"
    teacher_name = (
        f"`{teacher.name_or_path}`" if teacher.name_or_path else f"a {teacher.architecture} teacher"
    )
    data = f" on `{options.dataset_name}`" if options.dataset_name else ""
    text = (
        f"**{model_name}** is a {student.architecture} image classifier ({_params(student.num_parameters)} "
        f"parameters) distilled{data} from {teacher_name} ({teacher.architecture}, "
        f"{_params(teacher.num_parameters)} parameters) with the cross-entropy to the labels {how}, using "
        f"[hf_relkd](https://github.com/hf-relkd/hf_relkd)'s `RelationalDistillationTrainer`. Only the student is "
        "in this repository: the teacher and the distillation state (projection heads, memory queue, adaptor) are "
        "not."
    )
    if options.description:
        text += "\n\n" + options.description.strip()
    return text


def _results(summary: EvalSummary, options: ModelCardOptions) -> dict[str, Any]:
    if not summary.has_results:
        return {
            "has_results": False,
            "no_results": "No evaluation results yet: the student has not been evaluated during this run (no "
            "`eval_accuracy` in the training logs), so this card reports no accuracy.",
        }
    split = f"the `{options.eval_split}` split" if options.eval_split else "the evaluation split"
    source = f" of `{options.dataset_name}`" if options.dataset_name else ""
    last, best = summary.last, summary.best
    best_when = _when(summary.best_epoch, summary.best_step)
    rows = [
        {
            "name": "Student (this model)",
            "top1": _pct(last.get("accuracy")),
            "top5": _pct(last.get("top5_accuracy")),
            "best": f"{_pct(best.get('accuracy'))} ({best_when})"
            if best_when
            else _pct(best.get("accuracy")),
        }
    ]
    if "teacher_accuracy" in last:
        rows.append(
            {
                "name": "Teacher",
                "top1": _pct(last.get("teacher_accuracy")),
                "top5": _pct(last.get("teacher_top5_accuracy")),
                "best": "frozen: same as last",
            }
        )
    if "teacher_agreement" in last:
        rows.append(
            {
                "name": "Student–teacher top-1 agreement",
                "top1": _pct(last.get("teacher_agreement")),
                "top5": "n/a",
                "best": _pct(best.get("teacher_agreement")),
            }
        )
    note = (
        f"Accuracy on {split}{source}. *Last* is the last evaluation ({_when(summary.last_epoch, summary.last_step)}, "
        f"the number to report); *best* is the maximum over the {summary.num_evaluations} evaluation(s) of the run "
        "(optimistic if the same split was used to select it)."
    )
    return {"has_results": True, "rows": rows, "note": note}


def render_model_card(
    *,
    student: ModelInfo,
    teacher: ModelInfo,
    config: Mapping[str, Any],
    log_history: Sequence[Mapping[str, Any]],
    options: ModelCardOptions | None = None,
    methods: Sequence[str] | None = None,
    num_processes: int = 1,
    optimizer: str | None = None,
    global_step: int | None = None,
    epoch: float | None = None,
    plot_filename: str | None = None,
    model_name: str | None = None,
    extra_tags: Sequence[str] = (),
    versions: Mapping[str, str] | None = None,
) -> ModelCard:
    """Render the student card from plain data.

    Args:
        student / teacher: :class:`ModelInfo` of both networks (see :func:`describe_model`).
        config: the training config as a mapping (``trainer.args.to_dict()``).
        log_history: ``trainer.state.log_history``.
        options: dataset, license, names (default: :class:`ModelCardOptions()`).
        methods: the distillation methods that ran (default: inferred from the weights in ``config``).
        num_processes: data-parallel processes.
        optimizer: description of the optimizer actually used (default: ``config["optim"]``).
        global_step / epoch: how far training went.
        plot_filename: file name of the training-curves PNG saved beside the card, if any.
        model_name: name shown in the card (default: ``options.model_name``, else ``"student"``).
        extra_tags: more metadata tags.
        versions: framework versions (default: :func:`framework_versions`).

    Returns:
        A ``huggingface_hub.ModelCard``; ``card.save(folder / "README.md")`` writes it.
    """
    options = options or ModelCardOptions()
    model_name = model_name or options.model_name or "student"
    methods = enabled_methods(config, methods)
    summary = summarize_evaluations(log_history)
    card_data = build_card_data(
        model_name=model_name,
        methods=methods,
        summary=summary,
        options=options,
        extra_tags=extra_tags,
        library_name="pytorch" if student.kind == "torch" else "transformers",
    )
    settings = method_settings(config, methods)
    help_text = _field_help()
    method_blocks = []
    for name in methods:
        info = METHOD_INFO.get(name)
        method_blocks.append(
            {
                "name": name,
                "title": info.title if info else name,
                "paper": info.paper if info else "",
                "settings": [
                    {"field": k, "value": _fmt(v), "help": help_text.get(k, "")}
                    for k, v in settings["methods"][name].items()
                ],
            }
        )
    shared = [
        {
            "field": k,
            "value": "auto (input of the classifier)"
            if v is None and k.endswith("_feature_module")
            else _fmt(v),
            "help": help_text.get(k, ""),
        }
        for k, v in settings["shared"].items()
    ]
    reduction = teacher.num_parameters / student.num_parameters if student.num_parameters else float("nan")
    labels = student.label_names or []
    label_preview = ", ".join(f"`{n}`" for n in labels[:10]) + (", …" if len(labels) > 10 else "")
    repo = options.repo_id or f"your-username/{model_name}"
    citations = [CITATIONS[m] for m in methods if m in CITATIONS] + [CITATIONS["hf_relkd"]]
    return ModelCard.from_template(
        card_data,
        template_path=str(card_template_path()),
        model_name=model_name,
        description=_description(model_name, student, teacher, methods, options),
        results=_results(summary, options),
        teacher=teacher,
        student=student,
        teacher_params=_params(teacher.num_parameters),
        student_params=_params(student.num_parameters),
        size_sentence=_size_sentence(reduction),
        label_preview=label_preview,
        loss_formula=loss_formula(config, methods),
        methods_used=method_blocks,
        shared_settings=shared,
        recipe=training_recipe(
            config, num_processes=num_processes, optimizer=optimizer, global_step=global_step, epoch=epoch
        ),
        plot_filename=plot_filename,
        quickstart=_quickstart(student, repo),
        versions=dict(versions) if versions is not None else framework_versions(),
        citations=citations,
    )
