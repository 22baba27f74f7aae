"""The README's Python examples run as written (Hub downloads replaced by local stand-ins, training shortened)."""

from __future__ import annotations

import re
from pathlib import Path

import datasets
import pytest
import transformers
from helpers import image_dataset

import hf_relkd
from hf_relkd import METHOD_REGISTRY
from hf_relkd.models import create_model

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_the_examples():
    blocks = python_blocks()
    assert any("RelationalDistillationTrainer(" in b for b in blocks)
    assert any("@register_method" in b for b in blocks)


def test_usage_example_trains_and_saves(tmp_path, monkeypatch):
    (block,) = [b for b in python_blocks() if "RelationalDistillationTrainer(" in b]
    cifar = image_dataset(16)
    names = cifar.features["fine_label"].names
    monkeypatch.setattr(
        datasets, "load_dataset", lambda *a, **k: datasets.DatasetDict(train=cifar, test=cifar)
    )
    teacher = create_model("resnet8", num_labels=len(names), id2label=dict(enumerate(names)))
    monkeypatch.setattr(
        transformers.AutoModelForImageClassification,
        "from_pretrained",
        classmethod(lambda cls, *a, **k: teacher),
    )
    real_config = hf_relkd.RelationalDistillationConfig

    def short_config(**kwargs):  # same arguments, two steps, on CPU, into tmp_path
        kwargs.update(
            output_dir=str(tmp_path / kwargs["output_dir"]),
            max_steps=2,
            per_device_train_batch_size=8,
            bf16=False,
            use_cpu=True,
            report_to=[],
            rrd_queue_size=16,
            disable_tqdm=True,
        )
        return real_config(**kwargs)

    monkeypatch.setattr(hf_relkd, "RelationalDistillationConfig", short_config)
    namespace: dict = {}
    exec(compile(block, str(README), "exec"), namespace)
    trainer = namespace["trainer"]
    assert trainer.state.global_step == 2
    out = tmp_path / "resnet8x4-rrd-kd"
    assert (out / "config.json").exists() and (out / "preprocessor_config.json").exists()
    monkeypatch.undo()
    saved = transformers.AutoModelForImageClassification.from_pretrained(str(out))
    assert saved.config.id2label[1] == names[1]


def test_subclassing_example_registers_a_working_method(tmp_path):
    (block,) = [b for b in python_blocks() if "@register_method" in b]
    namespace: dict = {}
    try:
        exec(compile(block, str(README), "exec"), namespace)
        assert "cosine" in METHOD_REGISTRY
        config = namespace["MyConfig"](
            output_dir=str(tmp_path), cosine_weight=0.5, use_cpu=True, report_to=[]
        )
        assert METHOD_REGISTRY["cosine"].is_enabled(config)
    finally:
        METHOD_REGISTRY.pop("cosine", None)


@pytest.mark.parametrize(
    "placeholder",
    [
        "QUICKSTART_RESULTS",
        "RECIPES_SECTION",
        "MULTIGPU_SECTION",
        "BENCHMARKS_SECTION",
        "VRM_PERCENTILE_NOTE",
    ],
)
def test_readme_has_no_unfilled_section(placeholder):
    assert placeholder not in README.read_text()


def test_benchmark_section_is_generated_from_the_result_files(monkeypatch):
    """Every number in the README's "Benchmarks" section comes from benchmarks/results (readme_section.py)."""
    import importlib.util

    monkeypatch.syspath_prepend(
        str(README.parent / "benchmarks")
    )  # its `import common`, as when run as a script
    path = README.parent / "benchmarks" / "readme_section.py"
    spec = importlib.util.spec_from_file_location("readme_section", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = README.read_text()
    assert module.START in readme and module.END in readme
    assert module.render(readme, module.build_section()) == readme, (
        "README.md's benchmark section is out of date: run python benchmarks/readme_section.py"
    )
