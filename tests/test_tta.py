"""Test-time augmentation: the 54 views, their geometry, averaging, prediction."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from spine_tf import augment, tasks, tta
from spine_tf.io.codec import to_stored
from spine_tf.modeling.model import build_model


@pytest.fixture(scope="module")
def tiny_model():
    return build_model(width=0.0625)


def _volumes(n, seed=0):
    return np.random.default_rng(seed).random((n, 112, 224, 9)).astype(np.float32)


def _softmax(logits):
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _one_view_draws(view, n):
    cols, rows, flip, slices = view
    values = {"angle": 0.0, "shift_cols": float(cols), "shift_rows": float(rows), "scale": 1.0,
              "shift_slices": slices, "flip": flip, "intensity": 0.0, "mirror": False}
    return {k: tf.constant([v] * n, augment.DRAW_DTYPES[k]) for k, v in values.items()}


def test_the_54_views_are_every_combination_once():
    assert len(tta.VIEWS) == tta.NUM_VIEWS == 54 and len(set(tta.VIEWS)) == 54
    expected = set(itertools.product((-16, 0, 16), (-16, 0, 16), (False, True), (-1, 0, 1)))
    assert set(tta.VIEWS) == expected
    assert tta.VIEWS[0] == (0, 0, False, 0)
    draws = {k: v.numpy() for k, v in tta.view_draws(2).items()}
    assert all(v.shape == (108,) for v in draws.values())
    # disc-major: disc 1's views repeat disc 0's, in VIEWS order
    np.testing.assert_array_equal(draws["shift_cols"][:54], [v[0] for v in tta.VIEWS])
    np.testing.assert_array_equal(draws["shift_rows"][54:], [v[1] for v in tta.VIEWS])
    np.testing.assert_array_equal(draws["flip"][54:], [v[2] for v in tta.VIEWS])
    np.testing.assert_array_equal(draws["shift_slices"][:54], [v[3] for v in tta.VIEWS])
    assert not draws["angle"].any() and not draws["intensity"].any() and not draws["mirror"].any()
    np.testing.assert_array_equal(draws["scale"], 1.0)


def test_views_are_augment_apply_with_the_view_draws_voxel_for_voxel():
    x = _volumes(2, seed=1)
    reference = augment.apply(tf.repeat(x, 54, axis=0), tta.view_draws(2), intensity=False)
    out = tta.views(x).numpy()
    assert out.shape == (108, 112, 224, 9)
    np.testing.assert_array_equal(out, reference.numpy())
    # the identity view of each disc is the disc, exactly
    np.testing.assert_array_equal(out[0], x[0])
    np.testing.assert_array_equal(out[54], x[1])
    # and the same inside a compiled function
    compiled = tf.function(tta.views, input_signature=[tf.TensorSpec((None, 112, 224, 9))])
    np.testing.assert_array_equal(compiled(x[1:]).numpy(), out[54:])


def test_every_view_moves_a_delta_where_its_shifts_say():
    x = np.zeros((1, 112, 224, 9), np.float32)
    x[0, 50, 100, 2] = 1.0  # slice 2: its mirror (6) differs
    out = tta.views(x).numpy()
    for n, (cols, rows, flip, slices) in enumerate(tta.VIEWS):
        # +cols moves right, +rows down; the window shift moves output slice k to k + shift,
        # applied after the reversal (slice 2 -> 6)
        expected = (50 + rows, 100 + cols, (6 if flip else 2) + slices)
        assert [tuple(p) for p in np.argwhere(out[n])] == [expected], tta.VIEWS[n]
        assert out[n].sum() == 1.0


def test_reversal_slice_shift_and_zero_fill():
    x = np.broadcast_to(np.arange(1, 10, dtype=np.float32), (1, 112, 224, 9)).copy()
    out = tta.views(x).numpy()
    at = {view: out[n, 56, 112] for n, view in enumerate(tta.VIEWS)}
    np.testing.assert_array_equal(at[(0, 0, True, 0)], np.arange(9, 0, -1))
    np.testing.assert_array_equal(at[(0, 0, False, 1)], [0, 1, 2, 3, 4, 5, 6, 7, 8])
    np.testing.assert_array_equal(at[(0, 0, False, -1)], [2, 3, 4, 5, 6, 7, 8, 9, 0])
    np.testing.assert_array_equal(at[(0, 0, True, 1)], [0, 9, 8, 7, 6, 5, 4, 3, 2])
    # a shift of +16 columns leaves the first 16 columns empty, and the rest intact
    right = out[tta.VIEWS.index((16, -16, False, 0))]
    assert not right[:, :16].any() and not right[96:].any()
    np.testing.assert_array_equal(right[:96, 16:], x[0, 16:, :208])


def test_tta_probabilities_equal_a_hand_loop_over_the_views(tiny_model):
    x = _volumes(2, seed=2)
    per_view = [[] for _ in tasks.TASKS]
    for view in tta.VIEWS:
        moved = augment.apply(x, _one_view_draws(view, 2), intensity=False)
        for values, logits in zip(per_view, tiny_model.predict_on_batch(moved)):
            values.append(_softmax(np.asarray(logits, np.float64)))
    expected = [np.mean(values, axis=0) for values in per_view]
    got = tta.tta_probabilities(tiny_model, x)
    assert len(got) == len(tasks.TASKS)
    for task, g, e in zip(tasks.TASKS, got, expected):
        assert g.shape == (2, task.num_classes)
        tf.debugging.assert_near(g, tf.constant(e, tf.float32), atol=1e-5)
    # the views matter: averaging differs from the centre view alone
    centre = _softmax(np.asarray(tiny_model.predict_on_batch(x)[0], np.float64))
    assert np.abs(centre - expected[0]).max() > 1e-3


def test_averaging_is_per_disc_over_its_own_54_views():
    rng = np.random.default_rng(3)
    stub_logits = {t.name: rng.normal(size=(3 * 54, t.num_classes)).astype(np.float32)
                   for t in tasks.TASKS}

    def logits_fn(volumes):  # a dict output, by task name
        assert volumes.shape[0] == 3 * 54
        return {name: tf.constant(values) for name, values in stub_logits.items()}

    got = tta.tta_probabilities(logits_fn, np.zeros((3, 112, 224, 9), np.float32))
    for task, g in zip(tasks.TASKS, got):
        p = _softmax(stub_logits[task.name].astype(np.float64))
        expected = np.stack([p[d * 54:(d + 1) * 54].mean(axis=0) for d in range(3)])
        np.testing.assert_allclose(g.numpy(), expected, atol=1e-6)


def test_predict_without_tta_is_the_softmax_of_one_pass(tiny_model):
    x = _volumes(66, seed=4)  # two batches of 64 and 2
    got = tta.predict(tiny_model, x, tta=False)
    for g, logits in zip(got, tiny_model.predict_on_batch(x)):
        np.testing.assert_allclose(g, _softmax(np.asarray(logits, np.float64)), atol=1e-6)
    assert [g.shape for g in tta.predict(tiny_model, x[0], tta=False)] == \
        [(1, t.num_classes) for t in tasks.TASKS]


def test_predict_with_tta_from_arrays_and_datasets(tiny_model):
    x = _volumes(3, seed=5)
    expected = [p.numpy() for p in tta.tta_probabilities(tiny_model, x)]
    one = tta.predict(tiny_model, x)
    two = tta.predict(tiny_model, x, discs_per_batch=2)
    stored = to_stored(x)
    from_examples = tta.predict(tiny_model, tf.data.Dataset.from_tensor_slices(
        {"disc_volume": stored, "level": np.arange(3)}))
    batched = tta.predict(tiny_model, tf.data.Dataset.from_tensor_slices(
        (x, np.arange(3))).batch(2), discs_per_batch=3)
    for n, e in enumerate(expected):
        np.testing.assert_allclose(one[n], e, atol=1e-6)
        np.testing.assert_allclose(two[n], e, atol=1e-6)
        np.testing.assert_allclose(batched[n], e, atol=1e-6)
        np.testing.assert_allclose(from_examples[n], e, atol=1e-4)  # uint16 rounding
        np.testing.assert_allclose(one[n].sum(axis=1), 1.0, atol=1e-5)
    empty = tta.predict(tiny_model, np.zeros((0, 112, 224, 9), np.float32))
    assert [e.shape for e in empty] == [(0, t.num_classes) for t in tasks.TASKS]


def test_a_view_subset_is_its_rows_of_the_54_views():
    x = _volumes(2, seed=6)
    every = tta.views(x).numpy().reshape(2, 54, 112, 224, 9)
    assert tta.CENTRE_VIEWS == tta.VIEWS[:9]
    assert {v[:2] for v in tta.CENTRE_VIEWS} == set(tta.POSITIONS)
    np.testing.assert_array_equal(tta.views(x, tta.CENTRE_VIEWS).numpy(),
                                  every[:, :9].reshape(-1, 112, 224, 9))
    reversed_ = tta.VIEWS[27:36]  # the reversed window, unshifted
    np.testing.assert_array_equal(tta.views(x, reversed_).numpy(),
                                  every[:, 27:36].reshape(-1, 112, 224, 9))
    with pytest.raises(ValueError, match="whole slice arrangements"):
        tta.views(x, tta.VIEWS[:8])


def test_a_one_slice_model_averages_the_9_in_plane_views(tiny_model):
    model = build_model(width=0.0625, input_slices=1)
    assert tta.views_for(model) == tta.CENTRE_VIEWS and len(tta.CENTRE_VIEWS) == 9
    assert tta.views_for(tiny_model) == tta.VIEWS and len(tta.VIEWS) == 54
    x = np.zeros((2, 112, 224, 9), np.float32)  # single slices, zero-padded as extracted
    x[..., 4] = _volumes(2, seed=7)[..., 4]
    per_view = [[] for _ in tasks.TASKS]
    for cols, rows in tta.POSITIONS:  # the centre slice moved in plane, nothing else
        moved = augment.apply(x, _one_view_draws((cols, rows, False, 0), 2), intensity=False)
        for values, logits in zip(per_view, model.predict_on_batch(moved)):
            values.append(_softmax(np.asarray(logits, np.float64)))
    expected = [np.mean(values, axis=0) for values in per_view]
    got = tta.predict(model, x)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, atol=1e-5)
    # the 54 views would have differed: their shifted windows put a zero in the centre
    every = [p.numpy() for p in tta.tta_probabilities(model, x, tta.VIEWS)]
    assert max(np.abs(a - b).max() for a, b in zip(every, expected)) > 1e-3
