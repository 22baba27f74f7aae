"""Data parallelism: two gloo processes (``torchrun``, CPU) against one process with the same global batch and seed.

``HF_RELKD_TEST_DEVICE=cuda pytest tests/test_distributed.py`` runs the same checks on GPUs (one is enough: see
``tests/distributed/train_and_dump.py``).

One ``torchrun --nproc_per_node 2`` launch trains every configuration of ``tests/distributed/train_and_dump.py``
(a BatchNorm-free ``TinyConvNet`` pair, 4 SGD steps of a global batch of 8, then an evaluation on 13 samples), while
the single-process references train in this process. The tests compare the dumps.

Tolerances: processes must hold *bit-identical* state (gradients are all-reduced and every process applies the same
update; gathered queues are copies). Against one process, the sums run in another order (per-process gradients are
summed by the all-reduce), so states agree to float32 rounding amplified over 4 steps: ``assert_close`` with
``rtol=1e-4, atol=5e-5`` (measured: at most 5e-6 on weights of order 1). Logged values are rounded to 6 decimals by
the trainer, hence ``abs=1e-5`` on them.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import TinyConvNet, tensor_dataset

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).parent / "distributed" / "train_and_dump.py"
_spec = importlib.util.spec_from_file_location("train_and_dump", SCRIPT)
dump = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dump)

WORLD = 2
DDP_CONFIGS = [
    "rrd_kd_local",
    "rrd_kd_global",
    "rkd_local",
    "rkd_global",
    "vrm_local",
    "vrm_global",
    "vrm_per_view_global",
    "kd_accumulation",
    "resume",
]
# one process: the relation scope makes no difference, so "rrd_kd_local" is the reference of both RRD scopes
SINGLE_CONFIGS = ["rrd_kd_local", "rkd_local", "vrm_local", "kd", "rkd_accumulation", "vrm_accumulation"]
# two-process configuration -> single-process run with the same global batch
GLOBAL_BATCH_REFERENCE = {
    "rrd_kd_local": "rrd_kd_local",
    "rrd_kd_global": "rrd_kd_local",
    "rkd_global": "rkd_local",
    "vrm_global": "vrm_local",
    "vrm_per_view_global": "vrm_local",
    "kd_accumulation": "kd",
}
TOL = dict(rtol=1e-4, atol=5e-5)
LOG_TOL = 1e-5
LAUNCH_TIMEOUT_S = 420


class Runs:
    def __init__(self, root: Path):
        self.root = root

    def ddp(self, name: str, prefix: str = "") -> list[dict]:
        return [
            torch.load(self.root / "ddp" / name / f"{prefix}rank{r}.pt", weights_only=False)
            for r in range(WORLD)
        ]

    def single(self, name: str) -> dict:
        return torch.load(self.root / "single" / name / "rank0.pt", weights_only=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Runs:
    root = tmp_path_factory.mktemp("distributed")
    init = str(root / "init.pt")
    dump.make_init_file(init)
    log_path = root / "torchrun.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes",
        "1",
        "--nproc_per_node",
        str(WORLD),
        str(SCRIPT),
        init,
        str(root / "ddp"),
        *DDP_CONFIGS,
    ]
    with open(log_path, "w") as log:
        launch = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            # the single-process references train here while the two processes run
            for name in SINGLE_CONFIGS:
                dump.run(name, init, str(root / "single"))
            returncode = launch.wait(timeout=LAUNCH_TIMEOUT_S)
        finally:
            if launch.poll() is None:
                launch.kill()
                launch.wait()
    if returncode != 0:
        pytest.fail(f"torchrun exited with {returncode}:\n{log_path.read_text()[-6000:]}")
    return Runs(root)


def assert_states_equal(a: dict, b: dict, exact: bool = False) -> None:
    assert a.keys() == b.keys()
    for name in a:
        tol = dict(rtol=0, atol=0) if exact else TOL
        torch.testing.assert_close(a[name], b[name], **tol, msg=lambda m, n=name: f"{n}: {m}")


def max_abs_diff(a: dict, b: dict) -> float:
    return max(float((a[n].float() - b[n].float()).abs().max()) for n in a)


def train_logs(record: dict) -> list[dict]:
    return [entry for entry in record["log_history"] if "loss" in entry and "train_loss" not in entry]


def assert_logs_close(a: list[dict], b: list[dict], keys=None) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        for key in keys or [k for k in x if k.startswith("loss") or "/" in k or k == "teacher_agreement"]:
            # float32 sums over differently split batches differ by ~1e-5 relative on terms of magnitude ~20 (VRM)
            assert x[key] == pytest.approx(y[key], abs=LOG_TOL, rel=5e-5), (key, x[key], y[key])


# ----------------------------------------------------------------------------------------------------------------------
def test_the_launch_runs_two_processes_with_a_ddp_student(runs):
    distributed_type = "MULTI_CPU" if dump.DEVICE == "cpu" else "MULTI_GPU"
    for name in DDP_CONFIGS:
        for rank, record in enumerate(runs.ddp(name)):
            assert record["world_size"] == WORLD
            assert record["distributed_type"] == f"DistributedType.{distributed_type}"
            assert record["backend"] == dump.ddp_backend(WORLD)
            assert record["device"] == dump.DEVICE, record["device"]
            assert record["student_is_ddp"], f"{name}: the student was not wrapped in DDP on rank {rank}"
            assert record["global_step"] == (6 if name == "resume" else 4)


@pytest.mark.parametrize("name", ["rrd_kd_local", "rrd_kd_global"])
def test_rrd_queue_is_identical_on_every_process_and_equals_the_single_process_queue(runs, name):
    ranks, single = runs.ddp(name), runs.single(GLOBAL_BATCH_REFERENCE[name])
    queue = {k: v for k, v in ranks[0]["methods"].items() if ".queue." in k}
    assert set(queue) == {"rrd.loss.queue.keys", "rrd.loss.queue.ptr", "rrd.loss.queue.num_enqueued"}
    for record in ranks:
        assert_states_equal({k: record["methods"][k] for k in queue}, queue, exact=True)
        assert record["distillation_buffers_in_student"] == 0, (
            "the queue must live outside the DDP-wrapped student"
        )
    # 4 steps x 8 gathered keys in a ring of 20: wrapped around once
    assert int(queue["rrd.loss.queue.num_enqueued"]) == 32
    assert int(queue["rrd.loss.queue.ptr"]) == 32 % 20
    assert_states_equal(queue, {k: single["methods"][k] for k in queue})


@pytest.mark.parametrize("name", ["rrd_kd_local", "rrd_kd_global", "vrm_global"])
def test_distillation_heads_are_synchronised_and_equal_the_single_process_heads(runs, name):
    ranks, single, init = runs.ddp(name), runs.single(GLOBAL_BATCH_REFERENCE[name]), runs.ddp(name)[0]
    heads = {k: v for k, v in init["methods"].items() if ".queue." not in k}
    assert heads
    for record in ranks:
        assert record["distillation_params_in_optimizer"]
        assert_states_equal({k: record["methods"][k] for k in heads}, heads, exact=True)
    assert_states_equal(heads, {k: single["methods"][k] for k in heads})


def test_distillation_heads_were_trained_and_the_teacher_head_frozen(runs):
    """The head comparisons above are not vacuous: the RRD student head and the VRM adaptor moved."""
    for name, trained in [
        ("rrd_kd_local", "rrd.loss.student_head.weight"),
        ("vrm_global", "vrm.loss.adaptor.fc2.weight"),
    ]:
        record = runs.ddp(name)[0]
        moved = (record["methods"][trained] - record["methods_before_training"][trained]).abs().max()
        assert moved > 1e-3, (name, trained)
    record = runs.ddp("rrd_kd_local")[0]
    frozen = "rrd.loss.teacher_head.weight"
    torch.testing.assert_close(
        record["methods"][frozen], record["methods_before_training"][frozen], rtol=0, atol=0
    )


@pytest.mark.parametrize("name", ["rrd_kd_global", "rkd_global", "vrm_global", "vrm_per_view_global"])
def test_global_relation_scope_equals_one_process_with_the_global_batch(runs, name):
    ranks, single = runs.ddp(name), runs.single(GLOBAL_BATCH_REFERENCE[name])
    for record in ranks:
        assert_states_equal(record["student"], ranks[0]["student"], exact=True)
    assert_states_equal(ranks[0]["student"], single["student"])
    assert_states_equal(ranks[0]["methods"], single["methods"])
    assert_logs_close(train_logs(ranks[0]), train_logs(single))


def test_local_scope_rrd_equals_one_process_with_the_global_batch(runs):
    """RRD is a per-sample loss against the shared queue: per-process means averaged by DDP = the global mean."""
    ranks, single = runs.ddp("rrd_kd_local"), runs.single("rrd_kd_local")
    for record in ranks:
        assert_states_equal(record["student"], single["student"])
        assert_states_equal(record["methods"], single["methods"])
    assert_logs_close(train_logs(ranks[0]), train_logs(single))


@pytest.mark.parametrize("method", ["rkd", "vrm"])
def test_local_scope_rkd_vrm_relate_samples_within_each_process_only(runs, method):
    """With "local", RKD/VRM relations span each process's batch: training equals one process that splits the
    global batch into one micro-batch per process (gradient accumulation), and differs from the global batch."""
    ranks = runs.ddp(f"{method}_local")
    assert_states_equal(ranks[1]["student"], ranks[0]["student"], exact=True)
    split = runs.single(f"{method}_accumulation")
    assert_states_equal(ranks[0]["student"], split["student"])
    assert_states_equal(ranks[0]["methods"], split["methods"])
    assert_logs_close(train_logs(ranks[0]), train_logs(split))
    whole = runs.single(f"{method}_local")
    assert max_abs_diff(ranks[0]["student"], whole["student"]) > 1e-3


def test_gradient_accumulation_under_ddp_matches_one_process_without_accumulation(runs):
    """2 processes x 2 micro-batches x 2 samples = one process with a batch of 8: CE and KD are exact, and the logged
    loss is neither divided nor multiplied by the accumulation steps."""
    ranks, single = runs.ddp("kd_accumulation"), runs.single("kd")
    for record in ranks:
        assert_states_equal(record["student"], single["student"])
    ddp_logs, single_logs = train_logs(ranks[0]), train_logs(single)
    assert_logs_close(ddp_logs, single_logs, keys=["loss", "loss/ce", "loss/kd", "grad_norm"])
    for entry in ddp_logs:
        assert entry["loss"] == pytest.approx(entry["loss/ce"] + entry["loss/kd"], abs=LOG_TOL, rel=1e-5)


def test_teacher_is_frozen_unwrapped_in_eval_mode_and_identical_on_every_process(runs, tmp_path):
    for name in DDP_CONFIGS:
        ranks = runs.ddp(name)
        for record in ranks:
            assert not record["teacher_is_ddp"]
            assert record["teacher_is_the_given_module"]
            assert record["teacher_params_in_optimizer"] == 0
            assert not record["teacher_requires_grad"]
            # forwards in training and in evaluation, all in eval mode; still in eval mode after evaluate()
            assert record["teacher_training_modes"] and not any(record["teacher_training_modes"])
            assert record["teacher_training_after_train"] is False
            assert record["teacher_training_after_evaluate"] is False
            assert_states_equal(record["teacher"], ranks[0]["teacher"], exact=True)
    # process 1 was handed a perturbed teacher in "kd_accumulation": the trainer broadcast process 0's
    init_file = str(tmp_path / "init.pt")
    dump.make_init_file(init_file)
    init = torch.load(init_file, weights_only=True)["teacher"]
    for record in runs.ddp("kd_accumulation"):
        assert_states_equal(record["teacher"], {k: v.to(torch.bfloat16) for k, v in init.items()}, exact=True)


@pytest.mark.parametrize("name", list(GLOBAL_BATCH_REFERENCE))
def test_evaluation_counts_every_sample_exactly_once(runs, name):
    """13 eval samples, 4 per process: the last batch is padded with repeated samples under DDP; the metrics must
    still be those of the 13 samples."""
    ranks, single = runs.ddp(name), runs.single(GLOBAL_BATCH_REFERENCE[name])
    keys = ["eval_accuracy", "eval_top5_accuracy", "eval_teacher_accuracy", "eval_teacher_agreement"]
    for key in keys + ["eval_loss"]:
        assert ranks[0]["eval"][key] == ranks[1]["eval"][key], key
    for key in keys:
        assert ranks[0]["eval"][key] == single["eval"][key], key
    assert ranks[0]["eval"]["eval_loss"] == pytest.approx(single["eval"]["eval_loss"], rel=1e-5)
    # independent check on the 13 samples with the dumped student and teacher
    student, teacher = TinyConvNet(dump.STUDENT_WIDTH), TinyConvNet(dump.TEACHER_WIDTH)
    student.load_state_dict(ranks[0]["student"])
    teacher.load_state_dict(ranks[0]["teacher"])  # bfloat16 weights in "kd_accumulation" are cast to float32
    dtype = ranks[0]["teacher"]["fc.weight"].dtype
    teacher.to(dtype)
    data = tensor_dataset(dump.EVAL_SIZE, seed=2)[:]
    with torch.no_grad():
        logits = student(data["pixel_values"])
        teacher_top1 = teacher(data["pixel_values"].to(dtype)).argmax(-1)
    assert ranks[0]["eval"]["eval_loss"] == pytest.approx(
        F.cross_entropy(logits, data["labels"]).item(), rel=1e-5
    )
    assert ranks[0]["eval"]["eval_accuracy"] == pytest.approx(
        (logits.argmax(-1) == data["labels"]).float().mean().item()
    )
    assert ranks[0]["eval"]["eval_teacher_agreement"] == pytest.approx(
        (logits.argmax(-1) == teacher_top1).float().mean().item()
    )


@pytest.mark.parametrize("name", ["rrd_kd_local", "rkd_local", "vrm_global", "kd_accumulation"])
def test_logged_metrics_are_averaged_across_processes(runs, name):
    ranks = runs.ddp(name)
    logs = [train_logs(record) for record in ranks]
    assert logs[0] == logs[1], "every process must log the same values"
    local = [record["local_means"] for record in ranks]
    assert len(local[0]) == len(local[1]) == len(logs[0])
    for step, entry in enumerate(logs[0]):
        for key, value in local[0][step].items():
            expected = (value + local[1][step][key]) / 2
            assert entry[key] == pytest.approx(expected, abs=2e-6), (step, key)
    # the processes saw different samples, so averaging is observable
    assert any(a["loss/ce"] != b["loss/ce"] for a, b in zip(local[0], local[1]))


def test_two_process_resume_matches_an_uninterrupted_run(runs):
    uninterrupted, resumed = runs.ddp("resume"), runs.ddp("resume", prefix="resumed_")
    error = resumed[0].get("error")
    assert error is None, error
    for full, part in zip(uninterrupted, resumed):
        assert part["global_step"] == full["global_step"] == 6
        assert_states_equal(part["student"], full["student"], exact=True)
        assert_states_equal(part["methods"], full["methods"], exact=True)
        assert int(part["methods"]["rrd.loss.queue.ptr"]) == (6 * 8) % 20
        assert_logs_close(train_logs(part)[3:], train_logs(full)[3:])
    assert_states_equal(resumed[1]["methods"], resumed[0]["methods"], exact=True)
