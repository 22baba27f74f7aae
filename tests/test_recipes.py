"""CIFAR-100 recipes: real runs through ``accelerate launch`` on a tiny local dataset in the ``uoft-cs/cifar100``
schema, YAML configs, the paper-protocol defaults, and every input that must fail before anything is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import yaml
from helpers import NUM_CLASSES, image_dataset

from hf_relkd.recipe import RecipeError, cli, load_image_dataset, main, parse_recipe_args

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
ACCELERATE = str(Path(sys.executable).with_name("accelerate"))
CLASS_NAMES = [f"class_{i}" for i in range(NUM_CLASSES)]
TINY = [
    "--max_steps", "2",
    "--max_train_samples", "16",
    "--max_eval_samples", "8",
    "--per_device_train_batch_size", "4",
    "--per_device_eval_batch_size", "8",
    "--num_train_epochs", "1",
    "--rrd_queue_size", "16",
    "--dataloader_num_workers", "0",
    "--logging_steps", "1",
    "--save_strategy", "no",
]  # fmt: skip
DISTILLATION_TERMS = {
    "kd": ["loss/kd"],
    "rkd": ["loss/rkd_distance", "loss/rkd_angle"],
    "rrd": ["loss/rrd", "loss/kd"],  # run as RRD+KD (--kd_weight 1)
    "vrm": ["loss/vrm_inter_sample", "loss/vrm_inter_class"],
}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false"
    )
    return env


def _launch(args: list[str], log: Path, config_file: str | None = None) -> subprocess.Popen:
    launcher = [
        ACCELERATE,
        "launch",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
    ]
    launcher += ["--config_file", config_file] if config_file else ["--cpu", "--num_processes", "1"]
    handle = open(log, "w")  # noqa: SIM115  (closed when the process has finished, in _wait)
    proc = subprocess.Popen(launcher + args, stdout=handle, stderr=subprocess.STDOUT, env=_env(), cwd=REPO)
    proc.log_handle = handle
    return proc


def _wait(proc: subprocess.Popen, log: Path, timeout: float = 600) -> str:
    try:
        proc.wait(timeout=timeout)
    finally:
        proc.log_handle.close()
    output = log.read_text()
    assert proc.returncode == 0, f"exit status {proc.returncode}:\n{output[-4000:]}"
    return output


def _load_saved(folder: Path):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    import hf_relkd.models  # noqa: F401  (registers the zoo with the Auto classes)

    model = AutoModelForImageClassification.from_pretrained(folder)
    processor = AutoImageProcessor.from_pretrained(folder)
    return model, processor


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory) -> Path:
    """A tiny dataset in the uoft-cs/cifar100 schema (img, fine_label, coarse_label), saved with save_to_disk."""
    path = tmp_path_factory.mktemp("data") / "cifar100_tiny"
    datasets.DatasetDict({"train": image_dataset(24), "test": image_dataset(8, seed=1)}).save_to_disk(
        str(path)
    )
    return path


@pytest.fixture(scope="module")
def teacher_dir(cifar_dir, tmp_path_factory) -> Path:
    """The teacher recipe, launched with the bundled CPU accelerate config."""
    out = tmp_path_factory.mktemp("teacher") / "resnet8"
    log = out.parent / "teacher.log"
    args = [
        str(RECIPES / "cifar100_teacher.py"),
        "--dataset_name",
        str(cifar_dir),
        "--teacher_model",
        "resnet8",
    ]
    args += ["--output_dir", str(out), *TINY]
    output = _wait(_launch(args, log, config_file=str(RECIPES / "accelerate_configs" / "cpu.yaml")), log)
    assert "teacher recipe: resnet8" in output and "| last |" in output
    return out


@pytest.fixture(scope="module")
def distilled(cifar_dir, teacher_dir, tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """Every distillation recipe, launched concurrently (each with one CPU process)."""
    root = tmp_path_factory.mktemp("distilled")
    procs = {}
    for recipe in DISTILLATION_TERMS:
        out = root / recipe
        args = [str(RECIPES / f"cifar100_{recipe}.py"), "--dataset_name", str(cifar_dir)]
        args += ["--student_model", "resnet8", "--teacher_model_name_or_path", str(teacher_dir)]
        args += ["--output_dir", str(out), *TINY]
        if recipe == "rrd":
            args += ["--kd_weight", "1"]
        procs[recipe] = (_launch(args, root / f"{recipe}.log"), out)
    return {recipe: (out, _wait(proc, root / f"{recipe}.log")) for recipe, (proc, out) in procs.items()}


# ----------------------------------------------------------------------------------------------------------------------
# real runs
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_teacher_recipe_saves_a_loadable_teacher(teacher_dir):
    model, processor = _load_saved(teacher_dir)
    assert model.config.num_labels == NUM_CLASSES
    assert [model.config.id2label[i] for i in range(NUM_CLASSES)] == CLASS_NAMES
    assert list(processor.image_mean) == pytest.approx([0.5071, 0.4867, 0.4408])
    results = json.loads((teacher_dir / "results.json").read_text())
    assert results["recipe"] == "teacher" and results["global_step"] == 2
    assert results["optimizer"] == {
        "name": "SGD",
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "nesterov": False,
        "learning_rate": 0.05,
    }


@pytest.mark.slow
@pytest.mark.parametrize("recipe", list(DISTILLATION_TERMS))
def test_distillation_recipe_runs_under_accelerate(distilled, recipe):
    out, output = distilled[recipe]
    for term in ["loss/ce", *DISTILLATION_TERMS[recipe]]:
        assert term in output, f"{term} was not logged"
    assert "it/s]" in output or "s/it]" in output, "no progress bar"
    model, _ = _load_saved(out)
    assert model.config.architecture == "resnet8"
    assert [model.config.id2label[i] for i in range(NUM_CLASSES)] == CLASS_NAMES
    results = json.loads((out / "results.json").read_text())
    expected = {"kd": ["kd"], "rkd": ["rkd"], "rrd": ["kd", "rrd"], "vrm": ["vrm"]}[recipe]
    assert results["methods"] == expected
    for key in ("accuracy", "teacher_accuracy", "teacher_agreement", "epoch"):
        assert key in results["last"] and key in results["best"]
    assert results["best"]["accuracy"] >= results["last"]["accuracy"]
    assert f"{recipe} recipe: resnet8" in output and "| best |" in output


def test_yaml_config_gives_defaults_that_the_command_line_overrides(cifar_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(
        "HF_RELKD_RECIPE_TEST", "before"
    )  # restored by monkeypatch after the YAML's env: block
    teacher = tmp_path / "teacher"
    _tiny_teacher(teacher)
    config = tmp_path / "rrd_kd.yaml"
    values = {
        "dataset_name": str(cifar_dir),
        "student_model": "resnet8",
        "teacher_model_name_or_path": str(teacher),
        "output_dir": str(tmp_path / "from_yaml"),
        "methods": ["rrd", "kd"],
        "learning_rate": "2e-2",
        "kd_temperature": 2.0,
        "max_steps": 1,
        "max_train_samples": 8,
        "max_eval_samples": 4,
        "per_device_train_batch_size": 4,
        "rrd_queue_size": 8,
        "dataloader_num_workers": 0,
        "save_strategy": "no",
        "disable_tqdm": True,
        "env": {"HF_RELKD_RECIPE_TEST": "from-yaml"},
    }
    config.write_text(yaml.safe_dump(values))
    script_args, args = parse_recipe_args("rrd", ["--config", str(config), "--kd_temperature", "3"])
    assert os.environ["HF_RELKD_RECIPE_TEST"] == "from-yaml"
    assert script_args.student_model == "resnet8" and args.learning_rate == 0.02
    assert args.kd_temperature == 3.0  # the command line wins over the YAML
    assert args.enabled_methods == ["kd", "rrd"] and args.kd_weight == args.rrd_weight == 1.0
    assert args.weight_decay == 5e-4  # protocol default kept where neither sets it

    results = main("rrd", ["--config", str(config)])
    assert results["methods"] == ["kd", "rrd"] and results["global_step"] == 1
    assert (tmp_path / "from_yaml" / "results.json").is_file()
    assert "| last |" in capsys.readouterr().out


def test_paper_protocol_is_the_default():
    _, args = parse_recipe_args("rrd", ["--teacher_model_name_or_path", "t"])
    assert str(args.optim.value) == "sgd" and args.optim_args == "momentum=0.9"
    assert (args.learning_rate, args.weight_decay, args.per_device_train_batch_size) == (0.05, 5e-4, 64)
    assert args.num_train_epochs == 240 and args.lr_decay_epochs == [150.0, 180.0, 210.0]
    assert args.lr_decay_rate == 0.1 and args.warmup_steps == 0
    assert str(args.eval_strategy.value) == "epoch" and args.metric_for_best_model == "accuracy"
    assert args.disable_tqdm is False and args.logging_steps == 50
    assert args.enabled_methods == ["rrd"] and args.ce_weight == 1.0 and args.kd_weight == 0.0
    assert args.output_dir == os.path.join("outputs", "cifar100_rrd_resnet8x4")

    _, args = parse_recipe_args("rrd", ["--student_model", "shufflev2"])
    assert args.learning_rate == 0.01  # MobileNetV2 / ShuffleV1 / ShuffleV2
    _, args = parse_recipe_args("rrd", ["--student_model", "mobile_half", "--learning_rate", "0.2"])
    assert args.learning_rate == 0.2
    _, args = parse_recipe_args("kd", [])
    assert (args.ce_weight, args.kd_weight, args.kd_temperature, args.enabled_methods) == (
        0.1,
        0.9,
        4.0,
        ["kd"],
    )
    _, args = parse_recipe_args("rkd", [])
    assert (args.rkd_distance_weight, args.rkd_angle_weight) == (25.0, 50.0)
    _, args = parse_recipe_args("vrm", [])
    assert (args.vrm_inter_sample_weight, args.vrm_inter_class_weight) == (128.0, 32.0)
    _, args = parse_recipe_args("teacher", ["--optim", "adamw_torch"])
    assert args.enabled_methods == [] and args.optim_args is None
    assert args.output_dir == os.path.join("outputs", "teachers/resnet32x4")


def test_every_bundled_yaml_parses():
    for path in sorted((RECIPES / "configs").glob("*.yaml")):
        recipe = "teacher" if path.stem.endswith("teacher") else path.stem.split("_")[-1]
        recipe = "rrd" if path.stem.endswith("rrd_kd") else recipe
        script_args, args = parse_recipe_args(recipe, ["--config", str(path)])
        assert args.optim_args == "momentum=0.9" and args.num_train_epochs == 240, path.name
        expected_lr = (
            0.01
            if script_args.student_model in ("ShuffleV2", "MobileNetV2") and recipe != "teacher"
            else 0.05
        )
        assert args.learning_rate == expected_lr, path.name


def test_help_lists_script_and_distillation_arguments(capsys):
    with pytest.raises(SystemExit) as info:
        parse_recipe_args("vrm", ["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for flag in (
        "--dataset_name",
        "--student_model",
        "--teacher_model_name_or_path",
        "--vrm_prune_percentile",
    ):
        assert flag in text


def test_local_parquet_folder_and_glob(tmp_path):
    folder = tmp_path / "parquet"
    folder.mkdir()
    image_dataset(8).to_parquet(str(folder / "train-00000-of-00001.parquet"))
    image_dataset(4, seed=1).to_parquet(str(folder / "test-00000-of-00001.parquet"))
    loaded = load_image_dataset(str(folder))
    assert (len(loaded["train"]), len(loaded["test"])) == (8, 4)
    loaded = load_image_dataset(str(folder / "*.parquet"))
    assert (len(loaded["train"]), len(loaded["test"])) == (8, 4)
    assert loaded["train"].features["fine_label"].names == CLASS_NAMES


# ----------------------------------------------------------------------------------------------------------------------
# fail fast: a message that says what to pass, and no output_dir
# ----------------------------------------------------------------------------------------------------------------------
def _tiny_teacher(folder: Path, num_labels: int = NUM_CLASSES) -> None:
    from hf_relkd.models import create_model

    create_model(
        "resnet8", num_labels=num_labels, id2label=dict(enumerate(CLASS_NAMES[:num_labels]))
    ).save_pretrained(folder)


def _fails(recipe: str, argv: list[str], out: Path, match: str) -> None:
    with pytest.raises(RecipeError, match=match):
        main(recipe, [*argv, "--output_dir", str(out), *TINY])
    assert not out.exists(), "a failed run created its output_dir"


def test_missing_teacher(cifar_dir, tmp_path):
    _fails("rrd", ["--dataset_name", str(cifar_dir)], tmp_path / "out", "no --teacher_model_name_or_path")


def test_missing_teacher_on_the_command_line_is_a_clean_error(cifar_dir, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        cli("kd", ["--dataset_name", str(cifar_dir), "--output_dir", str(out)])
    assert "--teacher_model_name_or_path" in str(info.value.code) and not out.exists()


def test_nonexistent_dataset_path(tmp_path):
    _tiny_teacher(tmp_path / "teacher")
    argv = [
        "--dataset_name",
        str(tmp_path / "no_such_dataset"),
        "--teacher_model_name_or_path",
        str(tmp_path / "teacher"),
    ]
    _fails("rrd", argv, tmp_path / "out", "does not exist")


def test_unreachable_hub_dataset_says_pass_a_local_path(tmp_path, monkeypatch):
    monkeypatch.setenv(
        "HF_HUB_OFFLINE", "1"
    )  # what an unreachable Hub looks like, without waiting for retries
    _tiny_teacher(tmp_path / "teacher")
    argv = [
        "--dataset_name",
        "hf-relkd-tests/no-such-dataset",
        "--teacher_model_name_or_path",
        str(tmp_path / "teacher"),
    ]
    _fails("rkd", argv, tmp_path / "out", "Could not reach the Hugging Face Hub.*Pass a local path")


def test_dataset_without_the_expected_columns(tmp_path):
    path = tmp_path / "renamed"
    data = image_dataset(8).remove_columns("coarse_label").rename_column("fine_label", "category")
    datasets.DatasetDict({"train": data, "test": data}).save_to_disk(str(path))
    _tiny_teacher(tmp_path / "teacher")
    argv = ["--dataset_name", str(path), "--teacher_model_name_or_path", str(tmp_path / "teacher")]
    _fails("vrm", argv, tmp_path / "out", "label column.*--label_column")


def test_teacher_with_another_number_of_labels(cifar_dir, tmp_path):
    _tiny_teacher(tmp_path / "teacher7", num_labels=3)
    argv = ["--dataset_name", str(cifar_dir), "--teacher_model_name_or_path", str(tmp_path / "teacher7")]
    _fails("kd", argv, tmp_path / "out", f"predicts 3 classes but .* has {NUM_CLASSES}")


def test_missing_teacher_folder_and_unknown_yaml_key(cifar_dir, tmp_path):
    argv = ["--dataset_name", str(cifar_dir), "--teacher_model_name_or_path", str(tmp_path / "nowhere")]
    _fails("rrd", argv, tmp_path / "out", "does not exist.*recipes/cifar100_teacher.py")
    config = tmp_path / "bad.yaml"
    config.write_text("learnig_rate: 0.1\n")
    with pytest.raises(
        RecipeError, match="unknown key.*'learnig_rate' \\(did you mean 'learning_rate'\\?\\)"
    ):
        parse_recipe_args("rrd", ["--config", str(config)])
