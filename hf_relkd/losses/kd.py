"""Hinton knowledge distillation as an ``nn.Module``."""

from __future__ import annotations

from torch import Tensor, nn

from .functional import kd_loss


class KDLoss(nn.Module):
    """``T² · KL(softmax(t/T) ‖ softmax(s/T))`` (Hinton et al., 2015).

    Args:
        temperature: softening temperature (4 on the CIFAR-100 benchmark).
    """

    compilable_functions = ("_loss_fn",)
    _loss_fn = staticmethod(kd_loss)

    def __init__(self, temperature: float = 4.0):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"`temperature` must be > 0, got {temperature}.")
        self.temperature = temperature

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        """Returns the scalar KD loss for ``(B, C)`` student and teacher logits."""
        return self._loss_fn(student_logits, teacher_logits, self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
