"""Kernels and device synchronisations per training step of every method, counted on any machine.

On a GPU the CIFAR-sized step is bound by launching kernels, not by arithmetic: `step_cost.py` on an H100 finds the
process's CPU time equal to the step's wall time, so every extra kernel a method launches costs about the same few
microseconds whatever its size. The GPU time ratios therefore follow the number of kernels each method adds to the
step, which this script counts with the PyTorch profiler on whatever device it runs on (a CPU is enough):

* **kernels**: the ATen operators that run a kernel, outside the optimizer step. An operator that calls others (a
  composite such as ``cross_entropy`` or ``kl_div``, a conversion such as ``to``) counts the kernels of those it calls;
  one that calls none counts one. Views, metadata queries and allocations count nothing. (An operator that both runs
  its own kernel and calls a helper, such as a CPU convolution backward converting its input's layout, counts only the
  helper's: the same for every method.)
* **optimizer**: the same count inside ``optimizer.step()``, apart because it depends on the device (one ``foreach``
  call per group and operation on CUDA, a loop over the parameters on CPU);
* **syncs**: reads of a device value on the host (``.item()``, ``float()``, ``bool()`` of a tensor), each a wait for
  the device on a GPU.

Every method runs ``trainer.train()`` as a user runs it (the set-up of ``step_cost.py``: resnet32x4 -> resnet8x4,
batch 64, SGD with momentum, gradient clipping); the counts are the mean over ``--steps`` steps after ``--warmup``
steps, between ``on_step_begin`` and ``on_step_end`` (fetching the batch is outside). With ``loss_compile`` the
kernels inductor generates are not ATen operators and are not counted: a compiled step's count is a lower bound of
its launches (the ATen operators a compiled region calls, such as its matrix products, are counted).

Examples::

    python benchmarks/kernel_count.py                  # eager, then with loss_compile
    python benchmarks/kernel_count.py --variants eager --methods rkd,vrm
    python benchmarks/kernel_count.py --smoke --output_dir /tmp/bench
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import sys
import tempfile
import time
from typing import Any

import common
import step_cost
import torch
from torch.profiler import ProfilerActivity, profile
from transformers import TrainerCallback

# operators without a kernel of their own: views, metadata, allocation (not counted, nor what they call)
# fmt: off
METADATA_OPS = frozenset(f"aten::{name}" for name in (
    "view", "as_strided", "alias", "_reshape_alias", "_unsafe_view", "slice", "select", "t", "transpose", "expand",
    "permute", "unsqueeze", "squeeze", "narrow", "split", "split_with_sizes", "chunk", "unbind", "detach", "detach_",
    "lift_fresh", "numpy_T", "resolve_conj", "resolve_neg", "empty", "empty_like", "empty_strided", "new_empty",
    "new_empty_strided", "result_type", "promote_types", "size", "stride", "sym_size", "sym_stride", "sym_numel",
    "dim", "is_nonzero", "_has_compatible_shallow_copy_type", "set_", "_local_scalar_dense", "item", "resize_",
))
# composite operators that run a kernel only in what they call (nothing when there is nothing to change): their
# children are counted instead of them
TRANSPARENT_OPS = frozenset(f"aten::{name}" for name in (
    "to", "_to_copy", "contiguous", "reshape", "flatten", "view_as", "expand_as", "type_as", "zeros", "zeros_like",
    "ones", "ones_like", "full", "full_like", "new_zeros", "new_ones", "new_full", "scalar_tensor", "tensor", "lift",
))
# fmt: on
SYNC_OPS = frozenset({"aten::_local_scalar_dense"})
OPTIMIZER_PREFIX = "Optimizer.step#"
VARIANTS = ("eager", "compiled")


# what the losses add to the step; activation checkpointing re-runs the student's blocks, which is another question,
# and a larger batch launches the same kernels
DEFAULT_METHODS = [
    m
    for m in step_cost.METHOD_ORDER
    if not step_cost.METHODS[m].activation_checkpointing and step_cost.METHODS[m].batch_multiplier == 1
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Methods: " + ", ".join(f"{k} ({v.label})" for k, v in step_cost.METHODS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3, help="counted steps per method (default 3)")
    parser.add_argument(
        "--warmup", type=int, default=3, help="steps before counting (compilation happens there; default 3)"
    )
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="comma-separated subset of eager,compiled (compiled: loss_compile=True; default both)",
    )
    parser.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help=f"comma-separated subset of {','.join(step_cost.METHOD_ORDER)} (default {','.join(DEFAULT_METHODS)}; kd "
        "is always added: it is the reference)",
    )
    parser.add_argument("--teacher", default="resnet32x4")
    parser.add_argument("--student", default="resnet8x4")
    parser.add_argument("--num_classes", type=int, default=100)
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--rrd_queue_size", type=int, default=16384)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast and a bf16 teacher")
    parser.add_argument("--channels_last", action="store_true")
    parser.add_argument("--max_grad_norm", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", default=os.path.join("benchmarks", "results"))
    parser.add_argument(
        "--name", default=None, help="result file stem (default: kernel_count_<device>[_flags])"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny models, 1 + 1 steps; for CI")
    args = parser.parse_args(argv)
    if args.smoke:
        args.teacher = args.student = "resnet8"
        args.batch_size, args.num_classes, args.image_size, args.rrd_queue_size = 8, 10, 16, 64
        args.steps, args.warmup = 1, 1
    methods = [m.strip().lower() for m in args.methods.split(",") if m.strip()]
    variants = [v.strip().lower() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(methods) - set(step_cost.METHODS)) + sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(
            f"unknown method(s) or variant(s) {unknown}; methods: {step_cost.METHOD_ORDER}, variants: {VARIANTS}"
        )
    if args.steps < 1 or args.warmup < 0:
        parser.error("need --steps >= 1 and --warmup >= 0")
    args.methods = [m for m in step_cost.METHOD_ORDER if m in {*methods, "kd"}]
    args.variants = [v for v in VARIANTS if v in variants] or ["eager"]
    # what step_cost.build_trainer / PlainKDLoop read besides the above
    vars(args).update(teacher_dtype=None, compile_teacher=False, compile_mode=None, compile_losses=False)
    return args


# ---------------------------------------------------------------------------------------------------------------------
# counting
# ---------------------------------------------------------------------------------------------------------------------
@functools.cache
def _composite(name: str) -> bool:
    """Whether the ATen operator ``name`` ("aten::x") has an overload that PyTorch implements by calling other
    operators (``CompositeImplicitAutograd``): its kernels are those of what it calls."""
    packet = getattr(torch.ops.aten, name.removeprefix("aten::"), None)
    if packet is None:
        return False
    for overload in packet.overloads():
        try:
            if torch._C._dispatch_has_kernel_for_dispatch_key(
                getattr(packet, overload).name(), "CompositeImplicitAutograd"
            ):
                return True
        except RuntimeError:  # an overload the dispatcher does not know (TorchScript-only)
            continue
    return False


def count_events(events) -> dict[str, Any]:
    """Kernels (by operator), optimizer kernels and syncs in a list of profiler ``FunctionEvent``s.

    An operator with a kernel of its own counts one (helpers it calls internally, such as the copy of a scalar
    argument, are not counted: a GPU passes those as kernel arguments); a composite or a conversion counts the kernels
    of the operators it calls; views, metadata queries and allocations count nothing.
    """
    kernels: collections.Counter = collections.Counter()
    optimizer = 0

    def visit(event, in_optimizer: bool) -> int:
        """Counts the kernels of ``event``'s subtree; returns how many."""
        nonlocal optimizer
        name = event.name
        in_optimizer = in_optimizer or name.startswith(OPTIMIZER_PREFIX)
        is_aten = name.startswith("aten::")
        if is_aten and name in METADATA_OPS:
            return 0
        if not is_aten or name in TRANSPARENT_OPS or _composite(name):
            below = sum(visit(child, in_optimizer) for child in event.cpu_children)
            # a composite overload calls other operators; when all it calls are views or allocations, the overload
            # that ran has a kernel of its own (e.g. `where` with a tensor condition, whose scalar overloads compose)
            if below or not is_aten or name in TRANSPARENT_OPS:
                return below
            if any(child.name not in METADATA_OPS for child in event.cpu_children):
                return 0
        if in_optimizer:
            optimizer += 1
        else:
            kernels[name] += 1
        return 1

    for event in events:
        if event.cpu_parent is None:
            visit(event, False)
    syncs = sum(1 for event in events if event.name in SYNC_OPS)
    return {"kernels": kernels, "optimizer": optimizer, "syncs": syncs}


class _ProfileSteps(TrainerCallback):
    """Profiles the training steps ``first .. first + count - 1`` (0-based), from on_step_begin to on_step_end."""

    def __init__(self, first: int, count: int):
        self.first, self.last = first, first + count
        self.profiler = profile(activities=[ProfilerActivity.CPU])

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.first:
            self.profiler.__enter__()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.last:  # global_step is already incremented here
            self.profiler.__exit__(None, None, None)


def count_method(name: str, args, device: torch.device, compiled: bool) -> dict[str, Any]:
    """Mean kernels, optimizer kernels and syncs per step of ``name`` (through the Trainer, or the plain loop)."""
    run_args = argparse.Namespace(**{**vars(args), "compile_losses": compiled})
    total = args.warmup + args.steps
    dataset = step_cost.build_dataset(name, run_args, total)
    if step_cost.METHODS[name].plain:
        job = step_cost.PlainKDLoop(run_args, device, total, dataset)
        profiler = profile(activities=[ProfilerActivity.CPU])
        batches = list(job.batches())  # fetched before: the Trainer's counts exclude fetching the batch too
        for index, (x, y) in enumerate(batches):
            if index == args.warmup:
                common.synchronize(device)
                profiler.__enter__()
            job.step(x, y)
        common.synchronize(device)
        profiler.__exit__(None, None, None)
    else:
        with tempfile.TemporaryDirectory() as workdir:
            callback = _ProfileSteps(args.warmup, args.steps)
            trainer = step_cost.build_trainer(name, run_args, device, total, workdir, dataset=dataset)
            trainer.add_callback(callback)
            trainer.train()
            profiler = callback.profiler
    counts = count_events(profiler.events())
    per_step = {op: n / args.steps for op, n in sorted(counts["kernels"].items())}
    return {
        "label": step_cost.METHODS[name].label,
        "kernels": sum(per_step.values()),
        "optimizer": counts["optimizer"] / args.steps,
        "syncs": counts["syncs"] / args.steps,
        "by_operator": per_step,
    }


# ---------------------------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------------------------
def _added_operators(entry: dict[str, Any], reference: dict[str, Any], top: int = 6) -> str:
    ops, ref = entry["by_operator"], reference["by_operator"]
    added = {op: ops.get(op, 0.0) - ref.get(op, 0.0) for op in set(ops) | set(ref)}
    largest = sorted((kv for kv in added.items() if kv[1] >= 0.5), key=lambda kv: (-kv[1], kv[0]))[:top]
    return ", ".join(f"{op.removeprefix('aten::')} +{n:g}" for op, n in largest) or "—"


def to_markdown(payload: dict[str, Any]) -> str:
    lines = [common.header_markdown(payload["title"], payload), f"* Settings: {payload['settings']}", ""]
    for variant, methods in payload["variants"].items():
        kd = methods["kd"]
        label = "eager losses" if variant == "eager" else "loss_compile=True (inductor kernels not counted)"
        headers = [
            "Method",
            "Kernels / step",
            "+ vs KD",
            "× KD",
            "Optimizer",
            "Syncs",
            "Largest additions",
        ]
        rows = [
            [
                entry["label"],
                common.fmt(entry["kernels"]),
                f"{entry['kernels'] - kd['kernels']:+.1f}",
                common.fmt(entry["kernels"] / kd["kernels"], 3),
                common.fmt(entry["optimizer"]),
                common.fmt(entry["syncs"]),
                _added_operators(entry, kd),
            ]
            for name, entry in methods.items()
        ]
        lines += [f"### {label}", "", common.markdown_table(headers, rows), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = common.resolve_device(args.device)
    variants: dict[str, dict[str, Any]] = {}
    for variant in args.variants:
        variants[variant] = {}
        for name in args.methods:
            start = time.perf_counter()
            entry = count_method(name, args, device, compiled=variant == "compiled")
            variants[variant][name] = entry
            print(
                f"[kernel_count] {variant:8s} {name:8s}: {entry['kernels']:.1f} kernels, "
                f"{entry['optimizer']:.1f} in the optimizer, {entry['syncs']:.1f} syncs per step "
                f"({time.perf_counter() - start:.1f} s)",
                flush=True,
            )
    settings = (
        f"{'bf16 autocast, bf16 teacher' if args.bf16 else 'fp32'}, "
        f"{'channels_last' if args.channels_last else 'contiguous'}; {args.warmup} warm-up + {args.steps} counted "
        "steps per method; counted between on_step_begin and on_step_end"
    )
    payload = {
        "benchmark": "kernel_count",
        "title": f"Kernels per training step: {args.teacher} → {args.student}, batch {args.batch_size}, "
        f"{args.image_size}×{args.image_size}, {args.num_classes} classes, {device.type}",
        "command": common.command_line(),
        "date": common.utc_now(),
        "machine": common.machine_info(device),
        "settings": settings,
        "config": {k: v for k, v in vars(args).items()},
        "variants": variants,
    }
    parts = ["kernel_count"] + (["smoke"] if args.smoke else []) + [device.type]
    parts += [flag for flag, on in (("bf16", args.bf16), ("channels_last", args.channels_last)) if on]
    markdown = to_markdown(payload)
    paths = common.write_results(args.output_dir, args.name or "_".join(parts), payload, markdown)
    print(markdown)
    print(f"\nwrote {paths[0]} and {paths[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
