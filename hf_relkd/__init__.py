"""hf_relkd: relational knowledge distillation (RRD, RKD, VRM, KD) for image classifiers, as a 🤗 Trainer extension.

Typical use::

    from hf_relkd import RelationalDistillationConfig, RelationalDistillationTrainer

    config = RelationalDistillationConfig(output_dir="student", methods=["rrd", "kd"])
    trainer = RelationalDistillationTrainer(model=student, teacher_model=teacher, args=config,
                                            train_dataset=train, eval_dataset=test)
    trainer.train()
"""

__version__ = "0.1.0"

from . import models  # noqa: F401  (registers the CIFAR zoo with the Auto classes)
from .losses import KDLoss, RKDLoss, RRDLoss, VRMLoss
from .methods import METHOD_REGISTRY, DistillationMethod, StepOutputs, register_method
from .metrics import DistillationMetrics
from .trainer import RelationalDistillationConfig, RelationalDistillationTrainer

__all__ = [
    "METHOD_REGISTRY",
    "DistillationMethod",
    "DistillationMetrics",
    "KDLoss",
    "RKDLoss",
    "RRDLoss",
    "RelationalDistillationConfig",
    "RelationalDistillationTrainer",
    "StepOutputs",
    "VRMLoss",
    "__version__",
    "register_method",
]
