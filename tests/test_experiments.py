"""Evaluating runs and the branch-point sweep (tiny models, one epoch)."""

import json
import os

import pytest

from spine_tf import config as config_lib
from spine_tf import experiments, tasks


@pytest.mark.slow
def test_sweep_trains_both_split_orders_and_tabulates(tmp_path):
    base = config_lib.override(config_lib.ExperimentConfig(), [
        "data.patients=5", "data.seed=24", "data.workers=2",
        f"data.data_dir={os.fspath(tmp_path / 'tfds')!r}", "model.width=0.0625",
        "pipeline.batch_size=8", "train.epochs=1"])
    out = os.fspath(tmp_path / "sweep")
    table = experiments.sweep(base, out, branch_points=["conv5", "fc7"])
    assert list(table["rows"]) == ["conv5", "fc7"]
    for point in ("conv5", "fc7"):
        for swap, split in (("plain", "test"), ("swapped", "validation")):
            run = os.path.join(out, f"{point}_{swap}")
            with open(os.path.join(run, "config.json"), encoding="utf-8") as f:
                config = json.load(f)
            assert config["model"]["branch_point"] == point
            report = os.path.join(run, f"evaluation_{split}", "evaluation.json")
            with open(report, encoding="utf-8") as f:
                result = json.load(f)
            for task in tasks.TASKS:  # the table holds exactly the runs' scores
                score = result["tasks"][task.name]["balanced_accuracy_tta"]
                assert score in table["rows"][point][task.name]
    assert all(len(v) == 2 for v in table["intra_rater"].values())
    text = open(os.path.join(out, "sweep.md"), encoding="utf-8").read()
    assert "| conv5 |" in text and "| intra-rater |" in text and "±" in text
    # resumable: a second call trains nothing and gives the same table
    mtime = os.path.getmtime(os.path.join(out, "conv5_plain", "final.keras"))
    assert experiments.sweep(base, out, branch_points=["conv5", "fc7"])["rows"] == table["rows"]
    assert os.path.getmtime(os.path.join(out, "conv5_plain", "final.keras")) == mtime


def test_markdown_table_mean_and_std():
    names = [t.name for t in tasks.TASKS]
    table = {"rows": {"conv5": {n: [0.5, 0.7] for n in names}},
             "intra_rater": {n: [0.8] for n in names}}
    text = experiments.markdown(table)
    assert "| conv5 | 60.0 ± 10.0 |" in text
    assert "| intra-rater | 80.0 ± 0.0 |" in text
