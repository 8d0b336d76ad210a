"""Masked class-balanced loss and the metrics, against hand-computed values."""

import math

import numpy as np
import pytest

from spine_tf.training import input_pipeline
from spine_tf.modeling import losses
from spine_tf.modeling import metrics


def _ce(logits, label):
    logits = np.asarray(logits, np.float64)
    return float(np.log(np.exp(logits).sum()) - logits[label])


def test_masked_cross_entropy_ignores_missing_labels():
    logits = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0], [1.0, 2.0, 3.0]], np.float32)
    labels = np.array([0, -1, 1])
    loss = losses.MaskedSparseCategoricalCrossentropy()
    expected = (_ce(logits[0], 0) + 0.0 + _ce(logits[2], 1)) / 3  # mean over the batch
    assert float(loss(labels, logits)) == pytest.approx(expected, rel=1e-5)
    # sample weights multiply per disc; a missing label stays 0 whatever its weight
    weights = np.array([2.0, 5.0, 0.5], np.float32)
    expected = (2.0 * _ce(logits[0], 0) + 0.5 * _ce(logits[2], 1)) / 3
    assert float(loss(labels, logits, sample_weight=weights)) == pytest.approx(expected, rel=1e-5)


def test_soft_ordinal_cross_entropy_by_hand():
    import keras
    from spine_tf import tasks
    logits = np.array([[2.0, 1.0, 0.0, -1.0, -2.0], [0.0, 0.0, 0.0, 0.0, 0.0],
                       [-1.0, 0.0, 3.0, 0.0, -1.0]], np.float32)
    labels = np.array([0, -1, 2])
    loss = losses.MaskedSoftOrdinalCrossentropy(5, sharpness=2.0)

    def soft(label):
        weights = np.exp(-2.0 * (np.arange(5) - label) ** 2.0)
        return weights / weights.sum()

    def ce(row, target):
        log_p = row - np.log(np.exp(row).sum())
        return float(-(target * log_p).sum())

    expected = (ce(logits[0], soft(0)) + ce(logits[2], soft(2))) / 3
    assert float(loss(labels, logits)) == pytest.approx(expected, rel=1e-5)
    assert soft(2)[2] == pytest.approx(0.78, abs=0.01)  # the docstring's share
    # a grade one off costs less than three off; plain cross-entropy charges them alike
    one_off, three_off = (np.eye(5, dtype=np.float32)[[k]] * 4.0 for k in (1, 3))
    assert float(loss(np.array([0]), one_off)) < float(loss(np.array([0]), three_off))
    plain = losses.MaskedSparseCategoricalCrossentropy()
    assert float(plain(np.array([0]), one_off)) == pytest.approx(
        float(plain(np.array([0]), three_off)))
    copy = keras.losses.deserialize(keras.losses.serialize(loss))
    assert (copy.classes, copy.sharpness) == (5, 2.0)
    chosen = losses.losses(tasks.TASK_SETS["spider"], ordinal_tasks=("pfirrmann",))
    assert isinstance(chosen["pfirrmann"], losses.MaskedSoftOrdinalCrossentropy)
    assert chosen["pfirrmann"].classes == 5
    assert isinstance(chosen["modic"], losses.MaskedSparseCategoricalCrossentropy)
    with pytest.raises(KeyError, match="unknown ordinal task"):
        losses.losses(tasks.TASK_SETS["spider"], ordinal_tasks=("narrowing",))


def test_class_weights_are_inverse_frequency_with_mean_one():
    labels = np.array([0, 0, 0, 1, -1, 2, 2, -1])  # counts 3, 1, 2 over 6 labelled discs
    w = input_pipeline.class_weights(labels, 4)
    alpha = np.array([1 / 3, 1, 1 / 2, 0])
    expected = alpha / ((3 * alpha[0] + alpha[1] + 2 * alpha[2]) / 6)
    np.testing.assert_allclose(w, expected, rtol=1e-6)
    assert w[3] == 0  # absent class
    labelled = labels[labels >= 0]
    assert np.mean(w[labelled]) == pytest.approx(1.0)
    # every class then carries the same total weight
    totals = [w[c] * np.sum(labelled == c) for c in range(3)]
    np.testing.assert_allclose(totals, totals[0])
    np.testing.assert_array_equal(input_pipeline.class_weights([-1, -1], 2), [0, 0])


def test_loss_weights_single_task():
    assert losses.loss_weights({"narrowing": 1.0}) == {
        "pfirrmann": 0.0, "narrowing": 1.0, "endplate_upper": 0.0, "endplate_lower": 0.0,
        "marrow_upper": 0.0, "marrow_lower": 0.0}
    with pytest.raises(KeyError, match="narowing"):
        losses.loss_weights({"narowing": 1.0})


def test_balanced_accuracy_by_hand():
    truth = np.array([0, 0, 0, 0, 1, 1, 2, -1, -1])
    predicted = np.array([0, 0, 0, 1, 1, 0, 1, 2, 0])
    # class 0: 3/4, class 1: 1/2, class 2: 0/1; class 3 absent; -1 ignored
    assert metrics.balanced_accuracy(truth, predicted, 4) == pytest.approx((0.75 + 0.5 + 0) / 3)
    matrix = metrics.confusion_matrix(truth, predicted, 4)
    assert matrix.sum() == 7 and matrix[0, 1] == 1 and matrix[2, 1] == 1
    assert math.isnan(metrics.balanced_accuracy([-1, -1], [0, 1], 2))


def test_keras_metric_matches_offline_and_accumulates():
    rng = np.random.default_rng(0)
    truth = rng.integers(-1, 5, 200)
    logits = rng.normal(size=(200, 5)).astype(np.float32)
    logits[np.arange(200), np.maximum(truth, 0)] += 1.0  # better than chance
    metric = metrics.MaskedBalancedAccuracy(5)
    for start in range(0, 200, 64):  # batches accumulate
        metric.update_state(truth[start:start + 64], logits[start:start + 64],
                            sample_weight=np.full(len(truth[start:start + 64]), 7.0))
    expected = metrics.balanced_accuracy(truth, logits.argmax(-1), 5)
    assert float(metric.result()) == pytest.approx(expected, abs=1e-6)
    assert 0.3 < expected < 0.9
    metric.reset_state()
    metric.update_state(np.array([1, 1]), np.array([[0.0, 1.0], [1.0, 0.0]]))
    assert float(metric.result()) == pytest.approx(0.5)  # only class 1 present


def test_lootus_protocol_and_agreement():
    p_truth = np.array([0, 1, 2, 3, 4, 2, -1])
    p_pred = np.array([1, 3, 2, 2, 1, 1, 4])
    n_truth = np.array([0, 0, 1, 2, 3, -1, 0])
    n_pred = np.array([0, 1, 1, 0, 2, 3, 0])
    result = metrics.lootus(p_truth, p_pred, n_truth, n_pred)
    # within one grade: 0->1 yes, 1->3 no, 2->2 yes, 3->2 yes, 4->1 no, 2->1 yes: 4/6
    assert result["pfirrmann_within_1"] == pytest.approx(4 / 6)
    # per grade: g0 1, g1 0, g2 (1+1)/2, g3 1, g4 0 -> 3/5
    assert result["pfirrmann_within_1_balanced"] == pytest.approx(3 / 5)
    # binary truth [0,0,1,1,1,-,0], predicted [0,1,1,0,1,-,0]: normal 2/3, abnormal 2/3
    assert result["narrowing_binary"] == pytest.approx(2 / 3)
    first = np.array([0, 1, 1, -1, 0])
    second = np.array([0, 1, 0, 1, -1])
    assert metrics.agreement(first, second, 2) == pytest.approx((1 + 0.5) / 2)


def test_keras_evaluate_reports_the_masked_weighted_losses():
    import tensorflow as tf

    from spine_tf.modeling import model as spine_model
    from spine_tf import tasks
    model = spine_model.build_model(width=0.0625)
    model.compile(loss=losses.losses(), loss_weights=losses.loss_weights({"pfirrmann": 2.0,
                                                                          "narrowing": 1.0}),
                  metrics=metrics.keras_metrics())
    rng = np.random.default_rng(3)
    n = 12
    x = rng.random((n, 112, 224, 9)).astype(np.float32)
    labels = tuple(rng.integers(-1, t.num_classes, n).astype(np.int32) for t in tasks.TASKS)
    weights = tuple(rng.random(n).astype(np.float32) for _ in tasks.TASKS)
    logits = model.predict_on_batch(x)
    data = tf.data.Dataset.from_tensor_slices((x, labels, weights)).batch(n)
    result = model.evaluate(data, return_dict=True, verbose=0)
    expected_total = 0.0
    for i, task in enumerate(tasks.TASKS):
        per_disc = [weights[i][k] * _ce(logits[i][k], labels[i][k]) if labels[i][k] >= 0 else 0.0
                    for k in range(n)]
        expected = np.sum(per_disc) / n
        assert result[f"{task.name}_loss"] == pytest.approx(expected, rel=1e-4)
        expected_total += {"pfirrmann": 2.0, "narrowing": 1.0}.get(task.name, 0.0) * expected
        assert result[f"{task.name}_balanced_accuracy"] == pytest.approx(
            metrics.balanced_accuracy(labels[i], logits[i].argmax(-1), task.num_classes), abs=1e-6)
    assert result["loss"] == pytest.approx(expected_total, rel=1e-4)


def test_patient_bootstrap_draws_whole_patients_reproducibly():
    groups = np.array(["a", "a", "b", "c", "c", "c"])
    samples = metrics.patient_bootstrap(groups, resamples=200, seed=3)
    assert len(samples) == 200
    for idx in samples:
        drawn = groups[idx]
        # three patients drawn, each with all of its discs, as often as it was drawn
        counts = {g: int((drawn == g).sum()) for g in "abc"}
        assert counts["a"] % 2 == 0 and counts["c"] % 3 == 0
        assert counts["a"] // 2 + counts["b"] + counts["c"] // 3 == 3
    assert any(len(idx) != 6 for idx in samples)  # with replacement
    again = metrics.patient_bootstrap(groups, resamples=200, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(samples, again))
    # one patient: every resample is the whole split, so the interval has no width
    single = metrics.patient_bootstrap(["p"] * 5, resamples=20)
    assert all(sorted(idx) == list(range(5)) for idx in single)
    assert metrics.patient_bootstrap([], resamples=5) == []


def test_bootstrap_interval_width_matches_the_binomial_and_grows_with_clustering():
    # two classes of 200 discs, 80 % of each recalled: BA 0.8 with standard error
    # sqrt(2 * 0.25 * 0.8 * 0.2 / 200) = 0.02, so a 95 % interval about 0.078 wide
    truth = np.repeat([0, 1], 200)
    predicted = truth.copy()
    predicted[:40], predicted[200:240] = 1, 0
    order = np.random.default_rng(0).permutation(400)
    truth, predicted = truth[order], predicted[order]

    def width(groups):
        values = [metrics.balanced_accuracy(truth[i], predicted[i], 2)
                  for i in metrics.patient_bootstrap(groups, resamples=1000, seed=1)]
        low, high = metrics.percentile_interval(values)
        assert low < 0.8 < high
        return high - low

    alone = width(np.arange(400))
    assert alone == pytest.approx(2 * 1.96 * 0.02, rel=0.15)
    # the same 400 discs as 100 patients of 4 identical discs: 4x fewer independent units,
    # so the interval is about 2x wider; a disc bootstrap would not see it
    clustered_truth, clustered_predicted = np.repeat(truth[:100], 4), np.repeat(predicted[:100], 4)
    truth, predicted = clustered_truth, clustered_predicted
    assert width(np.repeat(np.arange(100), 4)) == pytest.approx(2 * alone, rel=0.3)


def test_percentile_interval_drops_nan_and_handles_none_finite():
    values = [0.1 * k for k in range(11)] + [float("nan")]
    assert metrics.percentile_interval(values, level=0.8) == pytest.approx((0.1, 0.9))
    assert metrics.percentile_interval([float("nan")]) is None


def test_group_difference_p_against_counted_deals():
    # 8 values in 4 groups of 2. Of the 8!/2**4 = 2520 deals, the 4! = 24 that pair
    # neighbours are the only ones whose group means spread as far: p = 24/2520
    assert metrics.group_difference_p([[0, 1], [2, 3], [4, 5], [6, 7]]) == pytest.approx(
        24 / 2520, abs=0.003)
    # equal group means: every deal spreads at least as far
    assert metrics.group_difference_p([[0, 7], [1, 6], [2, 5], [3, 4]]) == 1.0
    # groups with one shifted member set: p falls as the shift grows past the spread
    rng = np.random.default_rng(3)
    noise = rng.normal(0, 1, (6, 3))
    shifted = [metrics.group_difference_p(noise + np.array([[s], [0], [0], [0], [0], [0]]))
               for s in (0, 3, 10)]
    assert shifted[0] > 0.1 and shifted[2] < 0.05 and shifted[0] > shifted[1] > shifted[2]
    assert metrics.group_difference_p(noise, seed=4) == metrics.group_difference_p(
        noise, seed=4)
    with pytest.raises(ValueError, match="two groups of at least two members"):
        metrics.group_difference_p([[0.5, 0.6]])
    with pytest.raises(ValueError, match="shape"):
        metrics.group_difference_p([[0.5], [0.6]])
