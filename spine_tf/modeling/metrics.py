"""Balanced accuracy (masked), confusion matrices, the Lootus protocol, agreement.

Balanced accuracy is the paper's "average per-class accuracy": the mean over
the classes present in the truth of the share of that class's discs predicted
as it. Missing labels (-1) are ignored everywhere.
"""

import keras
import numpy as np

from spine_tf import tasks


@keras.saving.register_keras_serializable(package="spine_tf")
class MaskedBalancedAccuracy(keras.metrics.Metric):
    """Streaming balanced accuracy of logits against labels with -1 for missing.

    Sample weights (the class-balancing ones) are ignored: the metric already
    weighs classes equally.

    Args:
        num_classes: the task's class count.
    """

    def __init__(self, num_classes, name="balanced_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes
        self.confusion = self.add_variable(shape=(num_classes, num_classes), initializer="zeros",
                                           dtype="float32", name="confusion")

    def update_state(self, y_true, y_pred, sample_weight=None):
        del sample_weight
        y_true = keras.ops.reshape(keras.ops.cast(y_true, "int32"), (-1,))
        predicted = keras.ops.cast(keras.ops.argmax(y_pred, axis=-1), "int32")
        labelled = keras.ops.cast(y_true >= 0, "float32")
        index = keras.ops.maximum(y_true, 0) * self.num_classes + predicted
        counts = keras.ops.segment_sum(labelled, index, num_segments=self.num_classes ** 2)
        self.confusion.assign_add(keras.ops.reshape(counts, (self.num_classes, self.num_classes)))

    def result(self):
        totals = keras.ops.sum(self.confusion, axis=1)
        correct = keras.ops.diagonal(self.confusion)
        present = keras.ops.cast(totals > 0, "float32")
        per_class = correct / keras.ops.maximum(totals, 1.0)
        return keras.ops.sum(per_class * present) / keras.ops.maximum(keras.ops.sum(present), 1.0)

    def reset_state(self):
        self.confusion.assign(keras.ops.zeros(self.confusion.shape, self.confusion.dtype))

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes})
        return config


def keras_metrics(task_set=tasks.PAPER):
    """Per-output metrics for ``model.compile``: balanced accuracy per task of a
    ``tasks.TaskSet``."""
    return {t.name: [MaskedBalancedAccuracy(t.num_classes)] for t in task_set.tasks}


# ----------------------------------------------------------------- offline

def confusion_matrix(truth, predicted, num_classes):
    """(classes, classes) counts, rows = truth; discs with truth -1 are left out."""
    truth, predicted = np.asarray(truth).ravel(), np.asarray(predicted).ravel()
    keep = (truth >= 0) & (predicted >= 0)
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (truth[keep], predicted[keep]), 1)
    return matrix


def balanced_accuracy(truth, predicted, num_classes):
    """Mean per-class accuracy over the classes present in ``truth`` (nan if none)."""
    matrix = confusion_matrix(truth, predicted, num_classes)
    totals = matrix.sum(axis=1)
    present = totals > 0
    if not present.any():
        return float("nan")
    return float(np.mean(np.diag(matrix)[present] / totals[present]))


def agreement(first, second, num_classes):
    """Agreement of two label sets with the same metric (``first`` as the truth).

    Used for the intra-rater ceiling: a rater's two readings of the same discs.
    """
    first, second = np.asarray(first), np.asarray(second)
    both = (first >= 0) & (second >= 0)
    return balanced_accuracy(first[both], second[both], num_classes)


def lootus(pfirrmann_truth, pfirrmann_predicted, narrowing_truth, narrowing_predicted):
    """The protocol of Lootus et al., as the paper compares with it.

    Returns:
        dict: ``pfirrmann_within_1`` (share of labelled discs predicted within
        one grade), ``pfirrmann_within_1_balanced`` (the same averaged per
        true grade), ``narrowing_binary`` (balanced accuracy of normal (0) vs
        abnormal (1..3)).
    """
    truth, predicted = np.asarray(pfirrmann_truth), np.asarray(pfirrmann_predicted)
    keep = truth >= 0
    close = np.abs(truth[keep] - predicted[keep]) <= 1
    grades = [close[truth[keep] == g].mean() for g in np.unique(truth[keep])]
    n_truth, n_predicted = np.asarray(narrowing_truth), np.asarray(narrowing_predicted)
    binary_truth = np.where(n_truth >= 0, (n_truth > 0).astype(int), -1)
    return {
        "pfirrmann_within_1": float(close.mean()) if close.size else float("nan"),
        "pfirrmann_within_1_balanced": float(np.mean(grades)) if grades else float("nan"),
        "narrowing_binary": balanced_accuracy(binary_truth, (n_predicted > 0).astype(int), 2),
    }


# ------------------------------------------------------- uncertainty

BOOTSTRAP_RESAMPLES = 2000
"""Resamples of the patient bootstrap behind every reported interval."""

INTERVAL_LEVEL = 0.95
"""Coverage of the reported percentile intervals."""

PERMUTATIONS = 10000
"""Random deals of the permutation test behind a sweep's row differences."""


def patient_bootstrap(groups, resamples=BOOTSTRAP_RESAMPLES, seed=0):
    """Index arrays of a cluster bootstrap: patients drawn with replacement.

    Discs of one patient share anatomy, acquisition and reader, so they are
    not independent; resampling whole patients keeps that correlation in the
    interval (a disc bootstrap would make it too narrow).

    Args:
        groups: (discs,) patient id of every disc.
        resamples: number of bootstrap samples.
        seed: seed of the draw; same seed, same samples.

    Returns:
        list of int arrays, each the disc indices of one resample (a patient
        drawn k times contributes its discs k times).
    """
    _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)] \
        if inverse.size else []
    rng = np.random.default_rng(seed)
    return [np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
            for _ in range(resamples)] if members else []


def percentile_interval(values, level=INTERVAL_LEVEL):
    """(low, high) percentile interval of bootstrap values; nan values are dropped.

    Returns None when no value is finite.
    """
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    tail = 50.0 * (1.0 - level)
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def group_difference_p(values, permutations=PERMUTATIONS, seed=0):
    """Permutation p-value: do the groups' means differ by more than their members do?

    The statistic is the variance of the group means. Under the null
    hypothesis the members are exchangeable between groups (e.g. a sweep's
    branch points are equally good and their runs differ by chance only), so
    the members are dealt to the groups at random ``permutations`` times and
    the p-value is the share of deals whose statistic reaches the observed
    one, counting the observed deal (never 0).

    Args:
        values: (groups, members) array, e.g. a task's score of every run of
            every branch point; at least two groups of at least two members.
        permutations: random deals.
        seed: seed of the deals; same seed, same p-value.

    Raises:
        ValueError: fewer than two groups or two members a group.
    """
    values = np.asarray(values, np.float64)
    if values.ndim != 2 or values.shape[0] < 2 or values.shape[1] < 2:
        raise ValueError(f"need at least two groups of at least two members, got shape "
                         f"{values.shape}")
    flat = values.ravel()
    rng = np.random.default_rng(seed)
    deals = np.argsort(rng.random((permutations, flat.size)), axis=1)
    spreads = flat[deals].reshape(permutations, *values.shape).mean(axis=2).var(axis=1)
    observed = values.mean(axis=1).var()
    return float((1 + np.count_nonzero(spreads >= observed - 1e-12)) / (1 + permutations))
