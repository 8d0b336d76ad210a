"""tools.studies.real_grading: runs' evaluation.json files and the baseline's JSON side by side."""

import json
import os

from spine_tf import config as config_lib
from spine_tf.modeling.model import build_model
from spine_tf.training.rundir import RunDir
from tools.studies import real_grading


def _run(path, pfirrmann, calibration=None):
    run = RunDir(path)
    os.makedirs(run.evaluation("test"))
    model = build_model(width=0.0625, task_set="spider", input_slices=1)
    model.save(run.best_model)
    with open(run.config, "w", encoding="utf-8") as f:
        json.dump({"model": {"width": 0.0625, "branch_point": "conv5", "input_slices": 1,
                             "task_set": "spider", "dropout": 0.5},
                   "train": {"init_from": None}}, f)
    with open(run.training_time, "w", encoding="utf-8") as f:
        json.dump({"seconds": 12.4}, f)
    result = {"tta": True, "discs": 30, "interval": {"patients": 5},
              "lootus": {"pfirrmann_within_1": 0.9},
              "tasks": {"pfirrmann": {"balanced_accuracy_tta": pfirrmann,
                                      "intervals": {"balanced_accuracy_tta": [0.4, 0.7]}},
                        "modic": {"balanced_accuracy_tta": 0.6,
                                  "intervals": {"balanced_accuracy_tta": None}}}}
    if calibration:
        result["calibration"] = calibration
    with open(os.path.join(run.evaluation("test"), "evaluation.json"), "w",
              encoding="utf-8") as f:
        json.dump(result, f)
    return model.count_params()


def test_the_table_has_every_row_with_its_intervals(tmp_path, capsys):
    calibration = {"fitted_on": "validation", "tasks": {"pfirrmann": {
        "temperature": 1.5, "ece_before": 0.12, "ece_after": 0.05, "nll_before": 1.2,
        "nll_after": 1.1}}}
    parameters = _run(tmp_path / "a", 0.55, calibration)
    _run(tmp_path / "b", 0.5)
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({"protocols": {"held_out": {
        "scored_on": "test", "discs": 30, "patients": 5,
        "tasks": {"pfirrmann": {"balanced_accuracy": 0.44, "interval": [0.36, 0.52],
                                "within_one": 0.83, "within_one_interval": [0.7, 0.9]},
                  "modic": {"balanced_accuracy": 0.7, "interval": [0.6, 0.8]}}}}}))
    real_grading.main(["--run", f"scratch={tmp_path / 'a'}", "--run", f"other={tmp_path / 'b'}",
                       "--baseline", str(baseline), "--json", str(tmp_path / "rows.json")])
    text = capsys.readouterr().out
    assert "| scratch | 55.0 (40.0-70.0) | 60.0 | 90.0 | 30 (5) |" in text
    assert "| baseline: PCA + logistic regression | 44.0 (36.0-52.0) | 70.0 (60.0-80.0) | 83.0" \
        in text
    assert "| pfirrmann | 1.50 | 12.0 | 5.0 | 1.200 | 1.100 |" in text
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [r["label"] for r in rows] == ["scratch", "other", real_grading.BASELINE]
    assert rows[0]["parameters"] == parameters and rows[0]["training_seconds"] == 12.4


def test_an_ensemble_row_is_the_mean_of_its_runs_made_and_scored_here(tmp_path, monkeypatch,
                                                                      capsys):
    from spine_tf.evaluation import runs as runs_lib
    from spine_tf.modeling.model import load_model
    parameters = _run(tmp_path / "a", 0.55) + _run(tmp_path / "b", 0.5)
    scored = {}

    def evaluate_model(model, data, split, out_dir, name, calibrate_on=None):
        scored.update(model=model, split=split, out_dir=out_dir, name=name,
                      calibrate_on=calibrate_on)
        with open(os.path.join(RunDir(tmp_path / "a").evaluation("test"), "evaluation.json"),
                  encoding="utf-8") as f:
            result = json.load(f)
        result["tasks"]["pfirrmann"]["balanced_accuracy_tta"] = 0.61
        return result, out_dir

    monkeypatch.setattr(runs_lib, "evaluate_model", evaluate_model)
    monkeypatch.setattr(runs_lib, "run_data_config", lambda run_dir: config_lib.DataConfig())
    out = tmp_path / "ensembles"
    real_grading.main(["--ensemble", f"two={tmp_path / 'a'}+{tmp_path / 'b'}", "--ensemble-dir",
                       str(out), "--calibrate-on", "validation", "--json",
                       str(tmp_path / "rows.json")])
    assert scored["split"] == "test" and scored["calibrate_on"] == "validation"
    assert scored["out_dir"] == os.fspath(out / "two" / "evaluation_test")
    assert scored["model"].count_params() == parameters
    assert load_model(out / "two" / "ensemble.keras").count_params() == parameters
    row = json.loads((tmp_path / "rows.json").read_text())[0]
    assert (f"| two | 61.0 (40.0-70.0) | 60.0 | 90.0 | 30 (5) | {row['megabytes']} | 25 |"
            in capsys.readouterr().out)
    assert row["model"]["members"] == 2 and row["training_seconds"] == 24.8
    assert row["run"] == [os.fspath(tmp_path / "a"), os.fspath(tmp_path / "b")]
