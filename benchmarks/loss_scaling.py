"""Forward+backward time and peak memory of each distillation loss alone, as the batch, the classes and the RRD queue
grow.

Losses (``hf_relkd.losses.functional``, defaults of the library):

* ``kd_loss`` on ``(B, C)`` logits;
* ``rkd_loss`` (distance + angle) on ``(B, D)`` features, ``D = --feature_dim`` (256, resnet8x4's width);
* ``rrd_loss`` on ``(B, E)`` L2-normalised embeddings (``E = --embed_dim``, 128) against a queue of ``K`` keys;
* ``vrm_loss`` on four ``(B, C)`` logit matrices (real/virtual view, student/teacher; pruning at the 90th
  percentile, ZSNorm), whose inter-sample tensor is ``B·B·C`` and inter-class tensor ``C·C·B`` elements.

Sweeps:

1. batch ``B`` in ``--batches`` (64 ... 1024) at ``C = 100``, ``K = 16384`` (RKD's angle term has ``B³`` entries:
   ``--rkd_max_batch`` can stop it early for time; chunking bounds its memory);
2. classes ``C`` in ``--classes`` (100, 1000) at each ``B`` in ``--class_batches`` (KD and VRM; RKD and RRD do not
   depend on ``C``);
3. queue ``K`` in ``--queues`` (4096 ... 65536) at ``B = --queue_batch`` (RRD);
4. VRM at ImageNet scale (``B = 256, C = 1000`` by default) with the library's chunking (``max_chunk_elements``
   default, ``2**24``) and with chunking disabled (``max_chunk_elements = 2**62``).

What is measured (inputs are allocated before, outside every measurement):

* time: median over at least ``--repeats`` runs (and at least ``--min_time`` seconds, at most ``--max_repeats``
  runs) of ``loss = f(...); loss.backward()`` (device-synchronised), after ``--warmup`` runs; within a size point
  the losses take turns run by run (interleaved), so background load hits all of them alike;
* ``peak_mb``: on CUDA, ``max_memory_allocated`` minus the allocation before the run; on CPU, the peak of the bytes
  held by CPU tensors allocated during the run (PyTorch profiler memory events: every allocation and free, summed in
  order) — both include the input gradients;
* ``saved_mb``: bytes of the distinct tensor storages autograd saves for backward during the forward
  (``torch.autograd.graph.saved_tensors_hooks``); activation-checkpointed chunks save nothing but their inputs.

Examples::

    python benchmarks/loss_scaling.py                      # CPU (or CUDA when available)
    python benchmarks/loss_scaling.py --device cuda --repeats 20
    python benchmarks/loss_scaling.py --smoke --output_dir /tmp/bench
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import common
import plots
import torch
import torch.nn.functional as F

from hf_relkd.losses.functional import kd_loss, rkd_loss, rrd_loss, vrm_loss

LOSS_ORDER = ["kd", "rkd", "rrd", "vrm"]
NO_CHUNKING = 1 << 62


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--device", default="auto", help="cpu, cuda, cuda:N or auto (default: cuda if available)"
    )
    parser.add_argument("--losses", default=",".join(LOSS_ORDER), help="subset of kd,rkd,rrd,vrm")
    parser.add_argument("--batches", default="64,128,256,512,1024", help="batch sweep (C=100, K=16384)")
    parser.add_argument("--classes", default="100,1000", help="class sweep (KD, VRM)")
    parser.add_argument("--class_batches", default="64,256", help="batch sizes of the class sweep")
    parser.add_argument("--queues", default="4096,8192,16384,32768,65536", help="RRD queue sweep")
    parser.add_argument("--queue_batch", type=int, default=64, help="batch size of the queue sweep")
    parser.add_argument("--base_classes", type=int, default=100, help="classes of the batch sweep")
    parser.add_argument("--base_queue", type=int, default=16384, help="RRD queue of the batch sweep")
    parser.add_argument("--feature_dim", type=int, default=256, help="RKD feature width D")
    parser.add_argument("--embed_dim", type=int, default=128, help="RRD embedding width")
    parser.add_argument(
        "--rkd_max_batch",
        type=int,
        default=0,
        help="largest batch for RKD (its angle term has B³ entries: about 8 s per run at 1024 on a 2-core CPU with "
        "--cpu_malloc retain; its memory is bounded by chunking); 0 (default): no limit",
    )
    parser.add_argument("--chunk_batch", type=int, default=256, help="B of the VRM chunking comparison")
    parser.add_argument("--chunk_classes", type=int, default=1000, help="C of the VRM chunking comparison")
    parser.add_argument(
        "--chunk_elements",
        type=int,
        default=1 << 24,
        help="max_chunk_elements of the chunked run (library default)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="least timed runs per point (median reported)")
    parser.add_argument(
        "--min_time",
        type=float,
        default=1.0,
        help="more runs (up to --max_repeats) until this many seconds are timed",
    )
    parser.add_argument("--max_repeats", type=int, default=50, help="most timed runs per point")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per point")
    common.add_cpu_malloc_argument(parser)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", default=os.path.join("benchmarks", "results"))
    parser.add_argument("--name", default=None, help="result file stem (default: loss_scaling_<device>)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one run each; for CI")
    args = parser.parse_args(argv)
    if args.smoke:
        args.batches, args.classes, args.class_batches, args.queues = "8,16", "10,20", "8", "64,128"
        args.queue_batch, args.base_classes, args.base_queue = 8, 10, 64
        args.feature_dim, args.embed_dim, args.rkd_max_batch = 16, 8, 8
        args.chunk_batch, args.chunk_classes, args.chunk_elements = 16, 20, 512
        args.repeats, args.warmup, args.min_time = 1, 0, 0.0
    args.losses = [x for x in LOSS_ORDER if x in {s.strip().lower() for s in args.losses.split(",")}]
    if not args.losses:
        parser.error(f"--losses must name some of {LOSS_ORDER}")
    for name in ("batches", "classes", "class_batches", "queues"):
        setattr(args, name, _ints(getattr(args, name)))
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    return args


# ---------------------------------------------------------------------------------------------------------------------
# problems
# ---------------------------------------------------------------------------------------------------------------------
class Problem:
    """One loss at one size: inputs (allocated once) and a closure running forward + backward."""

    def __init__(
        self, loss: str, point: dict[str, Any], run: Callable[[], torch.Tensor], leaves: list[torch.Tensor]
    ):
        self.loss, self.point, self._run, self.leaves = loss, point, run, leaves
        self.last_value: float | None = None

    def forward(self) -> torch.Tensor:
        return self._run()

    def step(self) -> None:
        for leaf in self.leaves:
            leaf.grad = None
        self.forward().backward()

    def clear(self) -> None:
        for leaf in self.leaves:
            leaf.grad = None


def make_problem(loss: str, point: dict[str, Any], args, device: torch.device) -> Problem:
    g = torch.Generator(device="cpu").manual_seed(args.seed)

    def randn(*shape, grad=False, normalize=False):
        x = torch.randn(*shape, generator=g)
        if normalize:
            x = F.normalize(x, dim=1)
        return x.to(device).requires_grad_(grad)

    b = point["batch"]
    if loss == "kd":
        c = point["classes"]
        s, t = randn(b, c, grad=True), randn(b, c)
        return Problem(loss, point, lambda: kd_loss(s, t), [s])
    if loss == "rkd":
        d = point["feature_dim"]
        s, t = randn(b, d, grad=True), randn(b, d)
        return Problem(loss, point, lambda: rkd_loss(s, t), [s])
    if loss == "rrd":
        e, k = point["embed_dim"], point["queue"]
        s, t, memory = (
            randn(b, e, grad=True, normalize=True),
            randn(b, e, normalize=True),
            randn(k, e, normalize=True),
        )
        return Problem(loss, point, lambda: rrd_loss(s, t, memory), [s])
    if loss == "vrm":
        c = point["classes"]
        chunk = point.get("max_chunk_elements", 1 << 24)
        s, s_v = randn(b, c, grad=True), randn(b, c, grad=True)
        t, t_v = randn(b, c), randn(b, c)
        return Problem(loss, point, lambda: vrm_loss(s, s_v, t, t_v, max_chunk_elements=chunk), [s, s_v])
    raise ValueError(loss)


def plan(args) -> list[tuple[str, dict[str, Any], list[str]]]:
    """(sweep name, point, losses) for every size point."""
    points = []
    base = {
        "classes": args.base_classes,
        "queue": args.base_queue,
        "feature_dim": args.feature_dim,
        "embed_dim": args.embed_dim,
    }
    for b in args.batches:
        points.append(("batch", {**base, "batch": b}, list(args.losses)))
    for b in args.class_batches:
        for c in args.classes:
            points.append(
                (
                    "classes",
                    {**base, "batch": b, "classes": c},
                    [x for x in ("kd", "vrm") if x in args.losses],
                )
            )
    if "rrd" in args.losses:
        for k in args.queues:
            points.append(("queue", {**base, "batch": args.queue_batch, "queue": k}, ["rrd"]))
    if "vrm" in args.losses:
        for label, elements in (("chunked", args.chunk_elements), ("unchunked", NO_CHUNKING)):
            point = {
                **base,
                "batch": args.chunk_batch,
                "classes": args.chunk_classes,
                "max_chunk_elements": elements,
                "chunking": label,
            }
            points.append(("vrm_chunking", point, ["vrm"]))
    return [(sweep, point, [x for x in losses]) for sweep, point, losses in points if losses]


def skip_reason(loss: str, point: dict[str, Any], args) -> str | None:
    if loss == "rkd" and args.rkd_max_batch and point["batch"] > args.rkd_max_batch:
        entries = point["batch"] ** 3
        return f"skipped: B={point['batch']} > --rkd_max_batch {args.rkd_max_batch} (angle term: {entries:,} entries)"
    return None


# ---------------------------------------------------------------------------------------------------------------------
# measurement
# ---------------------------------------------------------------------------------------------------------------------
def measure_memory(problem: Problem, device: torch.device) -> dict[str, float]:
    problem.clear()
    gc.collect()
    with common.SavedTensorBytes() as saved:
        value = problem.forward()
    del value
    problem.clear()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        problem.step()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        peak = common.cpu_peak_live_bytes(problem.step)
    problem.clear()
    return {"peak_mb": peak / common.MB, "saved_mb": saved.nbytes / common.MB}


def run_point(sweep: str, point: dict[str, Any], losses: list[str], args, device) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    problems: dict[str, Problem] = {}
    for loss in losses:
        row = {
            "sweep": sweep,
            "loss": loss,
            **point,
            "status": "ok",
            "time": {},
            "peak_mb": None,
            "saved_mb": None,
        }
        if "max_chunk_elements" not in point and loss == "vrm":
            row["max_chunk_elements"] = 1 << 24
        rows[loss] = row
        reason = skip_reason(loss, point, args)
        if reason:
            row["status"] = reason
            continue
        try:
            problem = make_problem(loss, point, args, device)
            with torch.no_grad():
                row["loss_value"] = float(problem.forward())
            row.update(measure_memory(problem, device))
            problems[loss] = problem
        except Exception as err:  # e.g. out of memory: record it and go on
            row["status"] = f"error: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
            row["traceback"] = traceback.format_exc()
            problems.pop(loss, None)
            gc.collect()
    times: dict[str, list[float]] = {loss: [] for loss in problems}

    def needs_more(loss: str) -> bool:
        n = len(times[loss])
        if n >= max(args.repeats, args.max_repeats):
            return False
        return n < args.repeats or sum(times[loss]) < args.min_time

    for _ in range(args.warmup):
        for problem in problems.values():
            common.timed(problem.step, device)
    # rounds: every loss of the point runs once per round, until each has --repeats runs and --min_time seconds
    while any(needs_more(loss) for loss in problems):
        for loss, problem in list(problems.items()):
            if not needs_more(loss):
                continue
            try:
                times[loss].append(common.timed(problem.step, device))
            except Exception as err:
                rows[loss]["status"] = f"error: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
                problems.pop(loss)
    for loss, values in times.items():
        if values and rows[loss]["status"] == "ok":
            rows[loss]["time"] = common.summarize(values)
            rows[loss]["ms"] = rows[loss]["time"]["median_ms"]
    for problem in problems.values():
        problem.clear()
    del problems
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return list(rows.values())


# ---------------------------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------------------------
def _cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return ""
    if row["status"] != "ok":
        return "skipped" if row["status"].startswith("skipped") else "error"
    return f"{common.fmt(row.get('ms'), 2)} ms · {common.fmt(row['peak_mb'], 1)} MB (saved {common.fmt(row['saved_mb'], 1)})"


def to_markdown(payload: dict[str, Any]) -> str:
    cfg = payload["config"]
    rows = payload["results"]
    lines = [common.header_markdown(f"Loss scaling on {cfg['device']}", payload)]
    lines.append(
        f"* Cells: median forward+backward time over at least {cfg['repeats']} runs and {cfg['min_time']} s (at most "
        f"{cfg['max_repeats']} runs; after {cfg['warmup']} warm-up) · "
        f"peak memory (saved for backward). {cfg['memory_metric']}"
    )
    lines.append("")

    def find(sweep, loss, **kv):
        for r in rows:
            if r["sweep"] == sweep and r["loss"] == loss and all(r.get(k) == v for k, v in kv.items()):
                return r
        return None

    losses = cfg["losses"]
    lines += [
        f"### Batch sweep (C = {cfg['base_classes']}, RKD D = {cfg['feature_dim']}, RRD K = {cfg['base_queue']}, "
        f"E = {cfg['embed_dim']})",
        "",
    ]
    lines.append(
        common.markdown_table(
            ["B"] + [f"{x}_loss" for x in losses],
            [[b] + [_cell(find("batch", x, batch=b)) for x in losses] for b in cfg["batches"]],
        )
    )
    notes = sorted({r["status"] for r in rows if r["status"] != "ok"})
    cls_losses = [x for x in ("kd", "vrm") if x in losses]
    if cls_losses:
        lines += ["", "### Class sweep", ""]
        lines.append(
            common.markdown_table(
                ["B", "C"] + [f"{x}_loss" for x in cls_losses],
                [
                    [b, c] + [_cell(find("classes", x, batch=b, classes=c)) for x in cls_losses]
                    for b in cfg["class_batches"]
                    for c in cfg["classes"]
                ],
            )
        )
    if "rrd" in losses:
        lines += ["", f"### RRD queue sweep (B = {cfg['queue_batch']}, E = {cfg['embed_dim']})", ""]
        lines.append(
            common.markdown_table(
                ["K", "rrd_loss"], [[k, _cell(find("queue", "rrd", queue=k))] for k in cfg["queues"]]
            )
        )
    chunk = payload.get("vrm_chunking")
    if chunk:
        lines += [
            "",
            f"### VRM inter-class chunking (B = {cfg['chunk_batch']}, C = {cfg['chunk_classes']}: C²·B = "
            f"{cfg['chunk_classes'] ** 2 * cfg['chunk_batch']:,} elements per edge tensor)",
            "",
        ]
        table = []
        for label in ("chunked", "unchunked"):
            r = chunk.get(label) or {}
            table.append(
                [
                    label,
                    f"{r.get('max_chunk_elements', 0):,}" if label == "chunked" else "2^62 (off)",
                    common.fmt(r.get("ms"), 1) if r.get("status") == "ok" else r.get("status", ""),
                    common.fmt(r.get("peak_mb")),
                    common.fmt(r.get("saved_mb")),
                ]
            )
        lines.append(
            common.markdown_table(["vrm_loss", "max_chunk_elements", "ms", "peak MB", "saved MB"], table)
        )
        if chunk.get("peak_reduction") is not None:
            lines.append("")
            lines.append(
                f"Chunking divides the peak by {chunk['peak_reduction']:.1f}× at a time cost of "
                f"{common.fmt(chunk.get('time_ratio'), 2)}×; loss values differ by {chunk.get('value_abs_diff'):.2e} "
                "(summation order)."
            )
    if notes:
        lines += ["", "Notes:", ""] + [f"* {n}" for n in notes]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = common.resolve_device(args.device)
    malloc = common.configure_cpu_malloc(args.cpu_malloc)
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = common.machine_info(device)
    gc.collect()
    gc.freeze()  # imported modules: keep them out of the collections run between measurements
    results: list[dict[str, Any]] = []
    start = time.perf_counter()
    if (
        not args.smoke
    ):  # first calls pay for thread pools, kernel selection, allocator growth: not part of any point
        first = plan(args)[0]
        for loss in first[2]:
            problem = make_problem(loss, first[1], args, device)
            for _ in range(2):
                problem.step()
    for sweep, point, losses in plan(args):
        label = ", ".join(
            f"{k}={v}" for k, v in point.items() if k in ("batch", "classes", "queue", "chunking")
        )
        print(f"[loss_scaling] {sweep}: {label}: {', '.join(losses)}", flush=True)
        results.extend(run_point(sweep, point, losses, args, device))
    chunking = {r["chunking"]: r for r in results if r["sweep"] == "vrm_chunking"}
    vrm_chunking = None
    if chunking:
        vrm_chunking = dict(chunking)
        on, off = chunking.get("chunked"), chunking.get("unchunked")
        if on and off and on["status"] == "ok" and off["status"] == "ok":
            vrm_chunking["peak_reduction"] = off["peak_mb"] / max(on["peak_mb"], 1e-9)
            vrm_chunking["time_ratio"] = on.get("ms", math.nan) / off.get("ms", math.nan)
            vrm_chunking["value_abs_diff"] = abs(on["loss_value"] - off["loss_value"])
    memory_metric = (
        "Peak: torch.cuda.max_memory_allocated above the allocation before the run."
        if device.type == "cuda"
        else "Peak: live CPU tensor bytes allocated during the run (profiler memory events), inputs excluded."
    )
    payload = {
        "benchmark": "loss_scaling",
        "command": common.command_line(),
        "date": common.utc_now(),
        "machine": machine,
        "config": {
            "device": str(device),
            "cpu_malloc": malloc if device.type == "cpu" else "n/a (CUDA caching allocator)",
            "losses": args.losses,
            "batches": args.batches,
            "classes": args.classes,
            "class_batches": args.class_batches,
            "queues": args.queues,
            "queue_batch": args.queue_batch,
            "base_classes": args.base_classes,
            "base_queue": args.base_queue,
            "feature_dim": args.feature_dim,
            "embed_dim": args.embed_dim,
            "rkd_max_batch": args.rkd_max_batch,
            "chunk_batch": args.chunk_batch,
            "chunk_classes": args.chunk_classes,
            "chunk_elements": args.chunk_elements,
            "repeats": args.repeats,
            "min_time": args.min_time,
            "max_repeats": args.max_repeats,
            "warmup": args.warmup,
            "smoke": args.smoke,
            "memory_metric": memory_metric,
            "saved_metric": "bytes of distinct storages saved for backward (saved_tensors_hooks) during the forward",
            "wall_s": None,
        },
        "results": results,
        "vrm_chunking": vrm_chunking,
    }
    payload["config"]["wall_s"] = round(time.perf_counter() - start, 1)
    markdown = to_markdown(payload)
    paths = common.write_results(
        args.output_dir,
        args.name or "_".join(["loss_scaling"] + (["smoke"] if args.smoke else []) + [device.type]),
        payload,
        markdown,
    )
    figure = plots.plot_loss_scaling(payload, os.path.splitext(paths[0])[0] + ".png")
    print(markdown)
    print(f"\nwrote {paths[0]}, {paths[1]} and {figure}")
    errors = [r for r in results if r["status"].startswith("error")]
    for r in errors:
        print(f"[{r['sweep']} {r['loss']} B={r['batch']}] {r['status']}", file=sys.stderr)
    return 1 if errors and args.smoke else 0


if __name__ == "__main__":
    sys.exit(main())
