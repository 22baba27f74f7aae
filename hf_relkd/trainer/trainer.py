"""``RelationalDistillationTrainer``: a ``transformers.Trainer`` that distils a frozen teacher into the student."""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import random
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AutoModelForImageClassification, PreTrainedModel, Trainer
from transformers.modeling_outputs import ImageClassifierOutput
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..distributed import (
    average_gradients,
    broadcast_module,
    gather_no_grad,
    gather_with_grad,
    is_distributed,
)
from ..features import FeatureTap, classifier_num_outputs, find_classifier
from ..hub import ModelCardOptions
from ..losses import compile_losses
from ..methods import ModelDims, StepOutputs, build_methods, weighted_term
from ..metrics import DistillationMetrics
from .config import ACTIVATION_CHECKPOINTING_FIELD, RelationalDistillationConfig
from .schedule import MultiStepScheduleMixin

logger = logging.getLogger(__name__)

DISTILLATION_STATE_NAME = "distillation_state.pt"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _logits_of(outputs: Any) -> Tensor:
    if isinstance(outputs, Tensor):
        return outputs
    if isinstance(outputs, dict) and "logits" in outputs:
        return outputs["logits"]
    if hasattr(outputs, "logits"):
        return outputs.logits
    if isinstance(outputs, (tuple, list)) and outputs and isinstance(outputs[0], Tensor):
        return outputs[0]
    raise TypeError(
        f"The model returned {type(outputs).__name__}; expected logits (a tensor, or an output with `.logits`)."
    )


def _num_labels(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "num_labels", None):
        return int(config.num_labels)
    try:
        _, classifier = find_classifier(model)
    except ValueError:
        return None
    return classifier_num_outputs(classifier)


def _label_names(model: nn.Module) -> list[str] | None:
    id2label = getattr(getattr(model, "config", None), "id2label", None)
    if not id2label:
        return None
    names = [str(id2label[i]) for i in sorted(id2label)]
    # "LABEL_0", "LABEL_1", ... are transformers' placeholders, not real names
    if all(name == f"LABEL_{i}" for i, name in enumerate(names)):
        return None
    return names


@contextlib.contextmanager
def _preserved_rng_state():
    """Run a block without changing the python, numpy or torch random state (for input checks before training)."""
    py_state, np_state, torch_state = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.random.set_rng_state(torch_state)


class RelationalDistillationTrainer(MultiStepScheduleMixin, Trainer):
    """A :class:`transformers.Trainer` that trains ``model`` (the student) with cross-entropy plus any weighted mix
    of Hinton KD, RKD, RRD and VRM terms from a frozen ``teacher_model``.

    It takes the same arguments as ``Trainer`` plus the teacher. The teacher is put in eval mode, frozen, prepared by
    Accelerate in evaluation mode (never wrapped in DDP, never in the optimizer) and run without gradient. The methods
    that need penultimate embeddings (RKD, RRD) read them with a forward hook on each model's classifier, so any image
    classifier whose last layer is linear works: 🤗 Transformers models, ``TimmWrapperForImageClassification`` and
    plain ``nn.Module`` classifiers returning logits.

    Args:
        model: the student.
        teacher_model: the teacher, or a Hub id / local folder loaded with ``AutoModelForImageClassification``
            (default: ``args.teacher_model_name_or_path``).
        args: a :class:`RelationalDistillationConfig`.
        data_collator: default :class:`hf_relkd.data.DistillationCollator`.
        compute_metrics: default :class:`hf_relkd.metrics.DistillationMetrics` (top-1/top-5 accuracy and teacher
            agreement).
        teacher_input_transform: applied to the student's ``pixel_values`` before the teacher sees them, e.g.
            :class:`hf_relkd.data.Renormalize` when the teacher expects another normalisation.
        **kwargs: every other ``transformers.Trainer`` argument (``train_dataset``, ``eval_dataset``,
            ``processing_class``, ``callbacks``, ``optimizers``, ...).
    """

    _tag_names = ["hf_relkd", "knowledge-distillation", "image-classification"]

    def __init__(
        self,
        model: PreTrainedModel | nn.Module | None = None,
        teacher_model: PreTrainedModel | nn.Module | str | None = None,
        args: RelationalDistillationConfig | None = None,
        data_collator: Callable | None = None,
        compute_metrics: Callable | None = None,
        teacher_input_transform: Callable[[Tensor], Tensor] | None = None,
        **kwargs,
    ):
        if args is None:
            args = RelationalDistillationConfig(output_dir="hf_relkd_output")
        if not isinstance(args, RelationalDistillationConfig):
            raise TypeError(
                f"`args` must be a RelationalDistillationConfig, got {type(args).__name__}. Build one with the same "
                "fields: RelationalDistillationConfig(**training_args.to_dict(), methods=[...])."
            )
        if model is None:
            raise ValueError(
                "`model` (the student) is required; model_init is not supported for distillation."
            )
        teacher_model = self._load_teacher(teacher_model, args)
        self._validate_pair(model, teacher_model)
        self._check_activation_checkpointing(model, args)

        if data_collator is None:
            from ..data import DistillationCollator

            data_collator = DistillationCollator()
        if compute_metrics is None:
            compute_metrics = DistillationMetrics()
        super().__init__(
            model=model, args=args, data_collator=data_collator, compute_metrics=compute_metrics, **kwargs
        )

        # Our losses are per-batch means: let the Trainer divide them by the gradient-accumulation steps, and never
        # pass `num_items_in_batch` into the student.
        self.model_accepts_loss_kwargs = False
        self.loss_is_scaled_for_ga = False
        if not self.label_names:
            self.label_names = ["labels"]

        self.teacher = self._prepare_teacher(teacher_model)
        self.teacher_input_transform = teacher_input_transform
        self.teacher_name_or_path = self._teacher_identity(teacher_model)

        self.distillation_methods, self._student_tap, self._teacher_tap = self._build_methods(
            model, teacher_model
        )
        self.distillation_methods.to(self.args.device)
        broadcast_module(self.distillation_methods)
        if self.args.loss_compile:
            compile_losses(
                self.distillation_methods,
                backend=self.args.teacher_compile_backend,
                mode=self.args.loss_compile_mode,
            )
        self._needs_virtual = any(m.needs_virtual_view for m in self.distillation_methods.values())
        self._metrics: dict[str, dict[str, list]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._distillation_grads_step = -1
        self._parameter_count: int | None = None  # the student's, for floating_point_ops; reset by train()
        if hasattr(self.model, "add_model_tags"):
            self.model.add_model_tags(self._tag_names + self.args.enabled_methods)
        if self.args.gradient_accumulation_steps > 1 and any(
            m.relational for m in self.distillation_methods.values()
        ):
            logger.info(
                "Relational terms are computed within each micro-batch of %d samples (gradient accumulation does not "
                "enlarge the relation graph or the RRD batch); CE and KD are exact over the accumulated batch.",
                self.args.per_device_train_batch_size,
            )

    # ------------------------------------------------------------------------------------------------------------------
    # set-up
    # ------------------------------------------------------------------------------------------------------------------
    @staticmethod
    def _load_teacher(teacher_model, args: RelationalDistillationConfig) -> nn.Module:
        teacher_model = teacher_model if teacher_model is not None else args.teacher_model_name_or_path
        if teacher_model is None:
            raise ValueError(
                "No teacher: pass `teacher_model=` (a model, a Hub id or a local folder) to the trainer or set "
                "`teacher_model_name_or_path` in the config."
            )
        if isinstance(teacher_model, (str, os.PathLike)):
            from .. import models  # noqa: F401  (registers the CIFAR zoo with the Auto classes)

            try:
                teacher_model = AutoModelForImageClassification.from_pretrained(str(teacher_model))
            except OSError as err:
                raise ValueError(
                    f"Could not load the teacher {str(teacher_model)!r}: it is neither a local folder with a saved "
                    "model nor a reachable Hub repository. Pass a local folder written by `save_pretrained` (e.g. by "
                    "recipes/cifar100_teacher.py) or a model object."
                ) from err
        if not isinstance(teacher_model, nn.Module):
            raise TypeError(
                f"`teacher_model` must be an nn.Module or a path, got {type(teacher_model).__name__}."
            )
        return teacher_model

    @staticmethod
    def _validate_pair(student: nn.Module, teacher: nn.Module) -> None:
        n_teacher = _num_labels(teacher)
        if n_teacher is None:
            raise ValueError(
                f"The teacher ({type(teacher).__name__}) does not look like a classifier: it has no `config.num_labels` "
                "and no linear output layer. Pass an image-classification model (e.g. loaded with "
                "AutoModelForImageClassification)."
            )
        n_student = _num_labels(student)
        if n_student is not None and n_student != n_teacher:
            raise ValueError(
                f"The student predicts {n_student} classes but the teacher predicts {n_teacher}. Build the student with "
                f"num_labels={n_teacher} (and the teacher's id2label)."
            )
        s_names, t_names = _label_names(student), _label_names(teacher)
        if s_names is not None and t_names is not None and s_names != t_names:
            diff = [(i, s, t) for i, (s, t) in enumerate(zip(s_names, t_names)) if s != t][:5]
            raise ValueError(
                "Student and teacher use different label names (index, student, teacher): "
                f"{diff}. Build the student with the teacher's `id2label` so class i means the same for both."
            )

    @staticmethod
    def _check_activation_checkpointing(student: nn.Module, args: RelationalDistillationConfig) -> None:
        """The Trainer turns activation checkpointing on by calling the student's
        ``activation_checkpointing_enable()`` (``gradient_checkpointing_enable()`` in transformers 4.x) once training
        starts; a student without either would fail there with an AttributeError. Fail now, with what to do."""
        switch = ACTIVATION_CHECKPOINTING_FIELD
        if not getattr(args, switch, False):
            return
        if hasattr(student, "activation_checkpointing_enable") or hasattr(
            student, "gradient_checkpointing_enable"
        ):
            return
        name = type(student).__name__
        if hasattr(student, "set_grad_checkpointing"):  # timm
            raise ValueError(
                f"`{switch}=True`, but the student ({name}, a timm model) has no `{switch}_enable()` for the Trainer "
                f"to call. Leave `{switch}=False` and call `student.set_grad_checkpointing(True)` before training: "
                "timm then re-runs the checkpointed blocks in the backward pass (BatchNorm layers in them update "
                "their running statistics on both runs; the hf_relkd CIFAR models' checkpointing does not)."
            )
        raise ValueError(
            f"`{switch}=True`, but the student ({name}) has no `{switch}_enable()` for the Trainer to call. Set "
            f"`{switch}=False`, or use a student that supports it: a transformers model whose class has "
            "`supports_gradient_checkpointing`, a model of hf_relkd's CIFAR zoo, or a timm model (through "
            "`student.set_grad_checkpointing(True)`)."
        )

    def _prepare_teacher(self, teacher: nn.Module) -> nn.Module:
        if self.args.teacher_dtype not in (None, "auto"):
            teacher = teacher.to(_DTYPES[self.args.teacher_dtype])
        teacher.requires_grad_(False)
        teacher.eval()
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            teacher = teacher.to(self.args.device)
        else:
            teacher = self.accelerator.prepare_model(teacher, evaluation_mode=True)
        # DDP synchronises only the student: make every process distil from process 0's teacher (a teacher built or
        # loaded differently on some process would otherwise silently give each process another target)
        broadcast_module(_unwrap(teacher))
        teacher.eval()
        if self.args.teacher_compile and not hasattr(teacher, "_orig_mod"):  # not already compiled
            # compiled lazily at the first forward, i.e. after the feature tap's hook is registered below; Dynamo
            # traces the hook into the graph
            teacher = torch.compile(
                teacher, backend=self.args.teacher_compile_backend, mode=self.args.teacher_compile_mode
            )
        return teacher

    @staticmethod
    def _teacher_identity(teacher: nn.Module) -> str | None:
        config = getattr(teacher, "config", None)
        return getattr(config, "_name_or_path", None) or None

    def _build_methods(
        self, student: nn.Module, teacher: nn.Module
    ) -> tuple[nn.ModuleDict, FeatureTap | None, FeatureTap | None]:
        from ..methods import METHOD_REGISTRY

        needs_features = any(
            cls.needs_features and cls.is_enabled(self.args) for cls in METHOD_REGISTRY.values()
        )
        student_tap = teacher_tap = None
        if needs_features:
            student_tap = FeatureTap(student, self.args.student_feature_module, "student_feature_module")
            teacher_tap = FeatureTap(
                _unwrap(teacher), self.args.teacher_feature_module, "teacher_feature_module"
            )
        dims = ModelDims(
            num_classes=_num_labels(teacher),
            student_dim=student_tap.dim if student_tap else None,
            teacher_dim=teacher_tap.dim if teacher_tap else None,
        )
        scope_global = self.args.relation_scope == "global"
        # with a global scope the methods already see the gathered batch, so the queue must not gather again
        gather_fn = None if scope_global else gather_no_grad
        return build_methods(self.args, dims, gather_fn), student_tap, teacher_tap

    def distillation_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters owned by the distillation methods (RRD's student head, VRM's adaptor)."""
        return [p for p in self.distillation_methods.parameters() if p.requires_grad]

    def create_optimizer(self, model=None):
        """The Trainer's optimizer, with the distillation methods' trainable parameters as an extra group."""
        user_optimizer = self.optimizer is not None
        optimizer = super().create_optimizer(model) if model is not None else super().create_optimizer()
        params = self.distillation_parameters()
        if params:
            present = {id(p) for group in optimizer.param_groups for p in group["params"]}
            missing = [p for p in params if id(p) not in present]
            if missing and user_optimizer:
                raise ValueError(
                    "The optimizer passed to the trainer does not include the distillation parameters (RRD head / VRM "
                    "adaptor), which would then never be trained. Pass `optimizer_cls_and_kwargs=(cls, kwargs)` "
                    "instead of an optimizer instance, or include `trainer.distillation_parameters()` in it."
                )
            if missing:
                optimizer.add_param_group({"params": missing, "weight_decay": self.args.weight_decay})
        return optimizer

    # ------------------------------------------------------------------------------------------------------------------
    # input checks
    # ------------------------------------------------------------------------------------------------------------------
    def _check_train_inputs(self) -> None:
        """Fail before the first step (and before anything is written) on a dataset the methods cannot use."""
        dataset = self.train_dataset
        if (
            dataset is None
            or not hasattr(dataset, "__getitem__")
            or not hasattr(dataset, "__len__")
            or len(dataset) == 0
        ):
            return
        with _preserved_rng_state():
            batch = self.data_collator([dataset[0]])
        for key in ("pixel_values", "labels"):
            if key not in batch or batch[key] is None:
                raise ValueError(
                    f"The training batches have no `{key}` (keys: {sorted(batch)}). Use hf_relkd.data.ViewTransform "
                    "with `dataset.with_transform(...)` so each example yields `pixel_values` and `labels`."
                )
        if self._needs_virtual and "pixel_values_virtual" not in batch:
            raise ValueError(
                "VRM needs a virtual view, but the training batches have no `pixel_values_virtual`. Build the train "
                "transform with `ViewTransform(train=True, virtual_view=True)`."
            )

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs):
        """Same as ``Trainer.train``; the training data is checked first."""
        self._check_train_inputs()
        self._parameter_count = None  # counted again: the model may have changed since the last call
        return super().train(
            resume_from_checkpoint=resume_from_checkpoint,
            trial=trial,
            ignore_keys_for_eval=ignore_keys_for_eval,
            **kwargs,
        )

    # ------------------------------------------------------------------------------------------------------------------
    # loss
    # ------------------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _teacher_forward(
        self, pixel_values: Tensor, with_features: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        if self.teacher_input_transform is not None:
            pixel_values = self.teacher_input_transform(pixel_values)
        param = next(self.teacher.parameters(), None)
        if param is not None and param.dtype != pixel_values.dtype and not torch.is_autocast_enabled():
            pixel_values = pixel_values.to(param.dtype)
        tap = self._teacher_tap if with_features else None
        with _capturing(tap), self._teacher_compile_guards():
            outputs = (
                self.teacher(pixel_values=pixel_values)
                if _accepts_pixel_values(self.teacher)
                else self.teacher(pixel_values)
            )
        return _logits_of(outputs), tap.pop() if tap is not None else None

    def _teacher_compile_guards(self) -> contextlib.AbstractContextManager:
        """With ``teacher_compile``, make Dynamo guard on module hooks while it compiles the teacher: by default it
        does not, and a graph compiled for another teacher of the same class without the feature hook (e.g. a KD run
        earlier in the same process) would be reused and the embedding never captured."""
        if not self.args.teacher_compile:
            return contextlib.nullcontext()
        return torch._dynamo.config.patch(skip_nnmodule_hook_guards=False)

    def _student_forward(
        self, model: nn.Module, pixel_values: Tensor, with_features: bool = True
    ) -> tuple[Any, Tensor, Tensor | None]:
        tap = self._student_tap if with_features else None
        with _capturing(tap):
            outputs = (
                model(pixel_values=pixel_values) if _accepts_pixel_values(model) else model(pixel_values)
            )
        return outputs, _logits_of(outputs), tap.pop() if tap is not None else None

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Tensor | Any],
        return_outputs: bool = False,
        num_items_in_batch: Tensor | int | None = None,
    ):
        """Cross-entropy plus the weighted distillation terms.

        In training, every term is recorded and logged as ``loss/<name>`` (its weighted contribution). In evaluation,
        the loss is the cross-entropy and the outputs carry the teacher's logits beside the student's, so
        ``compute_metrics`` can report teacher agreement; the relational terms (and the RRD queue) are untouched.
        """
        if "labels" not in inputs or inputs["labels"] is None:
            raise ValueError(
                f"The batch has no `labels` (keys: {sorted(inputs)}); distillation needs labels for the cross-entropy."
            )
        labels = inputs["labels"]
        pixel_values = inputs["pixel_values"]
        if not model.training:
            state = self.accelerator.gradient_state
            if self.accelerator.num_processes > 1 and state.end_of_dataloader and state.remainder > 0:
                # The last evaluation batch is padded with repeated samples so every process gets a full batch; the
                # Trainer keeps the first `remainder` copies of the gathered (repeated) per-process losses, i.e. as
                # many copies of this process's loss as it holds real samples. Average over those samples only, so
                # eval_loss is the mean over the eval set, each sample counted once (labels for metrics unchanged).
                n = labels.shape[0]
                real = min(n, state.remainder - self.accelerator.process_index * n)
                if 0 < real < n:
                    labels = labels.clone()
                    labels[real:] = -100  # F.cross_entropy's ignore_index
            return self._evaluation_loss(model, pixel_values, labels, return_outputs)

        virtual = inputs.get("pixel_values_virtual") if self._needs_virtual else None
        if self._needs_virtual and virtual is None:
            raise ValueError(
                "VRM needs `pixel_values_virtual` in every batch: use ViewTransform(virtual_view=True)."
            )
        batch_size = pixel_values.shape[0]
        views = torch.cat([pixel_values, virtual]) if virtual is not None else pixel_values
        # teacher first: its (no-grad) activations are freed before the student's autograd graph is built, so the
        # step's peak memory is max(teacher, student) instead of student + teacher (the teacher is deterministic in
        # eval mode, so the order changes no value, and neither does seeing both views in one pass)
        teacher_logits, teacher_features = self._teacher_forward(views)
        joint_logits = student_logits_virtual = None
        if virtual is not None and self.args.vrm_student_views == "per_view":
            # one pass per view: BatchNorm statistics per view; the virtual view's embedding is not needed
            outputs, student_logits, student_features = self._student_forward(model, pixel_values)
            _, student_logits_virtual, _ = self._student_forward(model, virtual, with_features=False)
        else:
            # one pass over both views: the student sees 2B images (its BatchNorm statistics span both views)
            outputs, student_logits, student_features = self._student_forward(model, views)
            if virtual is not None:
                # slices only when there is a virtual half: the backward of a slice is a zero fill and a copy
                joint_logits = student_logits
                student_logits_virtual = joint_logits[batch_size:]
                student_logits = joint_logits[:batch_size]
                if student_features is not None:
                    student_features = student_features[:batch_size]

        step = StepOutputs(
            labels=labels,
            student_logits=student_logits,
            teacher_logits=teacher_logits if virtual is None else teacher_logits[:batch_size],
        )
        if student_features is not None:
            step.student_features = student_features
            step.teacher_features = teacher_features if virtual is None else teacher_features[:batch_size]
        if virtual is not None:
            step.student_logits_virtual = student_logits_virtual
            step.teacher_logits_virtual = teacher_logits[batch_size:]

        terms: dict[str, Tensor] = {}
        if self.args.ce_weight:
            if virtual is not None and self.args.vrm_virtual_ce:
                both = (
                    joint_logits
                    if joint_logits is not None
                    else torch.cat([step.student_logits, step.student_logits_virtual])
                )
                ce = F.cross_entropy(both.float(), torch.cat([labels, labels]))
            else:
                ce = F.cross_entropy(step.student_logits.float(), labels)
            terms["ce"] = weighted_term(self.args.ce_weight, ce)
        relational_step = (
            self._gathered(step) if self.args.relation_scope == "global" and is_distributed() else step
        )
        try:
            # the distillation math (and the RRD heads / VRM adaptor) in float32 even if the caller runs compute_loss
            # under autocast; the methods cast their inputs to float32
            full_precision = torch.autocast(step.student_logits.device.type, enabled=False)
        except RuntimeError:  # a device type autocast does not know
            full_precision = contextlib.nullcontext()
        with full_precision:
            for method in self.distillation_methods.values():
                terms.update(method(relational_step if method.relational else step))
        loss = _total(list(terms.values()))
        self._record(terms, step)

        if return_outputs:
            if isinstance(outputs, Tensor):
                outputs = ImageClassifierOutput(logits=step.student_logits)
            return loss, outputs
        return loss

    def _evaluation_loss(self, model, pixel_values, labels, return_outputs):
        outputs, logits, _ = self._student_forward(model, pixel_values, with_features=False)
        loss = F.cross_entropy(logits.float(), labels)
        if not return_outputs:
            return loss
        eval_outputs = {"logits": logits}
        if self.args.eval_teacher:
            eval_outputs["teacher_logits"] = self._teacher_forward(pixel_values, with_features=False)[0]
        return loss, eval_outputs

    @staticmethod
    def _gathered(step: StepOutputs) -> StepOutputs:
        def gather(x: Tensor | None, grad: bool) -> Tensor | None:
            if x is None:
                return None
            return gather_with_grad(x) if grad else gather_no_grad(x)

        return StepOutputs(
            labels=gather(step.labels, False),
            student_logits=gather(step.student_logits, True),
            teacher_logits=gather(step.teacher_logits, False),
            student_features=gather(step.student_features, True),
            teacher_features=gather(step.teacher_features, False),
            student_logits_virtual=gather(step.student_logits_virtual, True),
            teacher_logits_virtual=gather(step.teacher_logits_virtual, False),
        )

    def training_step(
        self, model: nn.Module, inputs: dict[str, Tensor | Any], num_items_in_batch=None
    ) -> Tensor:
        """``Trainer.training_step``, then every method's ``after_backward`` (RRD writes the batch's keys into its queue)
        and the distillation parameters' gradients are averaged across processes (they live outside the DDP-wrapped
        student)."""
        params = self.distillation_parameters()
        if params and self._distillation_grads_step != self.state.global_step:
            # the Trainer zeroes only the student's gradients after an update; ours would otherwise accumulate forever
            for p in params:
                p.grad = None
            self._distillation_grads_step = self.state.global_step
        loss = super().training_step(model, inputs, num_items_in_batch)
        for method in self.distillation_methods.values():
            method.after_backward()
        if self.accelerator.sync_gradients:
            # like DDP for the student: gradients accumulate locally and are averaged once, before clipping
            average_gradients(params)
        return loss

    def floating_point_ops(self, inputs: dict[str, Tensor | Any]) -> int:
        """``Trainer.floating_point_ops`` (its ``6 × input size × parameters`` estimate, behind ``total_flos``), with
        the parameter count taken once per ``train()`` call: the base class walks every module and parameter of the
        student on every step, a cost that grows with the model's size and that a step bound by kernel launches
        feels."""
        model = self.model
        main_input = getattr(model, "main_input_name", "input_ids")
        if main_input not in inputs or not hasattr(model, "num_parameters"):
            return 0
        if self._parameter_count is None:
            self._parameter_count = model.num_parameters(exclude_embeddings=True)
        return 6 * inputs[main_input].numel() * self._parameter_count

    def _clip_grad_norm(self, model):
        """Clips (and reports the norm of) the student's and the distillation parameters' gradients together."""
        params = self.distillation_parameters()
        if not params or self.is_fsdp_enabled or self.is_deepspeed_enabled:
            return super()._clip_grad_norm(model)
        return self.accelerator.clip_grad_norm_([*model.parameters(), *params], self.args.max_grad_norm)

    # ------------------------------------------------------------------------------------------------------------------
    # logging
    # ------------------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _record(self, terms: dict[str, Tensor], step: StepOutputs) -> None:
        store = self._metrics["train"]
        for name, value in terms.items():
            store[f"loss/{name}"].append(value.detach().float())
        agreement = (step.student_logits.argmax(-1) == step.teacher_logits.argmax(-1)).float().mean()
        store["teacher_agreement"].append(agreement)
        for method in self.distillation_methods.values():
            for name, value in method.metrics().items():
                store[name].append(value.detach().float() if isinstance(value, Tensor) else float(value))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds the averages of the recorded per-term losses and diagnostics since the last log, then logs."""
        mode = "train" if self.model.training else "eval"
        recorded = self._metrics[mode]
        if recorded:
            names = sorted(recorded)
            device = self.args.device
            means = torch.stack([_mean(recorded[name], device) for name in names])
            means = self.accelerator.reduce(means, reduction="mean") if is_distributed() else means
            prefix = "eval_" if mode == "eval" else ""
            logs.update({f"{prefix}{name}": round(float(v), 6) for name, v in zip(names, means.tolist())})
            recorded.clear()
        super().log(logs, start_time)

    # ------------------------------------------------------------------------------------------------------------------
    # checkpoints
    # ------------------------------------------------------------------------------------------------------------------
    def _save_checkpoint(self, model, trial):
        """Saves the distillation state (RRD heads, queue and pointer; VRM adaptor) beside the usual checkpoint."""
        if len(self.distillation_methods) and self.args.should_save:
            folder = os.path.join(
                self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            )
            os.makedirs(folder, exist_ok=True)
            torch.save(self.distillation_methods.state_dict(), os.path.join(folder, DISTILLATION_STATE_NAME))
        super()._save_checkpoint(model, trial)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        """Restores the student as the Trainer does, then the distillation state."""
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        self.load_distillation_state(resume_from_checkpoint)

    def load_distillation_state(self, checkpoint_dir: str) -> None:
        """Load RRD heads/queue/pointer and VRM adaptor saved by a checkpoint.

        Args:
            checkpoint_dir: a ``checkpoint-N`` folder written by this trainer.
        """
        if not len(self.distillation_methods):
            return
        path = os.path.join(checkpoint_dir, DISTILLATION_STATE_NAME)
        if not os.path.isfile(path):
            logger.warning(
                "%s has no %s: the distillation state (RRD queue and heads) starts fresh.",
                checkpoint_dir,
                DISTILLATION_STATE_NAME,
            )
            return
        state = torch.load(
            path, map_location="cpu", weights_only=True
        )  # load_state_dict copies to the device
        self.distillation_methods.load_state_dict(state)

    # ------------------------------------------------------------------------------------------------------------------
    # Hub: the saved student and its model card
    # ------------------------------------------------------------------------------------------------------------------
    @property
    def model_card_options(self) -> ModelCardOptions:
        """What the model card cannot infer (dataset id, eval split, license, names): a
        :class:`hf_relkd.hub.ModelCardOptions`, used at every save. Set fields before training, e.g.
        ``trainer.model_card_options.update(dataset_name="uoft-cs/cifar100", eval_split="test")``; values passed to
        :meth:`create_model_card` or :meth:`push_to_hub` are stored here too."""
        options = self.__dict__.get("_model_card_options")
        if options is None:
            options = self.__dict__["_model_card_options"] = ModelCardOptions()
            split = getattr(self.eval_dataset, "split", None)
            if split is not None and not isinstance(self.eval_dataset, dict):
                options.eval_split = str(split)
        return options

    def distillation_record(self) -> dict[str, Any]:
        """The record saved in the student's ``config.json`` as ``distillation`` (read it back with
        :func:`hf_relkd.hub.read_distillation_info`): the teacher's identity (``name_or_path``, ``architecture``,
        ``model_class``, ``num_parameters``), the methods, their loss settings and the hf_relkd version."""
        from .. import __version__
        from ..hub import describe_model, method_settings

        methods = list(self.distillation_methods.keys())
        settings = method_settings(self.args.to_dict(), methods)
        return {
            "library": "hf_relkd",
            "library_version": __version__,
            "teacher": describe_model(self.teacher, self.teacher_name_or_path).to_dict(),
            "methods": methods,
            "settings": {"ce_weight": settings["ce_weight"], **settings["methods"], **settings["shared"]},
        }

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """``Trainer._save`` (student weights, config, processor) with the student made portable first: its config
        gets the ``distillation`` record and, for timm students, timm's ``pretrained_cfg``; timm weights are written
        without the wrapper's ``timm_model.`` prefix so ``timm.create_model("hf-hub:…")`` loads them too. Only the
        student is saved (the teacher, heads and queue are not part of ``self.model``)."""
        from ..hub import export_state_dict, prepare_student_config

        student = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        prepare_student_config(student, self.distillation_record(), self.processing_class)
        super()._save(output_dir, state_dict=export_state_dict(student, state_dict))

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """``Trainer.save_model``, plus the model card (``README.md``) and ``training_curves.png`` in the same folder,
        written by the main process. Checkpoints go through here too, so every ``checkpoint-N`` has its card."""
        super().save_model(output_dir, _internal_call=True)
        try:
            self.create_model_card(output_dir=output_dir if output_dir is not None else self.args.output_dir)
        except Exception:  # a card must never cost a training run its checkpoint
            logger.warning("Could not write the model card.", exc_info=True)
        if self.args.push_to_hub and not _internal_call:
            self.push_to_hub(commit_message="Model save", revision=self.args.hub_revision)

    def create_model_card(
        self,
        language: str | None = None,
        license: str | None = None,
        tags: str | list[str] | None = None,
        model_name: str | None = None,
        finetuned_from: str | None = None,
        tasks: str | list[str] | None = None,
        dataset_tags: str | list[str] | None = None,
        dataset: str | list[str] | None = None,
        dataset_args: str | list[str] | None = None,
        *,
        dataset_name: str | None = None,
        dataset_config: str | None = None,
        eval_split: str | None = None,
        repo_id: str | None = None,
        output_dir: str | None = None,
    ):
        """Write the student's model card (``README.md``) and ``training_curves.png`` to ``output_dir`` (default
        ``args.output_dir``), on the main process only.

        The card (template ``model_cards/student_card.md``) has Hub metadata (``library_name``, ``pipeline_tag``,
        license, dataset, tags per method, a model-index with the last evaluation's student top-1/top-5 and teacher
        accuracy), the results table (last and best, from ``state.log_history``), teacher and student identity and
        size, every loss setting of the enabled methods, the training recipe, the plot, a quick start, framework
        versions and citations. ``push_to_hub(**kwargs)`` forwards its keyword arguments here.

        Args:
            language, license, tags, model_name: card metadata (``license`` defaults to apache-2.0).
            finetuned_from: written as ``base_model``.
            tasks: ignored (always image classification).
            dataset_tags, dataset, dataset_name: the dataset's Hub id (``dataset_name`` wins).
            dataset_args, dataset_config: the dataset configuration name.
            eval_split: the split the evaluation ran on.
            repo_id: Hub id shown in the quick start (default: the trainer's Hub repo).
            output_dir: folder to write to.

        Every option given is remembered in :attr:`model_card_options` and reused at later saves.

        Returns:
            The ``huggingface_hub.ModelCard``, or ``None`` on processes other than the main one.
        """
        from pathlib import Path

        from ..hub import PLOT_FILENAME, describe_model, plot_training_curves, render_model_card

        del tasks

        def first(value):
            return value[0] if isinstance(value, (list, tuple)) and value else value

        options = self.model_card_options.update(
            language=language,
            license=license,
            tags=tags,
            model_name=model_name,
            base_model=finetuned_from,
            dataset_name=dataset_name or first(dataset) or first(dataset_tags),
            dataset_config=dataset_config or first(dataset_args),
            eval_split=eval_split,
            repo_id=repo_id,
        )
        if not self.is_world_process_zero():
            return None
        folder = Path(output_dir if output_dir is not None else self.args.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        plot = plot_training_curves(self.state.log_history, folder / PLOT_FILENAME)
        student = _unwrap(self.accelerator.unwrap_model(self.model, keep_torch_compile=False))
        card = render_model_card(
            student=describe_model(student),
            teacher=describe_model(self.teacher, self.teacher_name_or_path),
            config=self.args.to_dict(),
            log_history=self.state.log_history,
            options=options,
            methods=list(self.distillation_methods.keys()),
            num_processes=self.args.world_size,
            optimizer=self._optimizer_description(),
            global_step=self.state.global_step,
            epoch=self.state.epoch,
            plot_filename=plot.name if plot is not None else None,
            model_name=options.model_name
            or (self.args.hub_model_id or "").split("/")[-1]
            or Path(self.args.output_dir).name,
            extra_tags=list(getattr(student, "model_tags", None) or []),
        )
        if options.repo_id is None and getattr(self, "hub_model_id", None):
            options.repo_id = self.hub_model_id
        card.save(folder / "README.md")
        return card

    def _optimizer_description(self) -> str | None:
        optimizer = getattr(self.optimizer, "optimizer", self.optimizer)  # inside Accelerate's wrapper
        if optimizer is None:
            return None
        group = optimizer.param_groups[0] if optimizer.param_groups else {}
        shown = [
            f"{k}={group[k]}"
            for k in ("momentum", "nesterov", "betas", "eps", "weight_decay")
            if k in group and not (k == "nesterov" and not group[k])
        ]
        return f"{type(optimizer).__name__}" + (f" ({', '.join(shown)})" if shown else "")

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """The Trainer's checkpoint push (``hub_strategy`` other than ``"end"``) uploads ``args.output_dir``: refresh
        the model card and plot there first."""
        if self.is_world_process_zero() and self.args.hub_strategy != "end":
            try:
                self.create_model_card(output_dir=self.args.output_dir)
            except Exception:
                logger.warning("Could not write the model card before pushing.", exc_info=True)
        super()._push_from_checkpoint(checkpoint_folder)


def _total(terms: list[Tensor]) -> Tensor:
    """The sum of the loss terms in the fewest kernels: none for one term, one addition for two (CE + one method),
    a stack and a sum beyond."""
    if len(terms) == 1:
        return terms[0]
    if len(terms) == 2:
        return terms[0] + terms[1]
    return torch.stack(terms).sum()


def _mean(values: list[Tensor | float], device: torch.device) -> Tensor:
    """Mean of recorded values: device tensors stacked on the device, host numbers averaged on the host (one copy)."""
    if all(isinstance(v, Tensor) for v in values):
        return torch.stack(values).mean().to(device)
    return torch.tensor([float(v) for v in values], dtype=torch.float32).mean().to(device)


def _capturing(tap: FeatureTap | None) -> contextlib.AbstractContextManager:
    return tap.capturing() if tap is not None else contextlib.nullcontext()


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


@functools.lru_cache(maxsize=64)
def _forward_takes_pixel_values(cls: type) -> bool:
    try:
        return "pixel_values" in inspect.signature(cls.forward).parameters
    except (TypeError, ValueError):
        return False


def _accepts_pixel_values(model: nn.Module) -> bool:
    """🤗 models take ``pixel_values=``; plain ``nn.Module`` classifiers take the tensor positionally."""
    return _forward_takes_pixel_values(type(_unwrap(model)))
