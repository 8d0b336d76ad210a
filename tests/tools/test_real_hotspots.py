"""tools.studies.real_hotspots: --help, its table and disc choice by hand, and a tiny run
end to end (an untrained width-1/16 model on a 3-patient phantom cohort)."""

import importlib
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from spine_tf import tasks

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def study(monkeypatch, tmp_path):
    """The study module, with benchlib's repository root (docs/ is written there) in tmp_path."""
    monkeypatch.syspath_prepend(str(REPO))
    module = importlib.import_module("tools.studies.real_hotspots")
    monkeypatch.setattr(module.benchlib, "REPO", str(tmp_path))
    return module


def test_help_as_a_module():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-m", "tools.studies.real_hotspots", "--help"],
                            cwd=REPO, env=env, capture_output=True, encoding="utf-8",
                            check=False, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("usage: python -m tools.studies.real_hotspots ")
    for option in ("--run-dir", "--split", "--augmentations", "--discs", "--pictures",
                   "--json", "--section"):
        assert option in result.stdout


def test_table_by_hand(study):
    def figure(value, interval=None):
        return {"value": value, "interval": interval}

    def task(fraction, own):
        return {"upper_fraction": fraction, "own_half": own, "fractions": []}

    none = {"discs": 0, "patients": 0, "upper_task": task(figure(None), figure(None)),
            "lower_task": task(figure(None), figure(None)), "difference": figure(None)}
    upper_only = {"discs": 3, "patients": 2,
                  "upper_task": task(figure(0.8, [0.7, 0.9]), figure(1.0, [1.0, 1.0])),
                  "lower_task": task(figure(0.75), figure(0.0)),
                  "difference": figure(0.05, [-0.01, 0.1])}
    text = study.specificity_table({"endplate": {
        "upper_task": "endplate_upper", "lower_task": "endplate_lower",
        "upper_only": upper_only, "lower_only": none, "both": none}})
    lines = text.splitlines()
    assert lines[0] == "**endplate**"
    assert lines[2] == ("| labelled defect | discs (patients) | endplate_upper: upper fraction | "
                        "endplate_upper: in upper half | endplate_lower: upper fraction | "
                        "endplate_lower: in lower half | difference |")
    assert lines[4] == ("| upper only | 3 (2) | 0.80 [0.70, 0.90] | 100 % [100, 100] | 0.75 | "
                        "0 % | 0.05 [-0.01, 0.10] |")
    assert lines[5] == "| lower only | 0 (0) | n/a | n/a | n/a | n/a | n/a |"
    assert lines[6].startswith("| both sides | 0 (0) |")


def test_pictures_take_one_disc_per_patient_in_turn(study):
    assert study.spread([(0, "a"), (1, "a"), (2, "b"), (3, "a"), (4, "c")], 4) == [0, 2, 4, 1]
    assert study.spread([(5, "a")], 3) == [5]
    spider = tasks.TASK_SETS["spider"]

    def labels(upper, lower, modic):
        out = {t: 0 for t in spider.names}
        out.update(endplate_upper=upper, endplate_lower=lower, modic=modic)
        return out

    rows = [(labels(1, 1, 1), "a"), (labels(1, 0, 0), "a"), (labels(1, 0, 1), "a"),
            (labels(1, 0, 0), "b"), (labels(0, 1, 0), "c"), (labels(0, 0, 0), "d"),
            (labels(-1, 1, 1), "d")]
    plan = study.picture_plan(rows, spider, 4)
    # two upper-only of different patients, the one lower-only, one "both" to fill up
    assert plan["endplate"] == (("endplate_upper", "endplate_lower"), [1, 3, 4, 0])
    assert plan["modic"] == (("modic",), [0, 6, 2])
    assert set(plan) == {"endplate", "modic"}


def test_tiny_phantom_run_end_to_end(study, tmp_path, capsys):
    from spine_tf import config as config_lib
    from spine_tf.evaluation import runs
    from spine_tf.modeling.model import build_model
    run = tmp_path / "run"
    run.mkdir()
    config = config_lib.override(config_lib.ExperimentConfig(), [
        "data.patients=3", "data.seed=24", "data.workers=1",
        f"data.data_dir={os.fspath(tmp_path / 'tfds')!r}", "model.width=0.0625"])
    config_lib.save(config, os.fspath(run / "config.json"))
    build_model(width=0.0625).save(run / "best.keras")
    saved = tmp_path / "out.json"
    assert study.main(["--run-dir", os.fspath(run), "--split", "all", "--augmentations", "2",
                       "--resamples", "20", "--pictures", "2", "--json", os.fspath(saved),
                       "--section", "Real hotspots, tiny"]) == 0
    capsys.readouterr()
    result = json.loads(saved.read_text(encoding="utf-8"))
    assert (result["task_set"], result["split"], result["augmentations"]) == ("paper", "all", 2)
    # the groups hold exactly the discs labelled so, counted from the dataset by hand
    _, data, _ = runs.run_model_and_split(os.fspath(run), "all", "best.keras")
    labels = [e["labels"] for e in data.as_numpy_iterator()]
    for kind, (upper, lower) in {"endplate": ("endplate_upper", "endplate_lower"),
                                 "marrow": ("marrow_upper", "marrow_lower")}.items():
        for group, wanted in (("upper_only", (1, 0)), ("lower_only", (0, 1)), ("both", (1, 1))):
            count = sum((int(lab[upper]), int(lab[lower])) == wanted for lab in labels)
            entry = result["specificity"][kind][group]
            assert entry["discs"] == count == len(entry["upper_task"]["fractions"])
            assert all(0.0 < f < 1.0 for f in entry["upper_task"]["fractions"])
    assert sum(result["specificity"]["marrow"][g]["discs"] for g in ("upper_only", "lower_only")) \
        > 0
    # pictures in docs/results/ by default, linked from the section with their captions
    results_dir = tmp_path / "docs" / "results"
    text = (results_dir / "hotspots.md").read_text(encoding="utf-8")
    assert "<!-- Real hotspots, tiny -->" in text and "| upper only |" in text
    labelled = {(1, 0), (0, 1), (1, 1)}
    assert [p["path"] for p in result["pictures"]] == [
        os.fspath(results_dir / f"real_hotspots_{kind}.png") for kind in ("endplate", "marrow")
        if any((int(lab[f"{kind}_upper"]), int(lab[f"{kind}_lower"])) in labelled
               for lab in labels)]
    assert result["pictures"]
    for picture in result["pictures"]:
        image = np.asarray(Image.open(picture["path"]))
        rows = len(picture["discs"])
        # one row per disc (title, 112 rows, gap), two task panels of 3 slices side by side
        assert image.shape == (rows * (112 + 14 + 2) - 2, 2 * (3 * 226 - 2) + 8, 3)
        assert 1 <= rows <= 2
        for disc in picture["discs"]:
            assert 1 in disc["labels"].values()
        name = os.path.basename(picture["path"])
        assert f"![{name}]({name})" in text
