"""Relational Representation Distillation (Giakoumoglou & Stathaki, 2024) as an ``nn.Module``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .functional import rrd_loss
from .memory import FIFOQueue, GatherFn


class RRDLoss(nn.Module):
    """RRD with its projection heads and its FIFO memory of teacher keys.

    The student and teacher penultimate features are projected to ``embed_dim`` by one linear layer each and
    L2-normalised. The teacher's similarity distribution over the queue (temperature ``τ_t``) is the target of the
    student's (temperature ``τ_s``). The queue and its pointer are buffers: ``state_dict`` saves and restores them.

    Two published variants are reachable by arguments:

    * the paper (2024): ``student_temperature=0.04, teacher_temperature=0.1, enqueue_before_loss=False`` (default);
    * the authors' 2025 code: ``student_temperature=0.1, teacher_temperature=0.02, enqueue_before_loss=True``.

    As in the authors' code, the teacher head receives no gradient: it is a fixed random projection (frozen with
    ``requires_grad=False``, and the teacher side of the loss is a constant anyway).

    Args:
        student_dim: width of the student's penultimate features.
        teacher_dim: width of the teacher's penultimate features.
        embed_dim: projection width (128).
        queue_size: number of teacher keys ``K`` (16384).
        student_temperature: ``τ_s``.
        teacher_temperature: ``τ_t``.
        enqueue_before_loss: enqueue the batch's teacher keys before computing the loss (2025 variant).
        gather_fn: concatenates keys across processes before they are enqueued (data parallelism).
        defer_enqueue: the loss reads the queue itself rather than a copy, which saves a ``(K, embed_dim)`` tensor
            and a copy per step (the copy protects the tensor autograd saves for backward from the in-place write
            of the new keys). With ``enqueue_before_loss=False`` the batch's keys are then held back until
            :meth:`commit_enqueue` (or the next forward, or ``state_dict``). Requires a backward before the next
            forward of this module; the trainer commits right after each backward.
    """

    # the projections and the loss in one function (the heads' parameters are its arguments, the queue a read-only
    # input), so compiling fuses them; the queue update stays eager (see hf_relkd.losses.compile)
    compilable_functions = ("_loss_fn", "_project_and_loss_fn")
    _loss_fn = staticmethod(rrd_loss)

    def __init__(
        self,
        student_dim: int,
        teacher_dim: int,
        embed_dim: int = 128,
        queue_size: int = 16384,
        student_temperature: float = 0.04,
        teacher_temperature: float = 0.1,
        enqueue_before_loss: bool = False,
        gather_fn: GatherFn | None = None,
        defer_enqueue: bool = False,
    ):
        super().__init__()
        if student_temperature <= 0 or teacher_temperature <= 0:
            raise ValueError(
                f"RRD temperatures must be > 0, got student_temperature={student_temperature}, "
                f"teacher_temperature={teacher_temperature}."
            )
        self.student_head = nn.Linear(student_dim, embed_dim)
        self.teacher_head = nn.Linear(teacher_dim, embed_dim)
        self.teacher_head.requires_grad_(False)
        self.queue = FIFOQueue(queue_size, embed_dim, gather_fn=gather_fn)
        self.student_temperature = student_temperature
        self.teacher_temperature = teacher_temperature
        self.enqueue_before_loss = enqueue_before_loss
        self.defer_enqueue = defer_enqueue
        self._pending: Tensor | None = None
        # pending keys belong to the queue: a checkpoint taken before they are committed must contain them
        self.register_state_dict_pre_hook(_commit_before_state_dict)

    def embed_student(self, student_features: Tensor) -> Tensor:
        """Project and L2-normalise student features (float32)."""
        return _project(student_features, self.student_head.weight, self.student_head.bias)

    def embed_teacher(self, teacher_features: Tensor) -> Tensor:
        """Project and L2-normalise teacher features (float32, no gradient)."""
        return _project(teacher_features.detach(), self.teacher_head.weight, self.teacher_head.bias).detach()

    def forward(self, student_features: Tensor, teacher_features: Tensor) -> Tensor:
        """Returns the RRD loss for ``(B, D_s)`` student and ``(B, D_t)`` teacher features and updates the queue.

        The queue is only updated in training mode, so evaluating never changes it.
        """
        self.commit_enqueue()
        if self.training and self.enqueue_before_loss:
            s = self.embed_student(student_features)
            t = self.embed_teacher(teacher_features)
            # written before this step's loss reads the queue; the next write happens at the next forward
            self.queue.enqueue(t)
            return self._loss_fn(s, t, self._memory(), self.student_temperature, self.teacher_temperature)
        loss, t = self._project_and_loss_fn(
            student_features,
            teacher_features,
            self.student_head.weight,
            self.student_head.bias,
            self.teacher_head.weight,
            self.teacher_head.bias,
            self._memory(),
            self.student_temperature,
            self.teacher_temperature,
        )
        if self.training:  # (with enqueue_before_loss, training returned above)
            self._enqueue(t)
        return loss

    def _memory(self) -> Tensor:
        return self.queue.keys if self.defer_enqueue else self.queue.keys.clone()

    @staticmethod
    def _project_and_loss_fn(
        student_features: Tensor,
        teacher_features: Tensor,
        student_weight: Tensor,
        student_bias: Tensor,
        teacher_weight: Tensor,
        teacher_bias: Tensor,
        memory: Tensor,
        student_temperature: float,
        teacher_temperature: float,
    ) -> tuple[Tensor, Tensor]:
        """:func:`rrd_loss` of the projected features, and the teacher keys (embeddings) to enqueue."""
        s = _project(student_features, student_weight, student_bias)
        t = _project(teacher_features.detach(), teacher_weight, teacher_bias).detach()
        return rrd_loss(s, t, memory, student_temperature, teacher_temperature), t

    def _enqueue(self, keys: Tensor) -> None:
        if self.defer_enqueue:
            self._pending = (
                keys.detach() if self._pending is None else torch.cat([self._pending, keys.detach()])
            )
        else:
            self.queue.enqueue(keys)

    def commit_enqueue(self) -> None:
        """Write the keys held back by ``defer_enqueue`` into the queue (no-op when none are pending)."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self.queue.enqueue(pending)

    def extra_repr(self) -> str:
        return (
            f"student_temperature={self.student_temperature}, teacher_temperature={self.teacher_temperature}, "
            f"enqueue_before_loss={self.enqueue_before_loss}"
        )


def _project(features: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``normalize(features · Wᵀ + b)`` in float32 (the features flattened to ``(B, D)``)."""
    return F.normalize(F.linear(features.flatten(1).float(), weight, bias), dim=1)


def _commit_before_state_dict(module: RRDLoss, prefix: str, keep_vars: bool) -> None:
    module.commit_enqueue()
