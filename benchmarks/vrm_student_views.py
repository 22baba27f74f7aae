"""Which ``vrm_student_views``? VRM students that see both views in one pass or one pass per view.

VRM runs the student on the real and the virtual view of every image. ``"joint"`` (the default) stacks them into one
batch of 2B images, so the student's BatchNorm statistics span both views; ``"per_view"`` runs the student once per
view, with statistics per view, as multi-view distillers commonly do (the VRM authors' code was not available to
check which they use). Both train one VRM student per seed (alpha 128, beta 32, RandAugment virtual view) beside a
CE-only student with the same seed, data and initial weights, in :func:`hf_relkd.quickstart.run_quickstart`'s setting
(digits at 8x8, resnet20 teacher trained once, resnet8 students). See ``benchmarks/efficacy.py`` for the columns and
``benchmarks/step_cost.py`` (rows ``vrm`` and ``vrm_per_view``) for what each costs.

    python benchmarks/vrm_student_views.py                  # joint and per_view, 5 seeds
    python benchmarks/vrm_student_views.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from typing import Any

import common  # noqa: F401, I001  (benchmarks/common.py; also makes a checkout's hf_relkd importable)
from efficacy import add_quickstart_arguments, run_and_report

from hf_relkd.quickstart import METHOD_VARIANTS

VIEWS = ("joint", "per_view")


def variant(views: str) -> tuple[str, dict[str, Any]]:
    """The VRM student of one ``vrm_student_views`` setting.

    Args:
        views: ``"joint"`` or ``"per_view"``.

    Returns:
        ``(name, config fields)``, e.g. ``("vrm per_view", {"methods": ["vrm"], "vrm_student_views": "per_view"})``.
    """
    return f"vrm {views}", {**METHOD_VARIANTS["vrm"], "vrm_student_views": views}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the comparison and write ``vrm_student_views.json`` / ``.md`` to ``--output_dir``.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The JSON payload.
    """
    parser = argparse.ArgumentParser(
        description="VRM with the student's views in one pass or one pass per view, in the quick-start setting "
        "(several seeds). Writes vrm_student_views.json and vrm_student_views.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    args = add_quickstart_arguments(parser).parse_args(argv)
    variants = dict(variant(views) for views in VIEWS)

    def per_view_minus_joint(deltas: dict[str, list[float]]) -> dict[str, Any]:
        # both are paired with the same CE student, so their difference is paired too
        diff = [p - j for p, j in zip(deltas["vrm per_view"], deltas["vrm joint"])]
        spread = statistics.stdev(diff) if len(diff) > 1 else 0.0
        return {"per_view_minus_joint_points": diff, "mean": statistics.fmean(diff), "std": spread}

    return run_and_report(
        args,
        variants,
        benchmark="vrm_student_views",
        title="VRM: the student's two views in one pass or one pass per view (quick-start setting)",
        describe={name: f"CE + VRM, {cfg['vrm_student_views']}" for name, cfg in variants.items()},
        extra_payload=per_view_minus_joint,
        extra_markdown=lambda payload: (
            f"per_view − joint, paired by seed: {payload['mean']:+.2f} ± {payload['std']:.2f} points."
        ),
    )


if __name__ == "__main__":
    main()
