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
# VRM with and without activation checkpointing, a deep student (resnet32x4 -> resnet32x4)
DEEP_STUDENT_RUN = "step_cost_cpu_malloc_retain_deep_student"
# tiny networks, tiny batch, one thread: a step bound by per-step host work, as a launch-bound GPU step is
OVERHEAD_BOUND_RUN = "step_cost_cpu_overhead_bound"
# GPU runs; the first is the GPU headline. "rerun" pairs ran back to back on one machine (eager, compiled losses).
GPU_RUNS = [
    ("step_cost_cuda_bf16_channels_last", "bf16 + channels_last"),
    ("step_cost_cuda", "fp32"),
    ("step_cost_cuda_bf16_channels_last_compile", "bf16 + channels_last, compiled teacher"),
    ("step_cost_cuda_bf16_channels_last_compile_losses", "bf16 + channels_last, compiled losses"),
    ("step_cost_cuda_bf16_channels_last_rerun", "pair A: bf16 + channels_last"),
    ("step_cost_cuda_bf16_channels_last_compile_losses_rerun", "pair B: same, compiled losses"),
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


def _figure(stem: str, alt: str) -> list[str]:
    """The figure ``plots.py`` drew for ``results/<stem>.json``, as a Markdown image (nothing if there is none)."""
    if not os.path.isfile(os.path.join(RESULTS, f"{stem}.png")):
        return []
    return [f"![{alt}](benchmarks/results/{stem}.png)", ""]


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


def _targets(stem: str, intro: str) -> list[str]:
    """``intro`` and the targets table of ``results/<stem>.md``, as README lines."""
    return [intro, "", _markdown_table(stem, "### Targets"), ""]


def _other_runs(intro: str, table: str, runs: list[tuple[str, str, dict[str, Any]]]) -> list[str]:
    """``intro``, a table comparing ``runs`` and the command and date of each run, as README lines."""
    commands = [f"* {label}: `{payload['command']}` ({payload['date']})" for _, label, payload in runs]
    return [intro, "", table, "", *commands, ""]


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
        + _double_batch_sentence(payload)
        + _checkpointing_sentence(payload)
    )


def _double_batch_sentence(payload: dict[str, Any]) -> str:
    """VRM's memory against KD at twice the batch (the ``kd_2b`` row), which is its floor."""
    methods = payload["methods"]
    double = methods.get("kd_2b")
    if not double or double.get("memory_mb") is None:
        return ""
    kd, vrm, floor = methods["kd"]["memory_mb"], methods["vrm"]["memory_mb"], double["memory_mb"]
    limit = _target(payload, "vrm", "memory")["limit"]
    text = (
        f" Measured directly: KD at batch {double['batch_size']} (row “{double['label']}”), which puts through each "
        f"network the images VRM's one-pass step does, peaked at {common.fmt(floor, 1)} MB, {floor / kd:.3f}× KD; "
        f"VRM is {common.fmt(vrm - floor, 1)} MB above it (the copy that concatenates the two views into one batch)."
    )
    if floor / kd > limit:
        text += (
            f" The {limit}× target is below that floor here: a VRM step that runs the student once over both views "
            "and keeps all its activations cannot meet it with these networks in float32 on this CPU."
        )
    return text


def _blocks(architecture: str) -> int:
    """How many blocks activation checkpointing wraps in a zoo architecture."""
    from hf_relkd.models import create_model
    from hf_relkd.models.cifar.modeling_relkd_cifar import CheckpointableBlock

    return sum(isinstance(m, CheckpointableBlock) for m in create_model(architecture, 10).modules())


def _checkpointing_sentence(payload: dict[str, Any]) -> str:
    """What the Trainer's activation checkpointing does to VRM: in the headline run, and with a deeper student."""
    ckpt, student = payload["methods"].get("vrm_ckpt"), payload["config"]["student"]
    if not ckpt or ckpt.get("memory_mb") is None or ckpt.get("paired_step_time_ratio_to_kd") is None:
        return ""
    text = (
        f" Where memory matters more than time, `activation_checkpointing=True` keeps only the inputs of the "
        f"student's blocks and runs the blocks again in backward: VRM then peaks at {common.fmt(ckpt['memory_mb'], 1)} "
        f"MB ({ckpt['memory_ratio_to_kd']:.3f}× KD) for {ckpt['paired_step_time_ratio_to_kd']:.3f}× KD's step time "
        "(row “VRM, activation checkpointing”; the targets are for the default, without it). "
        f"{student} has {_blocks(student)} blocks, so the re-run of its first block for both views, with that block's "
        "gradients, is most of what remains at the peak."
    )
    deep = _load(DEEP_STUDENT_RUN)
    if deep is not None:
        m = deep["methods"]
        text += (
            f" Students with more blocks keep far less: with {deep['config']['student']} as the student "
            f"({_blocks(deep['config']['student'])} blocks), VRM's peak goes from {common.fmt(m['vrm']['memory_mb'], 1)} MB to "
            f"{common.fmt(m['vrm_ckpt']['memory_mb'], 1)} MB (KD without checkpointing: "
            f"{common.fmt(m['kd']['memory_mb'], 1)} MB), its step from {m['vrm']['paired_step_time_ratio_to_kd']:.2f}× "
            f"to {m['vrm_ckpt']['paired_step_time_ratio_to_kd']:.2f}× KD's ({_provenance(deep)})."
        )
    return text


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
        f"CPU machine: {machine['cpu']}, {machine['usable_cores']} cores shared with other jobs. CPU timings are "
        "noisy, so methods are interleaved step by step and compared as paired ratios. GPU results follow the CPU "
        "ones.",
        "",
        "**Step cost** through `RelationalDistillationTrainer` (resnet32x4 → resnet8x4, batch 64, 32×32, 100 classes), "
        "with a hand-written PyTorch KD loop as the reference for the Trainer's own overhead and the same KD on a "
        "minimal `transformers.Trainer` subclass (what transformers' Trainer itself costs; at this step length the "
        "three KD paths are within the run's noise). Headline run: "
        f"{head_label}. {_provenance(head)}.",
        "",
        _markdown_table(head_stem),
        "",
        *_targets(head_stem, "Targets:"),
        *_figure(head_stem, "Step time and peak memory of each method as ratios to KD, CPU headline run"),
    ]
    if len(runs) > 1:
        out += _other_runs(
            "The same benchmark in other settings (each a separate run; ratios are to KD within the same run):",
            _step_cost_side_by_side(runs),
            runs,
        )
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
    out += _gpu()
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


def _gpu() -> list[str]:
    """The GPU runs: absolute figures against the VRM paper's Table 7, the side-by-side variants, and why the
    ratios differ from the CPU's (the step is bound by launching kernels)."""
    runs = [(stem, label, payload) for stem, label in GPU_RUNS if (payload := _load(stem)) is not None]
    if not runs:
        return []
    stem, label, head = runs[0]
    machine, methods, paper = head["machine"], head["methods"], head["paper_table7"]
    paper_names = {"kd": "KD", "rkd": "RKD", "vrm": "VRM"}
    rows = []
    for name, entry in methods.items():
        ref = paper.get(paper_names.get(name, ""), {})
        rows.append(
            [
                entry["label"],
                common.fmt(entry["step_ms"], 1),
                common.fmt(ref.get("ms"), 1),
                common.fmt(entry["memory_mb"], 0),
                common.fmt(ref.get("mb"), 0),
                common.fmt(entry["images_per_s"], 0),
            ]
        )
    out = [
        f"**On a GPU** ({machine['gpu']}, host {machine['cpu']} with {machine['usable_cores']} cores, torch "
        f"{machine['torch']}). Headline: {label}. {_provenance(head)}. Against the VRM paper's Table 7 (one GPU, "
        "same networks and batch; its GPU and precision are not stated):",
        "",
        common.markdown_table(["Method", "ms / step", "paper ms", "peak MB", "paper MB", "images/s"], rows),
        "",
        *_targets(stem, "Targets of this run:"),
        *_figure(stem, "Step time and peak memory of each method as ratios to KD, GPU headline run"),
    ]
    if len(runs) > 1:
        out += _other_runs(
            "All GPU runs, as ratios to KD within each run (the runs did not all get the same machine: compare "
            "absolute times only within a run or a pair; memory was measured in the first two only):",
            _gpu_ratio_table(runs),
            runs,
        )
    out += _launch_bound_paragraph(head, {lab: payload for _, lab, payload in runs})
    out += _overhead_bound_paragraph()
    out += _kernels()
    return out


def _kernels() -> list[str]:
    """What each method adds to the step in kernels, eager and with loss_compile (the device-independent count behind
    the launch-bound GPU ratios)."""
    payload = _load("kernel_count_cpu")
    if payload is None:
        return []
    variants = payload["variants"]
    eager, compiled = variants["eager"], variants.get("compiled")
    headers = ["Method", "Kernels / step", "+ vs KD"]
    if compiled:
        headers += ["with loss_compile", "+ vs KD"]

    def extra(variant: dict[str, Any], name: str) -> float:
        return variant[name]["kernels"] - variant["kd"]["kernels"]

    rows = []
    for name, entry in eager.items():
        row = [entry["label"], common.fmt(entry["kernels"]), f"{extra(eager, name):+.0f}"]
        if compiled:
            row += [common.fmt(compiled[name]["kernels"]), f"{extra(compiled, name):+.0f}"]
        rows.append(row)
    syncs = max(e["syncs"] for v in variants.values() for e in v.values())

    def added(variant: dict[str, Any], name: str) -> str:
        return f"{extra(variant, name):+.0f} ({extra(variant, name) / variant['kd']['kernels']:+.0%})"

    summary = (
        f"Eager, RKD adds {added(eager, 'rkd')} to KD's kernels and VRM {added(eager, 'vrm')}: the launches behind "
        f"their GPU ratios above; RRD adds {added(eager, 'rrd')}."
    )
    if compiled:
        largest = max(extra(compiled, n) for n in ("rkd", "rrd", "rrd_kd", "vrm"))
        summary += (
            f" With loss_compile every method is within {largest:.0f} ATen kernels of KD (inductor's own kernels "
            "come on top)."
        )
    return [
        "How many kernels each method adds is counted on any machine by `benchmarks/kernel_count.py`: ATen "
        "operators that run a kernel (a composite counts its parts), per training step, outside the optimizer step "
        "(counted apart: per-parameter loops on a CPU, `foreach` calls on CUDA), for the same networks, batch and "
        f"Trainer path as the step-cost runs, in fp32 on the CPU machine. {_provenance(payload)}. With "
        "loss_compile, the kernels inductor generates are not ATen operators and are not counted: those columns are "
        "lower bounds. "
        + (
            "No step reads a value back from the device (0 host syncs per step)."
            if syncs == 0
            else f"Up to {syncs:g} host syncs per step."
        )
        + " "
        + summary,
        "",
        common.markdown_table(headers, rows),
        "",
    ]


def _target(payload: dict[str, Any], method: str, metric: str = "time") -> dict[str, Any] | None:
    """The run's target for ``method``'s ``metric`` ("time" or "memory"), or None."""
    return next((t for t in payload["targets"] if t["method"] == method and metric in t["target"]), None)


def _target_ratio(payload: dict[str, Any], method: str, metric: str = "time") -> float | None:
    target = _target(payload, method, metric)
    return None if target is None else target["ratio"]


def _gpu_ratio_table(runs: list[tuple[str, str, dict[str, Any]]]) -> str:
    """One row per run: KD's step and every method's paired time ratio to KD (and VRM's memory ratio)."""
    names = ["rkd", "rrd", "rrd_kd", "vrm"]
    labels = [runs[0][2]["methods"][n]["label"] for n in names]
    headers = (
        ["Run", "KD ms"] + [f"{lab} × KD" for lab in labels] + ["Trainer ÷ plain loop", "VRM memory × KD"]
    )
    rows = []
    for _, label, payload in runs:
        m = payload["methods"]
        rows.append(
            [label, common.fmt(m["kd"]["step_ms"], 1)]
            + [common.fmt(m[n]["paired_step_time_ratio_to_kd"], 3) for n in names]
            + [
                common.fmt(_target_ratio(payload, "kd", "plain"), 3),
                common.fmt(m["vrm"].get("memory_ratio_to_kd"), 3),
            ]
        )
    return common.markdown_table(headers, rows)


def _part_ms(payload: dict[str, Any], prefix: str) -> float:
    """Median time (ms) of the first part of a step-cost run's breakdown whose name starts with ``prefix``."""
    return next(v["median_ms"] for k, v in payload["breakdown"]["parts"].items() if k.startswith(prefix))


def _launch_bound_paragraph(head: dict[str, Any], runs: dict[str, dict[str, Any]]) -> list[str]:
    kd = head["methods"]["kd"]
    cpu_share = kd["process_cpu"]["median_ms"] / kd["step"]["median_ms"]
    text = [
        f"Why the time ratios are higher than on the CPU: at batch 64 these networks leave an H100 mostly idle. "
        f"The process's CPU time per KD step is {cpu_share:.0%} of the step's wall time: the step lasts as long as "
        "the host takes to launch its kernels, so an operation costs its launch whatever its size, and the "
        "relational losses are made of many small ones. Alone, RKD's loss takes "
        f"{common.fmt(_part_ms(head, 'rkd_loss'), 1)} ms, VRM's {common.fmt(_part_ms(head, 'vrm_loss'), 1)} ms, RRD's "
        f"{common.fmt(_part_ms(head, 'rrd_loss'), 1)} ms (plus its heads and queue) and KD's "
        f"{common.fmt(_part_ms(head, 'kd_loss'), 1)} ms, against a KD step of {common.fmt(kd['step_ms'], 1)} ms "
        f"(teacher forward {common.fmt(_part_ms(head, 'teacher forward'), 1)} ms)."
    ]
    eager, compiled = runs.get("pair A: bf16 + channels_last"), runs.get("pair B: same, compiled losses")
    if eager and compiled:

        def ratio(payload: dict[str, Any], name: str) -> str:
            return common.fmt(payload["methods"][name]["paired_step_time_ratio_to_kd"], 2)

        def share(payload: dict[str, Any], prefix: str) -> str:
            return f"{_part_ms(payload, prefix) / _part_ms(payload, 'teacher forward'):.2f}"

        text.append(
            "`loss_compile=True` fuses each loss into a few kernels. In pair A/B (back to back on one machine), "
            f"RKD's step went from {ratio(eager, 'rkd')}× to {ratio(compiled, 'rkd')}× KD and VRM's from "
            f"{ratio(eager, 'vrm')}× to {ratio(compiled, 'vrm')}×; RRD's moved little ({ratio(eager, 'rrd')}× → "
            f"{ratio(compiled, 'rrd')}×). Measured alone, in units of the same run's teacher forward: RKD's loss "
            f"{share(eager, 'rkd_loss')} → {share(compiled, 'rkd_loss')}, VRM's {share(eager, 'vrm_loss')} → "
            f"{share(compiled, 'vrm_loss')}, RRD's {share(eager, 'rrd_loss')} → {share(compiled, 'rrd_loss')} (two "
            "matrix products with the queue; its heads and normalisation were outside the compiled function then, "
            f"they are inside now) and KD's {share(eager, 'kd_loss')} → "
            f"{share(compiled, 'kd_loss')} (too small: the compiled call's overhead exceeds its few launches), so "
            "part of the compiled RKD/VRM ratio comes from a slower KD step. Turn it on for RKD and VRM runs on "
            "GPUs. A compiled teacher (`teacher_compile`, default mode) left the ratios where they were; the "
            "CUDA-graph mode, which would remove the teacher's launches, cannot run in this benchmark's threads "
            "(compiled CUDA graphs are kept per thread)."
        )
    fp32 = runs.get("fp32")
    plain = _target_ratio(head, "kd", "plain")

    def overhead(payload: dict[str, Any]) -> str:
        return common.fmt(payload["methods"]["kd"]["step_ms"] - payload["methods"]["kd_plain"]["step_ms"], 1)

    text.append(
        f"The Trainer's KD step is {plain:.2f}× the hand-written loop here, while it is at parity on the CPU: the "
        "Trainer's own per-step host work (callbacks, Accelerate's wrappers and, in these runs, the two host-device "
        "synchronisations of `logging_nan_inf_filter`'s NaN/Inf check of every step's loss, which "
        f"`RelationalDistillationConfig` has turned off by default since) is a fixed {overhead(head)} ms"
        + (f" ({overhead(fp32)} ms in fp32)" if fp32 else "")
        + ", visible only when the step is this short."
    )
    if fp32:
        text.append(
            f"Memory is the CUDA caching allocator's peak of live tensors. VRM's ratio is "
            f"{_target_ratio(head, 'vrm', 'memory'):.3f}× KD in bf16 and {_target_ratio(fp32, 'vrm', 'memory'):.3f}× "
            "in fp32: bf16 halves the networks' activations but not the float32 buffers of the relational losses. "
            "Where the bf16 peak sits on the GPU was not profiled; on the CPU in bf16 it sat in the backward pass of "
            "VRM's loss, whose relation tensors autograd kept from the forward pass. The loss has rebuilt them in its "
            "backward pass since (`benchmarks/README.md`), which these GPU runs predate."
        )
    return [" ".join(text), ""]


def _overhead_bound_paragraph() -> list[str]:
    """How much of the Trainer's per-step cost is ``transformers.Trainer``'s own, measured on the CPU in a step made
    as short as a GPU's (the plain loop, a minimal ``transformers.Trainer`` subclass and hf_relkd's trainer)."""
    payload = _load(OVERHEAD_BOUND_RUN)
    if payload is None:
        return []
    cfg, methods = payload["config"], payload["methods"]
    ms = {name: methods[name]["step_ms"] for name in ("kd_plain", "kd_hf", "kd")}
    paired = {name: methods[name]["paired_step_time_ratio_to_kd"] for name in ("kd_plain", "kd_hf")}
    hf_share = (paired["kd_hf"] - paired["kd_plain"]) / (1.0 - paired["kd_plain"])
    relational = ", ".join(
        f"{methods[name]['label']} {common.fmt(methods[name]['paired_step_time_ratio_to_kd'], 2)}×"
        for name in ("rkd", "rrd", "rrd_kd", "vrm")
        if name in methods
    )
    return [
        "How much of that per-step host work is `transformers.Trainer`'s own can be measured without a GPU, in a "
        f"CPU step as short as the GPU's ({cfg['teacher']} → {cfg['student']}, batch {cfg['batch_size']}, "
        f"{cfg['image_size']}×{cfg['image_size']} images, one thread, RRD queue {cfg['rrd_queue_size']}; "
        f"{_provenance(payload)}). The same KD step took {common.fmt(ms['kd_plain'], 2)} ms (median) in the "
        f"hand-written loop, {common.fmt(ms['kd_hf'], 2)} ms in a minimal `transformers.Trainer` subclass "
        f"(`compute_loss` runs the teacher and returns CE + KD; the `kd_hf` row) and {common.fmt(ms['kd'], 2)} ms in "
        f"`RelationalDistillationTrainer`. Paired step by step with the latter, the plain loop took "
        f"{common.fmt(paired['kd_plain'], 3)}× its time and the minimal subclass {common.fmt(paired['kd_hf'], 3)}×: "
        f"{hf_share:.0%} of the trainer's gap to the plain loop is `transformers.Trainer`'s own per-step work, which "
        "a subclass cannot remove, and on a GPU the minimal subclass also keeps the two synchronisations per step of "
        "transformers' default NaN/Inf filter (counted below). The rest is hf_relkd's own per-step work (the methods' "
        "interface, each loss term and the teacher agreement recorded for the logs). In that run the relational methods' ratios to "
        f"KD were {relational}: their losses' many small operations cost host time whatever their size, which is "
        "what `loss_compile=True` fuses away on a GPU.",
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
        *_figure(
            "loss_scaling_cpu", "Time and peak memory of each loss against batch, queue and classes, CPU"
        ),
        "VRM at ImageNet scale (B = 256, C = 1000) is computed in chunks with recomputation: same value, a fraction "
        "of the memory:",
        "",
        _markdown_table("loss_scaling_cpu", "### VRM inter-class chunking"),
        "",
    ] + _loss_scaling_gpu()


def _loss_scaling_gpu() -> list[str]:
    payload = _load("loss_scaling_cuda")
    if payload is None:
        return []
    return [
        f"The same on the GPU ({payload['machine'].get('gpu', 'cuda')}; {_provenance(payload)}; every sweep is in "
        "`benchmarks/results/loss_scaling_cuda.md`):",
        "",
        _markdown_table("loss_scaling_cuda", "### VRM inter-class chunking"),
        "",
        *_figure(
            "loss_scaling_cuda", "Time and peak memory of each loss against batch, queue and classes, GPU"
        ),
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
        "",
    ] + _student_views()


def _student_views() -> list[str]:
    """VRM's ``vrm_student_views``: accuracy from the quick-start comparison, cost from the CPU headline's rows and
    the GPU breakdown, and why ``joint`` is the default."""
    payload, head = _load("vrm_student_views"), _load(STEP_COST_RUNS[0][0])
    if payload is None or head is None or "vrm_per_view" not in head["methods"]:
        return []
    vrm, per_view = head["methods"]["vrm"], head["methods"]["vrm_per_view"]
    text = (
        "**VRM's two views: one student pass or one per view** (`vrm_student_views`). In the quick-start setting "
        f"({len(payload['per_view_minus_joint_points'])} seeds; {_provenance(payload)}) `per_view` minus `joint` "
        f"was {payload['mean']:+.2f} ± {payload['std']:.2f} points of test accuracy, paired by seed "
        f"({payload['results']['settings']['dataset']}). In the CPU headline run `per_view` took "
        f"{per_view['paired_step_time_ratio_to_kd']:.3f}× KD's step (`joint`: {vrm['paired_step_time_ratio_to_kd']:.3f}×) "
        f"and peaked at {per_view['memory_mb']:.1f} MB ({per_view['memory_ratio_to_kd']:.3f}× KD; `joint`: "
        f"{vrm['memory_mb']:.1f} MB, {vrm['memory_ratio_to_kd']:.3f}×): the gradient buffers of the student's "
        "backward pass are those of B images instead of 2B."
    )
    gpu = _load(GPU_RUNS[0][0])
    if gpu is not None and gpu.get("breakdown"):
        b = gpu["config"]["batch_size"]
        one, two = (_part_ms(gpu, f"student forward+backward, {n} images") for n in (b, 2 * b))
        text += (
            f" `joint` stays the default for the GPU: on the {gpu['machine']['gpu']} the student's forward and "
            f"backward took {one:.1f} ms for {b} images and {two:.1f} ms for {2 * b} (the step is bound by launching "
            "kernels), so a second pass would add about that much to every VRM step. On the CPU at this batch and "
            "image size `per_view` cost no measurable time; where memory matters more than launches, it is the "
            "better choice."
        )
    return [text, ""]


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
