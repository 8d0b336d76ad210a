"""Task specificity from labels (no lesion boxes): hand-made models whose upper task sees
only the upper half of the volume and whose lower task only the lower half, against one
whose tasks see both halves alike."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from spine_tf import hotspots, tasks
from spine_tf.io.codec import to_stored

SHAPE = (112, 224, 9)


class _Rows(keras.layers.Layer):
    """Logits (0, energy of rows ``first``..``last``): the class-1 logit sees those rows only."""

    def __init__(self, classes, first, last, **kwargs):
        super().__init__(**kwargs)
        self.classes = classes
        self.first = first
        self.last = last

    def call(self, x):
        energy = 0.5 * tf.reduce_sum(tf.square(x[:, self.first:self.last]), axis=[1, 2, 3])
        return tf.stack([tf.zeros_like(energy)] + [energy] * (self.classes - 1), axis=1)


def _model(task_set, sided):
    """Outputs named after ``task_set``'s tasks; ``sided``: upper tasks see rows 0..55 and
    lower tasks rows 56..111, else every task sees all rows."""
    inputs = keras.Input(SHAPE)
    outputs = []
    for task in task_set.tasks:
        side = task.lesion[1] if sided and task.lesion else None
        first, last = {"upper": (0, 56), "lower": (56, 112), None: (0, 112)}[side]
        outputs.append(_Rows(task.num_classes, first, last, name=task.name)(inputs))
    return keras.Model(inputs, outputs)


def _examples():
    """Ten discs of four patients (uint16 as stored): endplate upper-only x3, lower-only x2,
    both x1, neither x1, a missing label x1; marrow upper-only x2, no marrow lower-only."""
    rng = np.random.default_rng(3)
    # (patient, endplate upper, endplate lower, marrow upper, marrow lower)
    table = [("a", 1, 0, 0, 0), ("a", 1, 0, 0, 0), ("b", 1, 0, 0, 0), ("b", 0, 1, 0, 0),
             ("c", 0, 1, 0, 0), ("c", 1, 1, 0, 0), ("d", 0, 0, 0, 0), ("d", 1, -1, 0, 0),
             ("a", 0, 0, 1, 0), ("d", 0, 0, 1, 0)]
    examples = []
    for n, (patient, eu, el, mu, ml) in enumerate(table):
        labels = {name: 0 for name in tasks.TASK_NAMES}
        labels.update(endplate_upper=eu, endplate_lower=el, marrow_upper=mu, marrow_lower=ml)
        examples.append({"disc_volume": to_stored(rng.random(SHAPE)),
                         "labels": {k: np.int32(v) for k, v in labels.items()},
                         "patient_id": patient.encode(), "level": np.int64(n % 6)})
    return examples


def test_sided_pairs_of_the_task_sets():
    assert hotspots.sided_pairs(tasks.TASK_SETS["paper"]) == {
        "endplate": ("endplate_upper", "endplate_lower"),
        "marrow": ("marrow_upper", "marrow_lower")}
    # spider's modic has no side: only the endplate pair
    assert hotspots.sided_pairs(tasks.TASK_SETS["spider"]) == {
        "endplate": ("endplate_upper", "endplate_lower")}


@pytest.fixture(scope="module")
def examples():
    return _examples()


def test_a_task_specific_model_looks_at_its_own_side(examples):
    result = hotspots.label_specificity(_model(tasks.PAPER, sided=True), examples,
                                        augmentations=6, resamples=200)
    json.dumps(result, allow_nan=False)  # JSON-ready: no NaN anywhere
    assert set(result) == {"endplate", "marrow"}
    endplate = result["endplate"]
    assert (endplate["upper_task"], endplate["lower_task"]) == ("endplate_upper",
                                                                "endplate_lower")
    upper, lower, both = endplate["upper_only"], endplate["lower_only"], endplate["both"]
    # the missing label (-1) and the unlabelled disc are left out; patients counted once
    assert (upper["discs"], upper["patients"]) == (3, 2)
    assert (lower["discs"], lower["patients"]) == (2, 2)
    assert (both["discs"], both["patients"]) == (1, 1)
    assert [i["patient_id"] for i in upper["ids"]] == ["a", "a", "b"]
    assert upper["ids"][0]["level"] == tasks.LEVELS[0]
    # rotations and shifts of up to 24 rows carry a little mass over the middle, not most
    for group in (upper, lower, both):
        assert min(group["upper_task"]["fractions"]) > 0.75
        assert max(group["lower_task"]["fractions"]) < 0.25
        for task in ("upper_task", "lower_task"):
            assert group[task]["own_half"]["value"] == 1.0
            assert group[task]["own_half"]["interval"] == [1.0, 1.0]
        assert group["difference"]["value"] > 0.5
    figure = upper["upper_task"]["upper_fraction"]
    assert figure["value"] == pytest.approx(np.mean(upper["upper_task"]["fractions"]))
    low, high = figure["interval"]
    assert min(upper["upper_task"]["fractions"]) <= low <= figure["value"] <= high <= 1.0
    assert lower["lower_task"]["upper_fraction"]["value"] < 0.25
    marrow = result["marrow"]
    assert marrow["upper_only"]["discs"] == 2 and marrow["lower_only"]["discs"] == 0
    assert marrow["lower_only"]["upper_task"]["upper_fraction"] == {"value": None,
                                                                    "interval": None}
    assert marrow["lower_only"]["difference"]["value"] is None


def test_a_model_looking_at_both_halves_scores_a_half(examples):
    result = hotspots.label_specificity(_model(tasks.PAPER, sided=False), examples[:6],
                                        augmentations=6, resamples=0)
    endplate = result["endplate"]
    for group in ("upper_only", "lower_only"):
        for task in ("upper_task", "lower_task"):
            figure = endplate[group][task]["upper_fraction"]
            assert figure["value"] == pytest.approx(0.5, abs=0.05)
            assert figure["interval"] is None  # resamples=0
        assert abs(endplate[group]["difference"]["value"]) < 0.05


def test_a_spider_model_has_the_endplate_pair_only(examples):
    spider = [dict(e, labels={**{t: np.int32(0) for t in tasks.TASK_SETS["spider"].names},
                              "endplate_upper": e["labels"]["endplate_upper"],
                              "endplate_lower": e["labels"]["endplate_lower"]})
              for e in examples[:4]]
    result = hotspots.label_specificity(_model(tasks.TASK_SETS["spider"], sided=True), spider,
                                        augmentations=2, resamples=50)
    assert list(result) == ["endplate"]
    assert result["endplate"]["upper_only"]["discs"] == 3
    assert result["endplate"]["lower_only"]["discs"] == 1
    assert result["endplate"]["augmentations"] == 2
