"""The shipped grading model: predict without --model on a real PNG, evaluate and export it by
name, and its card (what it was trained on, and the credit SPIDER's licence asks for)."""

import json
import os

import pytest

from spine_tf import tasks
from spine_tf.cli import main
from spine_tf.modeling import shipped


def test_the_card_names_the_data_and_its_licence():
    card = shipped.shipped_card()
    assert card["task_set"] == "spider" and card["input_slices"] == 1
    assert "165 SPIDER patients" in card["trained_on"]
    assert "CC BY 4.0" in card["licence"] and "van der Graaf" in card["credit"]
    assert os.path.getsize(shipped.SHIPPED_MODEL) < 25 * 2**20
    readme = open(os.path.join(shipped.WEIGHTS, "README.md"), encoding="utf-8").read()
    assert "CC BY 4.0" in readme and "Scientific Data 11, 264" in readme


def test_the_card_describes_the_shipped_weights():
    from spine_tf.modeling import model as model_lib
    model = model_lib.load_model(shipped.SHIPPED)
    assert model.count_params() == shipped.shipped_card()["parameters"]
    assert model_lib.input_slices(model) == shipped.shipped_card()["input_slices"]
    assert model_lib.task_set(model).name == shipped.shipped_card()["task_set"]
    # the mean of two networks, as the card says, each with its own input mean
    assert "the mean of two" in shipped.shipped_card()["model"]
    assert len(model_lib.channel_means(model)) == 2


def test_predict_grades_a_real_slice_without_a_model_option(spider_slices_dir, tmp_path):
    main(["predict", os.fspath(spider_slices_dir / "images" / "104_t2.png"), "--out",
          os.fspath(tmp_path), "--no-hotspots", "--no-tta"])
    record = json.loads((tmp_path / "104_t2" / "grades.json").read_text())
    assert record["model"].startswith(shipped.shipped_card()["model"])
    assert "trained on 1,154 lumbar discs" in record["model"]
    assert record["task_set"] == "spider" and record["input_slices"] == 1
    assert [d["level"] for d in record["discs"]] == list(tasks.LEVELS)
    assert "trained on 1,154 lumbar discs" in (tmp_path / "104_t2" / "report.html").read_text()


def test_evaluate_scores_the_shipped_model_by_name(spider_subset_dir, tmp_path):
    main(["evaluate", "--model", "shipped", "--data", "config=spider_slices", "--data",
          f"manual_dir={spider_subset_dir}", "--data", f"data_dir={tmp_path / 'tfds'}",
          "--split", "all", "--out", os.fspath(tmp_path / "out"), "--no-tta"])
    result = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert result["task_set"] == "spider" and result["discs"] >= 24
    # the subset's patients trained the shipped model: this checks the plumbing, not accuracy
    assert result["tasks"]["pfirrmann"]["balanced_accuracy_single_view"] > 0.2


@pytest.mark.slow
def test_export_the_shipped_model_by_name(tmp_path):
    from spine_tf.serving import export
    main(["export", "--model", "shipped", "--base", os.fspath(tmp_path), "--name", "spine"])
    metadata = export.read_metadata(os.fspath(tmp_path / "spine" / "1"))
    assert metadata["task_set"] == "spider" and metadata["input_slices"] == 1
    assert metadata["tta_views"] == 9
    assert metadata["training_config"]["shipped"]["credit"].startswith("SPIDER")
