"""Extending hf_relkd: a teacher from a local folder, and a user-defined method plugged in through the registry."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from helpers import tensor_dataset

from hf_relkd import (
    METHOD_REGISTRY,
    DistillationMethod,
    RelationalDistillationConfig,
    RelationalDistillationTrainer,
    StepOutputs,
    register_method,
)
from hf_relkd.models import create_model


def test_teacher_loaded_from_a_local_folder(tmp_path):
    torch.manual_seed(0)
    teacher = create_model("resnet8", num_labels=4)
    teacher.save_pretrained(tmp_path / "teacher")
    args = RelationalDistillationConfig(
        output_dir=str(tmp_path / "out"),
        methods=["rrd", "kd"],
        max_steps=2,
        per_device_train_batch_size=4,
        report_to=[],
        use_cpu=True,
        rrd_queue_size=8,
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = RelationalDistillationTrainer(
        model=create_model("resnet8", num_labels=4),
        teacher_model=str(tmp_path / "teacher"),
        args=args,
        train_dataset=tensor_dataset(8, size=16),
    )
    assert trainer.teacher_name_or_path == str(tmp_path / "teacher")
    torch.testing.assert_close(trainer.teacher.state_dict()["classifier.weight"], teacher.classifier.weight)
    trainer.train()


@dataclass
class FeatureMatchingConfig(RelationalDistillationConfig):
    cosine_weight: float = field(
        default=0.0, metadata={"help": "Weight of the cosine embedding-alignment term."}
    )


class CosineAlignment(DistillationMethod):
    """1 - cos between the student's and teacher's logits (a toy per-sample method)."""

    name = "cosine"
    relational = False

    def __init__(self, weight):
        super().__init__()
        self.weight = weight

    @classmethod
    def is_enabled(cls, config):
        return getattr(config, "cosine_weight", 0.0) > 0

    @classmethod
    def from_config(cls, config, dims, gather_fn=None):
        return cls(config.cosine_weight)

    def forward(self, outputs: StepOutputs):
        cos = F.cosine_similarity(outputs.student_logits.float(), outputs.teacher_logits.float(), dim=1)
        return {"cosine": self.weight * (1 - cos).mean()}


def test_a_registered_method_is_trained_and_logged(tmp_path):
    register_method(CosineAlignment)
    try:
        torch.manual_seed(0)
        args = FeatureMatchingConfig(
            output_dir=str(tmp_path / "out"),
            methods=["kd"],
            cosine_weight=2.0,
            max_steps=3,
            per_device_train_batch_size=4,
            logging_steps=1,
            report_to=[],
            use_cpu=True,
            save_strategy="no",
            disable_tqdm=True,
        )
        from helpers import make_pair

        student, teacher = make_pair()
        trainer = RelationalDistillationTrainer(
            model=student, teacher_model=teacher, args=args, train_dataset=tensor_dataset(12)
        )
        assert list(trainer.distillation_methods) == ["kd", "cosine"]
        trainer.train()
        logs = [e for e in trainer.state.log_history if "loss" in e]
        assert all("loss/cosine" in e and "loss/kd" in e for e in logs)
    finally:
        METHOD_REGISTRY.pop("cosine", None)
