"""Relational Representation Distillation as a distillation method."""

from __future__ import annotations

from torch import Tensor

from ..losses import RRDLoss
from .base import DistillationMethod, StepOutputs, register_method, weighted_term


@register_method
class RRDMethod(DistillationMethod):
    """RRD on the penultimate embeddings; owns the projection heads and the queue (saved in checkpoints)."""

    name = "rrd"
    needs_features = True

    def __init__(self, weight: float, loss: RRDLoss):
        super().__init__()
        self.weight = weight
        self.loss = loss

    @classmethod
    def from_config(cls, config, dims, gather_fn=None) -> RRDMethod:
        loss = RRDLoss(
            student_dim=dims.student_dim,
            teacher_dim=dims.teacher_dim,
            embed_dim=config.rrd_embed_dim,
            queue_size=config.rrd_queue_size,
            student_temperature=config.rrd_student_temperature,
            teacher_temperature=config.rrd_teacher_temperature,
            enqueue_before_loss=config.rrd_enqueue_before_loss,
            gather_fn=gather_fn,
            defer_enqueue=True,  # committed by after_backward: the loss reads the queue without copying it
        )
        return cls(config.rrd_weight, loss)

    def forward(self, outputs: StepOutputs) -> dict[str, Tensor]:
        return {
            "rrd": weighted_term(self.weight, self.loss(outputs.student_features, outputs.teacher_features))
        }

    def after_backward(self) -> None:
        self.loss.commit_enqueue()

    def metrics(self) -> dict[str, float]:
        return {"rrd/queue_fill": self.loss.queue.fill}
