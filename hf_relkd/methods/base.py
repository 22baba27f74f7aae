"""The small interface between the trainer and the distillation methods.

The trainer runs the student and the teacher, collects what the enabled methods ask for into :class:`StepOutputs`,
and sums the weighted terms each method returns. A method is an ``nn.Module`` (it may own trainable parameters, such
as RRD's projection heads, and buffers, such as RRD's queue), registered by name with :func:`register_method`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from torch import Tensor, nn

if TYPE_CHECKING:
    from ..losses.memory import GatherFn
    from ..trainer.config import RelationalDistillationConfig


@dataclass
class StepOutputs:
    """What the networks produced for one (micro-)batch.

    Attributes:
        labels: ``(B,)`` class indices.
        student_logits / teacher_logits: ``(B, C)`` logits on the real view.
        student_features / teacher_features: ``(B, D)`` penultimate embeddings, when a method needs them.
        student_logits_virtual / teacher_logits_virtual: ``(B, C)`` logits on the virtual view, when needed.
    """

    labels: Tensor
    student_logits: Tensor
    teacher_logits: Tensor
    student_features: Tensor | None = None
    teacher_features: Tensor | None = None
    student_logits_virtual: Tensor | None = None
    teacher_logits_virtual: Tensor | None = None


@dataclass(frozen=True)
class ModelDims:
    """Widths a method may need to build its modules."""

    num_classes: int
    student_dim: int | None = None
    teacher_dim: int | None = None


class DistillationMethod(nn.Module):
    """Base class of a distillation method.

    Class attributes:
        name: registry key, also the value users put in ``RelationalDistillationConfig.methods``.
        needs_features: the trainer must capture penultimate embeddings.
        needs_virtual_view: the trainer must run both networks on ``pixel_values_virtual`` too.
        relational: the loss relates samples of the batch to each other, so ``relation_scope="global"`` gathers
            its inputs across processes (a per-sample loss such as KD is never gathered).
    """

    name: ClassVar[str]
    needs_features: ClassVar[bool] = False
    needs_virtual_view: ClassVar[bool] = False
    relational: ClassVar[bool] = True

    @classmethod
    def is_enabled(cls, config: RelationalDistillationConfig) -> bool:
        """Whether the config switches this method on. Built-in methods follow ``config.enabled_methods`` (a positive
        weight); a user-defined method overrides this to read its own config field."""
        return cls.name in config.enabled_methods

    @classmethod
    def from_config(
        cls, config: RelationalDistillationConfig, dims: ModelDims, gather_fn: GatherFn | None = None
    ) -> DistillationMethod:
        """Build the method from the config; ``gather_fn`` concatenates tensors across processes."""
        raise NotImplementedError

    def forward(self, outputs: StepOutputs) -> dict[str, Tensor]:
        """Weighted loss terms by name (each becomes ``loss/<name>`` in the logs and enters the total)."""
        raise NotImplementedError

    def after_backward(self) -> None:
        """Called by the trainer after the backward pass of every (micro-)batch, e.g. to update a memory whose
        current contents the backward pass still needed (RRD's queue)."""

    def metrics(self) -> dict[str, float | Tensor]:
        """Extra diagnostics to log after a step (e.g. queue fill); keys are logged as given.

        Return 0-d tensors where the value lives on the device (the trainer averages them on the device and reads them
        only when it logs, so a step never waits for the GPU) and Python numbers where it is known on the host (they
        are averaged on the host; converting them to device tensors every step would cost a copy each)."""
        return {}


def weighted_term(weight: float, term: Tensor) -> Tensor:
    """``weight · term``; the term itself for a weight of 1 (the default of most terms), which is exactly the same
    value and saves launching a kernel per step, something a step bound by kernel launches feels.

    Args:
        weight: the term's weight from the config.
        term: the unweighted loss term.

    Returns:
        The weighted term.
    """
    return term if weight == 1 else weight * term


METHOD_REGISTRY: dict[str, type[DistillationMethod]] = {}


def register_method(cls: type[DistillationMethod]) -> type[DistillationMethod]:
    """Class decorator adding a method to :data:`METHOD_REGISTRY` under ``cls.name``."""
    if cls.name in METHOD_REGISTRY:
        raise ValueError(f"A distillation method named {cls.name!r} is already registered.")
    METHOD_REGISTRY[cls.name] = cls
    return cls


def build_methods(
    config: RelationalDistillationConfig, dims: ModelDims, gather_fn: GatherFn | None = None
) -> nn.ModuleDict:
    """Instantiate every registered method the config enables, in registry order."""
    return nn.ModuleDict(
        {
            name: cls.from_config(config, dims, gather_fn)
            for name, cls in METHOD_REGISTRY.items()
            if cls.is_enabled(config)
        }
    )
