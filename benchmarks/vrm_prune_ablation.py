"""Which ``vrm_prune_percentile``? VRM students with p in {50, 75, 90, 100} in the quick-start setting.

VRM drops the inter-sample edges whose joint student entropy is above the p-th percentile of the batch (p = 100 keeps
every edge). The paper does not state p legibly; the library's default is 90. Each p trains one VRM student per seed
(alpha 128, beta 32, RandAugment virtual view) beside a CE-only student with the same seed, data and initial weights,
in :func:`hf_relkd.quickstart.run_quickstart`'s setting (digits at 8x8, resnet20 teacher trained once, resnet8
students). See ``benchmarks/efficacy.py`` for the columns.

    python benchmarks/vrm_prune_ablation.py                          # p 50 75 90 100, 5 seeds
    python benchmarks/vrm_prune_ablation.py --percentiles 80 90 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import common  # noqa: I001  (benchmarks/common.py; also makes a checkout's hf_relkd importable)
import torch
from efficacy import COLUMNS, add_quickstart_arguments, comparison_rows, paired_deltas, settings_markdown

from hf_relkd.quickstart import BASELINE, METHOD_VARIANTS, run_quickstart


def variant(percentile: float) -> tuple[str, dict[str, Any]]:
    """The VRM student of one pruning percentile.

    Args:
        percentile: ``vrm_prune_percentile`` in (0, 100].

    Returns:
        ``(name, config fields)``, e.g. ``("vrm p90", {"methods": ["vrm"], "vrm_prune_percentile": 90.0})``.
    """
    return f"vrm p{percentile:g}", {**METHOD_VARIANTS["vrm"], "vrm_prune_percentile": float(percentile)}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="VRM pruning-percentile ablation in the quick-start setting (several seeds). Writes "
        "vrm_prune_ablation.json and vrm_prune_ablation.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--percentiles", nargs="+", type=float, default=[50, 75, 90, 100])
    return add_quickstart_arguments(parser)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the ablation and write ``vrm_prune_ablation.json`` / ``.md`` to ``--output_dir``.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The JSON payload.
    """
    args = _parser().parse_args(argv)
    bad = [p for p in args.percentiles if not 0 < p <= 100]
    if bad:
        raise SystemExit(f"--percentiles must lie in (0, 100] (100 disables pruning), got {bad}.")
    if len(args.seeds) < 3:
        print("warning: fewer than 3 seeds; the differences will not be meaningful.", file=sys.stderr)
    variants = dict(variant(p) for p in args.percentiles)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="hf_relkd_vrm_ablation_") as scratch:
        results = run_quickstart(
            args.work_dir or scratch,
            seeds=args.seeds,
            teacher_model=args.teacher_model,
            student_model=args.student_model,
            image_size=args.image_size,
            teacher_epochs=args.teacher_epochs,
            student_epochs=args.student_epochs,
            max_steps=args.max_steps,
            variants=variants,
            teacher_path=args.teacher_path,
            save_student=False,
            progress=args.progress,
            num_threads=args.num_threads,
        )
    wall = time.time() - started
    deltas = {name: paired_deltas(results, name) for name in variants}
    ranking = sorted(variants, key=lambda name: statistics.fmean(deltas[name]), reverse=True)
    payload = {
        "benchmark": "vrm_prune_ablation",
        "command": common.command_line(),
        "date": common.utc_now(),
        "machine": common.machine_info(torch.device("cuda" if torch.cuda.is_available() else "cpu")),
        "wall_time_s": wall,
        "percentiles": args.percentiles,
        "paired_deltas_points": deltas,
        "ranking_by_mean_delta": ranking,
        "results": results,
    }
    payload["machine"]["torch_threads"] = results["settings"]["torch_threads"]
    describe = {BASELINE: "CE"}
    describe.update(
        {name: f"CE + VRM, prune above p{cfg['vrm_prune_percentile']:g}" for name, cfg in variants.items()}
    )
    markdown = "\n\n".join(
        [
            common.header_markdown("VRM pruning percentile (quick-start setting)", payload),
            settings_markdown(results, wall),
            common.markdown_table(COLUMNS, comparison_rows(results, describe)),
            "Ranking by mean paired Δ: " + " > ".join(ranking) + ".",
        ]
    )
    json_path, md_path = common.write_results(args.output_dir, "vrm_prune_ablation", payload, markdown)
    print(markdown)
    print(f"\nWrote {json_path} and {md_path}")
    return payload


if __name__ == "__main__":
    main()
