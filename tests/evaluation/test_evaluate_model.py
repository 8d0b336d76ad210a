"""``spine-tf evaluate --model M --data config=spider_slices --data manual_dir=DIR --split all
--out OUT``: any model scored on any folder in the SPIDER slices layout."""

import csv
import json
import os

import numpy as np
import pytest

from spine_tf import tasks
from spine_tf.cli import main
from spine_tf.config import DataConfig
from spine_tf.modeling import metrics
from spine_tf.modeling.model import build_model
from spine_tf.training.train import data_dir_of


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    build_model(width=0.0625).save(path)
    return path


def _evaluate(model, folder, data_dir, out, *flags):
    main(["evaluate", "--model", os.fspath(model), "--data", "config=spider_slices",
          "--data", f"manual_dir={folder}", "--data", f"data_dir={data_dir}",
          "--split", "all", "--out", os.fspath(out), *flags])
    with open(out / "evaluation.json", encoding="utf-8") as f:
        result = json.load(f)
    with open(out / "predictions.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return result, rows


def test_a_model_file_scores_every_disc_of_a_folder(tiny_model_file, spider_subset_dir,
                                                    tmp_path, capsys):
    result, rows = _evaluate(tiny_model_file, spider_subset_dir, tmp_path / "tfds",
                             tmp_path / "out", "--no-tta")
    printed = capsys.readouterr().out
    assert "tiny.keras (Keras" in result["model"] and result["split"] == "all"
    assert result["data"] == ["config=spider_slices", f"manual_dir={spider_subset_dir}",
                              f"data_dir={tmp_path / 'tfds'}"]
    # every image's discs, both images of patient 127 apart
    assert result["discs"] == len(rows) >= 24
    assert {row["series"] for row in rows} == {
        "104_t2", "127_t2", "127_t2_SPACE", "151_t2", "100_t2"}
    assert result["interval"]["patients"] == 4
    for task in tasks.TASKS:
        truth = np.array([int(row[f"{task.name}_truth"]) for row in rows])
        grade = np.array([int(row[f"{task.name}_grade"]) for row in rows])
        reported = result["tasks"][task.name]
        assert reported["labelled_discs"] == int((truth >= 0).sum())
        if reported["labelled_discs"]:
            assert reported["balanced_accuracy_single_view"] == pytest.approx(
                metrics.balanced_accuracy(truth, grade, task.num_classes))
            assert reported["intervals"]["balanced_accuracy_single_view"] is not None
    assert result["tasks"]["marrow_upper"]["labelled_discs"] == 0  # SPIDER has no side
    assert "| pfirrmann |" in printed


def test_a_model_needs_an_out_folder(tiny_model_file, capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--model", os.fspath(tiny_model_file)])
    assert capsys.readouterr().err.strip() == (
        "spine-tf evaluate: error: --out is needed with --model (the report folder)")


def test_each_source_folder_gets_its_own_data_dir(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name / "images").mkdir(parents=True)
        (tmp_path / name / "series.csv").write_text("series,patient\n")
    first = data_dir_of(DataConfig(manual_dir=os.fspath(tmp_path / "a")))
    second = data_dir_of(DataConfig(manual_dir=os.fspath(tmp_path / "b")))
    assert first != second and os.path.basename(first).startswith("a-")
    assert data_dir_of(DataConfig(manual_dir=os.fspath(tmp_path / "a") + "/")) == first
    # a folder whose files change is built again, not read from its old build
    (tmp_path / "a" / "images" / "1_t2.png").write_bytes(b"new image")
    changed = data_dir_of(DataConfig(manual_dir=os.fspath(tmp_path / "a")))
    assert changed != first
    (tmp_path / "a" / "series.csv").write_text("series,patient\n1_t2,1\n")
    assert data_dir_of(DataConfig(manual_dir=os.fspath(tmp_path / "a"))) != changed
    assert data_dir_of(DataConfig(manual_dir="x", data_dir="given")) == "given"
    assert data_dir_of(DataConfig()) is None


def test_a_spider_model_trains_scores_and_grades_its_own_tasks(spider_subset_dir, tmp_path,
                                                               capsys):
    """The spider task set end to end on real slices: build (detector included), one epoch
    of a tiny 1-slice model, evaluate, and predict a PNG."""
    from spine_tf import config as config_lib
    from spine_tf.data import sources
    from spine_tf.training import train
    data_dir = tmp_path / "tfds"
    main(["build-data", "--config", "spider_slices", "--manual-dir", str(spider_subset_dir),
          "--data-dir", str(data_dir), "--workers", "1"])
    config = config_lib.preset("demo", assignments=[
        "data.config='spider_slices'", f"data.data_dir='{data_dir}'", "model.width=0.0625",
        "model.input_slices=1", "model.task_set='spider'", "train.epochs=1",
        "pipeline.batch_size=8"])
    run = tmp_path / "run"
    train.train(config, os.fspath(run), verbose=0)
    main(["evaluate", "--run-dir", os.fspath(run), "--no-tta", "--calibrate-on", "validation"])
    with open(run / "evaluation_test" / "evaluation.json", encoding="utf-8") as f:
        result = json.load(f)
    fitted = result["calibration"]
    assert fitted["fitted_on"] == "validation" and list(fitted["tasks"]) == list(result["tasks"])
    pfirrmann = fitted["tasks"]["pfirrmann"]
    assert pfirrmann["temperature"] > 0 and pfirrmann["discs"] == result["tasks"]["pfirrmann"][
        "labelled_discs"]
    assert 0 <= pfirrmann["ece_before"] <= 1 and 0 <= pfirrmann["ece_after"] <= 1
    assert (run / "evaluation_test" / "reliability_pfirrmann.svg").read_text().startswith("<svg")
    assert "## Calibration (a temperature per task, fitted on validation)" in (
        run / "evaluation_test" / "evaluation.md").read_text()
    spider = tasks.task_set("spider")
    assert result["task_set"] == "spider" and list(result["tasks"]) == list(spider.names)
    gradings = sources.read_spider_gradings(spider_subset_dir / "radiological_gradings.csv")
    with open(run / "evaluation_test" / "predictions.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    modic = [gradings[(row["patient_id"], row["level"])]["modic"] for row in rows]
    assert [int(row["modic_truth"]) for row in rows] == modic
    assert result["tasks"]["modic"]["labelled_discs"] == sum(m >= 0 for m in modic) > 0
    assert result["lootus"]["narrowing_binary"] == pytest.approx(
        result["tasks"]["narrowed"]["balanced_accuracy_single_view"])
    capsys.readouterr()
    main(["predict", os.fspath(spider_subset_dir / "images" / "100_t2.png"), "--model",
          os.fspath(run), "--out", os.fspath(tmp_path / "graded"), "--no-tta", "--no-hotspots"])
    with open(tmp_path / "graded" / "100_t2" / "grades.json", encoding="utf-8") as f:
        record = json.load(f)
    assert record["task_set"] == "spider" and record["input_slices"] == 1
    assert record["discs"] and all(list(d["tasks"]) == list(spider.names)
                                   for d in record["discs"])
    with open(tmp_path / "graded" / "grades.csv", encoding="utf-8") as f:
        header = next(csv.reader(f))
    assert "modic_grade" in header and "marrow_upper_grade" not in header


@pytest.mark.slow
def test_a_saved_model_scores_as_its_keras_file(tiny_model_file, spider_subset_dir, tmp_path):
    from spine_tf.serving import export
    exported = export.export_run(os.fspath(tiny_model_file), os.fspath(tmp_path / "models"),
                                 "tiny")
    data_dir = tmp_path / "tfds"
    keras_result, keras_rows = _evaluate(tiny_model_file, spider_subset_dir, data_dir,
                                         tmp_path / "keras")
    saved_result, saved_rows = _evaluate(exported, spider_subset_dir, data_dir, tmp_path / "saved")
    assert "SavedModel" in saved_result["model"] and saved_result["tta_views"] == 54
    for name, task in keras_result["tasks"].items():
        assert saved_result["tasks"][name]["balanced_accuracy_tta"] == pytest.approx(
            task["balanced_accuracy_tta"])
    for a, b in zip(keras_rows, saved_rows):
        assert a["series"] == b["series"] and a["pfirrmann_grade"] == b["pfirrmann_grade"]
        assert float(a["pfirrmann_p_1"]) == pytest.approx(float(b["pfirrmann_p_1"]), abs=1e-4)


def test_a_split_for_hotspots_or_a_study_is_built_with_the_detector(spider_subset_dir, tmp_path):
    """``runs.dataset_split`` (which ``spine-tf hotspots --run-dir``, evaluate and the study
    tools use) places the boxless images with the dataset's detector; without it the build
    would leave them out, and the cache would keep that."""
    import tensorflow_datasets as tfds
    from spine_tf.evaluation import runs
    data = DataConfig(config="spider_slices", manual_dir=os.fspath(spider_subset_dir),
                      data_dir=os.fspath(tmp_path))
    dataset, split = runs.dataset_split(data, "all")
    sources = {e["position_source"].decode() for e in tfds.as_numpy(dataset)}
    assert split == "all" and sources == {"boxes", "detector"}
