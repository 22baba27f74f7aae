"""Does distillation help? Every method against a cross-entropy-only student, in the quick-start setting.

The setting is :func:`hf_relkd.quickstart.run_quickstart`'s: scikit-learn's digits (1,347 train / 450 test images at
their native 8x8 resolution), a resnet20 teacher trained once with cross-entropy, resnet8 students. For every seed,
the CE-only student and one student per method get the same data, augmentation, epochs, batch, optimizer (SGD,
momentum 0.9, weight decay 5e-4), multi-step schedule, seed and initial weights. Methods and weights
(:data:`hf_relkd.quickstart.METHOD_VARIANTS`, the papers' values):

* ``kd``: 0.1 x CE + 0.9 x KD (T = 4), RepDistiller's KD baseline;
* ``rkd``: CE + RKD (distance 25, angle 50);
* ``rrd``: CE + RRD (weight 1, tau_s 0.04, tau_t 0.1, queue 1,024 keys);
* ``rrd+kd``: CE + RRD + KD (T = 4), weights 1/1/1;
* ``vrm``: CE on both views + VRM (alpha 128, beta 32, pruning at the 90th percentile, RandAugment virtual view).

Reported: top-1 accuracy (mean ± std over seeds), the paired difference to the CE-only student of the same seed
(mean ± std), on how many seeds the method beats CE, agreement with the teacher, and the training time per run.
The test set has 450 images: one image is 0.22 points.

    python benchmarks/efficacy.py                         # 5 seeds, all methods, results in benchmarks/results/
    python benchmarks/efficacy.py --seeds 0 1 2 --methods kd rrd+kd
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import common  # noqa: I001  (benchmarks/common.py; also makes a checkout's hf_relkd importable)
import torch

from hf_relkd.quickstart import BASELINE, DEFAULTS, METHOD_VARIANTS, run_quickstart


def paired_deltas(results: Mapping[str, Any], name: str) -> list[float]:
    """Per-seed accuracy difference (points) between student ``name`` and the CE-only student of the same seed.

    Args:
        results: a :func:`run_quickstart` result.
        name: a distilled student's name.

    Returns:
        ``100 * (acc_name - acc_ce)`` for each seed, in seed order.
    """
    baseline = {run["seed"]: run["accuracy"] for run in results["students"][BASELINE]["runs"]}
    return [100 * (run["accuracy"] - baseline[run["seed"]]) for run in results["students"][name]["runs"]]


def _pm(values: Sequence[float], digits: int = 2, signed: bool = False) -> str:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    sign = "+" if signed else ""
    return f"{mean:{sign}.{digits}f} ± {std:.{digits}f}"


def comparison_rows(results: Mapping[str, Any], describe: Mapping[str, str]) -> list[list[Any]]:
    """Markdown rows comparing every student of a :func:`run_quickstart` result with the CE-only student.

    Args:
        results: a :func:`run_quickstart` result.
        describe: student name -> a short description of its loss (shown in the second column).

    Returns:
        Rows of: student, loss, top-1 (%), Δ vs CE (points, paired by seed), wins over CE, teacher agreement (%),
        seconds per run; the teacher first.
    """
    teacher = results["teacher"]
    rows: list[list[Any]] = [
        [
            f"teacher {teacher['model']}",
            "CE",
            f"{100 * teacher['accuracy']:.2f}",
            "",
            "",
            "",
            f"{teacher['train_time_s']:.0f}",
        ]
    ]
    n = len(results["settings"]["seeds"])
    for name, entry in results["students"].items():
        accuracies = [100 * run["accuracy"] for run in entry["runs"]]
        agreements = [100 * run["teacher_agreement"] for run in entry["runs"]]
        seconds = statistics.fmean(run["train_time_s"] for run in entry["runs"])
        if name == BASELINE:
            delta = wins = "–"
        else:
            deltas = paired_deltas(results, name)
            delta = _pm(deltas, signed=True)
            wins = f"{sum(d > 0 for d in deltas)}/{n} (ties {sum(d == 0 for d in deltas)})"
        rows.append(
            [
                f"student {entry['model']}, {name}",
                describe.get(name, ""),
                _pm(accuracies),
                delta,
                wins,
                _pm(agreements),
                f"{seconds:.0f}",
            ]
        )
    return rows


COLUMNS = [
    "model",
    "loss",
    "top-1 (%)",
    "Δ vs CE (points, paired)",
    "beats CE on",
    "teacher agreement (%)",
    "s / run",
]
DESCRIPTIONS = {
    BASELINE: "CE",
    "kd": "0.1 CE + 0.9 KD (T 4)",
    "rkd": "CE + RKD (25 / 50)",
    "rrd": "CE + RRD (1)",
    "rrd+kd": "CE + RRD (1) + KD (1, T 4)",
    "vrm": "CE (both views) + VRM (128 / 32, p90)",
}


def settings_markdown(results: Mapping[str, Any], wall_time_s: float) -> str:
    """A bullet list of the shared setting of a :func:`run_quickstart` result.

    Args:
        results: a :func:`run_quickstart` result.
        wall_time_s: wall time of the whole benchmark.

    Returns:
        Markdown lines.
    """
    s = results["settings"]
    teacher = results["teacher"]
    trained = (
        f"{s['teacher_epochs']:g} epochs, trained once, {teacher['train_time_s']:.0f} s"
        if teacher["train_time_s"]
        else f"loaded from {teacher['path']}"
    )
    return "\n".join(
        [
            f"* Data: {s['dataset']}, {s['image_size']}x{s['image_size']} px; students train on "
            f"{s['student_train_samples']:,} images.",
            f"* Teacher {s['teacher_model']} ({trained}); students {s['student_model']}, "
            f"{s['student_epochs']:g} epochs each, batch {s['batch_size']}, SGD lr {s['learning_rate']} momentum 0.9, "
            "wd 5e-4, x0.1 at 62.5/75/87.5 % of training.",
            f"* Seeds {s['seeds']} (mean ± std over seeds; Δ is paired: same seed, same initial weights and data "
            "order as the CE student).",
            f"* {s['device']}, {s['torch_threads']} torch thread(s); total wall time {wall_time_s / 60:.1f} min.",
        ]
    )


def add_quickstart_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The quick-start settings shared by the efficacy benchmark and the VRM pruning ablation.

    Args:
        parser: the script's parser.

    Returns:
        ``parser``, with ``--seeds``, the model/epoch/size settings, ``--teacher_path``, ``--num_threads``,
        ``--progress``, ``--output_dir`` and ``--work_dir``.
    """
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4], help="Seeds (at least 3).")
    parser.add_argument("--teacher_model", default=DEFAULTS["teacher_model"])
    parser.add_argument("--student_model", default=DEFAULTS["student_model"])
    parser.add_argument("--image_size", type=int, default=DEFAULTS["image_size"])
    parser.add_argument("--teacher_epochs", type=float, default=DEFAULTS["teacher_epochs"])
    parser.add_argument("--student_epochs", type=float, default=DEFAULTS["student_epochs"])
    parser.add_argument("--max_steps", type=int, default=None, help="Cap every run (smoke tests only).")
    parser.add_argument("--teacher_path", default=None, help="Reuse a saved teacher instead of training one.")
    parser.add_argument(
        "--num_threads", type=int, default=None, help="Torch CPU threads (default: free cores)."
    )
    parser.add_argument("--progress", action="store_true", help="Show the progress bars of every run.")
    parser.add_argument("--output_dir", default=os.path.join(common.REPO_ROOT, "benchmarks", "results"))
    parser.add_argument(
        "--work_dir", default=None, help="Where the teacher is saved (default: a temporary folder, deleted)."
    )
    return parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Accuracy of every distillation method against a CE-only student (quick-start setting, several "
        "seeds). Writes efficacy.json and efficacy.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--methods", nargs="+", default=list(METHOD_VARIANTS), choices=list(METHOD_VARIANTS), help="Students."
    )
    return add_quickstart_arguments(parser)


def run_and_report(
    args: argparse.Namespace,
    variants: Mapping[str, Mapping[str, Any]],
    *,
    benchmark: str,
    title: str,
    describe: Mapping[str, str],
    extra_payload: Callable[[dict[str, list[float]]], dict[str, Any]] | None = None,
    extra_markdown: Callable[[dict[str, Any]], str] | None = None,
) -> dict[str, Any]:
    """Train the CE-only student and every variant over the seeds, then write ``<benchmark>.json`` / ``.md``.

    The common runner of this benchmark and the VRM pruning ablation: one :func:`run_quickstart` call (teacher
    trained once, every student paired with the CE student of its seed), the machine description, paired deltas,
    the settings and the comparison table.

    Args:
        args: parsed :func:`add_quickstart_arguments` arguments.
        variants: student name -> config fields (as :data:`METHOD_VARIANTS`).
        benchmark: result file stem and ``payload["benchmark"]``.
        title: Markdown title.
        describe: student name -> short description of its loss (table column).
        extra_payload: paired deltas (name -> points per seed) -> more payload fields.
        extra_markdown: payload -> a paragraph appended to the Markdown.

    Returns:
        The JSON payload.
    """
    if len(args.seeds) < 3:
        print("warning: fewer than 3 seeds; the differences will not be meaningful.", file=sys.stderr)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix=f"hf_relkd_{benchmark}_") as scratch:
        results = run_quickstart(
            args.work_dir or scratch,
            seeds=args.seeds,
            teacher_model=args.teacher_model,
            student_model=args.student_model,
            image_size=args.image_size,
            teacher_epochs=args.teacher_epochs,
            student_epochs=args.student_epochs,
            max_steps=args.max_steps,
            variants=dict(variants),
            teacher_path=args.teacher_path,
            save_student=False,
            progress=args.progress,
            num_threads=args.num_threads,
        )
    wall = time.time() - started
    deltas = {name: paired_deltas(results, name) for name in variants}
    payload = {
        "benchmark": benchmark,
        "command": common.command_line(),
        "date": common.utc_now(),
        "machine": common.machine_info(torch.device("cuda" if torch.cuda.is_available() else "cpu")),
        "wall_time_s": wall,
        "method_settings": {name: dict(cfg) for name, cfg in variants.items()},
        "paired_deltas_points": deltas,
        **(extra_payload(deltas) if extra_payload else {}),
        "results": results,
    }
    payload["machine"]["torch_threads"] = results["settings"]["torch_threads"]
    sections = [
        common.header_markdown(title, payload),
        settings_markdown(results, wall),
        common.markdown_table(COLUMNS, comparison_rows(results, {BASELINE: "CE", **describe})),
    ]
    if extra_markdown:
        sections.append(extra_markdown(payload))
    json_path, md_path = common.write_results(args.output_dir, benchmark, payload, "\n\n".join(sections))
    print("\n\n".join(sections))
    print(f"\nWrote {json_path} and {md_path}")
    return payload


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and write ``efficacy.json`` and ``efficacy.md`` to ``--output_dir``.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The JSON payload.
    """
    args = _parser().parse_args(argv)
    return run_and_report(
        args,
        {name: METHOD_VARIANTS[name] for name in args.methods},
        benchmark="efficacy",
        title="Efficacy: distilled vs CE-only students (quick-start setting)",
        describe=DESCRIPTIONS,
    )


if __name__ == "__main__":
    main()
