"""Offline evaluation metrics: the bundled `evaluate` module and DistillationMetrics."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import EvalPrediction

from hf_relkd.metrics import DistillationMetrics, load_topk_accuracy, topk_accuracy


def brute_force_topk(logits, labels, k):
    hits = 0
    for row, label in zip(logits, labels):
        ranked = sorted(range(len(row)), key=lambda c: (-row[c], c))
        hits += label in ranked[:k]
    return hits / len(labels)


@pytest.mark.parametrize("k", [1, 2, 5, 7])
def test_topk_accuracy_matches_a_brute_force_count(k):
    rng = np.random.default_rng(k)
    logits, labels = rng.normal(size=(50, 7)), rng.integers(0, 7, 50)
    assert topk_accuracy(logits, labels, k) == pytest.approx(brute_force_topk(logits, labels, k))


def test_topk_accuracy_edge_cases():
    assert topk_accuracy(np.zeros((0, 3)), np.zeros(0, dtype=int)) == 0.0
    assert topk_accuracy(np.array([[0.0, 1.0]]), np.array([0]), k=10) == 1.0
    with pytest.raises(ValueError, match="Expected logits"):
        topk_accuracy(np.zeros((2, 3)), np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match="`k` must be >= 1"):
        topk_accuracy(np.zeros((2, 3)), np.zeros(2, dtype=int), k=0)


def test_evaluate_module_loads_offline_and_agrees(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    metric = load_topk_accuracy()
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(20, 5)).astype(np.float32), rng.integers(0, 5, 20)
    for k in (1, 3):
        result = metric.compute(predictions=logits.tolist(), references=labels.tolist(), k=k)
        assert result == {f"top{k}_accuracy": pytest.approx(brute_force_topk(logits, labels, k))}


def test_distillation_metrics_with_and_without_teacher():
    student = np.array([[2.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 1.0, 2.0], [2.0, 0.0, 1.0]])
    teacher = np.array([[2.0, 1.0, 0.0], [2.0, 0.0, 1.0], [0.0, 1.0, 2.0], [0.0, 2.0, 1.0]])
    labels = np.array([0, 1, 2, 1])
    metrics = DistillationMetrics(top_k=2)(EvalPrediction(predictions=(student, teacher), label_ids=labels))
    assert metrics == {
        "accuracy": 0.75,  # rows 0, 1, 2
        "top2_accuracy": 0.75,  # row 3: label 1 has the lowest score
        "teacher_accuracy": 0.75,  # rows 0, 2, 3
        "teacher_top2_accuracy": 0.75,  # row 1: the teacher ranks classes 0 and 2 above label 1
        "teacher_agreement": 0.5,  # rows 0 and 2
    }
    alone = DistillationMetrics()(EvalPrediction(predictions=student, label_ids=labels))
    assert set(alone) == {"accuracy", "top5_accuracy"}
