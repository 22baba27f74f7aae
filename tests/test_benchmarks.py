"""The benchmark scripts run end to end (``--smoke``: tiny models and sizes) and write complete results.

No timing is asserted: only that every method/loss ran and that the JSON and Markdown carry what the README
documents.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(REPO, "benchmarks")


def run_script(script: str, tmp_path, *extra: str, stem: str | None = None) -> dict:
    cmd = [
        sys.executable,
        os.path.join(BENCHMARKS, script),
        "--smoke",
        "--device",
        "cpu",
        "--output_dir",
        str(tmp_path),
    ]
    proc = subprocess.run(
        [*cmd, *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": REPO},
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    stem = stem or script.replace(".py", "") + "_smoke_cpu"
    assert (tmp_path / f"{stem}.md").is_file()
    return json.loads((tmp_path / f"{stem}.json").read_text())


def _check_figure(path) -> None:
    """A PNG that matplotlib drew something into (not an empty canvas)."""
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 600 and image.height > 300
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20)) > 50


def _check_header(payload: dict, benchmark: str) -> None:
    assert payload["benchmark"] == benchmark
    assert payload["command"].startswith("python ")
    assert payload["date"]
    for key in ("cpu", "logical_cores", "torch", "transformers", "device"):
        assert payload["machine"][key], key
    assert payload["config"]["smoke"] is True


def test_step_cost_smoke(tmp_path):
    payload = run_script(
        "step_cost.py", tmp_path, "--cpu_malloc", "retain", stem="step_cost_smoke_cpu_malloc_retain"
    )
    _check_header(payload, "step_cost")
    methods = payload["methods"]
    assert list(methods) == [
        "ce", "kd", "rkd", "rrd", "rrd_kd", "vrm", "vrm_per_view", "vrm_ckpt", "kd_2b", "kd_hf", "kd_plain"
    ]  # fmt: skip
    cfg = payload["config"]
    assert "mallopt" in cfg["cpu_malloc"]
    for name, entry in methods.items():
        assert entry["error"] is None, (name, entry["error"])
        assert entry["step"]["n"] == cfg["steps"]
        assert len(entry["step_times_ms"]) == cfg["steps"] + cfg["warmup"]
        assert entry["step_ms"] > 0 and entry["images_per_s"] > 0
        assert entry["memory_mb"] > 0, name
        assert entry["memory"]["isolation"] == "fork"
        assert entry["memory"]["peak_tensor_mb"] == entry["memory_mb"]
        assert entry["rss_increase_mb"] is not None
        assert entry["step_time_ratio_to_kd"] > 0 and entry["memory_ratio_to_kd"] > 0
    assert methods["kd"]["step_time_ratio_to_kd"] == pytest.approx(1.0)
    assert methods["kd_plain"]["path"] == "plain PyTorch loop"
    assert methods["kd_hf"]["path"] == "MinimalKDTrainer.train()"
    assert methods["kd"]["path"] == "RelationalDistillationTrainer.train()"
    assert methods["vrm"]["config_methods"] == ["vrm"]
    assert (
        methods["vrm_per_view"]["config"] == {"vrm_student_views": "per_view"}
        and methods["vrm"]["config"] == {}
    )
    # VRM runs both networks on both views: its activations are larger than KD's
    assert methods["vrm"]["memory_mb"] > methods["kd"]["memory_mb"]
    # ...unless the student keeps only its blocks' inputs and re-runs them in backward
    assert methods["vrm_ckpt"]["activation_checkpointing"] and not methods["vrm"]["activation_checkpointing"]
    assert methods["vrm_ckpt"]["memory_mb"] < methods["vrm"]["memory_mb"]
    # KD at twice the batch: twice the images per step, and more activations than KD at the batch
    assert methods["kd_2b"]["batch_size"] == 2 * methods["kd"]["batch_size"] == 2 * cfg["batch_size"]
    assert methods["kd_2b"]["memory_mb"] > methods["kd"]["memory_mb"]
    targets = {t["target"]: t for t in payload["targets"]}
    assert len(targets) == 9
    for t in targets.values():
        assert t["ratio"] is not None and isinstance(t["passed"], bool)
    assert set(payload["paper_table7"]) >= {"KD", "RKD", "CRD", "VRM"}
    breakdown = payload["breakdown"]
    assert len(breakdown["parts"]) == 8 and all(v["median_ms"] > 0 for v in breakdown["parts"].values())
    assert set(breakdown["ratios"]) == {"teacher_2b_over_b", "student_2b_over_b"}
    assert "### The KD step three ways" in (tmp_path / "step_cost_smoke_cpu_malloc_retain.md").read_text()
    _check_figure(tmp_path / "step_cost_smoke_cpu_malloc_retain.png")


def test_step_cost_rejects_unknown_method(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(BENCHMARKS, "step_cost.py"),
            "--methods",
            "kd,crd",
            "--output_dir",
            str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "unknown method" in proc.stderr


def _import_benchmark(name: str):
    import importlib

    # the scripts import their siblings (`import common`), as when run as scripts
    sys.path.insert(0, BENCHMARKS)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(BENCHMARKS)


def test_the_kd_step_three_ways_is_the_same_step(tmp_path):
    """``kd`` (RelationalDistillationTrainer), ``kd_hf`` (minimal transformers.Trainer subclass) and ``kd_plain``
    (hand-written loop) must compute the same training step, or comparing their times would mean nothing: from the
    same initial weights, three steps on the same batch give the same student."""
    import torch

    step_cost = _import_benchmark("step_cost")
    args = step_cost.parse_args(["--smoke", "--device", "cpu"])
    steps, device = 3, torch.device("cpu")
    dataset = step_cost.RandomImages(
        args.batch_size, args.image_size, args.num_classes, False, seed=1
    )  # one batch
    students = {}
    for name in ("kd", "kd_hf"):
        trainer = step_cost.build_trainer(name, args, device, steps, str(tmp_path), dataset=dataset)
        trainer.train()
        students[name] = trainer.model
    loop = step_cost.PlainKDLoop(args, device, steps, dataset=dataset)
    for _ in range(steps):
        for x, y in loop.batches():
            loop.step(x, y)
    students["kd_plain"] = loop.student
    reference = students["kd_plain"].state_dict()
    assert not torch.equal(
        reference["classifier.weight"], step_cost.build_models(args)[0].state_dict()["classifier.weight"]
    )
    for name in ("kd", "kd_hf"):
        for key, value in students[name].state_dict().items():
            torch.testing.assert_close(value, reference[key], rtol=1e-4, atol=1e-6, msg=f"{name}: {key}")


def test_kernel_count_counts_kernels_syncs_and_the_optimizer_apart():
    import torch
    from torch.profiler import ProfilerActivity, profile

    kernel_count = _import_benchmark("kernel_count")
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        x = torch.arange(6.0).view(2, 3)  # arange: 1 kernel; view: none
        y = x.to(torch.float64).t()  # the copy inside `to`: 1; t: none
        total = (y * 2).sum()  # mul, sum: 2
        torch.zeros_like(x)  # the fill inside zeros_like: 1
        x.float()  # already float32: nothing
        torch.nn.functional.cross_entropy(x, torch.tensor([0, 1]))  # a composite: log_softmax, nll_loss: 2
        torch.where(x > 1, x, 0.0)  # gt, where (a composite overload around a kernel): 2
        x.flatten().contiguous()  # views, already contiguous: nothing
        assert total.item() == 30.0  # a sync
        weight.grad = torch.ones(3)  # ones: 1
        optimizer.step()  # counted apart
    counts = kernel_count.count_events(prof.events())
    kernels = counts["kernels"]
    assert sum(kernels.values()) == 10, kernels
    assert kernels["aten::copy_"] == 1 and kernels["aten::mul"] == 1
    assert counts["syncs"] == 1
    assert counts["optimizer"] >= 1


def test_kernel_count_smoke(tmp_path):
    payload = run_script("kernel_count.py", tmp_path)
    _check_header(payload, "kernel_count")
    assert list(payload["variants"]) == ["eager", "compiled"]
    for variant, methods in payload["variants"].items():
        assert list(methods) == [
            "ce", "kd", "rkd", "rrd", "rrd_kd", "vrm", "vrm_per_view", "kd_hf", "kd_plain"
        ], variant  # fmt: skip
        for name, entry in methods.items():
            assert entry["kernels"] == pytest.approx(sum(entry["by_operator"].values()))
            assert entry["label"]
            assert entry["optimizer"] > 0, (variant, name)
            # a training step reads nothing back from the device (the config turns the NaN filter's reads off);
            # transformers' default filter reads the step loss twice (isnan, isinf) in the minimal subclass
            assert entry["syncs"] == (2 if name == "kd_hf" else 0), (variant, name)
    eager, compiled = payload["variants"]["eager"], payload["variants"]["compiled"]
    assert eager["rkd"]["kernels"] > eager["kd"]["kernels"] > eager["ce"]["kernels"]
    assert compiled["rkd"]["kernels"] < eager["rkd"]["kernels"]
    assert compiled["vrm"]["kernels"] < eager["vrm"]["kernels"]


def test_loss_scaling_smoke(tmp_path):
    payload = run_script("loss_scaling.py", tmp_path)
    _check_header(payload, "loss_scaling")
    _check_figure(tmp_path / "loss_scaling_smoke_cpu.png")
    cfg = payload["config"]
    assert cfg["cpu_malloc"].startswith("glibc defaults")
    rows = payload["results"]
    sweeps = {r["sweep"] for r in rows}
    assert sweeps == {"batch", "classes", "queue", "vrm_chunking"}
    batch_rows = [r for r in rows if r["sweep"] == "batch"]
    assert {(r["loss"], r["batch"]) for r in batch_rows} == {
        (loss, b) for loss in ("kd", "rkd", "rrd", "vrm") for b in cfg["batches"]
    }
    for r in rows:
        if r["loss"] == "rkd" and r["batch"] > cfg["rkd_max_batch"]:
            assert r["status"].startswith("skipped")
            continue
        assert r["status"] == "ok", r
        assert r["ms"] > 0 and r["time"]["n"] == cfg["repeats"]
        assert r["peak_mb"] > 0 and r["saved_mb"] >= 0
        assert r["loss_value"] == r["loss_value"]  # finite, not NaN
    assert {r["queue"] for r in rows if r["sweep"] == "queue"} == set(cfg["queues"])
    assert {(r["batch"], r["classes"]) for r in rows if r["sweep"] == "classes"} == {
        (b, c) for b in cfg["class_batches"] for c in cfg["classes"]
    }
    chunk = payload["vrm_chunking"]
    assert chunk["chunked"]["max_chunk_elements"] == cfg["chunk_elements"]
    assert chunk["unchunked"]["max_chunk_elements"] > 2**60
    # chunking with recomputation holds less memory, and gives the same loss up to summation order
    assert chunk["peak_reduction"] > 1
    assert chunk["value_abs_diff"] < 1e-3


def run_quickstart_script(script: str, tmp_path, *extra: str) -> dict:
    """A quick-start benchmark with one seed and two optimizer steps per run (teacher included)."""
    cmd = [sys.executable, os.path.join(BENCHMARKS, script), "--seeds", "0", "--max_steps", "2"]
    cmd += ["--output_dir", str(tmp_path), "--work_dir", str(tmp_path / "work"), *extra]
    proc = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": REPO}
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    assert "fewer than 3 seeds" in proc.stderr
    stem = script.replace(".py", "")
    markdown = (tmp_path / f"{stem}.md").read_text()
    assert "| model | loss | top-1 (%)" in markdown
    return json.loads((tmp_path / f"{stem}.json").read_text())


def test_efficacy_smoke(tmp_path):
    payload = run_quickstart_script("efficacy.py", tmp_path, "--methods", "kd", "vrm")
    assert payload["benchmark"] == "efficacy"
    assert set(payload["method_settings"]) == {"kd", "vrm"}
    students = payload["results"]["students"]
    assert set(students) == {"ce", "kd", "vrm"}
    for entry in students.values():
        assert [run["seed"] for run in entry["runs"]] == [0]
        assert 0 <= entry["runs"][0]["accuracy"] <= 1
    assert set(payload["paired_deltas_points"]) == {"kd", "vrm"}


def test_vrm_prune_ablation_smoke(tmp_path):
    payload = run_quickstart_script("vrm_prune_ablation.py", tmp_path, "--percentiles", "50", "100")
    assert payload["benchmark"] == "vrm_prune_ablation"
    assert payload["percentiles"] == [50, 100]
    assert payload["method_settings"]["vrm p50"]["vrm_prune_percentile"] == 50
    assert sorted(payload["ranking_by_mean_delta"]) == ["vrm p100", "vrm p50"]
    assert "Ranking by mean paired Δ" in (tmp_path / "vrm_prune_ablation.md").read_text()


def test_plots_redraws_a_figure_from_its_result_file_and_names_what_it_can_draw(tmp_path):
    payload = run_script("loss_scaling.py", tmp_path)
    figure = tmp_path / "loss_scaling_smoke_cpu.png"
    figure.unlink()
    proc = subprocess.run(
        [sys.executable, os.path.join(BENCHMARKS, "plots.py"), str(tmp_path / "loss_scaling_smoke_cpu.json")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    _check_figure(figure)
    other = tmp_path / "kernel_count.json"
    other.write_text(json.dumps({**payload, "benchmark": "kernel_count"}))
    proc = subprocess.run(
        [sys.executable, os.path.join(BENCHMARKS, "plots.py"), str(other)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "figures exist for step_cost, loss_scaling" in proc.stderr


def test_vrm_student_views_smoke(tmp_path):
    payload = run_quickstart_script("vrm_student_views.py", tmp_path)
    assert payload["benchmark"] == "vrm_student_views"
    assert set(payload["method_settings"]) == {"vrm joint", "vrm per_view"}
    assert {cfg["vrm_student_views"] for cfg in payload["method_settings"].values()} == {"joint", "per_view"}
    assert len(payload["per_view_minus_joint_points"]) == 1
    assert "per_view − joint, paired by seed" in (tmp_path / "vrm_student_views.md").read_text()
