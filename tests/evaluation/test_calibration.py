"""Calibration measures and temperature scaling on synthetic predictions of known calibration."""

import json
import math
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
from scipy import special

from spine_tf import errors
from spine_tf.evaluation import calibration

SVG = "{http://www.w3.org/2000/svg}"


def _calibrated_binary(n, seed):
    """Two-class predictions whose confidence c is right with probability exactly c."""
    rng = np.random.default_rng(seed)
    confidence = rng.uniform(0.5, 1.0, n)
    predicted = rng.integers(0, 2, n)
    right = rng.uniform(size=n) < confidence
    labels = np.where(right, predicted, 1 - predicted)
    probabilities = np.empty((n, 2))
    probabilities[np.arange(n), predicted] = confidence
    probabilities[np.arange(n), 1 - predicted] = 1 - confidence
    return probabilities, labels


def _logit_model(n, classes, scale, seed):
    """Labels drawn from softmax(z); the model says softmax(z * scale)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, (n, classes))
    truth = special.softmax(z, axis=1)
    labels = (rng.uniform(size=(n, 1)) > truth.cumsum(axis=1)).sum(axis=1)
    return special.softmax(z * scale, axis=1), labels


def test_ece_is_small_when_calibrated_and_large_when_over_confident():
    p, y = _calibrated_binary(20000, seed=0)
    sharp = p ** 3 / (p ** 3).sum(axis=1, keepdims=True)
    calibrated, over_confident = (calibration.expected_calibration_error(q, y) for q in (p, sharp))
    assert calibrated < 0.02
    # Confidence c becomes c^3 / (c^3 + (1-c)^3) at unchanged accuracy: ~0.12 on average.
    assert over_confident > 0.08 and over_confident > 5 * calibrated


def test_ece_by_hand_on_four_discs():
    p = np.array([[0.9, 0.1], [0.78, 0.22], [0.3, 0.7], [0.45, 0.55]])
    y = np.array([0, 1, 1, 1])
    # 5 bins: 0.55 -> (0.4, 0.6], right: |1 - 0.55| = 0.45; 0.78 (wrong) and 0.7 (right)
    # -> (0.6, 0.8]: |0.5 - 0.74| = 0.24 for 2 discs; 0.9 -> (0.8, 1.0], right: 0.1.
    expected = (1 * 0.45 + 2 * 0.24 + 1 * 0.1) / 4
    assert calibration.expected_calibration_error(p, y, bins=5) == pytest.approx(expected)
    table = calibration.reliability(p, y, bins=5)
    assert [row["count"] for row in table] == [0, 0, 1, 2, 1]
    assert table[0]["confidence"] is None and table[0]["accuracy"] is None
    assert table[3] == pytest.approx({"lower": 0.6, "upper": 0.8, "count": 2,
                                      "confidence": 0.74, "accuracy": 0.5})


def test_bins_hold_their_upper_edge():
    p = np.array([[0.5, 0.5], [0.0, 1.0], [0.25, 0.75]])
    table = calibration.reliability(p, [0, 1, 0], bins=2)
    assert [row["count"] for row in table] == [1, 2]  # (0, 0.5] and (0.5, 1]
    assert table[1]["confidence"] == pytest.approx(0.875) and table[1]["accuracy"] == 0.5


def test_missing_labels_are_ignored():
    p, y = _logit_model(600, 4, 2.0, seed=1)
    noise = special.softmax(np.random.default_rng(2).normal(size=(200, 4)) * 5, axis=1)
    with_missing = np.concatenate([p, noise]), np.concatenate([y, np.full(200, -1)])
    for measure in (calibration.expected_calibration_error, calibration.fit_temperature,
                    calibration.negative_log_likelihood, calibration.reliability):
        assert measure(*with_missing) == measure(p, y)
    none_labelled = np.full(len(p), -1)
    assert math.isnan(calibration.expected_calibration_error(p, none_labelled))
    assert math.isnan(calibration.negative_log_likelihood(p, none_labelled))
    assert calibration.fit_temperature(p, none_labelled) == 1.0


def test_single_class_labels_give_temperature_one():
    p, _ = _logit_model(300, 3, 3.0, seed=3)
    assert calibration.fit_temperature(p, np.full(len(p), 2)) == 1.0


@pytest.mark.parametrize("scale, low, high", [(2.5, 2.25, 2.75), (0.5, 0.45, 0.55)])
def test_fit_temperature_recovers_the_known_temperature(scale, low, high):
    p, y = _logit_model(4000, 5, scale, seed=4)
    temperature = calibration.fit_temperature(p, y)
    assert low < temperature < high  # within 10 %
    assert (temperature > 1) == (scale > 1)
    nll = calibration.negative_log_likelihood
    assert nll(calibration.apply_temperature(p, temperature), y) < nll(p, y) - 0.05


def test_apply_temperature_keeps_the_grade_and_normalisation():
    p, _ = _logit_model(500, 5, 1.0, seed=5)
    for temperature in (0.3, 2.5, 10.0):
        scaled = calibration.apply_temperature(p, temperature)
        np.testing.assert_array_equal(scaled.argmax(axis=1), p.argmax(axis=1))
        np.testing.assert_allclose(scaled.sum(axis=1), 1.0, atol=1e-12)
        top = np.take_along_axis(scaled, p.argmax(axis=1)[:, None], axis=1)[:, 0]
        assert ((top < p.max(axis=1)) if temperature > 1 else (top > p.max(axis=1))).all()
    np.testing.assert_allclose(calibration.apply_temperature(p, 1.0), p, atol=1e-6)
    with pytest.raises(errors.UsageError, match="positive"):
        calibration.apply_temperature(p, 0.0)


def test_mismatched_inputs_are_refused():
    p, y = _logit_model(10, 3, 1.0, seed=6)
    with pytest.raises(errors.UsageError, match="labels"):
        calibration.expected_calibration_error(p, y[:5])
    with pytest.raises(errors.UsageError, match="0..2"):
        calibration.fit_temperature(p, np.full(10, 3))
    with pytest.raises(errors.UsageError, match="pfirrmann"):
        calibration.calibrate({}, {"pfirrmann": (p, y)})


def test_calibrate_fits_on_validation_and_reports_on_test_as_json():
    validation = {"pfirrmann": _logit_model(3000, 5, 2.5, seed=7),
                  "endplate_upper": _logit_model(3000, 2, 2.5, seed=8)}
    test_p, test_y = _logit_model(3000, 5, 2.5, seed=9)
    test_y[:100] = -1
    test = {"pfirrmann": (test_p, test_y), "endplate_upper": _logit_model(3000, 2, 2.5, seed=10),
            "narrowing": _logit_model(20, 4, 1.0, seed=11)}
    validation["narrowing"] = (test["narrowing"][0], np.full(20, -1))
    test["narrowing"] = (test["narrowing"][0], np.full(20, -1))
    report = calibration.calibrate(validation, test)
    json.loads(json.dumps(report, allow_nan=False))
    assert list(report) == ["pfirrmann", "endplate_upper", "narrowing"]
    grades = report["pfirrmann"]
    assert grades["temperature"] == pytest.approx(
        calibration.fit_temperature(*validation["pfirrmann"]))
    assert 2.25 < grades["temperature"] < 2.75
    assert grades["discs"] == 2900 and grades["validation_discs"] == 3000
    for task in ("pfirrmann", "endplate_upper"):
        row = report[task]
        assert row["ece_after"] < row["ece_before"] / 2 and row["ece_after"] < 0.04
        assert row["nll_after"] < row["nll_before"]
        assert sum(r["count"] for r in row["reliability_after"]) == row["discs"]
    empty = report["narrowing"]
    assert empty["temperature"] == 1.0 and empty["discs"] == 0
    assert empty["ece_before"] is None and empty["nll_after"] is None


def test_reliability_svg_is_xml_with_one_mark_per_filled_bin():
    p, y = _logit_model(2000, 5, 2.5, seed=12)
    before = calibration.reliability(p, y)
    after = calibration.reliability(calibration.apply_temperature(p, 2.5), y)
    title = 'Pfirrmann <grade> & "narrowing"'
    root = ElementTree.fromstring(calibration.reliability_svg(before, after, title))
    assert root.tag == f"{SVG}svg"
    assert title in [text.text for text in root.iter(f"{SVG}text")]
    for name, table in (("before", before), ("after", after)):
        marks = [e for e in root.iter() if e.get("class") == f"mark {name}"]
        filled = [row for row in table if row["count"]]
        assert len(marks) == len(filled) > 3
        tips = [mark.find(f"{SVG}title").text for mark in marks]
        assert [int(tip.split(", ")[-1].split()[0]) for tip in tips] == [
            row["count"] for row in filled]
    ticks = {text.text for text in root.iter(f"{SVG}text")}
    assert {"0.0", "0.2", "0.4", "0.6", "0.8", "1.0", "confidence", "accuracy"} <= ticks
