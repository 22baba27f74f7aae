"""Mixed precision in one process on CPU: bf16 through the Trainer's flag, fp16/bf16 autocast around compute_loss, and
a half-precision teacher (``teacher_dtype``).

What ``transformers`` 5.23 + ``accelerate`` 1.15 do on CPU (checked by the tests below):

* ``bf16=True, use_cpu=True``: Accelerate wraps the student's and the teacher's ``forward`` in
  ``torch.autocast("cpu", bfloat16)``; ``compute_loss`` itself runs outside autocast.
* ``fp16=True, use_cpu=True`` is accepted, but Accelerate enables fp16 autocast only on accelerators: on CPU the
  run is plain float32. fp16 is therefore tested with ``torch.autocast("cpu", float16)`` around ``compute_loss`` and
  with ``teacher_dtype="float16"``.

Whatever the caller's autocast, the distillation terms (and the RRD heads / VRM adaptor) are computed in float32 from
the networks' half-precision outputs.
"""

from __future__ import annotations

import copy
import math

import datasets
import pytest
import torch
from helpers import TinyConvNet, tensor_dataset, trained_teacher
from transformers import TrainerCallback

from hf_relkd import RelationalDistillationConfig, RelationalDistillationTrainer
from hf_relkd.methods import StepOutputs

ALL_METHODS = ["kd", "rkd", "rrd", "vrm"]
TERMS = {
    "kd": ["kd"],
    "rkd": ["rkd_distance", "rkd_angle"],
    "rrd": ["rrd"],
    "vrm": ["vrm_inter_sample", "vrm_inter_class"],
}


@pytest.fixture(scope="module")
def teacher_state():
    return trained_teacher(16, steps=60).state_dict()


def make_teacher(state, confident: bool = False) -> TinyConvNet:
    teacher = TinyConvNet(16)
    teacher.load_state_dict(state)
    if confident:  # logits x 1000: one-hot softmax at any temperature used here
        with torch.no_grad():
            teacher.fc.weight.mul_(1e3)
            teacher.fc.bias.mul_(1e3)
    return teacher


def make_student() -> TinyConvNet:
    torch.manual_seed(0)
    return TinyConvNet(8)


def batch_data(kind: str) -> datasets.Dataset:
    """8 samples: all distinct, 4 images each repeated twice, or one image 8 times (virtual view = real view when
    duplicated, so the VRM virtual relations are degenerate too)."""
    data = tensor_dataset(8, seed=1)[:]
    index = {
        "distinct": torch.arange(8),
        "pairs": torch.arange(8) // 2,
        "same": torch.zeros(8, dtype=torch.long),
    }[kind]
    columns = {name: value[index].numpy() for name, value in data.items()}
    if kind != "distinct":
        columns["pixel_values_virtual"] = columns["pixel_values"].copy()
    return datasets.Dataset.from_dict(columns).with_format("torch")


class FiniteGradients(TrainerCallback):
    """Checks every gradient the optimizer is about to apply (student and distillation parameters)."""

    def __init__(self):
        self.steps = 0
        self.non_finite: list[tuple[int, int]] = []

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        self.steps += 1
        for group in optimizer.param_groups:
            for i, p in enumerate(group["params"]):
                if p.grad is not None and not torch.isfinite(p.grad).all():
                    self.non_finite.append((state.global_step, i))


def make_trainer(tmp_path, methods, student, teacher, data, callbacks=None, **overrides):
    kwargs = dict(
        output_dir=str(tmp_path / "out"),
        methods=methods,
        per_device_train_batch_size=8,
        max_steps=3,
        optim="sgd",
        learning_rate=0.01,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        rrd_queue_size=20,
        vrm_adaptor="vrm" in methods,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    kwargs.update(overrides)
    return RelationalDistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=RelationalDistillationConfig(**kwargs),
        train_dataset=data,
        callbacks=callbacks,
    )


def train_logs(trainer) -> list[dict]:
    return [e for e in trainer.state.log_history if "loss" in e and "train_loss" not in e]


def record_dtypes(module, store: list, key: str):
    def hook(mod, args, output):
        store.append((key, torch.is_autocast_enabled("cpu"), args[0].dtype, output.dtype))

    return module.register_forward_hook(hook)


def record_rrd_projection(trainer, store: list, key: str):
    """Records (autocast on, dtype of the teacher keys, dtype of the loss) at each call of RRD's projections + loss
    (the heads' parameters enter that function, the heads' own forward is not called)."""
    rrd = trainer.distillation_methods["rrd"].loss
    project_and_loss = rrd._project_and_loss_fn

    def spy(*args):
        loss, keys = project_and_loss(*args)
        store.append((key, torch.is_autocast_enabled("cpu"), keys.dtype, loss.dtype))
        return loss, keys

    rrd._project_and_loss_fn = spy


# ----------------------------------------------------------------------------------------------------------------------
def test_bf16_flag_autocasts_both_networks_and_keeps_distillation_math_in_float32(tmp_path, teacher_state):
    student, teacher = make_student(), make_teacher(teacher_state)
    trainer = make_trainer(
        tmp_path, ALL_METHODS, student, teacher, tensor_dataset(16), bf16=True, max_steps=2
    )
    assert trainer.accelerator.native_amp and trainer.accelerator.mixed_precision == "bf16"
    seen: list = []
    record_dtypes(student.fc, seen, "student")
    record_dtypes(teacher.fc, seen, "teacher")
    record_rrd_projection(trainer, seen, "rrd_head")
    record_dtypes(trainer.distillation_methods["vrm"].loss.adaptor.fc1, seen, "vrm_adaptor")
    trainer.train()
    by_key = {key: {entry[1:] for entry in seen if entry[0] == key} for key in ("student", "teacher")}
    # the networks ran under bf16 autocast: bf16 embeddings (the classifier's input) and bf16 logits ...
    assert by_key["student"] == by_key["teacher"] == {(True, torch.bfloat16, torch.bfloat16)}
    # ... while the distillation modules saw float32 inputs, outside autocast
    for key in ("rrd_head", "vrm_adaptor"):
        assert {entry[1:] for entry in seen if entry[0] == key} == {(False, torch.float32, torch.float32)}
    for entry in train_logs(trainer):
        assert all(math.isfinite(v) for v in entry.values() if isinstance(v, float))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_terms_under_autocast_equal_float32_math_on_the_half_precision_outputs(
    tmp_path, teacher_state, dtype
):
    """compute_loss called inside ``torch.autocast`` (as older Trainers and custom loops do): the networks run in half
    precision, but every distillation term equals the float32 computation on the networks' half-precision outputs."""
    student, teacher = make_student(), make_teacher(teacher_state)
    trainer = make_trainer(tmp_path, ALL_METHODS, student, teacher, tensor_dataset(8))
    captured = {}

    def capture(name):
        def hook(mod, args, output):
            captured[name] = (args[0].detach(), output.detach())

        return hook

    student.fc.register_forward_hook(capture("student"))
    teacher.fc.register_forward_hook(capture("teacher"))
    head_dtypes: list = []
    record_rrd_projection(trainer, head_dtypes, "rrd_head")
    methods_before = copy.deepcopy(trainer.distillation_methods)  # the queue before this step's enqueue
    batch = tensor_dataset(8)[:]
    student.train()
    with torch.autocast("cpu", dtype=dtype):
        loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    recorded = {
        k[len("loss/") :]: v[-1].item() for k, v in trainer._metrics["train"].items() if k.startswith("loss/")
    }

    (s_feat, s_logits), (t_feat, t_logits) = captured["student"], captured["teacher"]
    assert s_logits.dtype == t_logits.dtype == dtype
    assert head_dtypes == [("rrd_head", False, torch.float32, torch.float32)]
    n = batch["labels"].shape[0]
    step = StepOutputs(
        labels=batch["labels"],
        student_logits=s_logits[:n].float(),
        teacher_logits=t_logits[:n].float(),
        student_features=s_feat[:n].float(),
        teacher_features=t_feat[:n].float(),
        student_logits_virtual=s_logits[n:].float(),
        teacher_logits_virtual=t_logits[n:].float(),
    )
    expected = {}
    with torch.no_grad():
        for method in methods_before.values():
            expected.update({k: v.item() for k, v in method(step).items()})
    assert set(expected) == {t for m in ALL_METHODS for t in TERMS[m]}
    for name, value in expected.items():
        assert recorded[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    assert torch.isfinite(loss)
    for p in list(student.parameters()) + trainer.distillation_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()


@pytest.mark.parametrize("kind", ["same", "pairs", "confident"])
@pytest.mark.parametrize("method", ALL_METHODS)
def test_bf16_training_stays_finite_on_degenerate_batches(tmp_path, teacher_state, method, kind):
    """Duplicated images (zero distances, identical relations) and a teacher with logits x 1000."""
    student, teacher = make_student(), make_teacher(teacher_state, confident=kind == "confident")
    data = batch_data("distinct" if kind == "confident" else kind)
    check = FiniteGradients()
    trainer = make_trainer(tmp_path, [method], student, teacher, data, callbacks=[check], bf16=True)
    trainer.train()
    assert check.steps == 3 and check.non_finite == []
    logs = train_logs(trainer)
    assert len(logs) == 3
    for entry in logs:
        for term in TERMS[method]:
            assert math.isfinite(entry[f"loss/{term}"]), (term, entry)
        assert math.isfinite(entry["loss"]) and math.isfinite(entry["grad_norm"])
    for p in list(student.parameters()) + trainer.distillation_parameters():
        assert torch.isfinite(p).all()


@pytest.mark.parametrize("kind", ["same", "pairs", "confident"])
def test_fp16_autocast_compute_loss_stays_finite_on_degenerate_batches(tmp_path, teacher_state, kind):
    student, teacher = make_student(), make_teacher(teacher_state, confident=kind == "confident")
    data = batch_data("distinct" if kind == "confident" else kind)
    trainer = make_trainer(tmp_path, ALL_METHODS, student, teacher, data)
    student.train()
    with torch.autocast("cpu", dtype=torch.float16):
        loss = trainer.compute_loss(trainer.model, data[:])
    loss.backward()
    assert torch.isfinite(loss)
    assert all(math.isfinite(float(v[-1])) for v in trainer._metrics["train"].values())
    for p in list(student.parameters()) + trainer.distillation_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


# measured on this data (first step, same weights): |bf16 - fp32| / |fp32| = 2e-4 (ce, kd), 1e-4 (rrd),
# 7e-3 (vrm_inter_class), 1e-3 (vrm_inter_sample), 7e-3 (rkd_distance), 9e-2 (rkd_angle). RKD's angle term is the
# sensitive one: the closest embeddings of this tiny student are 0.045 apart at a norm of 1.3, so bf16 rounding of
# the embeddings alone (0.4 % relative) moves the normalised difference vectors by ~10 %.
BF16_REL_TOL = {
    "ce": 2e-3,
    "kd": 2e-3,
    "rrd": 2e-3,
    "vrm_inter_sample": 2e-2,
    "vrm_inter_class": 2e-2,
    "rkd_distance": 2e-2,
    "rkd_angle": 0.15,
}


@pytest.mark.parametrize("method", ALL_METHODS)
def test_bf16_losses_agree_with_float32(tmp_path, teacher_state, method):
    logs = {}
    for precision in ("fp32", "bf16"):
        trainer = make_trainer(
            tmp_path / precision,
            [method],
            make_student(),
            make_teacher(teacher_state),
            tensor_dataset(8, seed=1),
            bf16=precision == "bf16",
            max_steps=1,
        )
        trainer.train()
        logs[precision] = train_logs(trainer)[0]
    for term in ["ce", *TERMS[method]]:
        fp32, bf16 = logs["fp32"][f"loss/{term}"], logs["bf16"][f"loss/{term}"]
        assert bf16 == pytest.approx(fp32, rel=BF16_REL_TOL[term], abs=1e-4), (term, fp32, bf16)


def test_fp16_flag_on_cpu_trains_in_float32(tmp_path, teacher_state):
    """transformers accepts fp16=True with use_cpu=True, but Accelerate turns on no autocast on CPU: the run is
    float32, identical to one without the flag."""
    logs, dtypes = {}, {}
    for fp16 in (False, True):
        student = make_student()
        seen: list = []
        record_dtypes(student.fc, seen, "student")
        trainer = make_trainer(
            tmp_path / str(fp16),
            ALL_METHODS,
            student,
            make_teacher(teacher_state),
            tensor_dataset(8),
            fp16=fp16,
        )
        if fp16:
            assert trainer.accelerator.mixed_precision == "fp16" and not trainer.accelerator.native_amp
        trainer.train()
        logs[fp16], dtypes[fp16] = train_logs(trainer), {entry[1:] for entry in seen}
    assert dtypes[True] == dtypes[False] == {(False, torch.float32, torch.float32)}
    assert logs[True] == logs[False]


# measured (first step, same data as above): |half teacher - fp32 teacher| / |fp32| <= 2.1e-3 with float16 (largest:
# rkd_angle) and <= 1.2e-2 with bfloat16 (largest: rkd_angle; the others <= 4.6e-3); ce is unchanged (student only)
TEACHER_REL_TOL = {"float16": 1e-2, "bfloat16": 5e-2}


@pytest.mark.parametrize("teacher_dtype", ["float16", "bfloat16"])
def test_half_precision_teacher(tmp_path, teacher_state, teacher_dtype):
    dtype = getattr(torch, teacher_dtype)
    logs = {}
    for name in ("float32", teacher_dtype):
        teacher = make_teacher(teacher_state)
        seen: list = []
        record_dtypes(teacher.fc, seen, "teacher")
        trainer = make_trainer(
            tmp_path / name,
            ALL_METHODS,
            make_student(),
            teacher,
            tensor_dataset(8, seed=1),
            teacher_dtype=None if name == "float32" else name,
            max_steps=1,
        )
        rrd_inputs: list = []
        record_rrd_projection(trainer, rrd_inputs, "rrd_teacher_head")
        trainer.train()
        logs[name] = train_logs(trainer)[0]
        if name == teacher_dtype:
            assert all(p.dtype == dtype for p in trainer.teacher.parameters())
            assert {entry[1:] for entry in seen} == {(False, dtype, dtype)}
            assert {entry[1:] for entry in rrd_inputs} == {(False, torch.float32, torch.float32)}
    for term in ["ce"] + [t for m in ALL_METHODS for t in TERMS[m]]:
        fp32, half = logs["float32"][f"loss/{term}"], logs[teacher_dtype][f"loss/{term}"]
        assert math.isfinite(half)
        assert half == pytest.approx(fp32, rel=TEACHER_REL_TOL[teacher_dtype], abs=1e-4), (term, fp32, half)
