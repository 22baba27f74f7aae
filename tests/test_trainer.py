"""RelationalDistillationTrainer: real few-step training per method, logging, checkpoints, and every bad input."""

from __future__ import annotations

import copy
import os
from dataclasses import fields

import pytest
import torch
from helpers import NUM_CLASSES, TinyConvNet, image_dataset, make_pair, tensor_dataset, trained_teacher
from torch import nn
from transformers import HfArgumentParser

from hf_relkd import RelationalDistillationConfig, RelationalDistillationTrainer
from hf_relkd.features import FeatureAccessError
from hf_relkd.trainer import DISTILLATION_STATE_NAME

METHOD_TERMS = {
    "kd": ["loss/kd"],
    "rkd": ["loss/rkd_distance", "loss/rkd_angle"],
    "rrd": ["loss/rrd", "rrd/queue_fill"],
    "vrm": ["loss/vrm_inter_sample", "loss/vrm_inter_class", "vrm/kept_edges"],
}


def make_config(tmp_path, methods=None, **overrides) -> RelationalDistillationConfig:
    kwargs = dict(
        output_dir=str(tmp_path / "out"),
        methods=methods,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=8,
        max_steps=12,
        learning_rate=0.05,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        rrd_queue_size=20,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    kwargs.update(overrides)
    return RelationalDistillationConfig(**kwargs)


def train_logs(trainer) -> list[dict]:
    return [entry for entry in trainer.state.log_history if "loss" in entry]


@pytest.mark.parametrize(
    "methods", [["kd"], ["rkd"], ["rrd"], ["vrm"], ["rrd", "kd"], ["rkd", "rrd", "vrm", "kd"]]
)
def test_each_method_trains(tmp_path, methods):
    student, teacher = TinyConvNet(8), trained_teacher()
    teacher_before = copy.deepcopy(teacher.state_dict())
    data = tensor_dataset(64)
    args = make_config(tmp_path, methods, max_steps=24)
    trainer = RelationalDistillationTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=data, eval_dataset=data
    )
    ce_before = trainer.evaluate()["eval_loss"]
    trainer.train()
    ce_after = trainer.evaluate()["eval_loss"]

    logs = train_logs(trainer)
    for key in ["loss/ce", "teacher_agreement"] + [k for m in methods for k in METHOD_TERMS[m]]:
        assert all(key in entry for entry in logs), f"{key} missing from the training logs"
    # the logged terms add up to the logged total loss
    for entry in logs:
        parts = sum(v for k, v in entry.items() if k.startswith("loss/"))
        assert parts == pytest.approx(entry["loss"], rel=1e-4, abs=1e-5)
    assert ce_after < ce_before, "the student did not learn"
    for name, value in teacher.state_dict().items():
        torch.testing.assert_close(value, teacher_before[name], rtol=0, atol=0)
    assert not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())


def test_teacher_stays_in_eval_mode_across_evaluate(tmp_path):
    student, teacher = make_pair()
    teacher.body.insert(1, nn.Dropout(0.5))
    modes = []
    teacher.register_forward_hook(lambda module, args, out: modes.append(module.training))
    data = tensor_dataset(32)
    args = make_config(tmp_path, ["kd"], max_steps=6, eval_strategy="steps", eval_steps=2)
    trainer = RelationalDistillationTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=data, eval_dataset=data
    )
    trainer.train()
    assert modes and not any(modes)
    teacher_ids = {id(p) for p in teacher.parameters()}
    assert not any(id(p) in teacher_ids for g in trainer.optimizer.param_groups for p in g["params"])


def test_rrd_student_head_is_optimised_and_teacher_head_frozen(tmp_path):
    student, teacher = make_pair()
    data = tensor_dataset(32)
    trainer = RelationalDistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=make_config(tmp_path, ["rrd"], max_steps=4),
        train_dataset=data,
    )
    rrd = trainer.distillation_methods["rrd"].loss
    student_head, teacher_head = copy.deepcopy(rrd.student_head), copy.deepcopy(rrd.teacher_head)
    trainer.train()
    optimised = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert all(id(p) in optimised for p in rrd.student_head.parameters())
    assert not torch.equal(student_head.weight, rrd.student_head.weight)
    torch.testing.assert_close(teacher_head.weight, rrd.teacher_head.weight, rtol=0, atol=0)
    assert int(rrd.queue.num_enqueued) == 4 * 8


def test_evaluation_reports_accuracy_and_agreement_without_touching_the_queue(tmp_path):
    student, teacher = make_pair()
    data = tensor_dataset(20)
    trainer = RelationalDistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=make_config(tmp_path, ["rrd"]),
        train_dataset=data,
        eval_dataset=data,
    )
    queue = trainer.distillation_methods["rrd"].loss.queue
    keys, ptr = queue.keys.clone(), queue.ptr.clone()
    metrics = trainer.evaluate()
    for key in (
        "eval_loss",
        "eval_accuracy",
        "eval_top5_accuracy",
        "eval_teacher_accuracy",
        "eval_teacher_agreement",
    ):
        assert key in metrics
    assert torch.equal(keys, queue.keys) and torch.equal(ptr, queue.ptr)
    # independent check of the reported numbers
    with torch.no_grad():
        x, y = data[:]["pixel_values"], data[:]["labels"]
        s, t = student(x).argmax(-1), teacher(x).argmax(-1)
    assert metrics["eval_accuracy"] == pytest.approx((s == y).float().mean().item())
    assert metrics["eval_teacher_agreement"] == pytest.approx((s == t).float().mean().item())


def test_checkpoint_holds_the_distillation_state(tmp_path):
    student, teacher = make_pair()
    data = tensor_dataset(32)
    args = make_config(tmp_path, ["rrd", "kd"], max_steps=4, save_strategy="steps", save_steps=2)
    trainer = RelationalDistillationTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=data
    )
    trainer.train()
    state = torch.load(
        os.path.join(args.output_dir, "checkpoint-4", DISTILLATION_STATE_NAME), weights_only=True
    )
    rrd = trainer.distillation_methods["rrd"].loss
    torch.testing.assert_close(state["rrd.loss.queue.keys"], rrd.queue.keys)
    assert int(state["rrd.loss.queue.ptr"]) == int(rrd.queue.ptr) == (4 * 8) % 20
    assert "rrd.loss.student_head.weight" in state


@pytest.mark.parametrize("methods", [["kd"], ["rkd"], ["rrd"], ["vrm"]])
def test_resume_matches_an_uninterrupted_run(tmp_path, methods):
    data = tensor_dataset(48)
    overrides = dict(max_steps=6, save_strategy="steps", save_steps=3, vrm_adaptor=True)

    def run(output, resume=None):
        student, teacher = make_pair()
        args = make_config(tmp_path / output, methods, **overrides)
        trainer = RelationalDistillationTrainer(
            model=student, teacher_model=teacher, args=args, train_dataset=data
        )
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    full = run("full")
    partial = run("partial")
    # resume a fresh trainer from the step-3 checkpoint of the second run
    resumed = run("partial", resume=str(tmp_path / "partial" / "out" / "checkpoint-3"))
    assert partial.state.global_step == resumed.state.global_step == 6
    for name, value in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, rtol=1e-5, atol=1e-6)
    for name, value in full.distillation_methods.state_dict().items():
        torch.testing.assert_close(
            resumed.distillation_methods.state_dict()[name], value, rtol=1e-5, atol=1e-6
        )


def test_gradient_accumulation_is_exact_for_ce_and_kd(tmp_path):
    data = tensor_dataset(16)

    def one_step(batch, accumulation):
        student, teacher = make_pair()
        args = make_config(
            tmp_path / f"ga{accumulation}",
            ["kd"],
            max_steps=1,
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=accumulation,
            learning_rate=0.5,
            lr_scheduler_type="constant",
            optim="sgd",
            max_grad_norm=0.0,
        )
        trainer = RelationalDistillationTrainer(
            model=student, teacher_model=teacher, args=args, train_dataset=data
        )
        trainer.train()
        return trainer.model.state_dict(), train_logs(trainer)[-1]["loss"]

    whole, loss_whole = one_step(16, 1)
    split, loss_split = one_step(4, 4)
    for name, value in whole.items():
        torch.testing.assert_close(split[name], value, rtol=1e-5, atol=1e-6)
    assert loss_split == pytest.approx(loss_whole, rel=1e-4)


def test_hf_and_timm_students_expose_their_embedding(tmp_path):
    from transformers import (
        ResNetConfig,
        ResNetForImageClassification,
        TimmWrapperConfig,
        TimmWrapperForImageClassification,
    )

    hf_config = ResNetConfig(
        num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=NUM_CLASSES
    )
    teacher = ResNetForImageClassification(hf_config)
    student = TimmWrapperForImageClassification(
        TimmWrapperConfig(architecture="resnet10t", num_labels=NUM_CLASSES)
    )
    data = tensor_dataset(16, size=32)
    args = make_config(tmp_path, ["rrd", "rkd"], max_steps=2, per_device_train_batch_size=4)
    trainer = RelationalDistillationTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=data
    )
    assert trainer._teacher_tap.dim == 16
    assert trainer._student_tap.dim == student.timm_model.num_features
    trainer.train()
    assert "loss/rkd_angle" in train_logs(trainer)[-1]


# ----------------------------------------------------------------------------------------------------------------------
# bad input: a clear error before any step, and nothing written to output_dir
# ----------------------------------------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _previous_run_in_output_dir(tmp_path):
    """Every test starts with a file from an earlier run in output_dir, which a failed run must leave alone."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "previous_run.txt").write_text("keep me")


def assert_untouched(args):
    assert sorted(os.listdir(args.output_dir)) == ["previous_run.txt"], "a failed run wrote into output_dir"
    with open(os.path.join(args.output_dir, "previous_run.txt")) as f:
        assert f.read() == "keep me"


def test_mismatched_number_of_labels(tmp_path):
    args = make_config(tmp_path, ["kd"])
    with pytest.raises(ValueError, match="student predicts 3 classes but the teacher predicts 4"):
        RelationalDistillationTrainer(
            model=TinyConvNet(num_classes=3), teacher_model=TinyConvNet(), args=args
        )
    assert_untouched(args)


def test_mismatched_label_names(tmp_path):
    from transformers import ResNetConfig, ResNetForImageClassification

    def model(names):
        config = ResNetConfig(embedding_size=8, hidden_sizes=[8], depths=[1], num_labels=2)
        config.id2label = dict(enumerate(names))
        config.label2id = {n: i for i, n in enumerate(names)}
        return ResNetForImageClassification(config)

    args = make_config(tmp_path, ["kd"])
    with pytest.raises(ValueError, match="different label names"):
        RelationalDistillationTrainer(
            model=model(["cat", "dog"]), teacher_model=model(["dog", "cat"]), args=args
        )
    assert_untouched(args)


def test_teacher_that_is_not_a_classifier(tmp_path):
    args = make_config(tmp_path, ["kd"])
    with pytest.raises(ValueError, match="does not look like a classifier"):
        RelationalDistillationTrainer(model=TinyConvNet(), teacher_model=nn.Conv2d(3, 4, 3), args=args)
    assert_untouched(args)


def test_missing_teacher_and_unloadable_teacher_path(tmp_path):
    args = make_config(tmp_path, ["kd"])
    with pytest.raises(ValueError, match="No teacher"):
        RelationalDistillationTrainer(model=TinyConvNet(), args=args)
    with pytest.raises(ValueError, match="Could not load the teacher"):
        RelationalDistillationTrainer(model=TinyConvNet(), teacher_model=str(tmp_path / "nowhere"), args=args)
    assert_untouched(args)


def test_classifier_that_cannot_be_found_names_the_argument(tmp_path):
    class ConvHead(nn.Module):  # 1x1-conv classifier: no nn.Linear anywhere
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Conv2d(3, NUM_CLASSES, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.config = type("C", (), {"num_labels": NUM_CLASSES})()

        def forward(self, x):
            return self.net(x)

    args = make_config(tmp_path, ["rrd"])
    with pytest.raises(FeatureAccessError, match="student_feature_module"):
        RelationalDistillationTrainer(model=ConvHead(), teacher_model=TinyConvNet(), args=args)
    args = make_config(tmp_path, ["rkd"], teacher_feature_module="does.not.exist")
    with pytest.raises(FeatureAccessError, match="teacher_feature_module='does.not.exist'"):
        RelationalDistillationTrainer(model=TinyConvNet(), teacher_model=TinyConvNet(), args=args)
    assert_untouched(args)


def test_dataset_without_labels(tmp_path):
    data = tensor_dataset(8).remove_columns("labels")
    args = make_config(tmp_path, ["kd"])
    trainer = RelationalDistillationTrainer(
        model=TinyConvNet(),
        teacher_model=TinyConvNet(),
        args=args,
        train_dataset=data,
        data_collator=lambda rows: {"pixel_values": torch.stack([r["pixel_values"] for r in rows])},
    )
    with pytest.raises(ValueError, match="no `labels`"):
        trainer.train()
    assert_untouched(args)


def test_dataset_without_an_image_column(tmp_path):
    from hf_relkd.data import ViewTransform

    data = image_dataset(8).remove_columns("img").with_transform(ViewTransform(train=True))
    args = make_config(tmp_path, ["kd"])
    trainer = RelationalDistillationTrainer(
        model=TinyConvNet(), teacher_model=TinyConvNet(), args=args, train_dataset=data
    )
    with pytest.raises(ValueError, match="fine_label"):
        trainer.train()
    assert_untouched(args)


def test_vrm_without_virtual_view(tmp_path):
    data = tensor_dataset(8, virtual=False)
    args = make_config(tmp_path, ["vrm"])
    trainer = RelationalDistillationTrainer(
        model=TinyConvNet(), teacher_model=TinyConvNet(), args=args, train_dataset=data
    )
    with pytest.raises(ValueError, match="virtual_view=True"):
        trainer.train()
    assert_untouched(args)


def test_plain_training_arguments_are_rejected(tmp_path):
    from transformers import TrainingArguments

    with pytest.raises(TypeError, match="RelationalDistillationConfig"):
        RelationalDistillationTrainer(
            model=TinyConvNet(),
            teacher_model=TinyConvNet(),
            args=TrainingArguments(output_dir=str(tmp_path / "o")),
        )


def test_user_optimizer_without_distillation_parameters_is_rejected(tmp_path):
    student, teacher = make_pair()
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    args = make_config(tmp_path, ["rrd"], max_steps=1)
    trainer = RelationalDistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=args,
        train_dataset=tensor_dataset(8),
        optimizers=(optimizer, scheduler),
    )
    with pytest.raises(ValueError, match="optimizer_cls_and_kwargs"):
        trainer.train()


# ----------------------------------------------------------------------------------------------------------------------
# config
# ----------------------------------------------------------------------------------------------------------------------
def test_methods_switch_on_paper_defaults(tmp_path):
    config = make_config(tmp_path, ["rrd", "kd", "rkd", "vrm"])
    assert (config.kd_weight, config.rrd_weight) == (1.0, 1.0)
    assert (config.rkd_distance_weight, config.rkd_angle_weight) == (25.0, 50.0)
    assert (config.vrm_inter_sample_weight, config.vrm_inter_class_weight) == (128.0, 32.0)
    assert config.enabled_methods == ["kd", "rkd", "rrd", "vrm"]
    assert config.remove_unused_columns is False
    config = make_config(tmp_path, ["rrd"], kd_weight=0.5, rrd_weight=0.0)
    assert config.enabled_methods == ["kd"] and config.kd_weight == 0.5
    assert make_config(tmp_path, "rrd,kd").enabled_methods == ["kd", "rrd"]


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("kd_weight", -1.0, "`kd_weight` must be >= 0"),
        ("ce_weight", -0.1, "`ce_weight` must be >= 0"),
        ("kd_temperature", 0.0, "`kd_temperature` must be > 0"),
        ("rrd_teacher_temperature", -0.1, "`rrd_teacher_temperature` must be > 0"),
        ("vrm_prune_percentile", 0.0, r"`vrm_prune_percentile` must be in \(0, 100\]"),
        ("vrm_prune_percentile", 100.5, r"`vrm_prune_percentile` must be in \(0, 100\]"),
        ("methods", ["rrd", "crd"], r"unknown method\(s\) \['crd'\]"),
        ("relation_scope", "world", "`relation_scope` must be 'local' or 'global'"),
        ("vrm_student_views", "separate", "`vrm_student_views` must be 'joint' or 'per_view'"),
        ("rrd_queue_size", 0, "`rrd_queue_size` must be an integer >= 1"),
        ("teacher_compile_mode", "fastest", "`teacher_compile_mode` must be one of"),
        ("loss_compile_mode", "reduce-overhead", "`loss_compile_mode` must be one of"),
    ],
)
def test_config_rejects_nonsense(tmp_path, field, value, message):
    overrides = {"methods": ["rrd"], field: value}
    with pytest.raises(ValueError, match=message):
        make_config(tmp_path, **overrides)


def test_every_config_field_is_exposed_by_hf_argument_parser(tmp_path):
    parser = HfArgumentParser(RelationalDistillationConfig)
    (config,) = parser.parse_args_into_dataclasses(
        [
            "--output_dir",
            str(tmp_path),
            "--methods",
            "rkd",
            "vrm",
            "--vrm_prune_percentile",
            "75",
            "--kd_weight",
            "0.3",
        ]
    )
    assert config.enabled_methods == ["kd", "rkd", "vrm"] and config.vrm_prune_percentile == 75
    help_text = parser.format_help()
    for name in (
        "--rrd_student_temperature",
        "--rkd_angle_weight",
        "--relation_scope",
        "--teacher_feature_module",
    ):
        assert name in help_text


def test_multistep_schedule_decays_at_the_given_epochs(tmp_path):
    student, teacher = make_pair()
    args = make_config(
        tmp_path, ["kd"], max_steps=-1, num_train_epochs=4, lr_decay_epochs=[3, 2], learning_rate=0.1
    )
    trainer = RelationalDistillationTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=tensor_dataset(32)
    )
    trainer.train()
    rates = [entry["learning_rate"] for entry in train_logs(trainer)]
    # 32 samples / batch 8 = 4 steps per epoch: decays after steps 8 and 12
    assert rates == pytest.approx([0.1] * 8 + [0.01] * 4 + [0.001] * 4)


def test_feature_hooks_are_inert_outside_the_trainer_and_removed_with_it(tmp_path):
    import gc

    student, teacher = make_pair()
    args = make_config(tmp_path, ["rkd"], max_steps=1)
    trainer = RelationalDistillationTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=tensor_dataset(8)
    )
    trainer.train()
    tap = trainer._teacher_tap
    teacher(torch.randn(2, 3, 8, 8))  # a forward outside the trainer captures nothing
    assert tap._captured is None
    assert len(teacher.fc._forward_pre_hooks) == 1
    del trainer, tap
    gc.collect()
    assert len(teacher.fc._forward_pre_hooks) == 0


def _train_every_method(output_dir, **overrides) -> tuple[RelationalDistillationTrainer, dict]:
    """RKD + RRD + VRM + KD for 3 steps on the same data and initial weights; returns the trainer and its evaluation."""
    data = tensor_dataset(32)
    student, teacher = make_pair()
    args = make_config(output_dir, ["rkd", "rrd", "vrm", "kd"], max_steps=3, **overrides)
    trainer = RelationalDistillationTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=data, eval_dataset=data
    )
    trainer.train()
    return trainer, trainer.evaluate()


@pytest.mark.parametrize("backend", ["eager", "inductor"])
def test_compiled_teacher_gives_the_same_training(tmp_path, backend):
    """``teacher_compile`` wraps the teacher in ``torch.compile``; the feature hook still fires inside the compiled
    graph (RKD/RRD need the teacher's embedding) and training is the same as with the eager teacher."""
    eager, eager_eval = _train_every_method(tmp_path / "eager")
    compiled, compiled_eval = _train_every_method(
        tmp_path / "compiled", teacher_compile=True, teacher_compile_backend=backend
    )
    assert hasattr(compiled.teacher, "_orig_mod") and not hasattr(eager.teacher, "_orig_mod")
    assert not compiled.teacher.training
    for key in ("loss/rkd_distance", "loss/rrd", "loss/vrm_inter_sample", "loss/kd"):
        assert train_logs(compiled)[-1][key] == pytest.approx(train_logs(eager)[-1][key], rel=1e-4, abs=1e-6)
    for name, value in eager.model.state_dict().items():
        torch.testing.assert_close(compiled.model.state_dict()[name], value, rtol=1e-4, atol=1e-5)
    assert compiled_eval["eval_teacher_accuracy"] == eager_eval["eval_teacher_accuracy"]


def test_compiled_losses_give_the_same_training(tmp_path):
    """``loss_compile`` compiles every method's loss core with inductor (the CPU backend here, Triton on GPUs) and the
    training is the same as with eager losses; the heads, the queue and the checkpointed state are untouched."""
    eager, eager_eval = _train_every_method(tmp_path / "eager")
    compiled, compiled_eval = _train_every_method(tmp_path / "compiled", loss_compile=True)
    assert compiled_eval["eval_loss"] == pytest.approx(eager_eval["eval_loss"], rel=1e-3)
    cores = [
        (module, name)
        for module in compiled.distillation_methods.modules()
        for name in getattr(module, "compilable_functions", ())
    ]
    assert len(cores) == 6  # kd, rkd, rrd (loss alone, projections + loss), vrm (pruning mask, terms)
    for module, name in cores:
        assert hasattr(getattr(module, name), "_torchdynamo_orig_callable"), (type(module).__name__, name)
    assert compiled.distillation_methods.state_dict().keys() == eager.distillation_methods.state_dict().keys()
    for key in ("loss/rkd_distance", "loss/rkd_angle", "loss/rrd", "loss/vrm_inter_sample", "loss/kd"):
        assert train_logs(compiled)[-1][key] == pytest.approx(train_logs(eager)[-1][key], rel=1e-4, abs=1e-6)
    # inductor reorders the reductions: float32 rounding, amplified over 3 SGD steps (seen: 5e-5 on weights ~0.2)
    tol = dict(rtol=1e-3, atol=2e-4)
    for name, value in eager.model.state_dict().items():
        torch.testing.assert_close(compiled.model.state_dict()[name], value, **tol)
    for name, value in eager.distillation_methods.state_dict().items():
        torch.testing.assert_close(compiled.distillation_methods.state_dict()[name], value, **tol)


def test_compiled_teachers_of_one_class_keep_their_own_feature_hooks(tmp_path):
    """A KD run compiles a teacher class without the feature hook; an RRD run in the same process compiles another
    teacher of that class with it, and must capture its embedding (Dynamo guards on hooks for the teacher)."""
    data = tensor_dataset(16)
    for method in ("kd", "rrd"):
        student, teacher = make_pair()
        args = make_config(
            tmp_path / method, [method], max_steps=2, teacher_compile=True, teacher_compile_backend="eager"
        )
        trainer = RelationalDistillationTrainer(
            model=student, teacher_model=teacher, args=args, train_dataset=data
        )
        trainer.train()
    assert "loss/rrd" in train_logs(trainer)[-1]


def test_activation_checkpointing_of_a_zoo_student_gives_the_same_training(tmp_path):
    """The Trainer's own switch (``activation_checkpointing`` in transformers 5, ``gradient_checkpointing`` in 4.x)
    checkpoints the student's blocks; VRM (the method with the most activation memory: both views) then trains
    exactly as without it, BatchNorm running statistics included. The teacher is left alone."""
    from hf_relkd.models import create_model

    names = {f.name for f in fields(RelationalDistillationConfig)}
    switch = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    data = tensor_dataset(32)
    torch.manual_seed(0)
    initial = create_model("resnet8", num_labels=NUM_CLASSES).state_dict()
    runs = {}
    for checkpointing in (False, True):
        student = create_model("resnet8", num_labels=NUM_CLASSES)
        student.load_state_dict(initial)
        _, teacher = make_pair()
        args = make_config(
            tmp_path / str(checkpointing), ["vrm", "kd"], max_steps=3, **{switch: checkpointing}
        )
        trainer = RelationalDistillationTrainer(
            model=student, teacher_model=teacher, args=args, train_dataset=data
        )
        trainer.train()
        flagged = [m for m in trainer.model.modules() if getattr(m, "gradient_checkpointing", False)]
        assert len(flagged) == (3 if checkpointing else 0)
        runs[checkpointing] = trainer
    for key in ("loss", "loss/vrm_inter_sample", "loss/vrm_inter_class", "loss/kd"):
        assert train_logs(runs[True])[-1][key] == pytest.approx(train_logs(runs[False])[-1][key], rel=1e-6)
    for name, value in runs[False].model.state_dict().items():
        torch.testing.assert_close(runs[True].model.state_dict()[name], value, rtol=1e-6, atol=1e-7, msg=name)


def test_floating_point_ops_counts_the_parameters_once_per_run(tmp_path):
    """``total_flos`` is transformers' estimate, unchanged, but the student's parameters are counted once per
    ``train()`` call rather than on every step."""
    from transformers import Trainer

    from hf_relkd.models import create_model

    student, (_, teacher) = create_model("resnet8", num_labels=NUM_CLASSES), make_pair()
    calls = []
    count = student.num_parameters

    def counting(*args, **kwargs):
        calls.append(kwargs)
        return count(*args, **kwargs)

    student.num_parameters = counting
    trainer = RelationalDistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=make_config(tmp_path, ["kd"], max_steps=4),
        train_dataset=tensor_dataset(32),
    )
    trainer.train()
    assert len(calls) == 1
    batch = trainer.data_collator([tensor_dataset(8)[i] for i in range(8)])
    expected = Trainer.floating_point_ops(trainer, batch)
    assert expected == 6 * batch["pixel_values"].numel() * count(exclude_embeddings=True) > 0
    assert trainer.floating_point_ops(batch) == expected
    assert trainer.state.total_flos == 4 * expected
    trainer.train()  # a new run counts again
    assert len(calls) == 3  # once for the run, once for Trainer.floating_point_ops above


def test_activation_checkpointing_of_a_student_without_support_fails_early(tmp_path):
    """transformers' Trainer would call the student's ``activation_checkpointing_enable()`` once training starts and
    fail with an AttributeError; the trainer says what to do instead, before anything is written."""
    import timm

    from hf_relkd.models import create_model

    names = {f.name for f in fields(RelationalDistillationConfig)}
    switch = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    _, teacher = make_pair()
    args = make_config(tmp_path, ["kd"], **{switch: True})
    timm_student = timm.create_model("resnet10t", num_classes=NUM_CLASSES, pretrained=False)
    with pytest.raises(ValueError, match=r"timm model.*student\.set_grad_checkpointing\(True\)"):
        RelationalDistillationTrainer(model=timm_student, teacher_model=teacher, args=args)
    with pytest.raises(
        ValueError, match=rf"TinyConvNet\) has no `{switch}_enable\(\)`.*Set `{switch}=False`"
    ):
        RelationalDistillationTrainer(model=TinyConvNet(8), teacher_model=teacher, args=args)
    assert_untouched(args)
    # students that support it are accepted (the zoo's is tested in training above)
    RelationalDistillationTrainer(
        model=create_model("resnet8", num_labels=NUM_CLASSES), teacher_model=teacher, args=args
    )


def test_loss_terms_are_weighted_and_summed_exactly_in_the_fewest_kernels():
    from hf_relkd.methods import weighted_term
    from hf_relkd.trainer.trainer import _total

    term = torch.tensor(0.37, requires_grad=True)
    assert weighted_term(1.0, term) is term  # no multiplication kernel for the default weight
    assert weighted_term(0.5, term).item() == pytest.approx(0.185)
    assert weighted_term(0, term).item() == 0.0
    values = [torch.tensor(v) for v in (0.1, 2.5, -0.7, 3.25)]
    for n in range(1, 5):
        torch.testing.assert_close(_total(values[:n]), torch.stack(values[:n]).sum(), rtol=0, atol=0)
    assert _total(values[:1]) is values[0]


def test_vrm_student_views_per_view_runs_the_student_once_per_view(tmp_path):
    """``vrm_student_views="per_view"``: the student runs on each view alone. Without BatchNorm that is the same
    computation as one pass over both views (same losses, same weights); with BatchNorm the statistics are per view,
    so training differs, and the running statistics count two batches per step."""
    from hf_relkd.models import create_model

    def train(student, views, name):
        _, teacher = make_pair()
        args = make_config(tmp_path / name, ["vrm", "kd"], max_steps=3, vrm_student_views=views)
        trainer = RelationalDistillationTrainer(
            model=student, teacher_model=teacher, args=args, train_dataset=tensor_dataset(32)
        )
        trainer.train()
        return trainer

    runs = {views: train(make_pair()[0], views, f"tiny-{views}") for views in ("joint", "per_view")}
    for key in ("loss", "loss/ce", "loss/vrm_inter_sample", "loss/vrm_inter_class", "loss/kd"):
        assert train_logs(runs["per_view"])[-1][key] == pytest.approx(
            train_logs(runs["joint"])[-1][key],
            rel=1e-5,
            abs=1e-5,  # logs are rounded to 6 decimals
        )
    for name, value in runs["joint"].model.state_dict().items():
        # the batch sums of the gradients run in another order: float32 rounding, amplified over 3 steps
        torch.testing.assert_close(runs["per_view"].model.state_dict()[name], value, rtol=1e-4, atol=5e-5)

    torch.manual_seed(0)
    initial = create_model("resnet8", num_labels=NUM_CLASSES).state_dict()
    zoo = {}
    for views in ("joint", "per_view"):
        student = create_model("resnet8", num_labels=NUM_CLASSES)
        student.load_state_dict(initial)
        zoo[views] = train(student, views, f"zoo-{views}").model
    counts = {views: int(zoo[views].backbone.bn1.num_batches_tracked) for views in zoo}
    assert counts == {"joint": 3, "per_view": 6}
    joint, per_view = zoo["joint"].state_dict(), zoo["per_view"].state_dict()
    assert not torch.allclose(joint["classifier.weight"], per_view["classifier.weight"])
