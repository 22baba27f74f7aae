"""The Trainer extension: configuration and trainer."""

from .config import KNOWN_METHODS, RelationalDistillationConfig
from .trainer import DISTILLATION_STATE_NAME, RelationalDistillationTrainer

__all__ = [
    "DISTILLATION_STATE_NAME",
    "KNOWN_METHODS",
    "RelationalDistillationConfig",
    "RelationalDistillationTrainer",
]
