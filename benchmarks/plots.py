"""Figures of the benchmark results, for what is easier to see than to read in a table.

* ``step_cost``: every method's step time and peak memory as ratios to KD, with the issue's targets and the VRM
  paper's Table 7 ratios marked;
* ``loss_scaling``: each loss alone against the batch size, the number of classes and the RRD queue (log-log).

``step_cost.py`` and ``loss_scaling.py`` draw their figure after writing their results; this script redraws figures
from result files::

    python benchmarks/plots.py benchmarks/results/step_cost_cpu_malloc_retain.json benchmarks/results/loss_scaling_cpu.json

Each figure is written beside its JSON file as ``<stem>.png``.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from typing import Any

LOSS_COLOURS = {"kd": "tab:gray", "rkd": "tab:blue", "rrd": "tab:orange", "vrm": "tab:green"}
PAPER_NAMES = {"kd": "KD", "rkd": "RKD", "vrm": "VRM"}


def _figure(width: float, height: float):
    # matplotlib's Agg canvas without pyplot: no global state, safe in the benchmarks' worker threads
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _subtitle(payload: dict[str, Any]) -> str:
    machine = payload["machine"]
    device = machine.get("gpu") or f"{machine['cpu']}, {machine['usable_cores']} cores"
    return f"{device} · {payload['date']}"


def plot_step_cost(payload: dict[str, Any], path: str) -> str:
    """Bar chart of ``step_cost.py`` results: step time and peak memory of each method as ratios to KD.

    Args:
        payload: the JSON written by ``step_cost.py``.
        path: where to write the PNG.

    Returns:
        ``path``.
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    methods = {name: m for name, m in payload["methods"].items() if m.get("error") is None}
    names = list(methods)[::-1]  # first method on top
    limits: dict[tuple[str, str], float] = {}
    for target in payload.get("targets", []):
        if target["reference"] == "kd":
            metric = "memory" if "memory" in target["target"].lower() else "time"
            limits[(target["method"], metric)] = target["limit"]
    paper = payload.get("paper_table7", {})
    panels = [
        ("time", "paired_step_time_ratio_to_kd", "ms_ratio_to_kd", "step time ÷ KD (paired median)"),
        ("memory", "memory_ratio_to_kd", "mb_ratio_to_kd", "peak memory ÷ KD"),
    ]
    figure = _figure(11.0, 0.45 * len(names) + 1.8)
    axes = figure.subplots(1, 2, sharey=True)
    for ax, (metric, key, paper_key, xlabel) in zip(axes, panels):
        values = [methods[n].get(key) or 0.0 for n in names]
        x_max = max(values + [lim for (_, m), lim in limits.items() if m == metric]) * 1.12
        colours = []
        for name, value in zip(names, values):
            limit = limits.get((name, metric))
            colours.append("tab:gray" if limit is None else ("tab:green" if value <= limit else "tab:red"))
        ax.barh(range(len(names)), values, color=colours, alpha=0.8)
        for i, (name, value) in enumerate(zip(names, values)):
            # the value at the bar's root, clear of the target and paper marks near its end
            ax.text(0.02 * x_max, i, f"{value:.3f}", va="center", fontsize=8, color="white", weight="bold")
            limit = limits.get((name, metric))
            if limit is not None:
                ax.plot([limit, limit], [i - 0.4, i + 0.4], color="black", linewidth=2)
            reference = paper.get(PAPER_NAMES.get(name, ""), {}).get(paper_key)
            if reference is not None and name != "kd":
                ax.plot([reference], [i], marker="D", color="tab:purple", markersize=6, linestyle="none")
        ax.axvline(1.0, color="black", linewidth=0.8, linestyle=":")
        ax.set_xlabel(xlabel)
        ax.set_xlim(0, x_max)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(names)), [methods[n]["label"] for n in names])
    figure.legend(
        handles=[
            Patch(color="tab:green", alpha=0.8, label="within target"),
            Patch(color="tab:red", alpha=0.8, label="over target"),
            Line2D([], [], color="black", linewidth=2, label="target"),
            Line2D([], [], marker="D", color="tab:purple", linestyle="none", label="VRM paper, Table 7"),
        ],
        loc="outside lower center",
        ncols=4,
        fontsize=8,
    )
    cfg = payload["config"]
    figure.suptitle(
        f"Step cost through RelationalDistillationTrainer: {cfg['teacher']} → {cfg['student']}, batch "
        f"{cfg['batch_size']}\n{_subtitle(payload)}",
        fontsize=10,
    )
    figure.savefig(path)
    return path


def _rows(payload: dict[str, Any], sweep: str, loss: str) -> list[dict[str, Any]]:
    return [
        r for r in payload["results"] if r["sweep"] == sweep and r["loss"] == loss and r["status"] == "ok"
    ]


def plot_loss_scaling(payload: dict[str, Any], path: str) -> str:
    """Log-log curves of ``loss_scaling.py`` results: forward+backward time and peak memory of each loss alone.

    Panels: time and memory against the batch (every loss), against the RRD queue size, and against the number of
    classes (KD and VRM, one line per batch size).

    Args:
        payload: the JSON written by ``loss_scaling.py``.
        path: where to write the PNG.

    Returns:
        ``path``.
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator

    figure = _figure(13.0, 7.0)
    axes = figure.subplots(2, 3)
    cfg = payload["config"]
    for column, (sweep, x_key, xlabel) in enumerate(
        [
            (
                "batch",
                "batch",
                f"batch size B ({cfg['base_classes']} classes, RRD queue {cfg['base_queue']})",
            ),
            ("queue", "queue", f"RRD queue size K (B = {cfg['queue_batch']})"),
            ("classes", "classes", "classes C"),
        ]
    ):
        for row, (y_key, ylabel) in enumerate(
            [("ms", "forward+backward (ms, median)"), ("peak_mb", "peak (MB)")]
        ):
            ax = axes[row][column]
            if sweep == "classes":
                series = [
                    (f"{loss} B={b}", loss, [r for r in _rows(payload, sweep, loss) if r["batch"] == b])
                    for loss in ("kd", "vrm")
                    for b in cfg["class_batches"]
                ]
            else:
                series = [(loss, loss, _rows(payload, sweep, loss)) for loss in LOSS_COLOURS]
            for label, loss, rows in series:
                rows = sorted((r for r in rows if r.get(y_key)), key=lambda r: r[x_key])
                if not rows:
                    continue
                linestyle = (
                    "--" if sweep == "classes" and label.endswith(f"B={cfg['class_batches'][-1]}") else "-"
                )
                ax.plot(
                    [r[x_key] for r in rows],
                    [r[y_key] for r in rows],
                    marker="o",
                    markersize=3,
                    color=LOSS_COLOURS[loss],
                    linestyle=linestyle,
                    label=label,
                )
            ax.set_xscale("log")
            ax.set_yscale("log")
            xs = sorted({r[x_key] for r in payload["results"] if r["sweep"] == sweep})
            ax.set_xticks(xs, [f"{x:,}" for x in xs])
            ax.xaxis.set_minor_locator(NullLocator())
            low, high = ax.get_ylim()
            # a short range gets labels at 1, 2 and 5 times the powers of ten, a long one at the powers alone
            ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if high / low < 100 else (1.0,)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.grid(alpha=0.3, which="both")
            if row == 1:
                ax.set_xlabel(xlabel)
            if column == 0:
                ax.set_ylabel(ylabel)
            if row == 0 and ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
    figure.suptitle(f"Each loss alone, forward + backward\n{_subtitle(payload)}", fontsize=10)
    figure.savefig(path)
    return path


PLOTTERS = {"step_cost": plot_step_cost, "loss_scaling": plot_loss_scaling}


def plot_result_file(json_path: str) -> str:
    """Draw the figure of one result file (``step_cost`` or ``loss_scaling``) as ``<stem>.png`` beside it."""
    with open(json_path) as f:
        payload = json.load(f)
    plotter = PLOTTERS.get(payload.get("benchmark"))
    if plotter is None:
        raise ValueError(
            f"{json_path} is a {payload.get('benchmark')!r} result; figures exist for {', '.join(PLOTTERS)} results."
        )
    return plotter(payload, os.path.splitext(json_path)[0] + ".png")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", help="JSON files written by step_cost.py or loss_scaling.py")
    args = parser.parse_args(argv)
    for json_path in args.results:
        try:
            print(f"wrote {plot_result_file(json_path)}")
        except ValueError as error:
            parser.error(str(error))


if __name__ == "__main__":
    main()
