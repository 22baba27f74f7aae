"""Cost of one training step of every method, measured side by side through ``RelationalDistillationTrainer``.

For CE only, KD, RKD, RRD, RRD+KD and VRM (resnet32x4 -> resnet8x4, batch 64, 32x32 random images, 100 classes by
default) this reports the median time per training step after warm-up, the throughput and the peak memory, each also
as a ratio to KD measured in the same run, plus a hand-written plain-PyTorch KD loop (``kd_plain``) as the reference
for the Trainer's own overhead, KD on a minimal ``transformers.Trainer`` subclass (``kd_hf``: how much of that overhead
is ``transformers.Trainer``'s own), VRM once more with one student pass per view (``vrm_per_view``) and with the
Trainer's ``activation_checkpointing`` (``vrm_ckpt``: what a memory-bound VRM user can trade), and KD at twice the batch
(``kd_2b``: the images VRM's one-pass step puts through each network, so its memory is VRM's floor). The figures are
compared with the targets of the issue and with the VRM paper's Table 7 (per-iteration cost on one GPU).

How a step is timed
    Every method runs ``trainer.train()`` for real (the user's path: accelerate-prepared models, the Trainer's SGD,
    scheduler, grad-norm, callbacks), each in its own thread. A ``TrainerCallback`` times ``on_step_begin`` ->
    ``on_step_end`` with a device synchronisation on both sides, i.e. ``training_step`` (forward of both networks,
    losses, backward) + grad norm + optimizer step + scheduler + ``zero_grad``; fetching the batch is outside (it is
    reported separately as ``iteration_ms``, which also contains the callbacks and the loop's bookkeeping). The threads
    never run at the same time: a baton lets exactly one method run one step, then hands over to the next, in a fresh
    random order every round. Steps of all methods are thus interleaved over the same wall-clock window, so load from
    other processes hits every method alike; the median over the timed steps is reported (the first ``--warmup``
    steps of each method are discarded).

How memory is measured
    Each method runs ``--memory_steps`` training steps in a process of its own (fork of the launcher on CPU, a fresh
    interpreter on CUDA), before the timing phase:

    * CUDA: ``torch.cuda.max_memory_allocated()`` over model construction and the steps: every tensor (weights,
      gradients, optimizer state, activations, loss temporaries), as in the paper's table;
    * CPU: the peak of the bytes held by live CPU tensors over the same run, from the PyTorch profiler's memory
      events (the CPU analogue of ``max_memory_allocated``); beside it, for information, the rise of the resident set
      size, ``VmHWM`` (peak RSS, reset right before the models are built) minus ``VmRSS`` at that moment, from an
      uninstrumented run (it adds allocator slack). RSS only ever rises within a process, which is why every method
      gets its own.

Examples::

    python benchmarks/step_cost.py                                   # CPU (or CUDA when available), fp32
    python benchmarks/step_cost.py --device cuda --bf16 --channels_last --steps 50 --warmup 10
    python benchmarks/step_cost.py --device cuda --bf16 --channels_last --compile_teacher
    python benchmarks/step_cost.py --smoke --output_dir /tmp/bench  # tiny models, 2 steps (CI)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

import common
import plots
import torch
import torch.nn.functional as F

METHOD_ORDER = [
    "ce", "kd", "rkd", "rrd", "rrd_kd", "vrm", "vrm_per_view", "vrm_ckpt", "kd_2b", "kd_hf", "kd_plain"
]  # fmt: skip


@dataclass(frozen=True)
class MethodSpec:
    label: str
    methods: tuple[str, ...] = ()
    virtual: bool = False
    plain: bool = False
    # the Trainer's activation checkpointing: the student's blocks are re-run in backward
    activation_checkpointing: bool = False
    # a minimal transformers.Trainer subclass (MinimalKDTrainer) instead of RelationalDistillationTrainer
    minimal_trainer: bool = False
    # other RelationalDistillationConfig fields, as (name, value) pairs
    config: tuple[tuple[str, Any], ...] = ()
    # images per step as a multiple of --batch_size
    batch_multiplier: int = 1

    @property
    def path(self) -> str:
        if self.plain:
            return "plain PyTorch loop"
        return "MinimalKDTrainer.train()" if self.minimal_trainer else "RelationalDistillationTrainer.train()"


METHODS = {
    "ce": MethodSpec("CE only"),
    "kd": MethodSpec("KD", ("kd",)),
    "rkd": MethodSpec("RKD", ("rkd",)),
    "rrd": MethodSpec("RRD", ("rrd",)),
    "rrd_kd": MethodSpec("RRD+KD", ("rrd", "kd")),
    "vrm": MethodSpec("VRM", ("vrm",), virtual=True),
    "vrm_ckpt": MethodSpec(
        "VRM, activation checkpointing", ("vrm",), virtual=True, activation_checkpointing=True
    ),
    "vrm_per_view": MethodSpec(
        "VRM, one student pass per view", ("vrm",), virtual=True, config=(("vrm_student_views", "per_view"),)
    ),
    # VRM's one-pass step runs both networks on 2B images: KD at 2B is its memory floor
    "kd_2b": MethodSpec("KD at batch 2B (VRM's images per pass)", ("kd",), batch_multiplier=2),
    "kd_hf": MethodSpec("KD, minimal transformers.Trainer subclass", minimal_trainer=True),
    "kd_plain": MethodSpec("KD, plain PyTorch loop", plain=True),
}

# VRM paper, Table 7: per-iteration time (ms) and peak memory (MB), batch 64, resnet32x4 -> resnet8x4, one GPU.
PAPER_TABLE7 = {
    "KD": (24.9, 323),
    "RKD": (31.0, 330),
    "DIST": (27.2, 330),
    "CRD": (41.2, 1418),
    "ReviewKD": (39.9, 1042),
    "FCFD": (56.4, 953),
    "VRM": (47.2, 579),
}

# (name, method, compared with, metric, limit): the targets
TARGETS = [
    ("RKD step time", "rkd", "kd", "time", 1.10),
    ("RRD step time", "rrd", "kd", "time", 1.10),
    ("RRD+KD step time", "rrd_kd", "kd", "time", 1.12),
    ("VRM step time", "vrm", "kd", "time", 2.05),
    ("RKD memory", "rkd", "kd", "memory", 1.10),
    ("RRD memory", "rrd", "kd", "memory", 1.10),
    ("RRD+KD memory", "rrd_kd", "kd", "memory", 1.10),
    ("VRM memory", "vrm", "kd", "memory", 1.80),
    ("Trainer KD step vs plain loop", "kd", "kd_plain", "time", 1.05),
]

_WORKER_MARK = "@@STEP_COST_MEMORY@@"


# ---------------------------------------------------------------------------------------------------------------------
# arguments
# ---------------------------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Methods: " + ", ".join(f"{k} ({v.label})" for k, v in METHODS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--device", default="auto", help="cpu, cuda, cuda:N or auto (default: cuda if available)"
    )
    parser.add_argument("--batch_size", type=int, default=64, help="samples per step (default 64)")
    parser.add_argument("--steps", type=int, default=15, help="timed steps per method (default 15)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps per method (default 3)")
    parser.add_argument(
        "--bf16", action="store_true", help="bf16 autocast (Trainer bf16=True) and a bf16 teacher"
    )
    parser.add_argument(
        "--teacher_dtype",
        default=None,
        choices=["float32", "bfloat16", "float16"],
        help="teacher dtype (config.teacher_dtype); default bfloat16 with --bf16, else the model's (float32)",
    )
    parser.add_argument(
        "--channels_last", action="store_true", help="both networks in channels_last memory format"
    )
    parser.add_argument(
        "--compile_teacher",
        action="store_true",
        help="torch.compile the teacher (config.teacher_compile=True in the trainer; torch.compile in the plain loop)",
    )
    parser.add_argument(
        "--compile_mode",
        default=None,
        choices=["default", "max-autotune-no-cudagraphs"],
        help="torch.compile mode of the teacher with --compile_teacher (config.teacher_compile_mode; default: "
        "torch's default mode). The CUDA-graph modes cannot run here: the methods run in threads, and compiled CUDA "
        "graphs keep their state per thread",
    )
    parser.add_argument(
        "--compile_losses",
        action="store_true",
        help="torch.compile the losses (config.loss_compile=True; the plain loop compiles its CE + KD, the breakdown "
        "its losses)",
    )
    parser.add_argument(
        "--methods",
        default=",".join(METHOD_ORDER),
        help=f"comma-separated subset of {','.join(METHOD_ORDER)} (kd is always added: it is the reference)",
    )
    parser.add_argument("--teacher", default="resnet32x4", help="teacher architecture (create_model name)")
    parser.add_argument("--student", default="resnet8x4", help="student architecture (create_model name)")
    parser.add_argument("--num_classes", type=int, default=100)
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--rrd_queue_size", type=int, default=16384, help="RRD queue size K (default 16384)")
    parser.add_argument(
        "--max_grad_norm",
        type=float,
        default=1.0,
        help="gradient clipping of the Trainer (transformers' default 1.0, which the recipes keep) and of the plain "
        "loop; 0 disables it (the Trainer still computes the norm for its logs)",
    )
    parser.add_argument(
        "--memory_steps", type=int, default=3, help="training steps run by each isolated memory measurement"
    )
    parser.add_argument(
        "--memory",
        default="auto",
        choices=["auto", "fork", "subprocess", "skip"],
        help="isolation of the memory measurements: fork on CPU (auto), a fresh interpreter on CUDA (auto)",
    )
    parser.add_argument(
        "--breakdown_repeats",
        type=int,
        default=10,
        help="after the timing, time the parts of a step alone (teacher forward and student forward+backward at B and "
        "2B, each loss alone) this many times, interleaved; 0 skips it",
    )
    common.add_cpu_malloc_argument(parser)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", default=os.path.join("benchmarks", "results"))
    parser.add_argument("--name", default=None, help="result file stem (default: step_cost_<device>[_flags])")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny models (resnet8 -> resnet8, batch 8, 10 classes), 2 steps; for CI",
    )
    parser.add_argument("--_memory_worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.teacher = args.student = "resnet8"
        args.batch_size, args.num_classes, args.image_size = 8, 10, 16
        args.steps, args.warmup, args.memory_steps, args.breakdown_repeats = 2, 1, 1, 1
        args.rrd_queue_size = 64
    methods = [m.strip().lower() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {METHOD_ORDER}")
    if "kd" not in methods:
        methods.append("kd")
    args.methods = [m for m in METHOD_ORDER if m in methods]
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 2:
        parser.error("need --steps >= 1, --warmup >= 0 and --batch_size >= 2")
    return args


def teacher_dtype(args) -> str | None:
    return args.teacher_dtype or ("bfloat16" if args.bf16 else None)


def default_name(args, device: torch.device) -> str:
    parts = ["step_cost"] + (["smoke"] if args.smoke else []) + [device.type]
    parts += [flag for flag, on in (("bf16", args.bf16), ("channels_last", args.channels_last)) if on]
    if args.compile_teacher:
        parts.append("compile" + (f"_{args.compile_mode.replace('-', '_')}" if args.compile_mode else ""))
    if args.compile_losses:
        parts.append("compile_losses")
    if args.cpu_malloc != "default" and device.type == "cpu":
        parts.append(f"malloc_{args.cpu_malloc}")
    return "_".join(parts)


# ---------------------------------------------------------------------------------------------------------------------
# data and models
# ---------------------------------------------------------------------------------------------------------------------
class RandomImages(torch.utils.data.Dataset):
    """``length`` rows of random 3xSxS images and labels (a pool of at most 512 distinct rows, cycled)."""

    def __init__(self, length: int, image_size: int, num_classes: int, virtual: bool, seed: int):
        g = torch.Generator().manual_seed(seed)
        pool = min(length, 512)
        self.length = length
        self.x = torch.randn(pool, 3, image_size, image_size, generator=g)
        self.y = torch.randint(0, num_classes, (pool,), generator=g).tolist()
        self.xv = torch.randn(pool, 3, image_size, image_size, generator=g) if virtual else None

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        j = index % self.x.shape[0]
        row = {"pixel_values": self.x[j], "labels": self.y[j]}
        if self.xv is not None:
            row["pixel_values_virtual"] = self.xv[j]
        return row


def build_models(args) -> tuple[torch.nn.Module, torch.nn.Module]:
    from hf_relkd.models import create_model

    torch.manual_seed(args.seed)
    teacher = create_model(args.teacher, args.num_classes)
    student = create_model(args.student, args.num_classes)
    if args.channels_last:
        teacher = teacher.to(memory_format=torch.channels_last)
        student = student.to(memory_format=torch.channels_last)
    return student, teacher


def compile_teacher(module: torch.nn.Module, mode: str | None = None) -> torch.nn.Module:
    """``torch.compile`` a teacher outside the trainer (the plain loop and the breakdown; the trainers compile theirs
    through ``config.teacher_compile``).

    These teachers have no feature hook, and Dynamo does not guard on module hooks by default
    (``skip_nnmodule_hook_guards``): their graph would then be reused for a trainer's teacher of the same class that
    has the hook (RKD/RRD), and the hook would not run. Guarding on hooks gives each its own graph. The setting is
    per thread, so every participant thread sets it too.
    """
    _guard_hooks()
    return torch.compile(module, dynamic=False, mode=mode)


def _guard_hooks() -> None:
    """Make Dynamo guard on module hooks, in the calling thread (the setting is thread-local)."""
    import torch._dynamo

    torch._dynamo.config.skip_nnmodule_hook_guards = False


def build_dataset(name: str, args, max_steps: int) -> RandomImages:
    """The random images a method trains on (with a virtual view for VRM)."""
    spec = METHODS[name]
    return RandomImages(
        args.batch_size * spec.batch_multiplier * max_steps,
        args.image_size,
        args.num_classes,
        spec.virtual,
        args.seed + 1,
    )


def build_trainer(
    name: str, args, device: torch.device, max_steps: int, workdir: str, callbacks=(), dataset=None
):
    """The trainer a user would build for this method (random data, SGD as in the CIFAR recipes)."""
    from transformers import PrinterCallback

    from hf_relkd import RelationalDistillationConfig, RelationalDistillationTrainer
    from hf_relkd.trainer import ACTIVATION_CHECKPOINTING_FIELD

    spec = METHODS[name]
    dataset = dataset if dataset is not None else build_dataset(name, args, max_steps)
    student, teacher = build_models(args)
    training_arguments = dict(
        output_dir=os.path.join(workdir, name),
        per_device_train_batch_size=args.batch_size * spec.batch_multiplier,
        max_steps=max_steps,
        learning_rate=0.05,
        optim="sgd",
        optim_args="momentum=0.9",
        weight_decay=5e-4,
        lr_scheduler_type="constant",
        max_grad_norm=args.max_grad_norm,
        bf16=args.bf16,
        use_cpu=device.type == "cpu",
        seed=args.seed,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        logging_steps=10_000,
        dataloader_num_workers=0,
        dataloader_drop_last=True,
        dataloader_pin_memory=device.type == "cuda",
    )
    if spec.minimal_trainer:
        trainer = build_minimal_kd_trainer(args, student, teacher, training_arguments, dataset, callbacks)
    else:
        config = RelationalDistillationConfig(
            **training_arguments,
            methods=list(spec.methods),
            teacher_dtype=teacher_dtype(args),
            rrd_queue_size=args.rrd_queue_size,
            teacher_compile=args.compile_teacher,
            teacher_compile_mode=args.compile_mode,
            loss_compile=args.compile_losses,
            **({ACTIVATION_CHECKPOINTING_FIELD: True} if spec.activation_checkpointing else {}),
            **dict(spec.config),
        )
        trainer = RelationalDistillationTrainer(
            model=student,
            teacher_model=teacher,
            args=config,
            train_dataset=dataset,
            callbacks=list(callbacks),
        )
    trainer.remove_callback(PrinterCallback)
    return trainer


def build_minimal_kd_trainer(args, student, teacher, training_arguments: dict, dataset, callbacks=()):
    """KD written the short way on ``transformers.Trainer``, as a user would without hf_relkd: ``compute_loss`` runs
    the teacher without grad and returns CE + KD on the logits. Same data, optimizer, clipping and settings as the
    ``RelationalDistillationTrainer`` rows, so its step time is the Trainer framework's own per-step cost plus the
    same KD step, and the difference to ``kd`` is what hf_relkd adds (or saves) on top of ``transformers.Trainer``."""
    from transformers import Trainer, TrainingArguments, default_data_collator

    loss_fn = reference_kd_loss(args)

    class MinimalKDTrainer(Trainer):
        def __init__(self, teacher_model, **kwargs):
            super().__init__(**kwargs)
            self.teacher, self.teacher_dtype = reference_teacher(args, teacher_model, self.args.device)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            x, labels = inputs["pixel_values"], inputs["labels"]
            with torch.no_grad():
                # accelerate's autocast wraps the prepared student only: without it, feed the teacher its own dtype
                tx = x if torch.is_autocast_enabled() else x.to(self.teacher_dtype)
                teacher_logits = self.teacher(pixel_values=tx).logits.float()
            outputs = model(pixel_values=x)
            loss = loss_fn(outputs.logits.float(), teacher_logits, labels)
            return (loss, outputs) if return_outputs else loss

    return MinimalKDTrainer(
        teacher_model=teacher,
        model=student,
        args=TrainingArguments(**training_arguments),
        train_dataset=dataset,
        data_collator=default_data_collator,
        callbacks=list(callbacks),
    )


def ce_plus_kd(logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, T: float = 4.0):
    """The plain loop's loss, written by hand: cross-entropy + T²·KL(teacher ‖ student) at temperature T."""
    kd = F.kl_div(
        F.log_softmax(logits / T, 1),
        F.log_softmax(teacher_logits / T, 1),
        reduction="batchmean",
        log_target=True,
    )
    return F.cross_entropy(logits, labels) + kd * T * T


def reference_teacher(args, teacher: torch.nn.Module, device) -> tuple[torch.nn.Module, torch.dtype]:
    """The teacher of the hand-written references (plain loop, minimal ``transformers.Trainer`` subclass, breakdown),
    prepared as the library's trainer prepares its own: on ``device``, in ``--teacher_dtype``, in eval mode without
    gradients, compiled with ``--compile_teacher``. Returns the teacher and its dtype."""
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(teacher_dtype(args), torch.float32)
    teacher = teacher.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return (compile_teacher(teacher, args.compile_mode) if args.compile_teacher else teacher), dtype


def reference_kd_loss(args):
    """The references' CE + KD, compiled with ``--compile_losses``."""
    return torch.compile(ce_plus_kd) if args.compile_losses else ce_plus_kd


def decay_parameter_names(model: torch.nn.Module) -> list[str]:
    """The parameters ``transformers.Trainer`` applies weight decay to (``Trainer.get_decay_parameter_names``: all
    but biases and normalisation layers it recognises by type or name; the CIFAR zoo's BatchNorm weights, named
    ``bn*``, are decayed), so the plain loop optimises the same groups as the Trainer rows."""
    from transformers import Trainer

    return Trainer.get_decay_parameter_names(None, model)


class PlainKDLoop:
    """The same KD step written by hand: teacher forward without grad, student forward, CE + KD, backward, gradient
    clipping (as the Trainer, unless ``--max_grad_norm 0``), SGD.

    The teacher runs first, as in the Trainer (running it after the student adds its activations to the student's
    saved ones at the peak: 269 MB instead of 217 MB for resnet32x4 -> resnet8x4 at batch 64).
    """

    def __init__(self, args, device: torch.device, max_steps: int, dataset=None):
        from hf_relkd.data import DistillationCollator

        self.device, self.bf16, self.max_grad_norm = device, args.bf16, args.max_grad_norm
        dataset = dataset if dataset is not None else build_dataset("kd_plain", args, max_steps)
        student, teacher = build_models(args)
        self.student = student.to(device).train()
        self.teacher, self.teacher_dtype = reference_teacher(args, teacher, device)
        self.loss_fn = reference_kd_loss(args)
        decay_names = set(decay_parameter_names(self.student))
        decay = [p for n, p in self.student.named_parameters() if n in decay_names]
        no_decay = [p for n, p in self.student.named_parameters() if n not in decay_names]
        self.optimizer = torch.optim.SGD(
            [{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0.0}],
            lr=0.05,
            momentum=0.9,
        )
        g = torch.Generator().manual_seed(args.seed)
        self.loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=args.batch_size,
            shuffle=True,
            drop_last=True,
            collate_fn=DistillationCollator(),
            generator=g,
            pin_memory=device.type == "cuda",
        )

    def batches(self):
        for batch in self.loader:
            yield (
                batch["pixel_values"].to(self.device, non_blocking=True),
                batch["labels"].to(self.device, non_blocking=True),
            )

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            # teacher first, as the Trainer does (its activations are gone before the student's are saved)
            with torch.no_grad():
                tx = x if self.bf16 or self.teacher_dtype == torch.float32 else x.to(self.teacher_dtype)
                t_logits = self.teacher(pixel_values=tx).logits.float()
            logits = self.student(pixel_values=x).logits.float()
        loss = self.loss_fn(logits, t_logits, y)
        loss.backward()
        if self.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.student.parameters(), self.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


# ---------------------------------------------------------------------------------------------------------------------
# interleaved timing
# ---------------------------------------------------------------------------------------------------------------------
class Baton:
    """Lets exactly one participant run at a time; one step each per round, in a new random order every round.

    Nothing runs before every participant has arrived, so set-up never overlaps a timed step.
    """

    def __init__(self, names: list[str], seed: int):
        self._cond = threading.Condition()
        self._expected = set(names)
        self._arrived: set[str] = set()
        self._active: list[str] = []
        self._round: list[str] = []
        self._holder: str | None = None
        self._rng = random.Random(seed)

    def _advance(self) -> None:
        self._round = [n for n in self._round if n in self._active]
        if not self._round:
            self._round = list(self._active)
            self._rng.shuffle(self._round)
        self._holder = self._round.pop(0) if self._round else None
        self._cond.notify_all()

    def _wait(self, name: str) -> None:
        while self._holder != name:
            self._cond.wait()

    def arrive_and_wait(self, name: str) -> None:
        with self._cond:
            self._arrived.add(name)
            self._active.append(name)
            if self._holder is None and self._arrived >= self._expected:
                self._advance()
            self._wait(name)

    def pass_and_wait(self, name: str) -> None:
        with self._cond:
            self._advance()
            self._wait(name)

    def finish(self, name: str) -> None:
        with self._cond:
            self._arrived.add(name)
            if name in self._active:
                self._active.remove(name)
            if self._holder == name or (self._holder is None and self._arrived >= self._expected):
                self._advance()


class Participant:
    """Timing state of one method: its step and iteration durations, and its error if it failed."""

    def __init__(self, name: str, baton: Baton, device: torch.device):
        self.name, self.baton, self.device = name, baton, device
        self.step_times: list[float] = []
        self.cpu_times: list[float] = []
        self.iteration_times: list[float] = []
        self.error: str | None = None
        self.setup_done = False
        self._t0 = self._resume = self._cpu0 = 0.0

    def arrive(self) -> None:
        self.baton.arrive_and_wait(self.name)
        self._resume = time.perf_counter()

    def begin_step(self) -> None:
        common.synchronize(self.device)
        self._cpu0 = time.process_time()
        self._t0 = time.perf_counter()

    def end_step(self) -> None:
        common.synchronize(self.device)
        t1 = time.perf_counter()
        self.cpu_times.append(time.process_time() - self._cpu0)
        self.step_times.append(t1 - self._t0)
        self.iteration_times.append(t1 - self._resume)
        self.baton.pass_and_wait(self.name)
        self._resume = time.perf_counter()


def _timer_callback(participant: Participant, setup_lock: threading.Lock):
    from transformers import TrainerCallback

    class InterleavedStepTimer(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            participant.setup_done = True
            setup_lock.release()
            participant.arrive()

        def on_step_begin(self, args, state, control, **kwargs):
            participant.begin_step()

        def on_step_end(self, args, state, control, **kwargs):
            participant.end_step()

    return InterleavedStepTimer()


def run_timing(args, device: torch.device, workdir: str) -> dict[str, Participant]:
    total = args.warmup + args.steps
    baton = Baton(args.methods, args.seed)
    setup_lock = threading.Lock()
    participants = {name: Participant(name, baton, device) for name in args.methods}
    jobs = {}
    for name in args.methods:
        p = participants[name]
        try:
            if METHODS[name].plain:
                jobs[name] = PlainKDLoop(args, device, total)
            else:
                jobs[name] = build_trainer(
                    name, args, device, total, workdir, [_timer_callback(p, setup_lock)]
                )
        except Exception:
            p.error = traceback.format_exc()
            baton.finish(name)

    def run(name: str) -> None:
        p, job = participants[name], jobs[name]
        if args.threads:
            torch.set_num_threads(args.threads)
        if args.compile_teacher:
            _guard_hooks()
        try:
            if isinstance(job, PlainKDLoop):
                p.arrive()
                batches = job.batches()
                for _ in range(total):
                    x, y = next(batches)
                    p.begin_step()
                    job.step(x, y)
                    p.end_step()
            else:
                setup_lock.acquire()
                job.train()
        except Exception:
            p.error = traceback.format_exc()
            if not isinstance(job, PlainKDLoop) and not p.setup_done:
                setup_lock.release()  # failed during the Trainer's set-up, while holding the set-up lock
        finally:
            baton.finish(name)

    threads = [threading.Thread(target=run, args=(name,), name=f"step_cost-{name}") for name in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return participants


# ---------------------------------------------------------------------------------------------------------------------
# breakdown: where a step's time goes
# ---------------------------------------------------------------------------------------------------------------------
def run_breakdown(args, device: torch.device) -> dict[str, Any]:
    """Time the parts of a step alone, interleaved, in this thread: the teacher's forward and the student's
    forward+backward at B and at 2B images (what VRM runs), and each distillation loss alone on inputs of the step's
    shapes. Explains the ratios between methods (e.g. whether VRM's cost is its loss or its doubled batch)."""
    from hf_relkd.losses.functional import kd_loss, rkd_loss, rrd_loss, vrm_loss

    student, teacher = build_models(args)
    student = student.to(device).train()
    teacher, dtype = reference_teacher(args, teacher, device)
    b, c = args.batch_size, args.num_classes
    g = torch.Generator().manual_seed(args.seed)
    x = torch.randn(2 * b, 3, args.image_size, args.image_size, generator=g).to(device)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    d_s = getattr(getattr(student, "classifier", None), "in_features", 256)
    d_t = getattr(getattr(teacher, "classifier", None), "in_features", 256)

    def leaf(*shape, normalize=False):
        t = torch.randn(*shape, generator=g)
        return (F.normalize(t, dim=1) if normalize else t).to(device).requires_grad_()

    def const(*shape, normalize=False):
        t = torch.randn(*shape, generator=g)
        return (F.normalize(t, dim=1) if normalize else t).to(device)

    s_logits, s_logits_v, t_logits, t_logits_v = leaf(b, c), leaf(b, c), const(b, c), const(b, c)
    s_feat, t_feat = leaf(b, d_s), const(b, d_t)
    s_emb, t_emb = leaf(b, 128, normalize=True), const(b, 128, normalize=True)
    queue = const(args.rrd_queue_size, 128, normalize=True)

    def teacher_forward(n):
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            xt = x[:n] if args.bf16 or dtype == torch.float32 else x[:n].to(dtype)
            teacher(pixel_values=xt)

    def student_step(n):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            logits = student(pixel_values=x[:n]).logits
        logits.float().sum().backward()
        student.zero_grad(set_to_none=True)

    def backward(loss):
        loss.backward()
        for t in (s_logits, s_logits_v, s_feat, s_emb):
            t.grad = None

    losses = {"kd": kd_loss, "rkd": rkd_loss, "rrd": rrd_loss, "vrm": vrm_loss}
    if args.compile_losses:
        losses = {name: torch.compile(fn) for name, fn in losses.items()}
    parts = {
        f"teacher forward, {b} images": lambda: teacher_forward(b),
        f"teacher forward, {2 * b} images": lambda: teacher_forward(2 * b),
        f"student forward+backward, {b} images": lambda: student_step(b),
        f"student forward+backward, {2 * b} images": lambda: student_step(2 * b),
        "kd_loss fwd+bwd": lambda: backward(losses["kd"](s_logits, t_logits)),
        "rkd_loss fwd+bwd": lambda: backward(losses["rkd"](s_feat, t_feat)),
        f"rrd_loss fwd+bwd (K={args.rrd_queue_size})": lambda: backward(losses["rrd"](s_emb, t_emb, queue)),
        "vrm_loss fwd+bwd": lambda: backward(losses["vrm"](s_logits, s_logits_v, t_logits, t_logits_v)),
    }
    for fn in parts.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in parts}
    order = list(parts)
    rng = random.Random(args.seed)
    for _ in range(args.breakdown_repeats):
        rng.shuffle(order)
        for name in order:
            times[name].append(common.timed(parts[name], device))
    out = {name: common.summarize(values) for name, values in times.items()}
    med = {name: v["median_ms"] for name, v in out.items()}
    ratios = {
        "teacher_2b_over_b": med[f"teacher forward, {2 * b} images"] / med[f"teacher forward, {b} images"],
        "student_2b_over_b": med[f"student forward+backward, {2 * b} images"]
        / med[f"student forward+backward, {b} images"],
    }
    return {"parts": out, "ratios": ratios, "repeats": args.breakdown_repeats}


# ---------------------------------------------------------------------------------------------------------------------
# isolated memory measurement
# ---------------------------------------------------------------------------------------------------------------------
def _run_job(name: str, args, device: torch.device, steps: int, workdir: str, dataset) -> tuple[int, int]:
    """Build the method and train it for ``steps`` steps on ``dataset``; returns (RSS, CUDA allocated bytes) after
    the set-up."""
    if METHODS[name].plain:
        job = PlainKDLoop(args, device, steps, dataset)
        setup = (common.rss_bytes(), _allocated(device))
        for x, y in job.batches():
            job.step(x, y)
    else:
        workdir = os.path.join(workdir, f"{name}-{time.monotonic_ns()}")
        job = build_trainer(name, args, device, steps, workdir, dataset=dataset)
        setup = (common.rss_bytes(), _allocated(device))
        job.train()
    common.synchronize(device)
    return setup


def memory_worker(name: str, args) -> dict[str, Any]:
    """Peak memory of ``args.memory_steps`` training steps of ``name``, in this (fresh) process.

    1. A throw-away run of the same method with tiny models, so that lazily imported modules, code pages of the
       kernels and one-off buffers are resident before the baseline is read.
    2. The real run without instrumentation: peak RSS (VmHWM reset to the baseline) minus the baseline RSS; on CUDA
       also ``max_memory_allocated`` (reset before the models are built).
    3. On CPU, the same run again under the PyTorch profiler: the peak of the bytes held by CPU tensors allocated
       during it (weights, gradients, optimizer state, activations) — the CPU analogue of ``max_memory_allocated``.
    """
    device = common.resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = args.memory_steps
    out: dict[str, Any] = {"steps": steps}
    with tempfile.TemporaryDirectory() as workdir:
        tiny = argparse.Namespace(**vars(args))
        tiny.teacher = tiny.student = "resnet8"
        tiny.batch_size, tiny.image_size, tiny.rrd_queue_size = 4, 16, 64
        tiny.compile_teacher = tiny.compile_losses = False
        _run_job(name, tiny, device, 2, workdir, build_dataset(name, tiny, 2))
        # the random images exist before the measurement starts: they stand for a dataset on disk (on a GPU they
        # stay in host memory and are not in max_memory_allocated); the collated batches are measured
        dataset = build_dataset(name, args, steps)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            cuda0 = torch.cuda.memory_allocated(device)
        rss0 = common.rss_bytes()
        out["peak_reset"] = common.reset_peak_rss()
        setup_rss, setup_alloc = _run_job(name, args, device, steps, workdir, dataset)
        peak_rss = common.peak_rss_bytes()
        out["rss_before_models_mb"] = rss0 / common.MB
        out["peak_rss_mb"] = peak_rss / common.MB
        out["peak_rss_increase_mb"] = max(0, peak_rss - rss0) / common.MB
        out["rss_increase_after_setup_mb"] = max(0, setup_rss - rss0) / common.MB
        if device.type == "cuda":
            out["peak_allocated_mb"] = (torch.cuda.max_memory_allocated(device) - cuda0) / common.MB
            out["allocated_after_setup_mb"] = (setup_alloc - cuda0) / common.MB
            out["peak_reserved_mb"] = torch.cuda.max_memory_reserved(device) / common.MB
            out["memory_mb"] = out["peak_allocated_mb"]
        else:
            gc.collect()
            peak = common.cpu_peak_live_bytes(lambda: _run_job(name, args, device, steps, workdir, dataset))
            out["peak_tensor_mb"] = peak / common.MB
            out["memory_mb"] = out["peak_tensor_mb"]
    return out


def _allocated(device: torch.device) -> int:
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else 0


def measure_memory(name: str, args, mode: str) -> dict[str, Any]:
    if mode == "fork":
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            os.close(read_fd)
            code = 0
            try:
                result = memory_worker(name, args)
            except BaseException:
                result, code = {"error": traceback.format_exc()}, 1
            with os.fdopen(write_fd, "w") as f:
                f.write(json.dumps(result))
            os._exit(code)
        os.close(write_fd)
        with os.fdopen(read_fd) as f:
            text = f.read()
        os.waitpid(pid, 0)
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return {"error": f"memory worker for {name} died without a result"}
    payload = json.dumps(
        {"name": name, "args": {k: v for k, v in vars(args).items() if k != "_memory_worker"}}
    )
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--_memory_worker", payload],
        capture_output=True,
        text=True,
    )
    for line in proc.stdout.splitlines():
        if line.startswith(_WORKER_MARK):
            return json.loads(line[len(_WORKER_MARK) :])
    return {"error": f"memory worker for {name} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"}


def _worker_main(payload: str) -> None:
    spec = json.loads(payload)
    args = argparse.Namespace(**spec["args"])
    common.configure_cpu_malloc(args.cpu_malloc)
    try:
        result = memory_worker(spec["name"], args)
    except BaseException:
        result = {"error": traceback.format_exc()}
    print(_WORKER_MARK + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------------------------
def assemble(args, device, participants, memory, machine, malloc: str) -> dict[str, Any]:
    methods: dict[str, Any] = {}
    for name in args.methods:
        p = participants[name]
        timed = p.step_times[args.warmup :]
        entry: dict[str, Any] = {
            "label": METHODS[name].label,
            "path": METHODS[name].path,
            "config_methods": list(METHODS[name].methods),
            "activation_checkpointing": METHODS[name].activation_checkpointing,
            "config": dict(METHODS[name].config),
            "batch_size": args.batch_size * METHODS[name].batch_multiplier,
            "error": p.error,
            "step": common.summarize(timed),
            "iteration": common.summarize(p.iteration_times[args.warmup :]),
            "process_cpu": common.summarize(p.cpu_times[args.warmup :]),
            "step_times_ms": [round(1000 * t, 3) for t in p.step_times],
            "memory": memory.get(name, {}),
        }
        median = entry["step"].get("median_ms")
        entry["step_ms"] = median
        entry["images_per_s"] = entry["batch_size"] / (median / 1000.0) if median else None
        entry["memory_mb"] = entry["memory"].get("memory_mb")
        entry["rss_increase_mb"] = entry["memory"].get("peak_rss_increase_mb")
        if not p.error and len(p.step_times) != args.warmup + args.steps:
            entry["error"] = f"ran {len(p.step_times)} of {args.warmup + args.steps} steps"
        methods[name] = entry
    kd = methods["kd"]
    for entry in methods.values():
        entry["step_time_ratio_to_kd"] = _ratio(entry["step_ms"], kd["step_ms"])
        entry["paired_step_time_ratio_to_kd"] = _paired_ratio(entry, kd, args.warmup)
        entry["process_cpu_ratio_to_kd"] = _ratio(
            entry["process_cpu"].get("median_ms"), kd["process_cpu"].get("median_ms")
        )
        entry["memory_ratio_to_kd"] = _ratio(entry["memory_mb"], kd["memory_mb"])
        entry["rss_ratio_to_kd"] = _ratio(entry["rss_increase_mb"], kd["rss_increase_mb"])
    targets = []
    for title, name, ref, metric, limit in TARGETS:
        present = name in methods and ref in methods
        if not present:
            value = None
        elif metric == "time":
            value = _paired_ratio(methods[name], methods[ref], args.warmup)
        else:
            value = _ratio(methods[name]["memory_mb"], methods[ref]["memory_mb"])
        rss = (
            _ratio(methods[name]["rss_increase_mb"], methods[ref]["rss_increase_mb"])
            if present and metric == "memory"
            else None
        )
        targets.append(
            {
                "target": title,
                "method": name,
                "reference": ref,
                "metric": "median of per-round step-time ratios" if metric == "time" else "peak memory",
                "ratio": value,
                "rss_ratio": rss,
                "limit": limit,
                "passed": None if value is None else bool(value <= limit),
            }
        )
    memory_metric = (
        "torch.cuda.max_memory_allocated from model construction to the last step (fresh process per method)"
        if device.type == "cuda"
        else "peak bytes of live CPU tensors from model construction to the last step (PyTorch profiler memory "
        "events; the CPU analogue of max_memory_allocated; the random-image dataset is built before, as a dataset on "
        "disk would be, the collated batches are counted), one forked process per method"
    )
    rss_metric = (
        "peak RSS (VmHWM, reset after a tiny warm-up run of the same method) minus RSS at that moment, "
        "same isolated process, uninstrumented run"
    )
    return {
        "benchmark": "step_cost",
        "command": common.command_line(),
        "date": common.utc_now(),
        "machine": machine,
        "config": {
            "device": str(device),
            "teacher": args.teacher,
            "student": args.student,
            "batch_size": args.batch_size,
            "image_size": args.image_size,
            "num_classes": args.num_classes,
            "steps": args.steps,
            "warmup": args.warmup,
            "memory_steps": args.memory_steps,
            "bf16": args.bf16,
            "teacher_dtype": teacher_dtype(args) or "float32",
            "channels_last": args.channels_last,
            "compile_teacher": args.compile_teacher,
            "compile_mode": args.compile_mode if args.compile_teacher else None,
            "compile_losses": args.compile_losses,
            "cpu_malloc": malloc if device.type == "cpu" else "n/a (CUDA caching allocator)",
            "rrd_queue_size": args.rrd_queue_size,
            "max_grad_norm": args.max_grad_norm,
            "optimizer": "SGD(lr=0.05, momentum=0.9, weight_decay=5e-4 on weights)",
            "smoke": args.smoke,
            "timing": "median of on_step_begin -> on_step_end (device-synchronised) over the timed steps; methods' "
            "steps interleaved one at a time in a random order per round; ratios to KD are medians of the per-round "
            "ratios (paired), the ratio of the medians is also given",
            "memory_metric": memory_metric,
            "rss_metric": rss_metric,
        },
        "methods": methods,
        "targets": targets,
        "paper_table7": {
            k: {
                "ms": ms,
                "mb": mb,
                "ms_ratio_to_kd": round(ms / 24.9, 3),
                "mb_ratio_to_kd": round(mb / 323, 3),
            }
            for k, (ms, mb) in PAPER_TABLE7.items()
        },
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _paired_ratio(entry: dict[str, Any], reference: dict[str, Any], warmup: int) -> float | None:
    """Median over rounds of (this method's step / the reference's step in the same round).

    Both ran one step in every round, a few seconds apart at most, so slow drifts of the machine's load cancel in
    each ratio; the median then drops the rounds where a burst of load hit only one of the two.
    """
    if entry["error"] or reference["error"]:
        return None
    pairs = [
        a / b
        for a, b in zip(entry["step_times_ms"][warmup:], reference["step_times_ms"][warmup:], strict=False)
        if b
    ]
    return statistics.median(pairs) if pairs else None


def to_markdown(payload: dict[str, Any]) -> str:
    cfg = payload["config"]
    title = (
        f"Step cost: {cfg['teacher']} → {cfg['student']}, batch {cfg['batch_size']}, {cfg['image_size']}×"
        f"{cfg['image_size']}, {cfg['num_classes']} classes, {cfg['device']}"
    )
    flags = [f for f in ("bf16", "channels_last", "compile_teacher", "compile_losses") if cfg.get(f)]
    if cfg.get("compile_mode"):
        flags.append(f"compile mode {cfg['compile_mode']}")
    lines = [common.header_markdown(title, payload)]
    lines.append(
        f"* Settings: {', '.join(flags) or 'fp32, contiguous, eager'}; teacher dtype {cfg['teacher_dtype']}; "
        f"{cfg['warmup']} warm-up + {cfg['steps']} timed steps per method; memory from {cfg['memory_steps']} steps"
    )
    if "cpu_malloc" in cfg and cfg["device"] == "cpu":
        lines.append(f"* CPU allocator: {cfg['cpu_malloc']}")
    lines.append(f"* Step time: {cfg['timing']}")
    lines.append(
        "* CPU time: process CPU time (all threads) per step, median; less sensitive than wall time to other "
        "processes taking the cores, but it counts OpenMP spin-waiting"
    )
    lines.append(f"* Memory: {cfg['memory_metric']}")
    lines.append(f"* RSS: {cfg['rss_metric']}")
    lines.append("")
    rows = []
    for e in payload["methods"].values():
        s = e["step"]
        iqr = f"{common.fmt(s.get('p25_ms'))}–{common.fmt(s.get('p75_ms'))}" if s else "–"
        rows.append(
            [
                f"{e['label']}" + (" ⚠ " + e["error"].strip().splitlines()[-1] if e["error"] else ""),
                common.fmt(e["step_ms"]),
                iqr,
                common.fmt(e["paired_step_time_ratio_to_kd"], 3),
                common.fmt(e["step_time_ratio_to_kd"], 3),
                common.fmt(e["process_cpu_ratio_to_kd"], 3),
                common.fmt(e["images_per_s"]),
                common.fmt(e["memory_mb"]),
                common.fmt(e["memory_ratio_to_kd"], 3),
                common.fmt(e["rss_increase_mb"]),
                common.fmt(e["rss_ratio_to_kd"], 3),
            ]
        )
    lines.append(
        common.markdown_table(
            [
                "Method",
                "Step (ms, median)",
                "IQR (ms)",
                "× KD time (paired)",
                "× KD (medians)",
                "× KD (CPU time)",
                "Images/s",
                "Peak memory (MB)",
                "× KD memory",
                "RSS rise (MB)",
                "× KD RSS",
            ],
            rows,
        )
    )
    lines += ["", "### Targets", ""]
    lines.append(
        common.markdown_table(
            ["Target", "Ratio", "Limit", "Result", "RSS ratio (info)"],
            [
                [
                    f"{t['target']} (÷ {t['reference']})",
                    common.fmt(t["ratio"], 3),
                    f"≤ {t['limit']}",
                    "n/a" if t["passed"] is None else ("PASS" if t["passed"] else "FAIL"),
                    common.fmt(t["rss_ratio"], 3) if t["rss_ratio"] is not None else "",
                ]
                for t in payload["targets"]
            ],
        )
    )
    lines += trainer_overhead_markdown(payload)
    lines += ["", "### VRM paper, Table 7 (one GPU, batch 64, resnet32x4 → resnet8x4), for comparison", ""]
    lines.append(
        common.markdown_table(
            ["Method", "ms / iter", "× KD", "MB", "× KD"],
            [
                [k, v["ms"], common.fmt(v["ms_ratio_to_kd"], 3), v["mb"], common.fmt(v["mb_ratio_to_kd"], 3)]
                for k, v in payload["paper_table7"].items()
            ],
        )
    )
    return "\n".join(lines)


def trainer_overhead_markdown(payload: dict[str, Any]) -> list[str]:
    """The same KD step three ways (plain loop, minimal ``transformers.Trainer`` subclass, hf_relkd's trainer):
    how much of the Trainer's gap to the plain loop is ``transformers.Trainer``'s own per-step cost."""
    methods = payload["methods"]
    paths = [name for name in ("kd_plain", "kd_hf", "kd") if name in methods]
    if len(paths) < 3 or any(methods[name]["step_ms"] is None for name in paths):
        return []
    plain = methods["kd_plain"]["step_ms"]
    labels = {"kd": "KD, RelationalDistillationTrainer"}
    rows = [
        [
            labels.get(name, methods[name]["label"]),
            common.fmt(methods[name]["step_ms"], 2),
            common.fmt(methods[name]["step_ms"] - plain, 2),
            common.fmt(methods[name]["step_ms"] / plain, 3),
            common.fmt(methods[name]["paired_step_time_ratio_to_kd"], 3),
        ]
        for name in paths
    ]
    return [
        "",
        "### The KD step three ways: what the Trainer costs per step",
        "",
        common.markdown_table(
            ["Path", "Step (ms, median)", "− plain loop (ms)", "÷ plain loop", "× KD time (paired)"], rows
        ),
    ]


def breakdown_markdown(payload: dict[str, Any]) -> str:
    bd = payload.get("breakdown")
    if not bd:
        return ""
    kd = payload["methods"]["kd"]["step_ms"]
    rows = [
        [name, common.fmt(v["median_ms"], 1), common.fmt(v["median_ms"] / kd if kd else None, 3)]
        for name, v in bd["parts"].items()
    ]
    lines = [
        "",
        "",
        f"### Where the time goes (parts timed alone, interleaved, median of {bd['repeats']})",
        "",
        common.markdown_table(["Part", "ms", "÷ KD step"], rows),
        "",
        f"Teacher forward at 2B ÷ B: {bd['ratios']['teacher_2b_over_b']:.2f}; student forward+backward at 2B ÷ B: "
        f"{bd['ratios']['student_2b_over_b']:.2f} (VRM runs both networks on 2B images).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._memory_worker:
        _worker_main(args._memory_worker)
        return 0
    device = common.resolve_device(args.device)
    malloc = common.configure_cpu_malloc(args.cpu_malloc)
    if args.threads:
        torch.set_num_threads(args.threads)
    mode = args.memory
    if mode == "auto":
        mode = "fork" if device.type == "cpu" and hasattr(os, "fork") else "subprocess"
    # the machine description is read before forking: it must not initialise CUDA in the launcher yet
    import hf_relkd.data  # noqa: F401  (imported once here, not in every memory worker)
    import hf_relkd.models  # noqa: F401
    from hf_relkd import RelationalDistillationTrainer  # noqa: F401

    # the imported modules are permanent: keep them out of every later garbage collection (accelerate calls
    # gc.collect() at the end of each train(); forked memory workers share these pages)
    gc.collect()
    gc.freeze()
    machine = common.machine_info(device, query_cuda=mode != "fork")
    memory: dict[str, Any] = {}
    if mode != "skip":
        for name in args.methods:
            start = time.perf_counter()
            memory[name] = measure_memory(name, args, mode)
            memory[name]["isolation"] = mode
            print(
                f"[step_cost] memory of {name}: {common.fmt(memory[name].get('memory_mb'))} MB "
                f"({time.perf_counter() - start:.1f} s)",
                flush=True,
            )
    print(
        f"[step_cost] timing {', '.join(args.methods)}: {args.warmup}+{args.steps} steps each ...", flush=True
    )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        participants = run_timing(args, device, workdir)
    print(f"[step_cost] timing done ({time.perf_counter() - start:.1f} s)", flush=True)
    payload = assemble(args, device, participants, memory, machine, malloc)
    if args.breakdown_repeats > 0:
        start = time.perf_counter()
        payload["breakdown"] = run_breakdown(args, device)
        print(f"[step_cost] breakdown done ({time.perf_counter() - start:.1f} s)", flush=True)
    markdown_extra = breakdown_markdown(payload)
    for name, mem in memory.items():
        if mem.get("error") and not payload["methods"][name]["error"]:
            payload["methods"][name]["error"] = "memory: " + mem["error"]
    name = args.name or default_name(args, device)
    markdown = to_markdown(payload) + markdown_extra
    paths = common.write_results(args.output_dir, name, payload, markdown)
    figure = plots.plot_step_cost(payload, os.path.splitext(paths[0])[0] + ".png")
    print(markdown)
    print(f"\nwrote {paths[0]}, {paths[1]} and {figure}")
    failed = [n for n, e in payload["methods"].items() if e["error"]]
    for n in failed:
        print(f"\n[{n}] failed:\n{payload['methods'][n]['error']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
