"""Relational KD (distance + angle) as a distillation method."""

from __future__ import annotations

from torch import Tensor

from ..losses import RKDLoss
from .base import DistillationMethod, StepOutputs, register_method


@register_method
class RKDMethod(DistillationMethod):
    """RKD on the penultimate embeddings; logs ``rkd_distance`` and ``rkd_angle`` separately."""

    name = "rkd"
    needs_features = True

    def __init__(self, distance_weight: float, angle_weight: float):
        super().__init__()
        self.loss = RKDLoss(distance_weight, angle_weight)

    @classmethod
    def from_config(cls, config, dims, gather_fn=None) -> RKDMethod:
        return cls(config.rkd_distance_weight, config.rkd_angle_weight)

    def forward(self, outputs: StepOutputs) -> dict[str, Tensor]:
        return self.loss.compute_terms(outputs.student_features, outputs.teacher_features)
