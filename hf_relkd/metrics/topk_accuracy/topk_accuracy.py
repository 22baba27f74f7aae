"""Top-k accuracy as an 🤗 ``evaluate`` module that needs no Hub access.

Load it with ``hf_relkd.metrics.load_topk_accuracy()`` (or ``evaluate.load(<path of this folder>)``). The file is
self-contained (numpy, datasets and evaluate only) so ``evaluate`` can copy it into its module cache.
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """Top-k accuracy of classification logits: the fraction of samples whose label is among the k largest
logits. With k=1 this is the usual accuracy."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[list[float]]`): logits or probabilities, one row of C scores per sample.
    references (`list[int]`): ground-truth class indices.
    k (`int`, defaults to 1): how many of the top classes count as a hit.
Returns:
    `dict` with `top{k}_accuracy` (float in [0, 1]).
Examples:
    >>> metric = load_topk_accuracy()
    >>> metric.compute(predictions=[[0.1, 0.9], [0.8, 0.2]], references=[1, 1], k=1)
    {'top1_accuracy': 0.5}
"""

_CITATION = ""


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Fraction of rows of ``logits`` (N, C) whose ``labels`` (N,) is among the ``k`` largest scores.

    Ties are broken by class index, like ``np.argsort``. ``k`` larger than C counts every sample as a hit.

    Args:
        logits: ``(N, C)`` scores.
        labels: ``(N,)`` integer class indices.
        k: number of top classes.

    Returns:
        Accuracy in ``[0, 1]`` (0.0 for an empty input).
    """
    logits, labels = np.asarray(logits), np.asarray(labels).reshape(-1)
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"Expected logits (N, C) and labels (N,), got {logits.shape} and {labels.shape}.")
    if k < 1:
        raise ValueError(f"`k` must be >= 1, got {k}.")
    if labels.size == 0:
        return 0.0
    k = min(k, logits.shape[1])
    top = (
        np.argpartition(-logits, kth=k - 1, axis=1)[:, :k]
        if k < logits.shape[1]
        else np.arange(logits.shape[1])[None]
    )
    return float((top == labels[:, None]).any(axis=1).mean())


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TopKAccuracy(evaluate.Metric):
    """``evaluate`` wrapper of :func:`topk_accuracy`."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Value("int64"),
                }
            ),
        )

    def _compute(self, predictions, references, k: int = 1) -> dict[str, float]:
        return {f"top{k}_accuracy": topk_accuracy(np.asarray(predictions), np.asarray(references), k)}
