"""The Trainer extension: configuration and trainer."""

from .config import ACTIVATION_CHECKPOINTING_FIELD, KNOWN_METHODS, RelationalDistillationConfig
from .trainer import DISTILLATION_STATE_NAME, RelationalDistillationTrainer

__all__ = [
    "ACTIVATION_CHECKPOINTING_FIELD",
    "DISTILLATION_STATE_NAME",
    "KNOWN_METHODS",
    "RelationalDistillationConfig",
    "RelationalDistillationTrainer",
]
