"""Augmentation: ranges, reproducibility, exact geometry, inverse, graph mode."""

import math

import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage

from spine_tf import augment


def _smooth_volumes(n, seed=0):
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.random((n, 112, 224, 9)), (0, 4, 4, 0)).astype(np.float32)


def _fixed(**values):
    base = {"angle": 0.0, "shift_cols": 0.0, "shift_rows": 0.0, "scale": 1.0, "shift_slices": 0,
            "flip": False, "intensity": 0.0, "mirror": False}
    base.update(values)
    assert set(base) == set(augment.DRAW_DTYPES)
    return {k: tf.constant([v], augment.DRAW_DTYPES[k]) for k, v in base.items()}


def test_draws_cover_the_papers_ranges():
    d = {k: v.numpy() for k, v in augment.draw(4000, seed=(3, 4)).items()}
    assert np.abs(d["angle"]).max() <= math.radians(15) + 1e-6
    assert np.abs(d["angle"]).max() > math.radians(14.5)
    assert np.abs(d["shift_cols"]).max() <= 32 and np.abs(d["shift_cols"]).max() > 31
    assert np.abs(d["shift_rows"]).max() <= 24 and np.abs(d["shift_rows"]).max() > 23
    assert d["scale"].min() >= 0.9 and d["scale"].max() <= 1.1
    assert np.abs(d["intensity"]).max() <= 0.1
    assert sorted(np.unique(d["shift_slices"])) == [-2, -1, 0, 1, 2]
    assert 0.45 < d["flip"].mean() < 0.55
    assert abs(d["angle"].mean()) < 0.01 and abs(d["scale"].mean() - 1.0) < 0.005
    assert not d["mirror"].any()  # not in the paper: off unless asked for
    assert {k: v.dtype for k, v in augment.draw(2, seed=(3, 4)).items()} == augment.DRAW_DTYPES
    mirrored = augment.draw(4000, (3, 4), augment.AugmentConfig(mirror_probability=0.3))
    assert 0.27 < mirrored["mirror"].numpy().mean() < 0.33
    # drawn from its own seed: asking for it leaves every other draw as it was
    for key in d:
        if key != "mirror":
            np.testing.assert_array_equal(mirrored[key], d[key])


def test_draws_are_seeded():
    a, b, c = augment.draw(16, (1, 2)), augment.draw(16, (1, 2)), augment.draw(16, (1, 3))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["angle"], c["angle"])


def test_translation_and_slice_shift_move_a_point_exactly():
    point = np.zeros((1, 112, 224, 9), np.float32)
    point[0, 56, 112, 4] = 1.0
    out = augment.apply(point, _fixed(shift_cols=10.0, shift_rows=-5.0, shift_slices=1),
                        intensity=False).numpy()
    assert [tuple(p) for p in np.argwhere(out[0] > 0.99)] == [(51, 122, 5)]
    flipped = augment.apply(point * 0 + np.arange(9, dtype=np.float32), _fixed(flip=True),
                            intensity=False).numpy()
    np.testing.assert_allclose(flipped[0, 56, 112], np.arange(9)[::-1])
    # shifting the window fills with zeros
    shifted = augment.apply(np.ones((1, 112, 224, 9), np.float32), _fixed(shift_slices=-2),
                            intensity=False).numpy()
    np.testing.assert_array_equal(shifted[0, 56, 112], [1] * 7 + [0, 0])


def test_mirror_reflects_rows_about_the_centre_and_inverts():
    volume = np.zeros((1, 112, 224, 9), np.float32)
    volume[0, 20, 100, 3] = 1.0
    out = augment.apply(volume, _fixed(mirror=True), intensity=False).numpy()
    assert [tuple(p) for p in np.argwhere(out[0] > 0.99)] == [(111 - 20, 100, 3)]
    # composed with a shift and a rotation, the inverse still undoes it
    x = _smooth_volumes(1)
    d = _fixed(mirror=True, angle=0.2, shift_rows=5.0, scale=1.05)
    back = augment.invert(augment.apply(x, d, intensity=False), d).numpy()
    seen = augment.invert(augment.apply(np.ones_like(x), d, intensity=False), d).numpy()
    interior = ndimage.binary_erosion(seen > 0.999, structure=np.ones((1, 3, 3, 1)), iterations=3)
    assert interior.mean() > 0.4 and np.abs(back - x)[interior].max() < 0.01


def test_rotation_and_scale_about_the_centre():
    volume = np.zeros((1, 112, 224, 9), np.float32)
    volume[0, 55:57, 111 + 40:113 + 40, :] = 1.0  # a 2x2 blob 40 px right of centre
    out = augment.apply(volume, _fixed(angle=math.radians(90), scale=0.5), intensity=False)
    rows, cols = np.nonzero(out.numpy()[0, ..., 0] > 0.05)
    # x' = c + R S (x - c): 40 px along x becomes 20 px along +y (rows grow downward)
    assert abs(rows.mean() - (55.5 + 20)) < 1.0 and abs(cols.mean() - 111.5) < 1.0


def test_invert_undoes_apply_away_from_the_borders():
    x = _smooth_volumes(6)
    d = augment.draw(6, (5, 6))
    back = augment.invert(augment.apply(x, d, intensity=False), d).numpy()
    seen = augment.invert(augment.apply(np.ones_like(x), d, intensity=False), d).numpy()
    interior = ndimage.binary_erosion(seen > 0.999, structure=np.ones((1, 3, 3, 1)), iterations=3)
    assert interior.mean() > 0.4
    assert np.abs(back - x)[interior].max() < 0.01
    # and a wrong inverse is far off: flip the slice order of the draws
    wrong = dict(d, flip=tf.logical_not(d["flip"]))
    bad = augment.invert(augment.apply(x, d, intensity=False), wrong).numpy()
    assert np.abs(bad - x)[interior].mean() > 0.01


def test_intensity_offset_and_graph_mode():
    x = _smooth_volumes(2)
    d = augment.draw(2, (7, 8))
    with_offset = augment.apply(x, d).numpy()
    without = augment.apply(x, d, intensity=False).numpy()
    np.testing.assert_allclose(with_offset - without,
                               np.broadcast_to(d["intensity"].numpy()[:, None, None, None],
                                               x.shape), atol=1e-6)

    @tf.function(jit_compile=False)
    def step(volumes, seed):
        draws = augment.draw(tf.shape(volumes)[0], seed)
        return augment.apply(volumes, draws)

    np.testing.assert_allclose(step(x, tf.constant([7, 8])), with_offset, atol=1e-6)
    data = tf.data.Dataset.from_tensor_slices(x).batch(2).map(
        lambda v: augment.apply(v, augment.draw(tf.shape(v)[0], (7, 8))))
    np.testing.assert_allclose(next(iter(data)), with_offset, atol=1e-6)


def test_repeat_draws_matches_tf_repeat():
    d = augment.draw(3, (1, 1))
    r = augment.repeat_draws(d, 4)
    np.testing.assert_array_equal(r["angle"].numpy(), np.repeat(d["angle"].numpy(), 4))


@pytest.mark.parametrize("name", ["NONE"])
def test_no_augmentation_is_identity(name):
    x = _smooth_volumes(2)
    d = augment.draw(2, (1, 2), getattr(augment, name))
    np.testing.assert_allclose(augment.apply(x, d).numpy(), x, atol=1e-6)
