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
from collections.abc import Sequence
from typing import Any

import common  # noqa: F401, I001  (benchmarks/common.py; also makes a checkout's hf_relkd importable)
from efficacy import add_quickstart_arguments, run_and_report

from hf_relkd.quickstart import METHOD_VARIANTS


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
    variants = dict(variant(p) for p in args.percentiles)

    def ranking(deltas: dict[str, list[float]]) -> dict[str, Any]:
        ranked = sorted(variants, key=lambda name: statistics.fmean(deltas[name]), reverse=True)
        return {"percentiles": args.percentiles, "ranking_by_mean_delta": ranked}

    return run_and_report(
        args,
        variants,
        benchmark="vrm_prune_ablation",
        title="VRM pruning percentile (quick-start setting)",
        describe={
            name: f"CE + VRM, prune above p{cfg['vrm_prune_percentile']:g}" for name, cfg in variants.items()
        },
        extra_payload=ranking,
        extra_markdown=lambda payload: (
            "Ranking by mean paired Δ: " + " > ".join(payload["ranking_by_mean_delta"]) + "."
        ),
    )


if __name__ == "__main__":
    main()
