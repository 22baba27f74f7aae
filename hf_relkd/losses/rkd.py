"""Relational Knowledge Distillation (Park et al., CVPR 2019) as an ``nn.Module``."""

from __future__ import annotations

from torch import Tensor, nn

from .functional import rkd_terms


class RKDLoss(nn.Module):
    """Distance- and angle-wise relations between embeddings of a batch.

    Args:
        distance_weight: ``λ_D`` (25 on the CIFAR-100 benchmark).
        angle_weight: ``λ_A`` (50 on the CIFAR-100 benchmark).
        max_chunk_elements: largest angle tensor materialised at once (see :func:`rkd_angle_loss`).
    """

    compilable_functions = ("_terms_fn",)
    _terms_fn = staticmethod(rkd_terms)

    def __init__(
        self, distance_weight: float = 25.0, angle_weight: float = 50.0, max_chunk_elements: int = 1 << 24
    ):
        super().__init__()
        if distance_weight < 0 or angle_weight < 0:
            raise ValueError(
                f"RKD weights must be >= 0, got distance={distance_weight}, angle={angle_weight}."
            )
        self.distance_weight, self.angle_weight = distance_weight, angle_weight
        self.max_chunk_elements = max_chunk_elements

    def compute_terms(self, student_features: Tensor, teacher_features: Tensor) -> dict[str, Tensor]:
        """Weighted terms ``{"rkd_distance": λ_D·L_D, "rkd_angle": λ_A·L_A}`` (a zero weight skips its term)."""
        return self._terms_fn(
            student_features,
            teacher_features,
            self.distance_weight,
            self.angle_weight,
            self.max_chunk_elements,
        )

    def forward(self, student_features: Tensor, teacher_features: Tensor) -> Tensor:
        """Returns ``λ_D·L_D + λ_A·L_A`` for ``(B, D_s)`` student and ``(B, D_t)`` teacher features."""
        terms = self.compute_terms(student_features, teacher_features)
        return sum(terms.values(), student_features.new_zeros(()).float())

    def extra_repr(self) -> str:
        return f"distance_weight={self.distance_weight}, angle_weight={self.angle_weight}"
