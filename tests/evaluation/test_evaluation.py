"""Evaluation: metrics with and without TTA, intra-rater ceiling, the written report."""

import csv
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from spine_tf import tasks, tta
from spine_tf.evaluation import evaluate as evaluation
from spine_tf.modeling import metrics
from spine_tf.io import pictures as report
from spine_tf.io.codec import from_stored, to_stored
from spine_tf.modeling.model import build_model

N = 12


def _volumes(n, seed):
    """Blocky volumes that differ in structure (random noise gives one prediction for all)."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 112, 224, 9), np.float32)
    for d in range(n):
        for _ in range(3):
            r, c = rng.integers(0, 80), rng.integers(0, 180)
            h, w = rng.integers(10, 40), rng.integers(10, 60)
            x[d, r:r + h, c:c + w, rng.integers(0, 9, size=4)] = rng.random()
    return x


def _split(stored, labels, reread):
    """A raw spine_discs split as tfds gives it (plus a field evaluate must ignore)."""
    return tf.data.Dataset.from_tensor_slices({
        "disc_volume": stored,
        "labels": {k: v.astype(np.int32) for k, v in labels.items()},
        "labels_reread": {k: v.astype(np.int32) for k, v in reread.items()},
        "patient_id": np.array([f"p{d // 6:03d}" for d in range(N)]),
        "level": np.arange(N) % len(tasks.LEVELS),
        "spacing_mm": np.ones((N, 3), np.float32),
    })


@pytest.fixture(scope="module")
def case():
    keras.utils.set_random_seed(0)
    model = build_model(width=0.0625)
    stored = to_stored(_volumes(N, seed=0))
    volumes = from_stored(stored).numpy()
    # predictions computed independently of evaluate: the TTA ones by tta.predict (tested
    # against a hand loop in test_tta), the single-view ones straight from the model
    with_tta = [p.argmax(1) for p in tta.predict(model, volumes)]
    single = [np.asarray(logits).argmax(1) for logits in model.predict_on_batch(volumes)]
    rng = np.random.default_rng(1)
    labels, reread = {}, {}
    for task, t_pred in zip(tasks.TASKS, with_tta):
        # mostly the TTA prediction (so TTA and single view score differently), some other
        # classes, two missing
        truth = np.where(rng.random(N) < 0.6, t_pred, rng.integers(0, task.num_classes, N))
        truth[[3, 8]] = -1
        second = np.where(rng.random(N) < 0.7, truth, rng.integers(0, task.num_classes, N))
        second[5] = -1
        labels[task.name], reread[task.name] = truth, second
    return {"model": model, "stored": stored, "with_tta": with_tta, "single": single,
            "labels": labels, "reread": reread, "result": evaluation.evaluate(
                model, _split(stored, labels, reread), batch_size=5)}


def test_balanced_accuracies_intra_rater_and_confusion_match_the_metrics(case):
    result = case["result"]
    assert result["discs"] == N and result["tta"] is True
    assert list(result["tasks"]) == list(tasks.TASK_NAMES)
    differs = 0
    for n, task in enumerate(tasks.TASKS):
        r, truth = result["tasks"][task.name], case["labels"][task.name]
        tta_acc = metrics.balanced_accuracy(truth, case["with_tta"][n], task.num_classes)
        single_acc = metrics.balanced_accuracy(truth, case["single"][n], task.num_classes)
        assert r["balanced_accuracy_tta"] == pytest.approx(tta_acc)
        assert r["balanced_accuracy_single_view"] == pytest.approx(single_acc)
        differs += not np.isclose(tta_acc, single_acc)
        assert r["intra_rater"] == pytest.approx(
            metrics.agreement(truth, case["reread"][task.name], task.num_classes))
        expected = metrics.confusion_matrix(truth, case["with_tta"][n], task.num_classes)
        assert r["confusion_matrix"] == expected.tolist()
        assert r["support"] == np.bincount(truth[truth >= 0], minlength=task.num_classes).tolist()
        assert r["labelled_discs"] == N - 2 and r["class_names"] == list(task.class_names)
    assert differs >= 1  # the two predictions are really told apart
    expected = metrics.lootus(case["labels"]["pfirrmann"], case["with_tta"][0],
                              case["labels"]["narrowing"], case["with_tta"][1])
    assert result["lootus"] == pytest.approx(expected)


def test_per_disc_predictions_keep_order_ids_and_probabilities(case):
    predictions = case["result"]["predictions"]
    assert [p["patient_id"] for p in predictions] == [f"p{d // 6:03d}" for d in range(N)]
    assert [p["level"] for p in predictions] == [tasks.LEVELS[d % 6] for d in range(N)]
    expected = tta.predict(case["model"], from_stored(case["stored"]).numpy())
    for n, task in enumerate(tasks.TASKS):
        got = np.array([p["probabilities"][task.name] for p in predictions])
        np.testing.assert_allclose(got, expected[n], atol=1e-6)
        assert [p["labels"][task.name] for p in predictions] == \
            case["labels"][task.name].tolist()


def test_without_reread_or_tta(case):
    missing = {k: np.full(N, -1) for k in case["reread"]}
    result = evaluation.evaluate(case["model"], _split(case["stored"], case["labels"], missing),
                                 tta=False)
    assert result["tta"] is False
    for n, task in enumerate(tasks.TASKS):
        r = result["tasks"][task.name]
        assert r["intra_rater"] is None and r["balanced_accuracy_tta"] is None
        assert r["balanced_accuracy_single_view"] == \
            case["result"]["tasks"][task.name]["balanced_accuracy_single_view"]
        # confusion matrices and probabilities are then the single view's
        expected = metrics.confusion_matrix(case["labels"][task.name], case["single"][n],
                                            task.num_classes)
        assert r["confusion_matrix"] == expected.tolist()
    # a split without the labels_reread feature at all
    bare = _split(case["stored"], case["labels"], missing).map(
        lambda e: {k: v for k, v in e.items() if k != "labels_reread"})
    result = evaluation.evaluate(case["model"], bare, tta=False)
    assert all(r["intra_rater"] is None for r in result["tasks"].values())


def test_intervals_are_percentiles_over_whole_patient_resamples(case):
    result = case["result"]
    assert result["interval"] == {"method": "percentile, patients resampled with replacement",
                                  "resamples": metrics.BOOTSTRAP_RESAMPLES, "level": 0.95,
                                  "patients": 2}
    samples = metrics.patient_bootstrap([f"p{d // 6:03d}" for d in range(N)])
    for n, task in enumerate(tasks.TASKS):
        truth, reread = case["labels"][task.name], case["reread"][task.name]
        ci = result["tasks"][task.name]["intervals"]
        tta_acc, single_acc, gap = [], [], []
        for idx in samples:
            tta_acc.append(metrics.balanced_accuracy(truth[idx], case["with_tta"][n][idx],
                                                     task.num_classes))
            single_acc.append(metrics.balanced_accuracy(truth[idx], case["single"][n][idx],
                                                        task.num_classes))
            gap.append(tta_acc[-1] - metrics.agreement(truth[idx], reread[idx], task.num_classes))
        # two patients: the resamples are p0 twice, p1 twice, or both (the whole split)
        assert ci["balanced_accuracy_tta"] == pytest.approx(np.percentile(tta_acc, [2.5, 97.5]))
        assert ci["balanced_accuracy_single_view"] == pytest.approx(
            np.percentile(single_acc, [2.5, 97.5]))
        assert ci["model_minus_intra_rater"] == pytest.approx(np.percentile(gap, [2.5, 97.5]))
        # paired: the difference's interval is not the difference of the two intervals
        low, high = ci["tta_minus_single_view"]
        assert low <= result["tasks"][task.name]["balanced_accuracy_tta"] - \
            result["tasks"][task.name]["balanced_accuracy_single_view"] <= high


def test_write_report(case, tmp_path):
    result = case["result"]
    paths = evaluation.write_report(result, str(tmp_path / "eval"), model_name="tiny")
    written = json.loads(open(paths["json"], encoding="utf-8").read())
    assert written["model"] == "tiny" and written["discs"] == N and "predictions" not in written
    assert written["tasks"] == json.loads(json.dumps(result["tasks"]))
    assert written["lootus"] == pytest.approx(result["lootus"])

    rows = list(csv.DictReader(open(paths["csv"], encoding="utf-8")))
    assert len(rows) == N
    assert rows[7]["patient_id"] == "p001" and rows[7]["level"] == tasks.LEVELS[1]
    for n, task in enumerate(tasks.TASKS):
        probabilities = np.array([[float(row[f"{task.name}_p_{c}"]) for c in task.class_names]
                                  for row in rows])
        grades = np.array([int(row[f"{task.name}_grade"]) for row in rows])
        np.testing.assert_array_equal(grades, case["with_tta"][n])
        np.testing.assert_array_equal(probabilities.argmax(1), grades)
        np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-5)
        assert [row[f"{task.name}_class"] for row in rows] == \
            [task.class_names[g] for g in grades]
        assert [int(row[f"{task.name}_truth"]) for row in rows] == \
            case["labels"][task.name].tolist()

    markdown = open(paths["markdown"], encoding="utf-8").read()
    assert ("| task | balanced acc. TTA | single view | intra-rater | model - intra-rater "
            "| discs |") in markdown
    first = result["tasks"]["pfirrmann"]
    ci = {k: [100 * v for v in pair] for k, pair in first["intervals"].items()}
    assert (f"| pfirrmann | {100 * first['balanced_accuracy_tta']:.1f} % "
            f"({ci['balanced_accuracy_tta'][0]:.1f}-{ci['balanced_accuracy_tta'][1]:.1f}) | "
            f"{100 * first['balanced_accuracy_single_view']:.1f} % "
            f"({ci['balanced_accuracy_single_view'][0]:.1f}-"
            f"{ci['balanced_accuracy_single_view'][1]:.1f}) | "
            f"{100 * first['intra_rater']:.1f} % "
            f"({ci['intra_rater'][0]:.1f}-{ci['intra_rater'][1]:.1f}) | "
            f"{ci['model_minus_intra_rater'][0]:+.1f} to {ci['model_minus_intra_rater'][1]:+.1f} "
            f"| {N - 2} |") in markdown
    assert "bootstrap resamples of the 2 patients" in markdown
    assert "Genodisc" in markdown and "not ours" in markdown and "| pfirrmann | 71.2 % | 70.4 % |" \
        in markdown and "96.1 %" in markdown

    for task in tasks.TASKS:
        picture = Image.open(paths["confusion"][task.name])
        expected = report.confusion_matrix_picture(
            result["tasks"][task.name]["confusion_matrix"], task.class_names, f"{task.name} (TTA)")
        assert picture.mode == "RGB" and picture.size == expected.shape[1::-1]
        np.testing.assert_array_equal(np.asarray(picture), expected)
        assert picture.size[0] > task.num_classes * report.CELL_PX
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == sorted(
        ["evaluation.json", "evaluation.md", "predictions.csv"]
        + [f"confusion_{t}.png" for t in tasks.TASK_NAMES])


def test_confusion_matrix_picture_shades_cells_by_row_share():
    dark = np.array([8, 48, 107])
    diagonal = report.confusion_matrix_picture([[6, 0], [0, 3]], ["normal", "defect"], "t")
    anti = report.confusion_matrix_picture([[0, 6], [3, 0]], ["normal", "defect"], "t")
    assert diagonal.shape == anti.shape
    full = np.all(diagonal == dark, axis=-1)
    rows, cols = np.nonzero(full)
    # two full-share cells, on the diagonal: top-left and bottom-right
    assert full.sum() > 1.5 * report.CELL_PX ** 2
    assert rows.max() - rows.min() > report.CELL_PX and cols.max() - cols.min() > report.CELL_PX
    flipped = np.nonzero(np.all(anti == dark, axis=-1))
    assert flipped[1][flipped[0] == flipped[0].min()].min() > cols.min() + report.CELL_PX // 2
    five = report.confusion_matrix_picture(np.eye(5, dtype=int), list("12345"))
    assert five.shape[0] > diagonal.shape[0] + 3 * report.CELL_PX - 20
    with pytest.raises(ValueError):
        report.confusion_matrix_picture([[1, 2], [3, 4]], ["a", "b", "c"])
