"""The quick start with a tiny budget: results table, honest comparison bookkeeping, and a loadable student."""

from __future__ import annotations

import json

import pytest

from hf_relkd.quickstart import BASELINE, format_results_table, main, run_quickstart


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("quickstart")
    results = run_quickstart(str(out), methods=["rrd", "kd"], seeds=[0], max_steps=3, progress=False)
    return out, results


def test_results_table_and_files(quick):
    out, results = quick
    assert list(results["students"]) == [BASELINE, "rrd+kd"]
    teacher = results["teacher"]
    assert teacher["model"] == "resnet20" and teacher["params"] > results["students"][BASELINE]["params"]
    assert 0.0 <= teacher["accuracy"] <= 1.0
    for name, entry in results["students"].items():
        assert entry["model"] == "resnet8" and len(entry["runs"]) == 1 and entry["runs"][0]["seed"] == 0
        assert 0.0 <= entry["accuracy_mean"] <= 1.0 and entry["accuracy_std"] == 0.0
        assert 0.0 <= entry["teacher_agreement_mean"] <= 1.0
        assert entry["methods"] == ([] if name == BASELINE else ["rrd", "kd"])
    table = format_results_table(results)
    for text in (
        "teacher resnet20 (CE)",
        "CE only (baseline)",
        "distilled: rrd+kd",
        "teacher agreement",
        "78,042",
    ):
        assert text in table
    assert json.loads((out / "results.json").read_text())["students"].keys() == results["students"].keys()
    assert (out / "results.md").read_text().strip() == table
    assert (out / "teacher" / "config.json").is_file()


def test_saved_student_loads_with_auto_classes(quick):
    out, results = quick
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    import hf_relkd  # noqa: F401  (registers the zoo with the Auto classes)

    assert results["student_dir"] == str(out / "student")
    student = AutoModelForImageClassification.from_pretrained(out / "student")
    processor = AutoImageProcessor.from_pretrained(out / "student")
    assert student.config.architecture == "resnet8"
    assert [student.config.id2label[i] for i in range(10)] == [str(d) for d in range(10)]
    assert processor.size == {"height": 8, "width": 8}
    from hf_relkd.data import load_digits_dataset

    image = load_digits_dataset(image_size=8)["test"][0]["image"]
    with torch.no_grad():
        logits = student(**processor(image, return_tensors="pt")).logits
    assert logits.shape == (1, 10)


def test_several_seeds_give_mean_and_std(quick, tmp_path):
    out, first = quick
    results = run_quickstart(
        str(tmp_path),
        methods=["kd"],
        seeds=[0, 1],
        teacher_path=str(out / "teacher"),
        max_steps=2,
        save_student=False,
        progress=False,
    )
    assert results["teacher"]["accuracy"] == pytest.approx(first["teacher"]["accuracy"])
    entry = results["students"]["kd"]
    assert [run["seed"] for run in entry["runs"]] == [0, 1]
    accuracies = [run["accuracy"] for run in entry["runs"]]
    assert entry["accuracy_mean"] == pytest.approx(sum(accuracies) / 2)
    assert "±" in format_results_table(results) and results["student_dir"] is None


def test_command_line(quick, tmp_path, capsys):
    out, _ = quick
    argv = ["--output_dir", str(tmp_path), "--methods", "rkd", "--seeds", "0", "--max_steps", "1"]
    main([*argv, "--teacher_path", str(out / "teacher"), "--student_train_samples", "100", "--quiet"])
    printed = capsys.readouterr().out
    assert "distilled: rkd" in printed and "CE only (baseline)" in printed
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["settings"]["student_train_samples"] == 100
    assert (tmp_path / "student" / "config.json").is_file()


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="`seeds` is empty"):
        run_quickstart(str(tmp_path), seeds=[])
    with pytest.raises(ValueError, match="`methods` is empty"):
        run_quickstart(str(tmp_path), methods=[])
    with pytest.raises(SystemExit):
        main(["--help"])


def test_saved_student_card_reports_its_test_accuracy(quick):
    out, results = quick
    card = (out / "student" / "README.md").read_text()
    assert "No evaluation results yet" not in card
    accuracy = results["students"]["rrd+kd"]["runs"][0]["accuracy"]
    assert f"{100 * accuracy:.2f}%" in card
    assert (out / "student" / "training_curves.png").exists()
