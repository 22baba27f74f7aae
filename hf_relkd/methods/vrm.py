"""Virtual Relation Matching as a distillation method."""

from __future__ import annotations

from torch import Tensor

from ..losses import VRMLoss
from .base import DistillationMethod, StepOutputs, register_method


@register_method
class VRMMethod(DistillationMethod):
    """VRM on the logits of the real and virtual views; logs ``vrm_inter_sample`` and ``vrm_inter_class``."""

    name = "vrm"
    needs_virtual_view = True

    def __init__(self, loss: VRMLoss):
        super().__init__()
        self.loss = loss

    @classmethod
    def from_config(cls, config, dims, gather_fn=None) -> VRMMethod:
        return cls(
            VRMLoss(
                inter_sample_weight=config.vrm_inter_sample_weight,
                inter_class_weight=config.vrm_inter_class_weight,
                prune_percentile=config.vrm_prune_percentile,
                zsnorm=config.vrm_zsnorm,
                num_classes=dims.num_classes,
                adaptor=config.vrm_adaptor,
            )
        )

    def forward(self, outputs: StepOutputs) -> dict[str, Tensor]:
        return self.loss.compute_terms(
            outputs.student_logits,
            outputs.student_logits_virtual,
            outputs.teacher_logits,
            outputs.teacher_logits_virtual,
        )

    def metrics(self) -> dict[str, Tensor]:
        return {"vrm/kept_edges": self.loss.last_kept} if self.loss.prune_percentile < 100 else {}
