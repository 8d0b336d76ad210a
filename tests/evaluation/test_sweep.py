"""Evaluating runs and the branch-point sweep (tiny models, one epoch)."""

import json
import os
import pathlib

import pytest

from spine_tf import config as config_lib
from spine_tf import cli, tasks
from spine_tf.evaluation import sweep
from spine_tf.training.rundir import RunDir


@pytest.mark.slow
def test_sweep_trains_both_split_orders_and_tabulates(tmp_path):
    base = config_lib.override(config_lib.ExperimentConfig(), [
        "data.patients=5", "data.seed=24", "data.workers=2",
        f"data.data_dir={os.fspath(tmp_path / 'tfds')!r}", "model.width=0.0625",
        "pipeline.batch_size=8", "train.epochs=1"])
    out = os.fspath(tmp_path / "sweep")
    table = sweep.sweep(base, out, branch_points=["conv5", "fc7"])
    assert list(table["rows"]) == ["conv5", "fc7"]
    assert table["runs"] == {"conv5_plain": "conv5", "conv5_swapped": "conv5",
                             "fc7_plain": "fc7", "fc7_swapped": "fc7"}
    for point in ("conv5", "fc7"):
        for swap, split in (("plain", "test"), ("swapped", "validation")):
            run = os.path.join(out, f"{point}_{swap}")
            with open(os.path.join(run, "config.json"), encoding="utf-8") as f:
                config = json.load(f)
            assert config["model"]["branch_point"] == point
            seed = int(swap == "swapped")  # the second run is a second training
            assert config["train"]["seed"] == seed and config["pipeline"]["seed"] == seed
            report = os.path.join(run, f"evaluation_{split}", "evaluation.json")
            with open(report, encoding="utf-8") as f:
                result = json.load(f)
            for task in tasks.TASKS:  # the table holds exactly the runs' scores
                score = result["tasks"][task.name]["balanced_accuracy_tta"]
                assert score in table["rows"][point][task.name]
    assert all(len(v) == 2 for v in table["intra_rater"].values())
    text = open(os.path.join(out, "sweep.md"), encoding="utf-8").read()
    assert "| conv5 |" in text and "| intra-rater |" in text and "±" in text
    # resumable: a second call trains nothing and gives the same table; with also_data
    # it only scores the four runs on the other dataset
    mtime = os.path.getmtime(os.path.join(out, "conv5_plain", "final.keras"))
    also = ("patients=3", "seed=25")
    again = sweep.sweep(base, out, branch_points=["conv5", "fc7"], also_data=also)
    assert again["rows"] == table["rows"]
    assert os.path.getmtime(os.path.join(out, "conv5_plain", "final.keras")) == mtime
    for point in ("conv5", "fc7"):
        scores = []
        for swap in ("plain", "swapped"):
            report = os.path.join(out, f"{point}_{swap}", "evaluation_patients3_seed25_all",
                                  "evaluation.json")
            with open(report, encoding="utf-8") as f:
                result = json.load(f)
            assert result["data"] == list(also) and result["split"] == "all"
            scores.append(result["tasks"]["pfirrmann"]["balanced_accuracy_single_view"])
        assert again["also"]["rows"][point]["pfirrmann"] == scores
    assert all(len(v) == 1 for v in again["also"]["intra_rater"].values())  # same readers once
    assert "single view on every split of `patients=3 seed=25`" in sweep.markdown(again)


def test_runs_without_swap_one_per_row():
    base = config_lib.ExperimentConfig()
    runs = sweep._runs(base, ["conv5", "none"], True, swaps=(False,))
    assert [name for name, *_ in runs] == (
        ["conv5_plain", "none_plain"] + [f"single_{t.name}_plain" for t in tasks.TASKS])
    assert not any(config.data.swap_validation_test for *_, config in runs)
    assert {(config.train.seed, config.pipeline.seed) for *_, config in runs} == {(0, 0)}
    assert [config.model.branch_point for *_, config in runs[:2]] == ["conv5", "none"]
    assert runs[2][3].train.task_weights == {tasks.TASKS[0].name: 1.0}


def test_repeats_add_runs_with_further_seeds_and_keep_the_first_names():
    base = config_lib.override(config_lib.ExperimentConfig(), ["train.seed=7"])
    runs = sweep._runs(base, ["conv5"], True, repeats=2)
    assert [(name, c.train.seed, c.pipeline.seed, c.data.swap_validation_test)
            for name, _, _, c in runs[:4]] == [
        ("conv5_plain", 7, 0, False), ("conv5_swapped", 8, 1, True),
        ("conv5_plain_2", 9, 2, False), ("conv5_swapped_2", 10, 3, True)]
    single = runs[4:]
    assert len(single) == 4 * len(tasks.TASKS)
    assert [name for name, *_ in single[:4]] == [
        f"single_{tasks.TASKS[0].name}_{s}" for s in ("plain", "swapped", "plain_2",
                                                      "swapped_2")]
    assert {c.train.task_weights[tasks.TASKS[0].name] for *_, c in single[:4]} == {1.0}
    unswapped = sweep._runs(base, ["none"], False, swaps=(False,), repeats=3)
    assert [(name, c.train.seed) for name, _, _, c in unswapped] == [
        ("none_plain", 7), ("none_plain_2", 8), ("none_plain_3", 9)]
    with pytest.raises(ValueError, match="repeats must be at least 1"):
        sweep._runs(base, ["none"], False, repeats=0)


def test_sweep_tabulates_finished_runs_and_reads_each_reader_once(tmp_path):
    """A sweep over runs evaluated already: no training, each run's score in its row."""
    base = config_lib.ExperimentConfig()
    also = ("patients=9",)
    runs = sweep._runs(base, ["conv5", "fc7"], False, repeats=2)
    for number, (name, _, _, config) in enumerate(runs):
        for split, score in ((config.data.test_split, number / 100),
                             ("all", number / 100 + 0.5)):
            folder = pathlib.Path(RunDir(tmp_path / name).evaluation(
                split, also if split == "all" else ()))
            folder.mkdir(parents=True)
            figures = {"balanced_accuracy_tta": score if split != "all" else None,
                       "balanced_accuracy_single_view": score,
                       "intra_rater": 0.9 if config.data.swap_validation_test else 0.8}
            (folder / "evaluation.json").write_text(json.dumps(
                {"tasks": {t.name: figures for t in tasks.TASKS}}))
    table = sweep.sweep(base, os.fspath(tmp_path), branch_points=["conv5", "fc7"],
                        also_data=also, repeats=2)
    assert table["rows"]["conv5"]["pfirrmann"] == pytest.approx([0.0, 0.01, 0.02, 0.03])
    assert table["rows"]["fc7"]["narrowing"] == pytest.approx([0.04, 0.05, 0.06, 0.07])
    assert table["also"]["rows"]["fc7"]["pfirrmann"] == pytest.approx([0.54, 0.55, 0.56, 0.57])
    # the test table's readers: the plain run's test split and the swapped run's, once each
    assert table["intra_rater"]["pfirrmann"] == [0.8, 0.9]
    assert table["also"]["intra_rater"]["pfirrmann"] == [0.8]  # one dataset, one reading
    assert table["runs_per_row"] == 4 and table["swap"] is True
    text = open(tmp_path / sweep.SWEEP_MARKDOWN, encoding="utf-8").read()
    assert "mean ± std over 4 runs" in text and text.count("Permutation p-values") == 2
    # conv5_plain_2 of this sweep has seeds + 2; a sweep without swaps would give it + 1
    config_lib.save(runs[2][3], os.fspath(tmp_path / "conv5_plain_2" / "config.json"))
    assert sweep.sweep(base, os.fspath(tmp_path), branch_points=["conv5", "fc7"],
                       also_data=also, repeats=2)["rows"] == table["rows"]
    with pytest.raises(ValueError, match=r"conv5_plain_2 holds a run with other settings "
                                         r"\(pipeline.seed: 2 -> 1; train.seed: 2 -> 1\)"):
        sweep.sweep(base, os.fspath(tmp_path), branch_points=["conv5"], swap=False,
                    repeats=2)
    with pytest.raises(SystemExit, match=r"^spine-tf sweep: .*conv5_plain_2 holds a run with "
                                         r"other settings"):
        cli.main(["sweep", "--out", os.fspath(tmp_path), "--branch-points", "conv5",
                  "--no-swap", "--repeats", "2"])
    with pytest.raises(SystemExit, match="--repeats must be at least 1"):
        cli.main(["sweep", "--out", os.fspath(tmp_path), "--repeats", "0"])


def test_markdown_names_the_runs_behind_the_spread():
    names = [t.name for t in tasks.TASKS]
    table = {"rows": {"conv5": {n: [0.5, 0.7, 0.5, 0.7] for n in names}},
             "intra_rater": {n: [0.8] for n in names}, "runs_per_row": 4, "swap": True}
    text = sweep.markdown(table)
    assert "mean ± std over 4 runs, every second one with validation and test swapped" in text
    assert "| conv5 | 60.0 ± 10.0 |" in text
    table.update(runs_per_row=3, swap=False)
    assert "mean ± std over 3 runs with other seeds" in sweep.markdown(table)


def test_swapped_run_is_a_second_training():
    base = config_lib.override(config_lib.ExperimentConfig(), ["train.seed=7",
                                                               "pipeline.seed=3"])
    (_, _, _, plain), (_, _, _, swapped), *single = sweep._runs(base, ["fc6"], True)
    assert (plain.train.seed, plain.pipeline.seed, plain.data.test_split) == (7, 3, "test")
    assert (swapped.train.seed, swapped.pipeline.seed, swapped.data.test_split) == (
        8, 4, "validation")
    assert swapped.model.branch_point == "fc6" and swapped.train.task_weights is None
    assert [(c.train.seed, c.data.swap_validation_test) for *_, c in single[:2]] == [
        (7, False), (8, True)]


def test_markdown_table_mean_and_std():
    names = [t.name for t in tasks.TASKS]
    table = {"rows": {"conv5": {n: [0.5, 0.7] for n in names}},
             "intra_rater": {n: [0.8] for n in names}}
    text = sweep.markdown(table)
    assert "| conv5 | 60.0 ± 10.0 |" in text
    assert "| intra-rater | 80.0 |" in text  # one value: no spread shown
    assert "mean ± std over two runs" in text and "single view" not in text
    assert "Permutation" not in text  # one branch point: nothing to compare


def test_markdown_says_whether_rows_differ_more_than_their_runs():
    names = [t.name for t in tasks.TASKS]
    apart = {"rows": {"conv1": {n: [0.50, 0.51] for n in names},
                      "conv5": {n: [0.70, 0.71] for n in names},
                      "none": {n: [0.90, 0.91] for n in names}},
             "intra_rater": {n: [] for n in names}, "branch_points": ["conv1", "conv5", "none"]}
    # 6!/2**3 = 90 deals, 3! = 6 of them keep the rows apart: p = 6/90
    p_values = sweep.row_differences(apart, apart["branch_points"])
    assert set(p_values) == set(names) | {"mean"}
    assert all(p == pytest.approx(6 / 90, abs=0.01) for p in p_values.values())
    crossed = dict(apart, rows={"conv1": {n: [0.5, 0.9] for n in names},
                                "conv5": {n: [0.6, 0.8] for n in names},
                                "none": {n: [0.7, 0.7] for n in names}})
    assert sweep.row_differences(crossed, apart["branch_points"])["mean"] == 1.0
    text = sweep.markdown(apart)
    assert "pfirrmann 0.07" in text and "mean over the tasks 0.07" in text
    assert [sweep._p_text(p) for p in (0.0001, 0.0046, 0.031, 0.41)] == [
        "< 0.001", "0.005", "0.03", "0.41"]
    # a single-task row is not a branch point; one run per row has no spread to compare
    with_single = dict(apart, rows=dict(apart["rows"], **{"single-task (conv5)": {
        n: [0.1, 0.1] for n in names}}))
    assert sweep.row_differences(with_single, apart["branch_points"]) == p_values
    assert sweep.row_differences(
        dict(apart, rows={r: {n: v[:1] for n, v in s.items()} for r, s in apart["rows"].items()}),
        apart["branch_points"]) is None


def test_markdown_one_run_per_row_and_also_table():
    names = [t.name for t in tasks.TASKS]
    table = {"rows": {"none": {n: [0.5] for n in names}}, "intra_rater": {n: [] for n in names},
             "runs_per_row": 1,
             "also": {"rows": {"none": {n: [0.625] for n in names}},
                      "intra_rater": {n: [0.75] for n in names}, "data": ["seed=1"]}}
    test_part, also_part = sweep.markdown(table).split("single view on every split")
    assert "one run per row" in test_part and "| none | 50.0 |" in test_part
    assert "| intra-rater | – |" in test_part
    assert "`seed=1`" in also_part and "| none | 62.5 |" in also_part
    assert "| intra-rater | 75.0 |" in also_part
