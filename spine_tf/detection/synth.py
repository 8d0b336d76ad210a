"""Random appearance and geometry for detector training, in TF ops (runs in tf.data or on a GPU).

``randomise`` turns a batch of label-map examples (``data``) into images and
targets. Geometry: random scale, rotation and position of a ``crop`` x
``crop`` window (so spines are often partly out of view). Appearance, for
``synthetic_fraction`` of the samples: random ellipses are laid over the
background (clutter that is not a disc), every region gets a random mean and
spread (tissue contrast is arbitrary, so the network must use shape), then
blur, a smooth multiplicative bias field, a random gamma and Rician-like
noise; the other samples show the phantom's own rendering with the same
bias, gamma and noise. All ranges are in ``config.SynthConfig``, the one
place for them.
"""

import math

import tensorflow as tf

from spine_tf.detection import data
from spine_tf.detection.config import SynthConfig


def _uniform(shape, seed, low, high):
    return tf.random.stateless_uniform(shape, seed, low, high)


def _window(batch, size, crop, config, seed):
    """(batch, 8) ImageProjectiveTransform rows: output crop pixel -> input pixel."""
    seeds = tf.random.experimental.stateless_split(seed, 4)
    scale = tf.exp(_uniform([batch], seeds[0], math.log(config.scale[0]),
                            math.log(config.scale[1])))
    angle = _uniform([batch], seeds[1], -1.0, 1.0) * math.radians(config.rotation_deg)
    # centre of the window anywhere in the middle 70 % of the example
    centre = _uniform([batch, 2], seeds[2], 0.15 * size, 0.85 * size)
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    half = (crop - 1) / 2.0
    # input = centre + R(angle) / scale @ (output - half)
    x0 = centre[:, 1] - cos * half + sin * half
    y0 = centre[:, 0] - sin * half - cos * half
    zeros = tf.zeros_like(cos)
    return tf.stack([cos, -sin, x0, sin, cos, y0, zeros, zeros], axis=-1)


def _warp(images, transforms, crop, interpolation):
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=[crop, crop], fill_value=0.0,
        interpolation=interpolation, fill_mode="CONSTANT")


def _gaussian_blur(images, sigma):
    radius = int(math.ceil(3 * sigma))
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-x ** 2 / (2 * sigma ** 2))
    kernel = kernel / tf.reduce_sum(kernel)
    images = tf.nn.conv2d(images, tf.reshape(kernel, [-1, 1, 1, 1]), 1, "SAME")
    return tf.nn.conv2d(images, tf.reshape(kernel, [1, -1, 1, 1]), 1, "SAME")


def _clutter(regions, classes, count, seed):
    """Paints ``count`` random ellipses (3-30 mm half axes) over each sample's background
    as regions of their own: blobs like bowel loops and vessels that are not discs."""
    b, crop = tf.shape(regions)[0], tf.shape(regions)[1]
    seeds = tf.random.experimental.stateless_split(seed, 3)
    size = tf.cast(crop, tf.float32)
    centre = _uniform([b, count, 2], seeds[0], 0.0, 1.0) * size
    half = tf.exp(_uniform([b, count, 2], seeds[1], math.log(2.0), math.log(20.0)))
    angle = _uniform([b, count], seeds[2], 0.0, math.pi)
    grid = tf.cast(tf.range(crop), tf.float32)
    dy = grid[None, None, :, None] - centre[..., 0, None, None]
    dx = grid[None, None, None, :] - centre[..., 1, None, None]
    cos, sin = tf.cos(angle)[..., None, None], tf.sin(angle)[..., None, None]
    u = (cos * dx + sin * dy) / half[..., 0, None, None]
    v = (-sin * dx + cos * dy) / half[..., 1, None, None]
    inside = u ** 2 + v ** 2 <= 1.0  # (b, count, crop, crop)
    # where ellipses overlap, the later one is on top
    order = tf.range(1, count + 1, dtype=tf.int32)[None, :, None, None]
    top = tf.reduce_max(tf.where(inside, order, 0), axis=1)
    paint = (top > 0) & tf.equal(classes, 0) & (regions > 0)
    return tf.where(paint, data.REGIONS + top - 1, regions)


def randomise(batch, seed, config=SynthConfig()):
    """Images and targets for one batch of examples.

    Args:
        batch: dict of (b, size, size) tensors from ``data.phantom_examples``.
        seed: shape-(2,) int seed; the same seed gives the same batch.
        config: SynthConfig.

    Returns:
        (image (b, crop, crop, 1) float32 in [0, 1],
         {"segmentation": (b, crop, crop) int32 classes,
          "centres": (b, crop, crop, 1) float32 heatmap}).
    """
    regions = tf.cast(batch["regions"], tf.float32)
    b = tf.shape(regions)[0]
    size = batch["regions"].shape[1]
    crop = config.crop
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 12)
    transforms = _window(b, size, crop, config, seeds[0])
    labels = _warp(tf.stack([regions, tf.cast(batch["classes"], tf.float32)], -1),
                   transforms, crop, "NEAREST")
    smooth = _warp(tf.stack([tf.cast(batch["centres"], tf.float32),
                             tf.cast(batch["image"], tf.float32)], -1),
                   transforms, crop, "BILINEAR")
    regions = tf.cast(labels[..., 0], tf.int32)
    classes = tf.cast(labels[..., 1], tf.int32)
    centres, rendered = smooth[..., :1], smooth[..., 1:]

    # random contrast: a mean and spread per region; outside the field of view stays 0
    regions = _clutter(regions, classes, config.clutter, seeds[11])
    count = data.REGIONS + config.clutter
    means = _uniform([b, count], seeds[1], 0.0, 1.0)
    spreads = _uniform([b, count], seeds[2], 0.0, config.spread)
    outside = tf.one_hot(0, count, on_value=0.0, off_value=1.0)
    mean = tf.gather(means * outside, regions, batch_dims=1)
    spread = tf.gather(spreads * outside, regions, batch_dims=1)
    texture = tf.random.stateless_normal(tf.shape(mean), seeds[3])
    painted = (mean + spread * texture)[..., None]
    painted = _gaussian_blur(painted, 0.7)  # partial volume at the region borders
    synthetic = _uniform([b, 1, 1, 1], seeds[4], 0.0, 1.0) < config.synthetic_fraction
    image = tf.where(synthetic, painted, rendered)

    # blur: a per-sample blend of the image and a strongly blurred copy
    blend = _uniform([b, 1, 1, 1], seeds[5], 0.0, 1.0)
    image = (1 - blend) * image + blend * _gaussian_blur(image, config.blur_px)
    # smooth multiplicative bias field from a coarse random grid
    coarse = tf.random.stateless_normal([b, 4, 4, 1], seeds[6])
    field = tf.image.resize(coarse, [crop, crop], method="bicubic")
    image = image * tf.exp(_uniform([b, 1, 1, 1], seeds[7], 0.0, config.bias) * field)
    # gamma, then noise in quadrature (Rician-like: magnitude images)
    image = tf.maximum(image, 0.0) / (tf.reduce_max(image, axis=[1, 2, 3], keepdims=True) + 1e-6)
    image = image ** tf.exp(config.gamma * tf.random.stateless_normal([b, 1, 1, 1], seeds[8]))
    sigma = _uniform([b, 1, 1, 1], seeds[9], 0.0, config.noise)
    noise = tf.random.stateless_normal(tf.concat([tf.shape(image), [2]], 0), seeds[10])
    image = tf.sqrt((image + sigma * noise[..., 0]) ** 2 + (sigma * noise[..., 1]) ** 2)
    image = tf.clip_by_value(image / (tf.reduce_max(image, axis=[1, 2, 3], keepdims=True)
                                      + 1e-6), 0.0, 1.0)
    return image, {"segmentation": classes, "centres": centres}
