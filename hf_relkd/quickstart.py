"""Quick start: distil a CIFAR-zoo teacher into a small student on scikit-learn's handwritten digits, on a CPU.

No download: the 1,797 8x8 digits ship inside scikit-learn (:func:`hf_relkd.data.load_digits_dataset`). The run

1. trains a teacher (resnet20) with cross-entropy only,
2. for each seed, with the same data, budget (epochs, batch, optimizer, schedule), seed and initial weights, trains
   (a) a cross-entropy-only baseline student (resnet8) and (b) a distilled student (RRD+KD by default;
   ``--methods rkd`` etc., several combine),
3. evaluates all of them on the 450 held-out digits, prints a table (accuracy and teacher agreement as mean ± std
   over the seeds, parameter counts) and saves the distilled student of the first seed, with its image processor and
   ``id2label``, to ``<output_dir>/student``.

Command line (also ``python -m hf_relkd.quickstart``)::

    hf-relkd-quickstart                       # RRD+KD, seeds 0 1 2
    hf-relkd-quickstart --methods vrm         # another method
    hf-relkd-quickstart --methods rrd kd rkd  # several methods in one student
    hf-relkd-quickstart --seeds 0             # one seed (faster, noisier)

Load the result::

    import hf_relkd  # registers the CIFAR zoo with the Auto classes
    from transformers import AutoModelForImageClassification
    student = AutoModelForImageClassification.from_pretrained("quickstart_output/student")

The defaults (the digits at their native 8x8 resolution, a 60-epoch teacher, 15-epoch students, three seeds) take
about two to three minutes on two CPU cores. The teacher is trained once; only the students are repeated per seed.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import PrinterCallback, Trainer

from .data import (
    DIGITS_NORMALIZATION,
    DistillationCollator,
    ViewTransform,
    build_image_processor,
    load_digits_dataset,
)
from .metrics import DistillationMetrics
from .models import create_model
from .recipe import CrossEntropyTrainer
from .trainer import RelationalDistillationConfig, RelationalDistillationTrainer

__all__ = [
    "BASELINE",
    "DEFAULTS",
    "METHOD_VARIANTS",
    "format_results_table",
    "main",
    "run_quickstart",
    "variant_name",
]

#: Default settings of :func:`run_quickstart` (and of the command line).
DEFAULTS: dict[str, Any] = {
    "teacher_model": "resnet20",
    "student_model": "resnet8",
    "image_size": 8,
    "teacher_epochs": 60,
    "student_epochs": 15,
    "seeds": (0, 1, 2),
    "batch_size": 64,
    "learning_rate": 0.05,
    "student_train_samples": None,
    "rrd_queue_size": 1024,
}

#: Loss settings of each single-method student used by the benchmarks (the paper weights; KD is RepDistiller's
#: 0.1 x CE + 0.9 x KD baseline).
METHOD_VARIANTS: dict[str, dict[str, Any]] = {
    "kd": {"methods": ["kd"], "ce_weight": 0.1, "kd_weight": 0.9},
    "rkd": {"methods": ["rkd"]},
    "rrd": {"methods": ["rrd"]},
    "rrd+kd": {"methods": ["rrd", "kd"]},
    "vrm": {"methods": ["vrm"]},
}

#: Name of the cross-entropy-only student in the results.
BASELINE = "ce"


def variant_name(methods: Sequence[str]) -> str:
    """Name of a distilled student from its methods, e.g. ``["rrd", "kd"] -> "rrd+kd"``.

    Args:
        methods: method names.

    Returns:
        The names joined with ``+``, in the order given.
    """
    return "+".join(m.strip().lower() for m in methods)


def _config(
    output_dir: str,
    seed: int,
    epochs: float,
    batch_size: int,
    learning_rate: float,
    max_steps: int | None,
    progress: bool,
    extra: Mapping[str, Any] | None = None,
) -> RelationalDistillationConfig:
    # the CIFAR-100 protocol shrunk to the budget: SGD 0.9, wd 5e-4, x0.1 at 62.5 %, 75 %, 87.5 % of training
    kwargs: dict[str, Any] = dict(
        output_dir=output_dir,
        seed=seed,
        data_seed=seed,
        num_train_epochs=epochs,
        max_steps=max_steps if max_steps else -1,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=256,
        learning_rate=learning_rate,
        optim="sgd",
        optim_args="momentum=0.9",
        weight_decay=5e-4,
        lr_decay_epochs=[epochs * f for f in (0.625, 0.75, 0.875)],
        eval_strategy="no",
        save_strategy="no",
        logging_steps=50,
        logging_strategy="steps" if progress else "no",
        report_to="none",
        disable_tqdm=not progress,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        methods=[],
        rrd_queue_size=DEFAULTS["rrd_queue_size"],
    )
    kwargs.update(extra or {})
    return RelationalDistillationConfig(**kwargs)


@torch.no_grad()
def _predict(model: nn.Module, dataset, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels of ``model`` over an evaluation dataset (deterministic transform)."""
    model.eval()
    device = next(model.parameters()).device
    collate = DistillationCollator()
    logits, labels = [], []
    for start in range(0, len(dataset), batch_size):
        rows = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        batch = collate(rows)
        out = model(pixel_values=batch["pixel_values"].to(device))
        logits.append(out.logits.float().cpu())
        labels.append(batch["labels"])
    return torch.cat(logits).numpy(), torch.cat(labels).numpy()


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _summary(values: Sequence[float]) -> tuple[float, float]:
    mean = float(statistics.fmean(values))
    std = float(statistics.stdev(values)) if len(values) > 1 else 0.0
    return mean, std


def _auto_num_threads() -> int:
    """CPU threads for torch: the cores not already busy (by the 1-minute load average), at least 1.

    On a shared machine, more intra-op threads than free cores makes every step several times slower (threads spin
    waiting for each other), so a loaded 2-core machine is faster with 1 thread than with 2.
    """
    current = torch.get_num_threads()
    if os.environ.get("OMP_NUM_THREADS") or not hasattr(os, "getloadavg"):
        return current
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    free = int(cores - os.getloadavg()[0] + 0.5)
    return max(1, min(current, free))


@contextmanager
def _torch_threads(num_threads: int | None) -> Iterator[None]:
    """Run a block with ``num_threads`` torch CPU threads (auto when None; untouched on GPU), then restore them."""
    previous = torch.get_num_threads()
    if not torch.cuda.is_available():
        torch.set_num_threads(num_threads if num_threads else _auto_num_threads())
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _stratified_subset(dataset, size: int | None):
    """The first ``size`` examples of a class-stratified shuffle (split seed 0, the same for every run)."""
    if size is None or size >= len(dataset):
        return dataset
    if size < 10:
        raise ValueError(f"`student_train_samples` must be at least 10 (one image per digit), got {size}.")
    from sklearn.model_selection import train_test_split

    indices, _ = train_test_split(
        list(range(len(dataset))), train_size=size, random_state=0, stratify=dataset["label"]
    )
    return dataset.select(sorted(indices))


def _banner(text: str, progress: bool) -> None:
    if progress:
        print(f"\n=== {text}", flush=True)


def run_quickstart(
    output_dir: str = "quickstart_output",
    methods: Sequence[str] = ("rrd", "kd"),
    seeds: Sequence[int] = DEFAULTS["seeds"],
    *,
    teacher_model: str = DEFAULTS["teacher_model"],
    student_model: str = DEFAULTS["student_model"],
    image_size: int = DEFAULTS["image_size"],
    teacher_epochs: float = DEFAULTS["teacher_epochs"],
    student_epochs: float = DEFAULTS["student_epochs"],
    batch_size: int = DEFAULTS["batch_size"],
    learning_rate: float = DEFAULTS["learning_rate"],
    student_train_samples: int | None = DEFAULTS["student_train_samples"],
    max_steps: int | None = None,
    distillation_overrides: Mapping[str, Any] | None = None,
    variants: Mapping[str, Mapping[str, Any]] | None = None,
    teacher_path: str | None = None,
    save_student: bool = True,
    progress: bool = True,
    num_threads: int | None = None,
) -> dict[str, Any]:
    """Train a teacher, a CE-only student and distilled students on the digits, and compare them.

    Baseline and distilled students get the same data, augmentation, epochs, batch size, optimizer (SGD, momentum
    0.9, weight decay 5e-4), schedule (x0.1 at 62.5/75/87.5 % of training, the CIFAR-100 protocol's proportions),
    seed and initial weights. The teacher is trained once, with the first seed.

    Args:
        output_dir: where the teacher (``teacher/``), the distilled student (``student/``), ``results.json`` and
            ``results.md`` are written.
        methods: methods of the distilled student (``kd``, ``rkd``, ``rrd``, ``vrm``; several combine, with their
            paper weights). Ignored when ``variants`` is given.
        seeds: one student of each kind per seed; accuracies are reported as mean ± std over seeds.
        teacher_model: teacher architecture (CIFAR zoo or timm name).
        student_model: student architecture.
        image_size: side of the (upscaled) digit images.
        teacher_epochs: teacher training epochs.
        student_epochs: epochs of every student (baseline and distilled).
        batch_size: per-device batch size of every run.
        learning_rate: initial learning rate of every run.
        student_train_samples: train the students (baseline and distilled alike) on this many training images, a
            class-stratified subset fixed across seeds; None: all 1,347 (the teacher always sees all of them).
        max_steps: if set, every run stops after this many optimizer steps (for tests).
        distillation_overrides: extra :class:`~hf_relkd.RelationalDistillationConfig` fields for the distilled
            students (e.g. ``{"vrm_prune_percentile": 75}``).
        variants: several distilled students to compare, name -> config fields (e.g.
            :data:`METHOD_VARIANTS`); default: one student named after ``methods``.
        teacher_path: a teacher saved by an earlier run (``<output_dir>/teacher``) to reuse instead of training one.
        save_student: save the first distilled student of the first seed to ``<output_dir>/student``.
        progress: show progress bars, training logs and the table.
        num_threads: CPU threads for torch during the run (restored afterwards); default: the cores that are not
            busy according to the load average (unless ``OMP_NUM_THREADS`` is set). Ignored on GPU.

    Returns:
        ``{"settings", "teacher", "students", "distilled", "student_dir", "wall_time_s"}``: ``teacher`` and each
        entry of ``students`` (``"ce"`` first, then every distilled variant) hold the model name, its parameter
        count, per-seed ``runs`` (accuracy, teacher agreement, training time) and their means and standard
        deviations (accuracies in [0, 1]).

    Raises:
        ValueError: empty ``seeds`` or ``methods``, or unknown methods / architectures.
    """
    from transformers import AutoModelForImageClassification, set_seed

    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("`seeds` is empty; pass at least one seed, e.g. seeds=[0].")
    if variants is None:
        methods = [m for entry in methods for m in str(entry).split(",") if m.strip()]
        if not methods:
            raise ValueError(
                "`methods` is empty; pass at least one of kd, rkd, rrd, vrm (e.g. ['rrd', 'kd'])."
            )
        variants = {variant_name(methods): {"methods": list(methods)}}
    if not variants:
        raise ValueError(
            "`variants` is empty; pass at least one distilled student, e.g. {'rrd': {'methods': ['rrd']}}."
        )
    if BASELINE in variants:
        raise ValueError(f"{BASELINE!r} names the CE-only baseline; give the distilled variant another name.")
    overrides = dict(distillation_overrides or {})
    started = time.time()
    os.makedirs(output_dir, exist_ok=True)
    with _torch_threads(num_threads), tempfile.TemporaryDirectory(prefix="hf_relkd_quickstart_") as scratch:
        # `scratch` is the output_dir of the runs that save nothing
        # --- data
        digits = load_digits_dataset(image_size=image_size, seed=0)
        names = digits["train"].features["label"].names
        id2label = dict(enumerate(names))
        norm = DIGITS_NORMALIZATION
        common = dict(image_size=image_size, normalization=norm, crop_padding=max(1, image_size // 8))
        teacher_train = digits["train"].with_transform(ViewTransform(train=True, **common))
        student_split = _stratified_subset(digits["train"], student_train_samples)
        train_plain = student_split.with_transform(ViewTransform(train=True, **common))
        train_virtual = student_split.with_transform(ViewTransform(train=True, virtual_view=True, **common))
        evaluation = digits["test"].with_transform(
            ViewTransform(train=False, **{k: v for k, v in common.items() if k != "crop_padding"})
        )
        processor = build_image_processor(norm, image_size)
        metrics = DistillationMetrics()

        def train_ce(model: nn.Module, seed: int, epochs: float, folder: str, data) -> tuple[Trainer, float]:
            args = _config(folder, seed, epochs, batch_size, learning_rate, max_steps, progress)
            trainer = CrossEntropyTrainer(
                model=model,
                args=args,
                train_dataset=data,
                data_collator=DistillationCollator(),
                compute_metrics=metrics,
                processing_class=processor,
            )
            if not progress:
                trainer.remove_callback(PrinterCallback)
            tic = time.time()
            trainer.train()
            return trainer, time.time() - tic

        # --- teacher
        if teacher_path is not None:
            from . import models  # noqa: F401  (Auto-class registration)

            teacher = AutoModelForImageClassification.from_pretrained(teacher_path)
            teacher_time = 0.0
            teacher_name = getattr(teacher.config, "architecture", teacher_path)
        else:
            _banner(f"teacher {teacher_model}: cross-entropy, {teacher_epochs} epochs", progress)
            set_seed(seeds[0])
            teacher = create_model(teacher_model, num_labels=len(names), id2label=id2label)
            trainer, teacher_time = train_ce(
                teacher, seeds[0], teacher_epochs, os.path.join(output_dir, "teacher"), teacher_train
            )
            trainer.save_model()
            teacher_name = teacher_model
        teacher.eval()
        teacher_logits, labels = _predict(teacher, evaluation)
        teacher_pred = teacher_logits.argmax(-1)
        teacher_acc = float((teacher_pred == labels).mean())
        results: dict[str, Any] = {
            "settings": {
                "dataset": "sklearn digits (1,347 train / 450 test)",
                "teacher_model": teacher_name,
                "student_model": student_model,
                "image_size": image_size,
                "teacher_epochs": teacher_epochs,
                "student_epochs": student_epochs,
                "batch_size": batch_size,
                "learning_rate": learning_rate,
                "student_train_samples": len(train_plain),
                "max_steps": max_steps,
                "seeds": seeds,
                "variants": {name: dict(cfg) for name, cfg in variants.items()},
                "distillation_overrides": overrides,
                "device": "cuda" if torch.cuda.is_available() else "cpu",
                "torch_threads": torch.get_num_threads() if not torch.cuda.is_available() else None,
            },
            "teacher": {
                "model": teacher_name,
                "params": _num_params(teacher),
                "accuracy": teacher_acc,
                "train_time_s": teacher_time,
                "path": teacher_path or os.path.join(output_dir, "teacher"),
            },
            "students": {},
        }

        # --- students
        runs: dict[str, list[dict[str, Any]]] = {BASELINE: [], **{name: [] for name in variants}}
        params: dict[str, int] = {}
        student_dir = None
        total = len(seeds) * (1 + len(variants))
        index = 0

        def record(name: str, seed: int, model: nn.Module, seconds: float) -> None:
            logits, _ = _predict(model, evaluation)
            pred = logits.argmax(-1)
            runs[name].append(
                {
                    "seed": seed,
                    "accuracy": float((pred == labels).mean()),
                    "teacher_agreement": float((pred == teacher_pred).mean()),
                    "train_time_s": seconds,
                }
            )
            params[name] = _num_params(model)

        for seed in seeds:
            index += 1
            _banner(f"[{index}/{total}] student {student_model}, cross-entropy only, seed {seed}", progress)
            set_seed(seed)
            model = create_model(student_model, num_labels=len(names), id2label=id2label)
            trainer, seconds = train_ce(
                model, seed, student_epochs, os.path.join(scratch, f"ce-seed{seed}"), train_plain
            )
            record(BASELINE, seed, trainer.model, seconds)

            for name, settings in variants.items():
                index += 1
                extra = {**overrides, **settings}
                needs_virtual = "vrm" in [m.lower() for m in extra.get("methods", [])] or bool(
                    extra.get("vrm_inter_sample_weight") or extra.get("vrm_inter_class_weight")
                )
                _banner(
                    f"[{index}/{total}] student {student_model}, distilled ({name}), seed {seed}", progress
                )
                set_seed(seed)
                model = create_model(student_model, num_labels=len(names), id2label=id2label)
                folder = os.path.join(scratch, f"{name}-seed{seed}")
                args = _config(
                    folder, seed, student_epochs, batch_size, learning_rate, max_steps, progress, extra
                )
                distiller = RelationalDistillationTrainer(
                    model=model,
                    teacher_model=copy.deepcopy(teacher),
                    args=args,
                    train_dataset=train_virtual if needs_virtual else train_plain,
                    data_collator=DistillationCollator(),
                    processing_class=processor,
                )
                if not progress:
                    distiller.remove_callback(PrinterCallback)
                tic = time.time()
                distiller.train()
                record(name, seed, distiller.model, time.time() - tic)
                if save_student and student_dir is None:
                    student_dir = os.path.join(output_dir, "student")
                    # evaluate through the trainer first, so the model card carries the test accuracies
                    distiller.evaluate(eval_dataset=evaluation)
                    distiller.model_card_options.update(
                        dataset_name="sklearn-digits",
                        eval_split="test",
                        model_name=f"{student_model}-digits-{name.replace('+', '-')}",
                    )
                    distiller.save_model(student_dir)

        for name, entries in runs.items():
            acc_mean, acc_std = _summary([r["accuracy"] for r in entries])
            agree_mean, agree_std = _summary([r["teacher_agreement"] for r in entries])
            results["students"][name] = {
                "model": student_model,
                "methods": []
                if name == BASELINE
                else list({**overrides, **variants[name]}.get("methods", [])),
                "params": params[name],
                "runs": entries,
                "accuracy_mean": acc_mean,
                "accuracy_std": acc_std,
                "teacher_agreement_mean": agree_mean,
                "teacher_agreement_std": agree_std,
            }
        results["distilled"] = list(variants)
        results["student_dir"] = student_dir
        results["wall_time_s"] = time.time() - started
        with open(os.path.join(output_dir, "results.json"), "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
        table = format_results_table(results)
        with open(os.path.join(output_dir, "results.md"), "w", encoding="utf-8") as f:
            f.write(table + "\n")
        if progress:
            print(f"\n{table}\n\nWall time {results['wall_time_s']:.0f} s.", end="")
            print(f" Distilled student saved to {student_dir}." if student_dir else "")
        return results


def _pm(mean: float, std: float, n: int, scale: float = 100.0) -> str:
    return f"{scale * mean:.2f} ± {scale * std:.2f}" if n > 1 else f"{scale * mean:.2f}"


def format_results_table(results: Mapping[str, Any]) -> str:
    """Markdown table of a :func:`run_quickstart` result.

    Args:
        results: the dict returned by :func:`run_quickstart`.

    Returns:
        One row for the teacher and one per student: model, parameters, top-1 accuracy (%) and teacher agreement
        (%) as mean ± std over seeds, and the difference to the CE-only student.
    """
    teacher = results["teacher"]
    students = results["students"]
    n = len(results["settings"]["seeds"])
    baseline = students[BASELINE]["accuracy_mean"]
    seeds_note = f" (mean ± std over {n} seeds)" if n > 1 else ""
    rows = [
        f"| model | params | top-1 accuracy (%){seeds_note} | teacher agreement (%) | Δ vs CE student |",
        "|---|---|---|---|---|",
        f"| teacher {teacher['model']} (CE) | {teacher['params']:,} | {100 * teacher['accuracy']:.2f} | - | - |",
    ]
    for name, entry in students.items():
        label = "CE only (baseline)" if name == BASELINE else f"distilled: {name}"
        delta = "-" if name == BASELINE else f"{100 * (entry['accuracy_mean'] - baseline):+.2f}"
        rows.append(
            f"| student {entry['model']}, {label} | {entry['params']:,} | "
            f"{_pm(entry['accuracy_mean'], entry['accuracy_std'], n)} | "
            f"{_pm(entry['teacher_agreement_mean'], entry['teacher_agreement_std'], n)} | {delta} |"
        )
    return "\n".join(rows)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-relkd-quickstart",
        description="Distil a teacher into a small student on scikit-learn's digits (no download, CPU, minutes) and "
        "compare it with a cross-entropy-only student trained with the same budget and seed.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--output_dir", default="quickstart_output", help="Where models and results are written."
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["rrd", "kd"],
        help="Methods of the distilled student: kd, rkd, rrd, vrm.",
    )
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=list(DEFAULTS["seeds"]),
        help="Student seeds (mean ± std over them).",
    )
    parser.add_argument("--teacher_model", default=DEFAULTS["teacher_model"], help="Teacher architecture.")
    parser.add_argument("--student_model", default=DEFAULTS["student_model"], help="Student architecture.")
    parser.add_argument(
        "--image_size", type=int, default=DEFAULTS["image_size"], help="Image side in pixels."
    )
    parser.add_argument(
        "--teacher_epochs", type=float, default=DEFAULTS["teacher_epochs"], help="Teacher epochs."
    )
    parser.add_argument(
        "--student_epochs", type=float, default=DEFAULTS["student_epochs"], help="Epochs of every student."
    )
    parser.add_argument("--batch_size", type=int, default=DEFAULTS["batch_size"], help="Batch size.")
    parser.add_argument(
        "--learning_rate", type=float, default=DEFAULTS["learning_rate"], help="Initial SGD lr."
    )
    parser.add_argument(
        "--student_train_samples",
        type=int,
        default=None,
        help="Train the students on a class-stratified subset of this many images (default: all 1,347).",
    )
    parser.add_argument(
        "--max_steps", type=int, default=None, help="Stop every run after N steps (smoke tests)."
    )
    parser.add_argument(
        "--teacher_path", default=None, help="Reuse a teacher saved by an earlier run (<output_dir>/teacher)."
    )
    parser.add_argument(
        "--num_threads",
        type=int,
        default=None,
        help="CPU threads (default: the cores not busy, by load average).",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="No progress bars or logs (the table is still printed)."
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point (``hf-relkd-quickstart``, ``python -m hf_relkd.quickstart``).

    The results are printed and written to ``<output_dir>/results.json``; use :func:`run_quickstart` to get them
    as a dict.

    Args:
        argv: arguments (default: ``sys.argv[1:]``).

    Returns:
        None, so that the console script exits with status 0.
    """
    args = _parser().parse_args(argv)
    results = run_quickstart(
        output_dir=args.output_dir,
        methods=args.methods,
        seeds=args.seeds,
        teacher_model=args.teacher_model,
        student_model=args.student_model,
        image_size=args.image_size,
        teacher_epochs=args.teacher_epochs,
        student_epochs=args.student_epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        student_train_samples=args.student_train_samples,
        max_steps=args.max_steps,
        teacher_path=args.teacher_path,
        progress=not args.quiet,
        num_threads=args.num_threads,
    )
    if args.quiet:
        print(format_results_table(results))


if __name__ == "__main__":
    main()
