"""Batched, invertible training augmentation of disc volumes, in TF ops (docs/design.md).

Per sample: in-plane rotation, translation along columns (x) and rows (y) and
isotropic scaling, composed into one affine and applied in one resampling
(``ImageProjectiveTransformV3``, all nine slices at once); a shift of the
slice window by whole slices; reflection of the slice order (across the
mid-sagittal plane); an intensity offset. Random parameters are drawn first
(``draw``, stateless and seeded) and returned, then applied (``apply``);
``invert`` warps a map made on the augmented volume (a hotspot) back onto the
original volume's grid. Pure TF: it runs inside ``tf.data`` or a model step,
on a GPU when there is one.

Example:
    draws = draw(8, seed=(1, 2))
    augmented = apply(volumes, draws)        # volumes: (8, 112, 224, 9)
    back = invert(saliency_of(augmented), draws)
"""

import math

import tensorflow as tf

from spine_tf.config import AugmentConfig


NONE = AugmentConfig(0.0, 0.0, 0.0, 0, (1.0, 1.0), 0.0, 0.0, 0.0)
"""No augmentation (identity draws)."""


def draw(batch_size, seed, config=AugmentConfig()):
    """Draws every random parameter for a batch, statelessly from ``seed``.

    Args:
        batch_size: number of samples (int or scalar tensor).
        seed: shape-(2,) int seed (tuple, tensor); same seed, same draws.
        config: AugmentConfig.

    Returns:
        dict of (batch,) tensors: ``angle`` (radians), ``shift_cols``,
        ``shift_rows`` (pixels), ``scale``, ``shift_slices`` (int32),
        ``flip`` (bool), ``intensity``, ``mirror`` (bool); ``DRAW_DTYPES``.
    """
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    seeds = tf.random.experimental.stateless_split(seed, num=7)
    shape = tf.reshape(tf.cast(batch_size, tf.int32), (1,))

    def uniform(i, low, high):
        return tf.random.stateless_uniform(shape, seeds[i], low, high, dtype=tf.float32)

    rotation = math.radians(config.rotation_deg)
    return {
        "angle": uniform(0, -rotation, rotation),
        "shift_cols": uniform(1, -config.shift_cols_px, config.shift_cols_px),
        "shift_rows": uniform(2, -config.shift_rows_px, config.shift_rows_px),
        "scale": uniform(3, config.scale[0], config.scale[1]),
        "shift_slices": tf.random.stateless_uniform(
            shape, seeds[4], -config.shift_slices, config.shift_slices + 1, dtype=tf.int32),
        "flip": uniform(5, 0.0, 1.0) < config.flip_probability,
        "intensity": uniform(6, -config.intensity, config.intensity),
        # its own seed, so adding it left every other draw as it was
        "mirror": tf.random.stateless_uniform(
            shape, tf.random.experimental.stateless_fold_in(seed, 7), 0.0, 1.0)
        < config.mirror_probability,
    }


DRAW_DTYPES = {"angle": tf.float32, "shift_cols": tf.float32, "shift_rows": tf.float32,
               "scale": tf.float32, "shift_slices": tf.int32, "flip": tf.bool,
               "intensity": tf.float32, "mirror": tf.bool}
"""The keys of a draws dict and their dtypes."""


def _in_plane_matrix(draws, height, width, inverse):
    """(batch, 3, 3) affine on (x=col, y=row, 1): output point <- input point.

    The forward warp moves an input point p to R S M (p - c) + c + t, with c
    the image centre and M the row reflection (diag(1, -1)) when ``mirror``;
    ``inverse=True`` gives the map back.
    """
    cos, sin = tf.cos(draws["angle"]), tf.sin(draws["angle"])
    scale = draws["scale"]
    rows = scale * tf.where(draws["mirror"], -1.0, 1.0)
    zeros, ones = tf.zeros_like(cos), tf.ones_like(cos)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    t = tf.stack([draws["shift_cols"], draws["shift_rows"]], axis=-1)
    linear = tf.stack([tf.stack([cos * scale, -sin * rows], -1),
                       tf.stack([sin * scale, cos * rows], -1)], axis=-2)  # (b, 2, 2)
    centre = tf.constant([cx, cy], tf.float32)
    offset = centre + t - tf.linalg.matvec(linear, tf.broadcast_to(centre, tf.shape(t)))
    matrix = tf.concat([tf.concat([linear, offset[..., None]], -1),
                        tf.stack([zeros, zeros, ones], -1)[:, None, :]], axis=-2)
    return tf.linalg.inv(matrix) if inverse else matrix


def _warp(volumes, output_to_input, interpolation):
    """Resamples (b, h, w, c) volumes: output (x, y) reads input at output_to_input @ (x, y, 1)."""
    flat = tf.reshape(output_to_input, (-1, 9))[:, :8]
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=volumes, transforms=flat, output_shape=tf.shape(volumes)[1:3],
        fill_value=0.0, interpolation=interpolation, fill_mode="CONSTANT")


def _slice_sources(draws, slices, inverse):
    """(batch, slices) source slice of every output slice, -1 where none (zero fill).

    Forward: reverse the order when ``flip``, then shift the window by
    ``shift_slices`` (output slice k shows input slice k - shift, reversed).
    """
    k = tf.range(slices, dtype=tf.int32)[None, :]
    shift = draws["shift_slices"][:, None]
    flip = draws["flip"][:, None]
    if not inverse:
        unshifted = k - shift
        source = tf.where(flip, slices - 1 - unshifted, unshifted)
    else:
        moved = tf.where(flip, slices - 1 - k, k)
        source = moved + shift
    return tf.where((source >= 0) & (source < slices), source, -1)


def _moved_slices(volumes, sources, offset=None):
    gathered = tf.gather(volumes, tf.maximum(sources, 0), axis=3, batch_dims=1)
    keep = tf.cast(sources >= 0, volumes.dtype)[:, None, None, :]
    out = gathered * keep
    if offset is not None:
        out = out + offset[:, None, None, None]
    return out


# XLA fuses the gather along the slice axis, the zero fill and the offset
# into one pass over the batch: a third of the CPU time of the three TF ops
# (whose gather copies one float at a time), bit for bit the same result.
# (ImageProjectiveTransformV3 has no XLA kernel, so the warp stays outside.)
_moved_slices_xla = tf.function(_moved_slices, jit_compile=True, reduce_retracing=True)


def _move_slices(volumes, sources, offset=None):
    """Output slice k of sample b = input slice sources[b, k] (0 where -1), plus offset[b]."""
    return _moved_slices_xla(volumes, sources, offset)


def apply(volumes, draws, interpolation="BILINEAR", intensity=True):
    """Applies drawn augmentations to a batch of volumes (b, 112, 224, 9).

    Args:
        volumes: float tensor (batch, rows, cols, slices).
        draws: the output of ``draw`` for this batch.
        interpolation: ``"BILINEAR"`` or ``"NEAREST"``.
        intensity: add the intensity offset (off for maps and masks).

    Returns:
        The augmented batch, same shape; zero where the warp left the volume.
    """
    volumes = tf.convert_to_tensor(volumes, tf.float32)
    height, width, slices = volumes.shape[1], volumes.shape[2], volumes.shape[3]
    forward = _in_plane_matrix(draws, height, width, inverse=False)
    # ImageProjectiveTransform asks, for each output pixel, where to read the input
    warped = _warp(volumes, tf.linalg.inv(forward), interpolation)
    return _move_slices(warped, _slice_sources(draws, slices, inverse=False),
                        draws["intensity"] if intensity else None)


def invert(maps, draws, interpolation="BILINEAR"):
    """Warps maps on augmented volumes back to the original volumes' grid.

    ``invert(apply(x, d, intensity=False), d)`` equals ``x`` away from the
    borders the augmentation moved out of view.
    """
    maps = tf.convert_to_tensor(maps, tf.float32)
    height, width, slices = maps.shape[1], maps.shape[2], maps.shape[3]
    unmoved = _move_slices(maps, _slice_sources(draws, slices, inverse=True))
    forward = _in_plane_matrix(draws, height, width, inverse=False)
    return _warp(unmoved, forward, interpolation)


def repeat_draws(draws, times):
    """Draws for ``times`` copies of each sample, in the order of ``tf.repeat``."""
    return {k: tf.repeat(v, times, axis=0) for k, v in draws.items()}
