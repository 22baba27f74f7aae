"""Write the README's "Benchmarks" section from the result files, so that no number in it is typed by hand.

The section sits between ``<!-- benchmarks:start -->`` and ``<!-- benchmarks:end -->`` in ``README.md``. It is built
from ``benchmarks/results/*.json`` / ``*.md`` only: the step-cost runs (headline and side-by-side variants), their
targets and per-part breakdown, the loss sweeps and the efficacy table. ``tests/test_readme.py`` fails when the README
and the result files disagree.

    python benchmarks/readme_section.py            # rewrite the section in README.md
    python benchmarks/readme_section.py --check    # exit 1 if README.md is out of date
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Any

import common  # benchmarks/common.py

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
README = os.path.join(os.path.dirname(HERE), "README.md")
START, END = "<!-- benchmarks:start -->", "<!-- benchmarks:end -->"

# (result stem, short description); the first is the headline run
STEP_COST_RUNS = [
    ("step_cost_cpu_malloc_retain", "fp32, `--cpu_malloc retain`"),
    ("step_cost_cpu", "fp32, glibc's default allocator"),
    ("step_cost_cpu_bf16_channels_last_malloc_retain", "bf16 + channels_last, `--cpu_malloc retain`"),
]


def _load(stem: str) -> dict[str, Any] | None:
    path = os.path.join(RESULTS, f"{stem}.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def _markdown_table(stem: str, heading: str | None = None) -> str:
    """The first Markdown table of ``results/<stem>.md`` (after ``heading`` if given)."""
    with open(os.path.join(RESULTS, f"{stem}.md")) as f:
        text = f.read()
    if heading:
        text = text[text.index(heading) :]
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return "\n".join(lines[start:end])


def _provenance(payload: dict[str, Any]) -> str:
    return f"Command: `{payload['command']}`; date: {payload['date']}"


def _step_cost_side_by_side(runs: list[tuple[str, str, dict[str, Any]]]) -> str:
    headers = ["Method"]
    for _, label, _ in runs:
        headers += [f"{label}: ms", "× KD time", "× KD memory"]
    rows = []
    for name, entry in runs[0][2]["methods"].items():
        row = [entry["label"]]
        for _, _, payload in runs:
            e = payload["methods"].get(name, {})
            row += [
                common.fmt(e.get("step_ms"), 1),
                common.fmt(e.get("paired_step_time_ratio_to_kd"), 3),
                common.fmt(e.get("memory_ratio_to_kd"), 3),
            ]
        rows.append(row)
    return common.markdown_table(headers, rows)


def _failed(payload: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in payload["targets"] if t["passed"] is False]


def _breakdown_sentence(label: str, payload: dict[str, Any]) -> str:
    ratios = payload.get("breakdown", {}).get("ratios")
    if not ratios:
        return ""
    return (
        f"{label}: the teacher's forward at 2B costs {ratios['teacher_2b_over_b']:.2f}× its cost at B, the student's "
        f"forward+backward {ratios['student_2b_over_b']:.2f}×"
    )


def _vrm_memory_paragraph(payload: dict[str, Any]) -> str:
    methods = payload["methods"]
    kd, vrm = methods["kd"]["memory_mb"], methods["vrm"]["memory_mb"]
    fixed = _fixed_mb(payload)
    extra = vrm - kd
    return (
        f"Why VRM's memory ratio is where it is: {common.fmt(vrm, 1)} MB against KD's {common.fmt(kd, 1)} MB ({vrm / kd:.3f}×). "
        f"The weights, gradients and momentum of the student and the teacher's weights take {common.fmt(fixed, 1)} MB "
        f"({fixed / kd:.1%} of KD's peak); everything else in KD's peak is the student's saved activations of one "
        f"view. VRM adds {common.fmt(extra, 1)} MB, {extra / (kd - fixed):.2f}× those activations: the second view's, which "
        "the student's backward pass needs, and where the peak sits (the VRM loss's own buffers are freed before "
        "it). With that composition the ratio is 2 − fixed/KD, above 1.8 whenever the fixed part is under a fifth "
        "of KD's peak, as it is for a 1.2 M-parameter student; the paper's GPU measured 323 MB for KD."
    )


def _fixed_mb(payload: dict[str, Any]) -> float:
    """Memory that does not grow with the batch: the student's weights, gradients and SGD momentum (fp32) and the
    teacher's weights (in its dtype), from the parameter counts of the run's architectures."""
    from hf_relkd.models import create_model

    cfg = payload["config"]

    def count(name: str) -> int:
        return sum(p.numel() for p in create_model(name, cfg["num_classes"]).parameters())

    teacher_bytes = 2 if cfg["teacher_dtype"] in ("bfloat16", "float16") else 4
    return (3 * 4 * count(cfg["student"]) + teacher_bytes * count(cfg["teacher"])) / 1024**2


def build_section() -> str:
    runs = [(stem, label, payload) for stem, label in STEP_COST_RUNS if (payload := _load(stem)) is not None]
    if not runs:
        raise SystemExit(f"No step-cost results in {RESULTS}: run benchmarks/step_cost.py first.")
    head_stem, head_label, head = runs[0]
    machine = head["machine"]
    out = [
        "Scripts in `benchmarks/` write JSON and Markdown to `benchmarks/results/`; `benchmarks/README.md` explains "
        "each measurement, and this section is generated from those files by `benchmarks/readme_section.py`. "
        f"Machine: {machine['cpu']}, {machine['usable_cores']} cores shared with other jobs, no GPU. CPU timings are "
        "noisy, so methods are interleaved step by step and compared as paired ratios. No GPU was lent for this "
        "release; the GPU command is `python benchmarks/step_cost.py --device cuda --bf16 --channels_last` "
        "(add `--compile_teacher` for `teacher_compile=True`).",
        "",
        "**Step cost** through `RelationalDistillationTrainer` (resnet32x4 → resnet8x4, batch 64, 32×32, 100 classes), "
        "with a hand-written PyTorch KD loop as the reference for the Trainer's own overhead. Headline run: "
        f"{head_label}. {_provenance(head)}.",
        "",
        _markdown_table(head_stem),
        "",
        "Targets:",
        "",
        _markdown_table(head_stem, "### Targets"),
        "",
    ]
    if len(runs) > 1:
        out += [
            "The same benchmark in other settings (each a separate run; ratios are to KD within the same run):",
            "",
            _step_cost_side_by_side(runs),
            "",
        ]
        out += [f"* {label}: `{payload['command']}` ({payload['date']})" for _, label, payload in runs]
        out.append("")
    out += _allocator_paragraph(runs)
    out += [_vrm_memory_paragraph(head), ""]
    out += _low_precision_paragraph(runs)
    failed = {label: _failed(payload) for _, label, payload in runs}
    verdicts = [
        f"{label}: "
        + ("every target met" if not f else "; ".join(f"{t['target']} {t['ratio']:.3f}" for t in f))
        for label, f in failed.items()
    ]
    out += ["Targets missed, per run: " + " · ".join(verdicts) + ".", ""]
    out += _loss_scaling()
    out += _efficacy()
    return "\n".join(out).strip() + "\n"


def _allocator_paragraph(runs: list[tuple[str, str, dict[str, Any]]]) -> list[str]:
    by_stem = {stem: payload for stem, _, payload in runs}
    retain, default = by_stem.get("step_cost_cpu_malloc_retain"), by_stem.get("step_cost_cpu")
    if not (retain and default):
        return []
    vrm_r = retain["methods"]["vrm"]["paired_step_time_ratio_to_kd"]
    vrm_d = default["methods"]["vrm"]["paired_step_time_ratio_to_kd"]
    sentences = [
        s
        for s in (
            _breakdown_sentence("With glibc's defaults", default),
            _breakdown_sentence("with `--cpu_malloc retain`", retain),
        )
        if s
    ]
    return [
        f"Why VRM's time ratio depends on the allocator ({common.fmt(vrm_d, 2)}× KD with glibc's defaults, {common.fmt(vrm_r, 2)}× "
        "with freed memory retained): VRM runs both networks on 2B images, and at B = 128 a 32×32 activation map "
        "of resnet32x4's first stage (64 channels) is 32 MiB, above glibc's largest mmap threshold. glibc then maps "
        "fresh zero-filled pages for every such tensor and unmaps them on free, so each layer page-faults anew. "
        + "; ".join(sentences)
        + ". A caching allocator (CUDA's on a GPU; jemalloc or tcmalloc, or `MALLOC_MMAP_THRESHOLD_`/"
        "`MALLOC_TRIM_THRESHOLD_` on CPU, which `--cpu_malloc retain` sets through `mallopt`) removes the cost; "
        "for CPU training with large batches, set it in your own runs too.",
        "",
    ]


def _low_precision_paragraph(runs: list[tuple[str, str, dict[str, Any]]]) -> list[str]:
    """What changes in bf16: the networks' activations halve, the relational losses stay in float32."""
    low = [(label, p) for _, label, p in runs if p["config"].get("bf16")]
    full = [p for _, _, p in runs if not p["config"].get("bf16")]
    if not low or not full:
        return []
    label, bf16 = low[0]
    fp32 = full[0]
    kd16, kd32 = bf16["methods"]["kd"]["memory_mb"], fp32["methods"]["kd"]["memory_mb"]

    def added(payload: dict[str, Any], name: str) -> str:
        return common.fmt(payload["methods"][name]["memory_mb"] - payload["methods"]["kd"]["memory_mb"], 1)

    rkd16, rkd32 = added(bf16, "rkd"), added(fp32, "rkd")
    if max(float(rkd16), float(rkd32)) < 0.5:
        rkd_why = (
            "its (B, B, B) cosines exist only during its own backward pass, which ends before the networks' "
        )
        rkd_why += "backward pass where the peak is"
    else:
        rkd_why = (
            "the (B, B, B) cosines of its backward pass, built while the student's activations are alive"
        )
    rkd_clause = f"RKD adds {rkd16} MB (fp32 run: {rkd32} MB; {rkd_why})"
    return [
        f"In {label}, KD's step takes {common.fmt(bf16['methods']['kd']['step_ms'], 0)} ms instead of "
        f"{common.fmt(fp32['methods']['kd']['step_ms'], 0)} ms (this CPU has AVX512-BF16) and its peak shrinks from "
        f"{common.fmt(kd32, 1)} to {common.fmt(kd16, 1)} MB, because the networks' activations are stored in bf16. The relational "
        "losses run in float32 by design, so what they add weighs more against that smaller peak: "
        f"{rkd_clause}, RRD {added(bf16, 'rrd')} MB (fp32 run: {added(fp32, 'rrd')} MB; the "
        "queue of 16,384 keys and the (B, K) similarity matrices).",
        "",
    ]


def _loss_scaling() -> list[str]:
    payload = _load("loss_scaling_cpu")
    if payload is None:
        return []
    return [
        f"**Loss scaling** (each loss alone, forward + backward). {_provenance(payload)}.",
        "",
        _markdown_table("loss_scaling_cpu", "### Batch sweep"),
        "",
        "VRM at ImageNet scale (B = 256, C = 1000) is computed in chunks with recomputation: same value, a fraction "
        "of the memory:",
        "",
        _markdown_table("loss_scaling_cpu", "### VRM inter-class chunking"),
        "",
    ]


def _efficacy() -> list[str]:
    payload = _load("efficacy")
    if payload is None:
        return []
    seeds = payload["results"]["settings"]["seeds"]
    return [
        '**Efficacy at small scale** (the project\'s "Table 1" until full CIFAR-100 runs exist): the quick-start '
        f"setting, every method, {len(seeds)} seeds, same budget. {_provenance(payload)}.",
        "",
        _markdown_table("efficacy"),
        "",
        "On 10-class 8×8 digits the teacher is only a little above the students and every method stays within the "
        "seed-to-seed spread of the CE-only student (Δ is paired by seed): this table shows that all methods train "
        "correctly at the same budget, not that one wins. The pruning ablation that set VRM's default is in "
        "`benchmarks/results/vrm_prune_ablation.md`.",
    ]


def render(readme: str, section: str) -> str:
    """``readme`` with the text between the markers replaced by ``section``."""
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), flags=re.S)
    if not pattern.search(readme):
        raise SystemExit(f"README.md has no {START} ... {END} block to fill.")
    return pattern.sub(lambda _: f"{START}\n{section}{END}", readme)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md is not up to date")
    args = parser.parse_args(argv)
    with open(README) as f:
        readme = f.read()
    updated = render(readme, build_section())
    if args.check:
        if updated != readme:
            print("README.md's benchmark section is out of date: run python benchmarks/readme_section.py")
            return 1
        return 0
    with open(README, "w") as f:
        f.write(updated)
    print(f"updated {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
