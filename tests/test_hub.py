"""Students on the Hub: model cards (rendering, metadata, plot), the saved folder, loading it back in fresh
processes (Auto classes, pipeline, remote code without hf_relkd, timm), push_to_hub up to the upload, and the
template shipped in the wheel."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from concurrent.futures import Future
from fnmatch import fnmatch
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import transformers.trainer
from helpers import NUM_CLASSES, tensor_dataset, trained_teacher
from huggingface_hub import ModelCard
from PIL import Image
from safetensors.torch import load_file

from hf_relkd import RelationalDistillationConfig, RelationalDistillationTrainer
from hf_relkd.data import CIFAR100_NORMALIZATION, build_image_processor
from hf_relkd.hub import (
    CITATIONS,
    DISTILLATION_CONFIG_KEY,
    PLOT_FILENAME,
    ModelCardOptions,
    ModelInfo,
    card_template_path,
    plot_training_curves,
    read_distillation_info,
    render_model_card,
    summarize_evaluations,
)
from hf_relkd.models import create_model

REPO_ROOT = Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ID2LABEL = {i: f"class_{i}" for i in range(NUM_CLASSES)}
IMAGE_SIZE = 16


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ----------------------------------------------------------------------------------------------------------------------
# rendering from plain data
# ----------------------------------------------------------------------------------------------------------------------
LOG_HISTORY = [
    {
        "loss": 5.0,
        "loss/ce": 4.0,
        "loss/kd": 0.6,
        "loss/rrd": 0.4,
        "teacher_agreement": 0.3,
        "epoch": 0.5,
        "step": 10,
    },
    {
        "eval_loss": 2.5,
        "eval_accuracy": 0.41,
        "eval_top5_accuracy": 0.71,
        "eval_teacher_accuracy": 0.7942,
        "eval_teacher_agreement": 0.45,
        "epoch": 1.0,
        "step": 20,
    },
    {
        "loss": 3.0,
        "loss/ce": 2.4,
        "loss/kd": 0.4,
        "loss/rrd": 0.2,
        "teacher_agreement": 0.5,
        "epoch": 1.5,
        "step": 30,
    },
    {
        "eval_loss": 2.0,
        "eval_accuracy": 0.4537,
        "eval_top5_accuracy": 0.74,
        "eval_teacher_accuracy": 0.7942,
        "eval_teacher_agreement": 0.55,
        "epoch": 2.0,
        "step": 40,
    },
    {
        "eval_loss": 2.1,
        "eval_accuracy": 0.4412,
        "eval_top5_accuracy": 0.7523,
        "eval_teacher_accuracy": 0.7942,
        "eval_teacher_agreement": 0.52,
        "epoch": 3.0,
        "step": 60,
    },
    {"train_runtime": 12.0, "train_loss": 4.0, "epoch": 3.0, "step": 60},
]
STUDENT = ModelInfo(
    "resnet8x4", "CifarForImageClassification", 1_234_564, kind="zoo", num_labels=100, label_names=None
)
TEACHER = ModelInfo(
    "resnet32x4", "CifarForImageClassification", 7_433_860, kind="zoo", name_or_path="me/resnet32x4-cifar100"
)


def _config(tmp_path, **overrides) -> dict:
    kwargs = dict(output_dir=str(tmp_path / "out"), report_to=[], use_cpu=True)
    kwargs.update(overrides)
    return RelationalDistillationConfig(**kwargs).to_dict()


def _section(content: str, title: str) -> str:
    body = content.split(f"## {title}\n", 1)[1]
    return body.split("\n## ", 1)[0]


def test_summarize_evaluations_last_and_best():
    summary = summarize_evaluations(LOG_HISTORY)
    assert summary.num_evaluations == 3 and summary.has_results
    assert summary.last == {
        "accuracy": 0.4412,
        "top5_accuracy": 0.7523,
        "teacher_accuracy": 0.7942,
        "teacher_agreement": 0.52,
    }
    assert (summary.last_epoch, summary.last_step) == (3.0, 60)
    assert summary.best["accuracy"] == 0.4537 and (summary.best_epoch, summary.best_step) == (2.0, 40)
    assert summary.best["top5_accuracy"] == 0.7523 and summary.best["teacher_agreement"] == 0.55
    assert not summarize_evaluations([{"loss": 1.0, "step": 1}]).has_results


def test_card_with_eval_results(tmp_path):
    config = _config(
        tmp_path,
        methods=["rrd", "kd"],
        lr_decay_epochs=[150, 180, 210],
        num_train_epochs=240,
        per_device_train_batch_size=64,
        gradient_accumulation_steps=2,
        rrd_queue_size=4096,
        learning_rate=0.05,
    )
    card = render_model_card(
        student=STUDENT,
        teacher=TEACHER,
        config=config,
        log_history=LOG_HISTORY,
        options=ModelCardOptions(
            dataset_name="uoft-cs/cifar100", eval_split="test", repo_id="me/resnet8x4-rrd"
        ),
        num_processes=2,
        plot_filename=PLOT_FILENAME,
        model_name="resnet8x4-rrd",
        global_step=60,
        epoch=3.0,
    )
    content = card.content
    # the front matter parses back and carries the Hub metadata
    data = ModelCard(content).data
    assert data.library_name == "transformers" and data.pipeline_tag == "image-classification"
    assert (
        data.license == "apache-2.0"
        and data.datasets == ["uoft-cs/cifar100"]
        and data.metrics == ["accuracy"]
    )
    assert {"hf_relkd", "knowledge-distillation", "rrd", "kd"} <= set(data.tags)
    assert not {"rkd", "vrm"} & set(data.tags)
    assert data.model_name == "resnet8x4-rrd"
    results = {(r.metric_type, r.metric_value) for r in data.eval_results}
    assert results == {
        ("accuracy", 0.4412),
        ("top_5_accuracy", 0.7523),
        ("teacher_accuracy", 0.7942),
    }
    for result in data.eval_results:
        assert result.task_type == "image-classification"
        assert (result.dataset_type, result.dataset_split) == ("uoft-cs/cifar100", "test")
    assert "model-index" in content

    results_md = _section(content, "Results")
    assert "| Student (this model) | 44.12% | 75.23% | 45.37% (epoch 2, step 40) |" in results_md
    assert "| Teacher | 79.42% | not measured |" in results_md
    assert "| Student–teacher top-1 agreement | 52.00% | n/a | 55.00% |" in results_md
    assert "epoch 3, step 60" in results_md
    assert f"]({PLOT_FILENAME})" in content

    models = _section(content, "Models")
    assert "`me/resnet32x4-cifar100`" in models and "7,433,860" in models and "1,234,564" in models
    assert "6.02×" in models

    method = _section(content, "Distillation method")
    assert "1 × CE + 1 × KD (T = 4) + 1 × RRD" in method
    for field, value in [
        ("rrd_queue_size", "4096"),
        ("rrd_student_temperature", "0.04"),
        ("kd_temperature", "4"),
    ]:
        assert f"| `{field}` | {value} |" in method
    assert "vrm_" not in method and "rkd_" not in method  # only the enabled methods' fields

    recipe = _section(content, "Training recipe")
    assert "multi-step: learning rate × 0.1 at epochs 150, 180, 210" in recipe
    assert "64 per device × 2 processes × 2 accumulation steps = 256 global" in recipe
    assert "| Precision | fp32 |" in recipe and "| Learning rate | 0.05 |" in recipe
    assert "240 epochs" in recipe and "60 optimizer steps (3 epochs)" in recipe

    quick = _section(content, "Quick start")
    assert 'model_id = "me/resnet8x4-rrd"' in quick and "import hf_relkd.models" in quick
    assert 'pipeline("image-classification", model=model_id, trust_remote_code=True)' in quick

    versions = _section(content, "Framework versions")
    for library in ("torch", "transformers", "timm", "hf_relkd"):
        assert f"- {library} " in versions
    citation = _section(content, "Citation")
    for key in ("kd", "rrd", "hf_relkd"):
        assert CITATIONS[key] in citation
    assert CITATIONS["rkd"] not in citation and CITATIONS["vrm"] not in citation
    assert "None" not in content and "nan" not in content


def test_card_without_eval_results(tmp_path):
    config = _config(tmp_path, methods=["rkd", "vrm"], bf16=False, max_steps=100)
    card = render_model_card(
        student=ModelInfo(
            "resnet10t", "TimmWrapperForImageClassification", 4_900_000, kind="timm", num_labels=10
        ),
        teacher=ModelInfo("resnet50", "TimmWrapperForImageClassification", 23_500_000, kind="timm"),
        config=config,
        log_history=[{"loss": 3.0, "loss/ce": 2.0, "loss/rkd_distance": 1.0, "epoch": 0.1, "step": 5}],
        options=ModelCardOptions(license="mit"),
    )
    content = card.content
    data = ModelCard(content).data
    assert data.eval_results is None and "model-index" not in content
    assert data.license == "mit" and data.datasets is None
    assert {"rkd", "vrm"} <= set(data.tags)
    results_md = _section(content, "Results")
    assert "No evaluation results yet" in results_md and "%" not in results_md
    assert "None" not in content and "nan" not in content
    assert "25 × RKD distance + 50 × RKD angle + 128 × VRM inter-sample + 32 × VRM inter-class" in content
    assert "| `vrm_prune_percentile` | 90 |" in content
    assert "100 optimizer steps (max_steps)" in content
    assert 'timm.create_model("hf-hub:your-username/student", pretrained=True)' in content
    assert "trust_remote_code" not in content
    assert CITATIONS["rkd"] in content and CITATIONS["vrm"] in content and CITATIONS["rrd"] not in content


def test_plain_module_student_and_options(tmp_path):
    from helpers import TinyConvNet

    from hf_relkd.hub import describe_model

    info = describe_model(TinyConvNet(8))
    assert (info.kind, info.architecture, info.num_parameters) == ("torch", "TinyConvNet", 260)
    card = render_model_card(
        student=info, teacher=TEACHER, config=_config(tmp_path, methods=["kd"]), log_history=[]
    )
    assert card.data.library_name == "pytorch"  # not loadable with transformers: no config.json
    assert "model.load_state_dict" in card.text and "No evaluation results yet" in card.text
    options = ModelCardOptions(tags=["a"]).update(tags=["b", "a"], license=None, dataset_name="x/y")
    assert options.tags == ["a", "b"] and options.license == "apache-2.0" and options.dataset_name == "x/y"
    with pytest.raises(TypeError, match="dataset"):
        options.update(datset_name="typo")


def test_plot_is_a_valid_png(tmp_path):
    path = plot_training_curves(LOG_HISTORY, tmp_path / "curves.png")
    assert path == tmp_path / "curves.png"
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 600 and image.height > 300
    assert plot_training_curves([{"train_runtime": 1.0, "step": 0}], tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_template_found_in_the_source_layout():
    path = card_template_path()
    assert path.is_file() and path.parent.name == "model_cards"
    assert path.resolve() == (REPO_ROOT / "model_cards" / "student_card.md").resolve()


# ----------------------------------------------------------------------------------------------------------------------
# a real (tiny) run, saved and loaded back
# ----------------------------------------------------------------------------------------------------------------------
def _make_trainer(output_dir: Path, student, **overrides) -> RelationalDistillationTrainer:
    kwargs = dict(
        output_dir=str(output_dir),
        methods=["rrd", "kd"],
        rrd_queue_size=16,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        max_steps=4,
        learning_rate=0.05,
        eval_strategy="steps",
        eval_steps=2,
        save_strategy="steps",
        save_steps=2,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    kwargs.update(overrides)
    data = tensor_dataset(32, size=IMAGE_SIZE, virtual=False)
    trainer = RelationalDistillationTrainer(
        model=student,
        teacher_model=trained_teacher(steps=30),
        args=RelationalDistillationConfig(**kwargs),
        train_dataset=data,
        eval_dataset=data,
        processing_class=build_image_processor(CIFAR100_NORMALIZATION, IMAGE_SIZE),
    )
    trainer.model_card_options.update(dataset_name="me/tiny-shapes", eval_split="test")
    return trainer


def _reference(trainer, folder: Path) -> dict:
    """Input image, its processed pixels and the in-process student's logits, written for the subprocesses."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(
        rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    )  # not square: exercises resizing
    image_path = folder.parent / f"{folder.name}-image.png"
    image.save(image_path)
    pixel_values = trainer.processing_class(images=image, return_tensors="pt")["pixel_values"]
    student = trainer.model.eval()
    with torch.no_grad():
        logits = student(pixel_values=pixel_values).logits
    tensors_path = folder.parent / f"{folder.name}-reference.pt"
    torch.save({"pixel_values": pixel_values, "logits": logits}, tensors_path)
    meta = {
        "folder": str(folder),
        "image": str(image_path),
        "tensors": str(tensors_path),
        "id2label": {str(k): v for k, v in student.config.id2label.items()},
        "distillation": json.loads(json.dumps(trainer.distillation_record())),
    }
    return {"meta": meta, "logits": logits, "pixel_values": pixel_values}


def _run(tmp_path_factory, name: str):
    root = tmp_path_factory.mktemp(name)
    torch.manual_seed(0)
    student = create_model("resnet8" if name == "zoo" else "resnet10t", NUM_CLASSES, id2label=ID2LABEL)
    trainer = _make_trainer(root / "out", student)
    trainer.train()
    export = root / "export"
    trainer.save_model(str(export))
    return SimpleNamespace(trainer=trainer, root=root, export=export, ref=_reference(trainer, export))


@pytest.fixture(scope="module")
def zoo_run(tmp_path_factory):
    return _run(tmp_path_factory, "zoo")


@pytest.fixture(scope="module")
def timm_run(tmp_path_factory):
    return _run(tmp_path_factory, "timm")


ZOO_FILES = {
    "README.md",
    "config.json",
    "configuration_relkd_cifar.py",
    "model.safetensors",
    "modeling_relkd_cifar.py",
    "preprocessor_config.json",
    "training_args.bin",
    PLOT_FILENAME,
}
TIMM_FILES = ZOO_FILES - {"configuration_relkd_cifar.py", "modeling_relkd_cifar.py"}


@pytest.mark.parametrize("kind", ["zoo", "timm"])
def test_saved_folder_has_only_the_student(kind, request):
    run = request.getfixturevalue(f"{kind}_run")
    assert {p.name for p in run.export.iterdir()} == (ZOO_FILES if kind == "zoo" else TIMM_FILES)

    # exactly the student's weights: no teacher, no RRD heads, no queue
    saved = load_file(run.export / "model.safetensors")
    student_state = run.trainer.model.state_dict()
    if kind == "timm":  # written in timm's own key format (the wrapper's prefix is added back on load)
        student_state = {k.removeprefix("timm_model."): v for k, v in student_state.items()}
    assert saved.keys() == student_state.keys()
    assert all(torch.equal(saved[k], student_state[k]) for k in saved)
    assert not any(word in key for key in saved for word in ("teacher", "head", "queue", "distillation"))

    config = json.loads((run.export / "config.json").read_text())
    record = read_distillation_info(config)
    assert record == run.ref["meta"]["distillation"]
    assert record["teacher"] == {
        "name_or_path": None,
        "architecture": "TinyConvNet",
        "model_class": "TinyConvNet",
        "num_parameters": sum(p.numel() for p in run.trainer.teacher.parameters()),
    }
    assert record["methods"] == ["kd", "rrd"] and record["settings"]["rrd"]["rrd_queue_size"] == 16
    assert "vrm" not in record["settings"] and "rkd" not in record["settings"]
    labels = config["label_names"] if kind == "timm" else list(config["id2label"].values())
    assert labels == list(ID2LABEL.values())
    if kind == "timm":
        assert config["model_args"] == {} and config["pretrained_cfg"]["input_size"] == [
            3,
            IMAGE_SIZE,
            IMAGE_SIZE,
        ]
        assert config["pretrained_cfg"]["mean"] == pytest.approx(list(CIFAR100_NORMALIZATION.mean))

    # the card: metadata from this run's evaluations
    card = ModelCard((run.export / "README.md").read_text())
    last_eval = [e for e in run.trainer.state.log_history if "eval_accuracy" in e][-1]
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert results["accuracy"] == round(last_eval["eval_accuracy"], 6)
    assert results["top_5_accuracy"] == round(last_eval["eval_top5_accuracy"], 6)
    assert results["teacher_accuracy"] == round(last_eval["eval_teacher_accuracy"], 6)
    assert card.data.datasets == ["me/tiny-shapes"] and card.data.model_name == "out"
    assert "TinyConvNet" in card.text and f"]({PLOT_FILENAME})" in card.text
    assert (run.export / PLOT_FILENAME).read_bytes()[:8] == PNG_SIGNATURE


def test_card_only_on_the_main_process(zoo_run, tmp_path, monkeypatch):
    monkeypatch.setattr(zoo_run.trainer, "is_world_process_zero", lambda: False)
    assert zoo_run.trainer.create_model_card(output_dir=str(tmp_path / "rank1")) is None
    assert not (tmp_path / "rank1").exists()


def test_every_checkpoint_has_a_card(zoo_run):
    for step in (2, 4):
        checkpoint = zoo_run.root / "out" / f"checkpoint-{step}"
        assert {"README.md", PLOT_FILENAME, "distillation_state.pt", "model.safetensors"} <= {
            p.name for p in checkpoint.iterdir()
        }
        card = ModelCard((checkpoint / "README.md").read_text())
        evals = [e for e in zoo_run.trainer.state.log_history if "eval_accuracy" in e and e["step"] <= step]
        assert {r.metric_type: r.metric_value for r in card.data.eval_results}["accuracy"] == round(
            evals[-1]["eval_accuracy"], 6
        )


_CHECKS = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import torch
    from PIL import Image
    from transformers import AutoConfig, AutoModelForImageClassification, pipeline

    def check(meta, **load_kwargs):
        folder = meta["folder"]
        ref = torch.load(meta["tensors"])
        model = AutoModelForImageClassification.from_pretrained(folder, **load_kwargs).eval()
        with torch.no_grad():
            logits = model(pixel_values=ref["pixel_values"]).logits
        assert torch.equal(logits, ref["logits"]), (logits, ref["logits"])
        assert {str(k): v for k, v in model.config.id2label.items()} == meta["id2label"]
        assert model.config.distillation == meta["distillation"], model.config.distillation
        classifier = pipeline("image-classification", model=folder, **load_kwargs)
        outputs = classifier(Image.open(meta["image"]), top_k=None)
        probs = torch.softmax(ref["logits"][0].double(), -1).numpy()
        expected = sorted(((meta["id2label"][str(i)], p) for i, p in enumerate(probs)), key=lambda x: -x[1])
        assert [o["label"] for o in outputs] == [label for label, _ in expected], outputs
        np.testing.assert_allclose([o["score"] for o in outputs], [p for _, p in expected], rtol=0, atol=1e-6)
        return model
    """
)

_WITH_HF_RELKD = _CHECKS + textwrap.dedent(
    """
    import hf_relkd.models  # registers the CIFAR zoo with the Auto classes

    meta = json.loads(sys.argv[1])
    model = check(meta)
    assert type(model).__module__.startswith("hf_relkd."), type(model).__module__
    print("HF_RELKD_OK")
    """
)

_WITHOUT_HF_RELKD = (
    textwrap.dedent(
        """
    import importlib.abc, sys

    class _BlockHfRelkd(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path=None, target=None):
            if fullname == "hf_relkd" or fullname.startswith("hf_relkd."):
                raise ImportError("hf_relkd is blocked in this test")
            return None

    sys.meta_path.insert(0, _BlockHfRelkd())
    """
    )
    + _CHECKS
    + textwrap.dedent(
        """
    import timm

    zoo, timm_meta = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    model = check(zoo, trust_remote_code=True)
    assert "hf_relkd" not in type(model).__module__, type(model).__module__
    model = check(timm_meta)
    assert type(model).__name__ == "TimmWrapperForImageClassification"

    # timm alone, from the same folder: same weights, and the student's preprocessing from pretrained_cfg
    net = timm.create_model("local-dir:" + timm_meta["folder"], pretrained=True).eval()
    ref = torch.load(timm_meta["tensors"])
    with torch.no_grad():
        assert torch.equal(net(ref["pixel_values"]), ref["logits"])
    config = timm.data.resolve_data_config({}, model=net)
    pixels = timm.data.create_transform(**config)(Image.open(timm_meta["image"]).convert("RGB")).unsqueeze(0)
    # equal up to one 8-bit intensity level (the two resizers round differently): 1/255 / std
    one_level = 1.0 / 255 / min(config["std"])
    torch.testing.assert_close(pixels, ref["pixel_values"], rtol=0, atol=1.01 * one_level)
    assert not any(name.split(".")[0] == "hf_relkd" for name in sys.modules)
    print("NO_HF_RELKD_OK")
    """
    )
)


def _python(tmp_path: Path, script: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.update(
        HF_MODULES_CACHE=str(tmp_path / "hf_modules"),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        OMP_NUM_THREADS="1",
        TRANSFORMERS_VERBOSITY="error",
    )
    return subprocess.run(
        [sys.executable, "-I", "-c", script, *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_zoo_student_loads_in_a_fresh_process_with_hf_relkd(zoo_run, tmp_path):
    proc = _python(tmp_path, _WITH_HF_RELKD, json.dumps(zoo_run.ref["meta"]))
    assert proc.returncode == 0 and "HF_RELKD_OK" in proc.stdout, proc.stdout + proc.stderr


def test_students_load_in_a_fresh_process_without_hf_relkd(zoo_run, timm_run, tmp_path):
    """Zoo student with ``trust_remote_code=True``; timm student with transformers and with timm alone."""
    proc = _python(
        tmp_path, _WITHOUT_HF_RELKD, json.dumps(zoo_run.ref["meta"]), json.dumps(timm_run.ref["meta"])
    )
    assert proc.returncode == 0 and "NO_HF_RELKD_OK" in proc.stdout, proc.stdout + proc.stderr


# ----------------------------------------------------------------------------------------------------------------------
# push_to_hub, up to the upload
# ----------------------------------------------------------------------------------------------------------------------
class _FakeHubApi:
    """Stands in for ``transformers.trainer.hf_api()``: records the calls and copies each folder it would upload."""

    def __init__(self, root: Path):
        self.root = root
        self.created: list[str] = []
        self.uploads: list[dict] = []

    def create_repo(self, repo_id, token=None, private=None, exist_ok=False, **kwargs):
        self.created.append(repo_id)
        return SimpleNamespace(repo_id=repo_id)

    def upload_folder(self, *, repo_id, folder_path, ignore_patterns=None, run_as_future=False, **kwargs):
        patterns = list(ignore_patterns or [])
        snapshot = self.root / f"upload-{len(self.uploads)}"

        def ignore(directory, names):
            if Path(directory) != Path(folder_path):
                return []
            return [n for n in names if any(fnmatch(n, p) for p in patterns)]

        shutil.copytree(folder_path, snapshot, ignore=ignore)
        self.uploads.append({"repo_id": repo_id, "snapshot": snapshot, **kwargs})
        if run_as_future:
            future = Future()
            future.set_result(None)
            return future
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/0")


def test_push_to_hub_uploads_a_complete_loadable_folder(tmp_path, monkeypatch):
    hub = _FakeHubApi(tmp_path / "hub")
    monkeypatch.setattr(transformers.trainer, "hf_api", lambda: hub)
    torch.manual_seed(0)
    student = create_model("resnet8", NUM_CLASSES, id2label=ID2LABEL)
    trainer = _make_trainer(
        tmp_path / "student-rrd",
        student,
        max_steps=2,
        push_to_hub=True,
        hub_model_id="me/student-rrd",
        hub_strategy="every_save",
    )
    assert hub.created == ["me/student-rrd"]
    trainer.train()
    # the checkpoint push (hub_strategy="every_save") uploads args.output_dir with a fresh card
    assert hub.uploads and all(u["repo_id"] == "me/student-rrd" for u in hub.uploads)
    checkpoint_upload = hub.uploads[0]["snapshot"]
    assert {"README.md", "config.json", "model.safetensors", PLOT_FILENAME} <= {
        p.name for p in checkpoint_upload.iterdir()
    }

    trainer.push_to_hub(license="mit")
    final = hub.uploads[-1]["snapshot"]
    assert {p.name for p in final.iterdir()} == ZOO_FILES  # no checkpoint-*, nothing of the teacher
    card = ModelCard((final / "README.md").read_text())
    assert card.data.license == "mit" and card.data.datasets == ["me/tiny-shapes"]
    assert card.data.model_name == "student-rrd" and 'model_id = "me/student-rrd"' in card.text
    assert {"hf_relkd", "knowledge-distillation", "rrd", "kd"} <= set(card.data.tags)
    last_eval = [e for e in trainer.state.log_history if "eval_accuracy" in e][-1]
    assert {r.metric_type: r.metric_value for r in card.data.eval_results}["accuracy"] == round(
        last_eval["eval_accuracy"], 6
    )

    from transformers import AutoModelForImageClassification

    loaded = AutoModelForImageClassification.from_pretrained(final).eval()
    x = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        assert torch.equal(loaded(pixel_values=x).logits, trainer.model.eval()(pixel_values=x).logits)
    assert loaded.config.id2label == ID2LABEL
    assert read_distillation_info(loaded.config) == json.loads(json.dumps(trainer.distillation_record()))
    assert getattr(loaded.config, DISTILLATION_CONFIG_KEY)["teacher"]["architecture"] == "TinyConvNet"


# ----------------------------------------------------------------------------------------------------------------------
# packaging: the template ships in the wheel, and the loader finds it there
# ----------------------------------------------------------------------------------------------------------------------
def test_wheel_ships_the_template_and_every_module(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO_ROOT / "hf_relkd", source / "hf_relkd", ignore=ignore)
    shutil.copytree(REPO_ROOT / "model_cards", source / "model_cards", ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO_ROOT / name).exists():
            shutil.copy(REPO_ROOT / name, source / name)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q"]
        + ["-w", str(tmp_path / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = (tmp_path / "dist").glob("hf_relkd-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "site")
    assert "hf_relkd/model_cards/student_card.md" in names
    modules = {p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "hf_relkd").rglob("*.py")}
    missing = sorted(modules - names)
    assert not missing, f"the wheel lacks {missing}: add the new subpackage to [tool.setuptools] packages"
    assert not any(name.startswith("model_cards/") for name in names)  # no stray top-level package

    # the installed layout: the loader finds the packaged template (not the source checkout's). Only the loader's
    # module is imported from the unpacked wheel, under stand-in parent packages, so the check does not pay for
    # importing torch.
    site = tmp_path / "site"
    script = textwrap.dedent(
        """
        import sys, types
        site = sys.argv[1]
        for name in ("hf_relkd", "hf_relkd.hub"):
            package = types.ModuleType(name)
            package.__path__ = [site + "/" + name.replace(".", "/")]
            package.__file__ = package.__path__[0] + "/__init__.py"
            sys.modules[name] = package
        from hf_relkd.hub.card import card_template_path
        assert "torch" not in sys.modules
        print(card_template_path())
        """
    )
    proc = _python(tmp_path, script, str(site))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert Path(proc.stdout.strip()) == site / "hf_relkd" / "model_cards" / "student_card.md"
