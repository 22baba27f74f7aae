"""One shared implementation of the CIFAR-100 recipes (``recipes/cifar100_*.py``).

Each recipe script is a few lines that call :func:`main` with its name (``"teacher"``, ``"kd"``, ``"rkd"``, ``"rrd"``,
``"vrm"``). The command line is parsed with ``transformers.HfArgumentParser((ScriptArguments,
RelationalDistillationConfig))``; values are layered, later ones winning:

1. the dataclass defaults,
2. the paper protocol (:data:`PAPER_PROTOCOL`: SGD with momentum 0.9, weight decay 5e-4, batch 64, 240 epochs, lr 0.05
   -- 0.01 for MobileNetV2 / ShuffleV1 / ShuffleV2 -- decayed x0.1 at epochs 150/180/210, no warm-up, evaluation every
   epoch),
3. the recipe's method defaults (:data:`RECIPE_DEFAULTS`),
4. the YAML file given with ``--config`` (its optional ``env:`` mapping is exported to the environment),
5. the command line.

Everything fails in the first seconds, before anything is written, on a missing teacher, a dataset that cannot be
loaded or lacks the expected columns, and a teacher whose number of classes differs from the dataset's.

The teacher recipe trains with :class:`CrossEntropyTrainer`, the stock ``transformers.Trainer`` plus the benchmark's
multi-step schedule: there is no teacher to distil from yet, so the distillation trainer does not apply.

The model saved at the end is the last epoch's (the benchmark reports the last epoch; ``--load_best_model_at_end``
saves the best instead); ``results.json`` has both the last-epoch and the best accuracy. Notes on the protocol:
transformers' SGD takes its momentum from ``optim_args`` (``"momentum=0.9"``, set automatically for ``--optim sgd``),
and the Trainer exempts biases (and LayerNorm weights, which the zoo does not have) from weight decay, whereas the
reference code decays every parameter. ``per_device_train_batch_size`` is per process: with two GPUs pass 32 to keep
the benchmark's global batch of 64.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import glob
import json
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import HfArgumentParser, Trainer

from .data import (
    CIFAR100_NORMALIZATION,
    DIGITS_NORMALIZATION,
    IMAGENET_NORMALIZATION,
    DistillationCollator,
    Normalization,
    Renormalize,
    ViewTransform,
    build_image_processor,
)
from .metrics import DistillationMetrics
from .models import create_model
from .models.cifar import canonical_architecture_name
from .trainer import RelationalDistillationConfig, RelationalDistillationTrainer
from .trainer.schedule import MultiStepScheduleMixin

logger = logging.getLogger(__name__)

__all__ = [
    "LOW_LR_ARCHITECTURES",
    "PAPER_PROTOCOL",
    "RECIPES",
    "RECIPE_DEFAULTS",
    "CrossEntropyTrainer",
    "RecipeError",
    "ScriptArguments",
    "format_results",
    "load_image_dataset",
    "load_teacher",
    "cli",
    "main",
    "paper_learning_rate",
    "parse_normalization",
    "parse_recipe_args",
    "run_recipe",
]

#: Recipe names accepted by :func:`main`.
RECIPES: tuple[str, ...] = ("teacher", "kd", "rkd", "rrd", "vrm")

#: Students trained with lr 0.01 instead of 0.05 in the benchmark (RepDistiller ``train_student.py``).
LOW_LR_ARCHITECTURES: frozenset[str] = frozenset({"MobileNetV2", "ShuffleV1", "ShuffleV2"})

#: Training-argument defaults of the CIFAR-100 benchmark protocol (a user value always wins). The learning rate is
#: chosen per architecture by :func:`paper_learning_rate`; ``optim_args="momentum=0.9"`` is added when the optimizer
#: is SGD and no ``optim_args`` are given (transformers' SGD reads ``momentum`` from ``optim_args``).
PAPER_PROTOCOL: dict[str, Any] = {
    "optim": "sgd",
    "weight_decay": 5e-4,
    "per_device_train_batch_size": 64,
    "per_device_eval_batch_size": 128,
    "num_train_epochs": 240,
    "lr_decay_epochs": [150, 180, 210],
    "lr_decay_rate": 0.1,
    "warmup_steps": 0,
    "lr_scheduler_type": "constant",  # replaced by the multi-step schedule of lr_decay_epochs
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "save_total_limit": 1,
    "metric_for_best_model": "accuracy",
    "greater_is_better": True,
    "logging_steps": 50,
    "disable_tqdm": False,
    "report_to": "none",
}

#: What each recipe switches on (the loss weights follow the papers; RKD/RRD/VRM weights come from ``methods``).
RECIPE_DEFAULTS: dict[str, dict[str, Any]] = {
    "teacher": {"methods": [], "ce_weight": 1.0},
    # RepDistiller's KD baseline: -r 0.1 -a 0.9, T = 4
    "kd": {"methods": ["kd"], "ce_weight": 0.1, "kd_weight": 0.9, "kd_temperature": 4.0},
    "rkd": {"methods": ["rkd"], "ce_weight": 1.0},  # distance 25, angle 50
    "rrd": {"methods": ["rrd"], "ce_weight": 1.0},  # RRD 1; RRD+KD with --kd_weight 1
    "vrm": {"methods": ["vrm"], "ce_weight": 1.0},  # alpha 128, beta 32, with a RandAugment virtual view
}

_NAMED_NORMALIZATIONS = {
    "cifar100": CIFAR100_NORMALIZATION,
    "imagenet": IMAGENET_NORMALIZATION,
    "digits": DIGITS_NORMALIZATION,
}


class RecipeError(ValueError):
    """A recipe input is wrong; the message says what to pass instead."""


class _Unset:
    """Placeholder default for values resolved after parsing (they depend on other arguments)."""

    def __repr__(self) -> str:
        return "auto"

    __str__ = __repr__


_UNSET = _Unset()


@dataclass
class ScriptArguments:
    """Data and model arguments of the CIFAR-100 recipes (the training and distillation arguments are those of
    :class:`~hf_relkd.RelationalDistillationConfig`)."""

    dataset_name: str = field(
        default="uoft-cs/cifar100",
        metadata={
            "help": "Hub dataset id, or a local path: a folder written by `save_to_disk`, a folder of parquet files "
            "or an imagefolder directory (train/ and test/ sub-folders), or a parquet file / glob (files whose "
            "name contains the split name go to that split)."
        },
    )
    dataset_config: str | None = field(
        default=None, metadata={"help": "Dataset configuration name (for Hub datasets with several)."}
    )
    train_split: str = field(default="train", metadata={"help": "Split used for training."})
    eval_split: str = field(default="test", metadata={"help": "Split evaluated after every epoch."})
    image_column: str | None = field(
        default=None, metadata={"help": "Image column (default: auto-detect img, image, picture, photo)."}
    )
    label_column: str | None = field(
        default=None,
        metadata={"help": "Integer label column (default: auto-detect fine_label, label, labels)."},
    )
    student_model: str = field(
        default="resnet8x4",
        metadata={
            "help": "Student architecture: a CIFAR zoo name (resnet8x4, wrn_16_2, ...) or a timm name."
        },
    )
    teacher_model: str = field(
        default="resnet32x4",
        metadata={
            "help": "Architecture trained by the teacher recipe (zoo or timm name); unused when distilling."
        },
    )
    image_size: int = field(default=32, metadata={"help": "Training and evaluation resolution."})
    randaugment_num_ops: int = field(default=2, metadata={"help": "RandAugment N of the VRM virtual view."})
    randaugment_magnitude: int = field(
        default=9, metadata={"help": "RandAugment M (0..30) of the VRM virtual view."}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Keep only the first N training examples (for quick runs)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Keep only the first N evaluation examples (for quick runs)."}
    )
    normalization: str = field(
        default="cifar100",
        metadata={
            "help": "Input normalisation of the student: cifar100, imagenet, digits, dataset (computed on up to "
            "10,000 training images) or explicit 'mean_r,mean_g,mean_b:std_r,std_g,std_b'. The teacher gets the "
            "normalisation of its saved image processor (renormalised on the fly when it differs)."
        },
    )
    config: str | None = field(
        default=None,
        metadata={
            "help": "YAML file of argument values (used as defaults; the command line overrides them). An `env:` "
            "mapping in it is exported as environment variables."
        },
    )


# ----------------------------------------------------------------------------------------------------------------------
# argument parsing
# ----------------------------------------------------------------------------------------------------------------------
def paper_learning_rate(architecture: str) -> float:
    """The benchmark learning rate of an architecture.

    Args:
        architecture: a zoo name (any spelling/alias) or a timm name.

    Returns:
        0.01 for MobileNetV2, ShuffleV1 and ShuffleV2, 0.05 for everything else.
    """
    return 0.01 if canonical_architecture_name(architecture) in LOW_LR_ARCHITECTURES else 0.05


def parse_normalization(value: str | Normalization) -> Normalization | None:
    """Read the ``--normalization`` argument.

    Args:
        value: a :class:`Normalization`, a name (``cifar100``, ``imagenet``, ``digits``), ``dataset`` (returns None:
            the caller computes it from the data) or ``"m_r,m_g,m_b:s_r,s_g,s_b"``.

    Returns:
        The normalisation, or None for ``dataset``.

    Raises:
        RecipeError: for anything else.
    """
    if isinstance(value, Normalization):
        return value
    text = str(value).strip().lower()
    if text in _NAMED_NORMALIZATIONS:
        return _NAMED_NORMALIZATIONS[text]
    if text == "dataset":
        return None
    try:
        mean, std = text.split(":")
        return Normalization(
            mean=tuple(float(v) for v in mean.split(",")), std=tuple(float(v) for v in std.split(","))
        )
    except ValueError as err:
        raise RecipeError(
            f"--normalization {value!r} is not understood: pass one of {sorted(_NAMED_NORMALIZATIONS)}, 'dataset', "
            "or explicit statistics 'mean_r,mean_g,mean_b:std_r,std_g,std_b' (e.g. "
            "'0.5071,0.4867,0.4408:0.2675,0.2565,0.2761')."
        ) from err


def _load_yaml_config(path: str, valid_keys: set[str]) -> dict[str, Any]:
    import yaml

    if not os.path.isfile(path):
        raise RecipeError(
            f"--config {path!r} does not exist; pass the path of a YAML file (see recipes/configs/)."
        )
    with open(path, encoding="utf-8") as f:
        values = yaml.safe_load(f) or {}
    if not isinstance(values, Mapping):
        raise RecipeError(
            f"--config {path!r} must hold a mapping of argument names to values, got {type(values).__name__}."
        )
    values = dict(values)
    env = values.pop("env", None) or {}
    if not isinstance(env, Mapping):
        raise RecipeError(f"`env` in {path!r} must be a mapping of variable names to values, got {env!r}.")
    unknown = sorted(set(values) - valid_keys)
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, sorted(valid_keys), n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise RecipeError(
            f"--config {path!r} has unknown key(s): {', '.join(hints)}. Use the names of the command-line "
            "arguments (see --help) without the leading dashes, plus an optional `env:` mapping."
        )
    for name, value in env.items():
        os.environ[str(name)] = str(value)
    return values


def _enum_value(value: Any) -> Any:
    return getattr(value, "value", value)


def parse_recipe_args(
    recipe: str, argv: Sequence[str] | None = None
) -> tuple[ScriptArguments, RelationalDistillationConfig]:
    """Parse a recipe's command line into its dataclasses, with the paper protocol and YAML defaults.

    Args:
        recipe: one of :data:`RECIPES`.
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        ``(script_args, training_args)``.

    Raises:
        RecipeError: unknown recipe, unreadable or invalid ``--config``.
        SystemExit: on ``--help`` or an unknown command-line argument (argparse's behaviour).
    """
    if recipe not in RECIPE_DEFAULTS:
        raise RecipeError(f"Unknown recipe {recipe!r}; pass one of {list(RECIPES)}.")
    parser = HfArgumentParser((ScriptArguments, RelationalDistillationConfig))
    parser.description = f"CIFAR-100 {recipe} recipe of hf_relkd (defaults: the benchmark protocol)."
    valid_keys = {action.dest for action in parser._actions if action.dest != "help"}

    defaults: dict[str, Any] = {**PAPER_PROTOCOL, **RECIPE_DEFAULTS[recipe]}
    defaults["dataloader_pin_memory"] = torch.cuda.is_available()
    defaults["dataloader_num_workers"] = min(
        4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 4
    )
    for name in ("learning_rate", "output_dir", "optim_args"):
        defaults[name] = _UNSET

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    if known.config:
        defaults.update(_load_yaml_config(known.config, valid_keys))
    parser.set_defaults(**defaults)
    namespace, remaining = parser.parse_known_args(argv)
    if remaining:
        parser.error(f"unrecognized arguments: {' '.join(remaining)}")

    architecture = namespace.teacher_model if recipe == "teacher" else namespace.student_model
    if namespace.learning_rate is _UNSET:
        namespace.learning_rate = paper_learning_rate(architecture)
    if namespace.output_dir is _UNSET:
        safe = str(architecture).replace("/", "_")
        namespace.output_dir = os.path.join(
            "outputs", f"teachers/{safe}" if recipe == "teacher" else f"cifar100_{recipe}_{safe}"
        )
    if namespace.optim_args is _UNSET:
        namespace.optim_args = "momentum=0.9" if str(_enum_value(namespace.optim)) == "sgd" else None

    outputs = []
    for dtype in parser.dataclass_types:
        names = {f.name for f in dataclasses.fields(dtype) if f.init}
        outputs.append(dtype(**{k: v for k, v in vars(namespace).items() if k in names}))
    script_args, training_args = outputs
    return script_args, training_args


# ----------------------------------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------------------------------
def _offline_env() -> bool:
    return any(
        os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
        for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


@contextmanager
def _offline_mode() -> Iterator[None]:
    """Make datasets / huggingface_hub use their local cache only (they read these flags at import time)."""
    import datasets
    import huggingface_hub.constants as hub_constants

    saved = datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved


def _hub_status(repo_id: str, repo_type: str) -> str:
    """``"ok"`` when the Hub answers for this repo, ``"missing"`` when it answers that it does not exist (or is
    private), ``"unreachable"`` when it cannot be asked (offline mode, no network)."""
    if _offline_env():
        return "unreachable"
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    try:
        if repo_type == "dataset":
            HfApi().dataset_info(repo_id, timeout=10)
        else:
            HfApi().model_info(repo_id, timeout=10)
    except RepositoryNotFoundError:
        return "missing"
    except HfHubHTTPError:
        return "ok"  # reachable (e.g. gated): let the loader report the details
    except Exception:  # network errors (httpx / requests / OfflineModeIsEnabled)
        return "unreachable"
    return "ok"


def _looks_like_path(name: str) -> bool:
    return (
        os.path.isabs(name)
        or name.startswith(("./", "../", "~", ".\\"))
        or name.count("/") > 1
        or any(ch in name for ch in "*?[")
        or name.endswith((".parquet", ".arrow"))
    )


def _split_files(files: list[str], splits: Sequence[str]) -> dict[str, list[str]]:
    data_files: dict[str, list[str]] = {}
    for split in splits:
        chosen = [f for f in files if split in os.path.basename(f)]
        if chosen:
            data_files[split] = chosen
    return data_files or {splits[0]: files}


def load_image_dataset(
    name: str,
    config: str | None = None,
    splits: Sequence[str] = ("train", "test"),
) -> Any:
    """Load an image-classification dataset from the Hub or from a local path.

    Args:
        name: a Hub dataset id, a ``save_to_disk`` folder, a folder that ``datasets.load_dataset`` understands
            (parquet files, an imagefolder tree), or a parquet/arrow file or glob.
        config: the dataset configuration (Hub datasets only).
        splits: splits that must exist; for a file glob, files whose name contains a split's name go to that split
            (all files go to the first split when none matches).

    Returns:
        A ``datasets.DatasetDict`` holding at least ``splits``.

    Raises:
        RecipeError: the path does not exist, the Hub cannot be reached and nothing is cached, the Hub has no such
            dataset, or a split is missing. Each message says what to pass instead.
    """
    import datasets

    expanded = os.path.expanduser(name)
    if os.path.isdir(expanded):
        if os.path.isfile(os.path.join(expanded, "dataset_dict.json")) or os.path.isfile(
            os.path.join(expanded, "state.json")
        ):
            loaded = datasets.load_from_disk(expanded)
        else:
            try:
                loaded = datasets.load_dataset(expanded, config)
            except (ValueError, FileNotFoundError) as err:
                raise RecipeError(
                    f"Could not read the dataset folder {name!r} ({err}). Pass a folder written by "
                    "`DatasetDict.save_to_disk`, a folder of parquet files, or an imagefolder tree (train/<class>/...)."
                ) from err
    elif os.path.isfile(expanded) or (_looks_like_path(name) and glob.glob(expanded)):
        files = sorted(glob.glob(expanded)) if not os.path.isfile(expanded) else [expanded]
        builder = "arrow" if files[0].endswith(".arrow") else "parquet"
        loaded = datasets.load_dataset(builder, data_files=_split_files(files, list(splits)))
    elif _looks_like_path(name):
        raise RecipeError(
            f"The dataset path {name!r} does not exist (no folder or file matches). Pass an existing `save_to_disk` "
            "folder, parquet folder/file/glob or imagefolder directory, or a Hub dataset id such as 'uoft-cs/cifar100'."
        )
    else:
        status = _hub_status(name, "dataset")
        if status == "missing":
            raise RecipeError(
                f"There is no dataset {name!r} on the Hugging Face Hub (or it is private). Check the id, log in "
                "with `hf auth login` for a private one, or pass a local path (a `save_to_disk` folder, parquet "
                "files or an imagefolder directory)."
            )
        try:
            if status == "unreachable":
                with _offline_mode():
                    loaded = datasets.load_dataset(name, config)
            else:
                loaded = datasets.load_dataset(name, config)
        except (ConnectionError, OSError) as err:
            raise RecipeError(
                f"Could not reach the Hugging Face Hub to load the dataset {name!r}, and there is no local copy in "
                f"the cache ({type(err).__name__}: {str(err).splitlines()[0][:200]}). Pass a local path instead: "
                "download it where the Hub is reachable with `datasets.load_dataset(...).save_to_disk('cifar100')` "
                "and run with `--dataset_name cifar100`."
            ) from err
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({splits[0]: loaded})
    missing = [s for s in splits if s not in loaded]
    if missing:
        raise RecipeError(
            f"The dataset {name!r} has splits {list(loaded)} but not {missing}. Pass `--train_split` / `--eval_split` "
            "naming existing splits."
        )
    return loaded


def _label_info(train, eval_split, label_column: str) -> tuple[int, dict[int, str] | None]:
    from datasets import ClassLabel

    feature = train.features.get(label_column) if train.features is not None else None
    if isinstance(feature, ClassLabel):
        return feature.num_classes, dict(enumerate(feature.names))
    labels = list(train[label_column]) + list(eval_split[label_column])
    if not labels:
        raise RecipeError("The dataset is empty; pass a dataset with at least one training example.")
    if min(labels) < 0:
        raise RecipeError(
            f"Label column {label_column!r} holds negative ids ({min(labels)}); labels must be class ids 0..C-1."
        )
    return int(max(labels)) + 1, None


# ----------------------------------------------------------------------------------------------------------------------
# teacher
# ----------------------------------------------------------------------------------------------------------------------
def load_teacher(
    name_or_path: str, num_labels: int, dataset_name: str = "the dataset"
) -> tuple[Any, Normalization | None]:
    """Load a teacher with ``AutoModelForImageClassification`` and check it against the dataset.

    Args:
        name_or_path: a folder written by ``save_pretrained`` (e.g. by ``recipes/cifar100_teacher.py``) or a Hub id.
        num_labels: the number of classes of the dataset.
        dataset_name: used in error messages.

    Returns:
        ``(teacher, normalization)``: the model (``config._name_or_path`` keeps ``name_or_path``) and the
        normalisation of its saved image processor, or None when it has none.

    Raises:
        RecipeError: the teacher cannot be loaded, or predicts another number of classes than the dataset has.
    """
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from . import models  # noqa: F401  (registers the CIFAR zoo with the Auto classes)

    expanded = os.path.expanduser(name_or_path)
    local = os.path.isdir(expanded)
    if not local and _looks_like_path(name_or_path):
        raise RecipeError(
            f"--teacher_model_name_or_path {name_or_path!r} does not exist. Pass the folder written by "
            "recipes/cifar100_teacher.py (its --output_dir) or a Hub model id."
        )
    kwargs: dict[str, Any] = {}
    if not local:
        status = _hub_status(name_or_path, "model")
        if status == "missing":
            raise RecipeError(
                f"There is no model {name_or_path!r} on the Hugging Face Hub (or it is private). Pass a local folder "
                "written by recipes/cifar100_teacher.py, or a valid Hub model id."
            )
        if status == "unreachable":
            kwargs["local_files_only"] = True
    try:
        teacher = AutoModelForImageClassification.from_pretrained(
            expanded if local else name_or_path, **kwargs
        )
    except (OSError, ValueError) as err:
        where = (
            "the folder has no loadable model" if local else "the Hub cannot be reached and nothing is cached"
        )
        raise RecipeError(
            f"Could not load the teacher {name_or_path!r}: {where} ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200]}). Pass a folder written by recipes/cifar100_teacher.py (or by "
            "`save_pretrained`)."
        ) from err
    teacher_labels = int(teacher.config.num_labels)
    if teacher_labels != num_labels:
        raise RecipeError(
            f"The teacher {name_or_path!r} predicts {teacher_labels} classes but {dataset_name} has {num_labels}. "
            "Pass a teacher trained on this dataset (e.g. the output of recipes/cifar100_teacher.py with the same "
            "--dataset_name), or the dataset the teacher was trained on."
        )
    try:
        processor = AutoImageProcessor.from_pretrained(expanded if local else name_or_path, **kwargs)
        normalization = Normalization.from_model(processor)
    except (OSError, ValueError, TypeError):
        normalization = None
    return teacher, normalization


# ----------------------------------------------------------------------------------------------------------------------
# cross-entropy trainer (teacher recipe, CE baselines)
# ----------------------------------------------------------------------------------------------------------------------
class CrossEntropyTrainer(MultiStepScheduleMixin, Trainer):
    """``transformers.Trainer`` (plain cross-entropy) with the benchmark multi-step schedule.

    When ``args.lr_decay_epochs`` is set (a :class:`RelationalDistillationConfig` field), the learning rate is
    multiplied by ``args.lr_decay_rate`` at each of those epochs (converted to optimizer steps), after the Trainer's
    linear warm-up if any; otherwise the Trainer's own scheduler is used. Used to train teachers and CE-only students.
    """


# ----------------------------------------------------------------------------------------------------------------------
# the recipe
# ----------------------------------------------------------------------------------------------------------------------
def _optimizer_summary(trainer: Trainer) -> dict[str, Any]:
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    if optimizer is None:
        return {}
    group = optimizer.param_groups[0]
    summary = {"name": type(optimizer).__name__}
    for key in ("momentum", "weight_decay", "nesterov"):
        if key in group:
            summary[key] = group[key]
    summary["learning_rate"] = float(trainer.args.learning_rate)
    return summary


def _collect_results(trainer: Trainer) -> dict[str, Any]:
    history = trainer.state.log_history
    evals = [entry for entry in history if "eval_accuracy" in entry]
    if not evals or evals[-1].get("step") != trainer.state.global_step:
        trainer.evaluate()
        evals = [entry for entry in trainer.state.log_history if "eval_accuracy" in entry]
    last = evals[-1]
    best = max(evals, key=lambda entry: entry["eval_accuracy"])

    def pick(entry: Mapping[str, Any]) -> dict[str, Any]:
        keys = ("accuracy", "top5_accuracy", "teacher_accuracy", "teacher_agreement", "loss")
        out = {k: entry[f"eval_{k}"] for k in keys if f"eval_{k}" in entry}
        out.update(epoch=entry.get("epoch"), step=entry.get("step"))
        return out

    return {"last": pick(last), "best": pick(best), "num_evaluations": len(evals)}


def format_results(results: Mapping[str, Any]) -> str:
    """A small Markdown table of a recipe's last-epoch and best accuracy.

    Args:
        results: the dict written to ``results.json`` by :func:`run_recipe`.

    Returns:
        The table as a string.
    """

    def pct(value: Any) -> str:
        return f"{100 * value:.2f}" if isinstance(value, (int, float)) else "-"

    def epoch(value: Any) -> str:
        return f"{value:.2f}" if isinstance(value, (int, float)) else "-"

    rows = [
        "| | epoch | top-1 (%) | top-5 (%) | teacher top-1 (%) | teacher agreement (%) |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("last", "best"):
        entry = results[name]
        rows.append(
            f"| {name} | {epoch(entry.get('epoch'))} | {pct(entry.get('accuracy'))} | "
            f"{pct(entry.get('top5_accuracy'))} | {pct(entry.get('teacher_accuracy'))} | "
            f"{pct(entry.get('teacher_agreement'))} |"
        )
    return "\n".join(rows)


def _resolve_data(
    script_args: ScriptArguments, training_args: RelationalDistillationConfig, virtual_view: bool
):
    splits = [script_args.train_split, script_args.eval_split]
    with training_args.main_process_first(desc="loading the dataset"):
        dataset = load_image_dataset(script_args.dataset_name, script_args.dataset_config, splits)
    train, evaluation = dataset[script_args.train_split], dataset[script_args.eval_split]
    if script_args.max_train_samples is not None:
        train = train.select(range(min(script_args.max_train_samples, len(train))))
    if script_args.max_eval_samples is not None:
        evaluation = evaluation.select(range(min(script_args.max_eval_samples, len(evaluation))))
    if len(train) == 0 or len(evaluation) == 0:
        raise RecipeError(
            f"The {'training' if len(train) == 0 else 'evaluation'} split is empty; pass a dataset (or "
            "--max_*_samples) with at least one example in each split."
        )
    checker = ViewTransform(image_column=script_args.image_column, label_column=script_args.label_column)
    try:
        checker.check_dataset(train)
        columns = checker.check_dataset(evaluation)
    except ValueError as err:
        raise RecipeError(
            f"{err} (dataset {script_args.dataset_name!r}; use --image_column / --label_column)"
        ) from err
    num_labels, id2label = _label_info(train, evaluation, columns["label"])
    normalization = parse_normalization(script_args.normalization)
    if normalization is None:
        normalization = Normalization.from_dataset(train, image_column=columns["image"], max_samples=10_000)
    common = dict(
        image_size=script_args.image_size,
        normalization=normalization,
        image_column=columns["image"],
        label_column=columns["label"],
    )
    train_transform = ViewTransform(
        train=True,
        virtual_view=virtual_view,
        randaugment_num_ops=script_args.randaugment_num_ops,
        randaugment_magnitude=script_args.randaugment_magnitude,
        **common,
    )
    train = train.with_transform(train_transform)
    evaluation = evaluation.with_transform(ViewTransform(train=False, **common))
    return train, evaluation, num_labels, id2label, normalization


def run_recipe(
    recipe: str, script_args: ScriptArguments, training_args: RelationalDistillationConfig
) -> dict[str, Any]:
    """Train (and distil, for every recipe but ``"teacher"``) one CIFAR-style classifier.

    Every input check runs before anything is written to ``output_dir``. At the end the model is saved with
    ``trainer.save_model()`` (with its image processor), ``results.json`` holds the last-epoch and best accuracy, and
    a table is printed.

    Args:
        recipe: one of :data:`RECIPES`.
        script_args: data and model arguments.
        training_args: training and distillation arguments.

    Returns:
        The results (also written to ``<output_dir>/results.json`` by the main process).

    Raises:
        RecipeError: an input is wrong (missing teacher, unloadable dataset, missing columns, teacher/dataset
            mismatch); the message says what to pass instead.
    """
    if recipe not in RECIPE_DEFAULTS:
        raise RecipeError(f"Unknown recipe {recipe!r}; pass one of {list(RECIPES)}.")
    distill = recipe != "teacher"
    if distill and not training_args.teacher_model_name_or_path:
        raise RecipeError(
            f"The {recipe} recipe distils a teacher, but no --teacher_model_name_or_path was given. Train one first "
            "with `python recipes/cifar100_teacher.py --teacher_model resnet32x4 --output_dir outputs/teachers/"
            "resnet32x4` and pass `--teacher_model_name_or_path outputs/teachers/resnet32x4` (or a Hub model id)."
        )
    started = time.time()
    virtual_view = distill and "vrm" in training_args.enabled_methods
    train, evaluation, num_labels, id2label, normalization = _resolve_data(
        script_args, training_args, virtual_view
    )

    teacher = teacher_transform = None
    if distill:
        teacher, teacher_norm = load_teacher(
            training_args.teacher_model_name_or_path, num_labels, f"the dataset {script_args.dataset_name!r}"
        )
        if id2label is None and getattr(teacher.config, "id2label", None):
            id2label = {int(k): str(v) for k, v in teacher.config.id2label.items()}
        teacher_transform = Renormalize.between(normalization, teacher_norm)
        if teacher_transform is not None:
            logger.info(
                "The teacher expects %s: inputs are renormalised from %s.", teacher_norm, normalization
            )
    architecture = script_args.student_model if distill else script_args.teacher_model
    model = create_model(architecture, num_labels=num_labels, id2label=id2label)
    processor = build_image_processor(normalization, script_args.image_size)

    common = dict(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=evaluation,
        data_collator=DistillationCollator(),
        compute_metrics=DistillationMetrics(),
        processing_class=processor,
    )
    try:
        if distill:
            trainer: Trainer = RelationalDistillationTrainer(
                teacher_model=teacher, teacher_input_transform=teacher_transform, **common
            )
        else:
            trainer = CrossEntropyTrainer(**common)
    except ValueError as err:  # e.g. teacher and student label names differ, no classifier found
        raise RecipeError(str(err)) from err

    train_output = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    results: dict[str, Any] = {
        "recipe": recipe,
        "model": architecture,
        "teacher": training_args.teacher_model_name_or_path if distill else None,
        "dataset": script_args.dataset_name,
        "methods": training_args.enabled_methods if distill else [],
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "num_train_samples": len(train),
        "num_eval_samples": len(evaluation),
        "global_step": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "optimizer": _optimizer_summary(trainer),
        "train_runtime_s": train_output.metrics.get("train_runtime"),
    }
    results.update(_collect_results(trainer))
    trainer.save_model()
    trainer.save_state()
    results["wall_time_s"] = time.time() - started
    if trainer.is_world_process_zero():
        with open(os.path.join(training_args.output_dir, "results.json"), "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2, default=str)
        title = f"{recipe} recipe: {architecture}" + (
            f" <- {training_args.teacher_model_name_or_path} ({', '.join(results['methods'])})"
            if distill
            else ""
        )
        print(f"\n{title}\n{format_results(results)}\nSaved to {training_args.output_dir}")
    return results


def main(recipe: str, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Entry point of ``recipes/cifar100_<recipe>.py``.

    Args:
        recipe: one of :data:`RECIPES`.
        argv: command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The results of :func:`run_recipe`.
    """
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    script_args, training_args = parse_recipe_args(recipe, argv)
    if not math.isfinite(training_args.learning_rate) or training_args.learning_rate <= 0:
        raise RecipeError(f"--learning_rate must be a positive number, got {training_args.learning_rate}.")
    return run_recipe(recipe, script_args, training_args)


def cli(recipe: str, argv: Sequence[str] | None = None) -> None:
    """Like :func:`main`, but an input error ends the program with its message (exit status 1), no traceback.

    Args:
        recipe: one of :data:`RECIPES`.
        argv: command-line arguments (default: ``sys.argv[1:]``).
    """
    try:
        main(recipe, argv)
    except RecipeError as err:
        raise SystemExit(f"error: {err}") from None
