"""Virtual Relation Matching (Zhang et al., ICCV 2025) as an ``nn.Module``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .functional import joint_entropy_keep_mask, vrm_terms


class LogitAdaptor(nn.Module):
    """Residual MLP on student logits, ``z + W₂ relu(W₁ z)``; ``W₂`` starts at zero so it begins as the identity."""

    def __init__(self, num_classes: int, hidden_dim: int | None = None):
        super().__init__()
        hidden_dim = hidden_dim or num_classes
        self.fc1 = nn.Linear(num_classes, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, num_classes)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, logits: Tensor) -> Tensor:
        logits = logits.float()
        return logits + self.fc2(torch.relu(self.fc1(logits)))


class VRMLoss(nn.Module):
    """Inter-sample and inter-class relations across a real and a virtual view, with unreliable-edge pruning.

    Args:
        inter_sample_weight: ``α`` (128).
        inter_class_weight: ``β`` (32).
        prune_percentile: inter-sample edges whose joint student entropy is above this percentile of the batch are
            dropped; 100 disables pruning.
        zsnorm: z-score logits before building relations.
        num_classes: required when ``adaptor=True``.
        adaptor: apply a trainable :class:`LogitAdaptor` to the student logits before building relations.
        adaptor_hidden_dim: hidden width of the adaptor (default: ``num_classes``).
        max_chunk_elements: largest edge tensor materialised at once.
    """

    compilable_functions = ("_keep_fn", "_terms_fn")
    _keep_fn = staticmethod(joint_entropy_keep_mask)
    _terms_fn = staticmethod(vrm_terms)

    def __init__(
        self,
        inter_sample_weight: float = 128.0,
        inter_class_weight: float = 32.0,
        prune_percentile: float = 90.0,
        zsnorm: bool = True,
        num_classes: int | None = None,
        adaptor: bool = False,
        adaptor_hidden_dim: int | None = None,
        max_chunk_elements: int = 1 << 24,
    ):
        super().__init__()
        if not 0 < prune_percentile <= 100:
            raise ValueError(f"`prune_percentile` must be in (0, 100], got {prune_percentile}.")
        if adaptor and not num_classes:
            raise ValueError("`num_classes` is required when `adaptor=True`.")
        self.inter_sample_weight, self.inter_class_weight = inter_sample_weight, inter_class_weight
        self.prune_percentile, self.zsnorm = prune_percentile, zsnorm
        self.max_chunk_elements = max_chunk_elements
        self.adaptor = LogitAdaptor(num_classes, adaptor_hidden_dim) if adaptor else None
        self.last_kept: Tensor = torch.ones(())

    @property
    def last_kept_fraction(self) -> float:
        """Fraction of the inter-sample edges kept by pruning in the last call (1.0 before any call or without
        pruning); :attr:`last_kept` is the same as a 0-d tensor on the logits' device."""
        return float(self.last_kept)

    def compute_terms(
        self,
        student_logits: Tensor,
        student_logits_virtual: Tensor,
        teacher_logits: Tensor,
        teacher_logits_virtual: Tensor,
    ) -> dict[str, Tensor]:
        """Weighted terms ``{"vrm_inter_sample": α·L_IS, "vrm_inter_class": β·L_IC}``."""
        keep = None
        if self.prune_percentile < 100:
            # edges are judged on the student's own predictions, before any adaptor
            keep = self._keep_fn(student_logits, student_logits_virtual, self.prune_percentile)
            self.last_kept = keep.float().mean().detach()
        if self.adaptor is not None:
            student_logits, student_logits_virtual = (
                self.adaptor(student_logits),
                self.adaptor(student_logits_virtual),
            )
        return self._terms_fn(
            student_logits,
            student_logits_virtual,
            teacher_logits,
            teacher_logits_virtual,
            self.inter_sample_weight,
            self.inter_class_weight,
            self.prune_percentile,
            self.zsnorm,
            self.max_chunk_elements,
            keep=keep,
        )

    def forward(
        self,
        student_logits: Tensor,
        student_logits_virtual: Tensor,
        teacher_logits: Tensor,
        teacher_logits_virtual: Tensor,
    ) -> Tensor:
        """Returns ``α·L_IS + β·L_IC`` for ``(B, C)`` logits of both views of both networks."""
        terms = self.compute_terms(
            student_logits, student_logits_virtual, teacher_logits, teacher_logits_virtual
        )
        return sum(terms.values(), student_logits.new_zeros(()).float())

    def extra_repr(self) -> str:
        return (
            f"inter_sample_weight={self.inter_sample_weight}, inter_class_weight={self.inter_class_weight}, "
            f"prune_percentile={self.prune_percentile}, zsnorm={self.zsnorm}"
        )
