"""Evaluation metrics that work offline: top-1/top-5 accuracy and teacher agreement."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from transformers import EvalPrediction

from .topk_accuracy.topk_accuracy import topk_accuracy

TOPK_ACCURACY_PATH = str(Path(__file__).parent / "topk_accuracy")


def load_topk_accuracy(**kwargs):
    """Load the bundled top-k accuracy as an ``evaluate`` module (no Hub access needed).

    Args:
        **kwargs: passed to ``evaluate.load``.

    Returns:
        An ``evaluate.EvaluationModule``.
    """
    import evaluate

    return evaluate.load(TOPK_ACCURACY_PATH, **kwargs)


class DistillationMetrics:
    """``compute_metrics`` for :class:`~hf_relkd.RelationalDistillationTrainer`.

    The trainer's evaluation returns the student's and the teacher's logits; this reports

    * ``accuracy`` and ``top5_accuracy`` of the student,
    * ``teacher_accuracy`` / ``teacher_top5_accuracy`` of the teacher and ``teacher_agreement``, the fraction of samples where the student's
      top-1 class equals the teacher's.

    Plain student logits (no teacher) give the student metrics only, so it also works as a ``compute_metrics`` for a
    plain ``transformers.Trainer``.

    Args:
        top_k: the k of the second accuracy (5).
    """

    def __init__(self, top_k: int = 5):
        self.top_k = top_k

    def __call__(self, eval_pred: EvalPrediction) -> dict[str, float]:
        predictions, labels = eval_pred.predictions, eval_pred.label_ids
        teacher = None
        if isinstance(predictions, (tuple, list)):
            student = predictions[0]
            teacher = predictions[1] if len(predictions) > 1 else None
        else:
            student = predictions
        student, labels = np.asarray(student), np.asarray(labels)
        metrics = {
            "accuracy": topk_accuracy(student, labels, 1),
            f"top{self.top_k}_accuracy": topk_accuracy(student, labels, self.top_k),
        }
        if teacher is not None:
            teacher = np.asarray(teacher)
            metrics["teacher_accuracy"] = topk_accuracy(teacher, labels, 1)
            metrics[f"teacher_top{self.top_k}_accuracy"] = topk_accuracy(teacher, labels, self.top_k)
            metrics["teacher_agreement"] = float((student.argmax(-1) == teacher.argmax(-1)).mean())
        return metrics


__all__ = ["DistillationMetrics", "TOPK_ACCURACY_PATH", "load_topk_accuracy", "topk_accuracy"]
