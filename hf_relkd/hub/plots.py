"""Training-curve plot for the model card: per-term losses and evaluation accuracy from a ``log_history``."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["PLOT_FILENAME", "plot_training_curves"]

#: File name of the plot saved beside the model card.
PLOT_FILENAME = "training_curves.png"

_ACCURACY_KEYS = {
    "eval_accuracy": "student top-1",
    "eval_top5_accuracy": "student top-5",
    "eval_teacher_accuracy": "teacher top-1",
    "eval_teacher_agreement": "student–teacher agreement",
}


def _series(log_history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for entry in log_history:
        value = entry.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            xs.append(float(entry.get("step", len(xs))))
            ys.append(float(value))
    return xs, ys


def plot_training_curves(
    log_history: Sequence[Mapping[str, Any]], path: str | os.PathLike, dpi: int = 110
) -> Path | None:
    """Save a PNG with the training losses (every ``loss/*`` term and the total ``loss``) and the evaluation
    accuracies (student top-1/top-5, teacher top-1, student–teacher agreement) against the optimizer step.

    Uses matplotlib's Agg canvas directly (no ``pyplot``, no global backend change), so it is safe in scripts,
    notebooks and worker threads.

    Args:
        log_history: ``trainer.state.log_history``.
        path: where to write the PNG.
        dpi: resolution.

    Returns:
        ``path`` as a ``Path``, or ``None`` (and nothing written) when the history has neither losses nor accuracies.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    loss_keys = sorted({k for entry in log_history for k in entry if k.startswith("loss/")})
    if any("loss" in entry for entry in log_history):
        loss_keys.append("loss")
    losses = {key: _series(log_history, key) for key in loss_keys}
    losses = {key: xy for key, xy in losses.items() if xy[0]}
    accuracies = {label: _series(log_history, key) for key, label in _ACCURACY_KEYS.items()}
    accuracies = {label: xy for label, xy in accuracies.items() if xy[0]}
    if not losses and not accuracies:
        return None

    panels = int(bool(losses)) + int(bool(accuracies))
    figure = Figure(figsize=(6.0 * panels, 4.0), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, panels, squeeze=False)[0]
    index = 0
    if losses:
        ax = axes[index]
        index += 1
        for key, (xs, ys) in losses.items():
            total = key == "loss"
            ax.plot(
                xs,
                ys,
                label="total" if total else key.removeprefix("loss/"),
                color="black" if total else None,
                linewidth=2.0 if total else 1.2,
                linestyle="--" if total else "-",
                marker="o" if len(xs) == 1 else None,
            )
        positive = all(y > 0 for _, ys in losses.values() for y in ys)
        if (
            positive
            and max(max(ys) for _, ys in losses.values()) / min(min(ys) for _, ys in losses.values()) > 50
        ):
            ax.set_yscale("log")
        ax.set_title("Training losses (weighted terms)")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if accuracies:
        ax = axes[index]
        scale = 100.0 if all(y <= 1.0 for _, ys in accuracies.values() for y in ys) else 1.0
        for label, (xs, ys) in accuracies.items():
            ax.plot(
                xs,
                [scale * y for y in ys],
                label=label,
                marker="o",
                markersize=3,
                linestyle=":" if label.startswith("teacher") else "-",
            )
        ax.set_title("Evaluation")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("%")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", metadata={"Software": None})
    return path
