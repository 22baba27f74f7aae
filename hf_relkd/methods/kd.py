"""Hinton KD as a distillation method."""

from __future__ import annotations

from torch import Tensor

from ..losses import KDLoss
from .base import DistillationMethod, StepOutputs, register_method, weighted_term


@register_method
class KDMethod(DistillationMethod):
    """``kd_weight · T² · KL(p_T ‖ p_S)`` on the real view."""

    name = "kd"
    relational = False

    def __init__(self, weight: float, temperature: float):
        super().__init__()
        self.weight = weight
        self.loss = KDLoss(temperature)

    @classmethod
    def from_config(cls, config, dims, gather_fn=None) -> KDMethod:
        return cls(config.kd_weight, config.kd_temperature)

    def forward(self, outputs: StepOutputs) -> dict[str, Tensor]:
        return {"kd": weighted_term(self.weight, self.loss(outputs.student_logits, outputs.teacher_logits))}
