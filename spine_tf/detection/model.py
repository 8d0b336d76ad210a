"""The detector network: a small U-Net over one sagittal slice.

Input: (batch, rows, cols, 1) slices at ``data.SPACING_MM``, any intensity
scale, rows and cols multiples of 16 (``pad_to_multiple``). The model first
scales each slice by its own 99th percentile (a layer, so a saved detector
needs no outside statistics). Outputs, as a list (Keras sorts dicts):

- ``segmentation``: logits over ``data.CLASSES`` (background, disc,
  vertebral body, sacrum) per pixel;
- ``centres``: logit of the disc-centre heatmap per pixel.
"""

import keras
import tensorflow as tf

from spine_tf.detection import data

DOWNSAMPLINGS = 4
MULTIPLE = 2 ** DOWNSAMPLINGS


@keras.saving.register_keras_serializable(package="spine_tf")
class PercentileScale(keras.layers.Layer):
    """Divides each image by its ``percentile``-th intensity (at least 1/10 of its maximum)."""

    def __init__(self, percentile=99.0, **kwargs):
        super().__init__(**kwargs)
        self.percentile = percentile

    def call(self, images):
        flat = tf.reshape(images, [tf.shape(images)[0], -1])
        ordered = tf.sort(flat, axis=-1)
        n = tf.shape(flat)[1]
        index = tf.cast(tf.round(self.percentile / 100.0 * tf.cast(n - 1, tf.float32)), tf.int32)
        top = tf.maximum(ordered[:, index], 0.1 * ordered[:, -1])
        return tf.clip_by_value(images / (top[:, None, None, None] + 1e-6), 0.0, 1.5)

    def get_config(self):
        return {**super().get_config(), "percentile": self.percentile}


def _convs(x, filters, name):
    for i in (1, 2):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False,
                                kernel_initializer="he_normal", name=f"{name}_conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"{name}_bn{i}")(x)
        x = keras.layers.ReLU(name=f"{name}_relu{i}")(x)
    return x


def build_detector(filters=12, name="disc_detector"):
    """The U-Net: ``filters`` at full resolution, doubling per level up to 8x.

    Returns:
        keras.Model with outputs [segmentation logits (.., 4), centre logits (.., 1)].
    """
    image = keras.Input((None, None, 1), name="slice")
    x = PercentileScale(name="scale")(image)
    skips = []
    for level in range(DOWNSAMPLINGS):
        x = _convs(x, filters * 2 ** min(level, 3), f"down{level}")
        skips.append(x)
        x = keras.layers.MaxPool2D(name=f"pool{level}")(x)
    x = _convs(x, filters * 8, "bottom")
    for level in reversed(range(DOWNSAMPLINGS)):
        x = keras.layers.UpSampling2D(name=f"up{level}")(x)
        x = keras.layers.Concatenate(name=f"skip{level}")([x, skips[level]])
        x = _convs(x, filters * 2 ** min(level, 3), f"dec{level}")
    segmentation = keras.layers.Conv2D(len(data.CLASSES), 1, name="segmentation")(x)
    centres = keras.layers.Conv2D(1, 1, name="centres",
                                  bias_initializer=keras.initializers.Constant(-4.0))(x)
    return keras.Model(image, [segmentation, centres], name=name)


def pad_to_multiple(images):
    """Zero-pads (batch, rows, cols, 1) at the bottom/right to multiples of ``MULTIPLE``.

    Returns the padded batch and the original (rows, cols).
    """
    rows, cols = images.shape[1], images.shape[2]
    pad_r, pad_c = -rows % MULTIPLE, -cols % MULTIPLE
    return tf.pad(images, [[0, 0], [0, pad_r], [0, pad_c], [0, 0]]), (rows, cols)


@keras.saving.register_keras_serializable(package="spine_tf")
class SegmentationLoss(keras.losses.Loss):
    """Softmax cross-entropy per pixel with a weight per class, plus a soft Dice term per
    foreground class (discs are a few per cent of the pixels; Dice does not let a network
    ignore them)."""

    def __init__(self, class_weights=(1.0, 4.0, 1.0, 2.0), dice_weight=1.0,
                 name="segmentation_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.class_weights = tuple(float(w) for w in class_weights)
        self.dice_weight = float(dice_weight)

    def call(self, y_true, y_pred):
        y_true = tf.cast(y_true, tf.int32)
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(y_true, y_pred)
        weights = tf.gather(tf.constant(self.class_weights), y_true)
        cross_entropy = tf.reduce_mean(loss * weights, axis=[1, 2])
        if not self.dice_weight:
            return cross_entropy
        probabilities = tf.nn.softmax(y_pred)[..., 1:]
        truth = tf.one_hot(y_true, len(self.class_weights))[..., 1:]
        overlap = tf.reduce_sum(probabilities * truth, axis=[1, 2])
        total = tf.reduce_sum(probabilities + truth, axis=[1, 2])
        dice = (2.0 * overlap + 1.0) / (total + 1.0)  # (batch, foreground classes)
        return cross_entropy + self.dice_weight * tf.reduce_mean(1.0 - dice, axis=-1)

    def get_config(self):
        return {**super().get_config(), "class_weights": self.class_weights,
                "dice_weight": self.dice_weight}


@keras.saving.register_keras_serializable(package="spine_tf")
class HeatmapLoss(keras.losses.Loss):
    """Binary cross-entropy against the heatmap, weighted up near the centres."""

    def __init__(self, positive_weight=20.0, name="heatmap_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.positive_weight = float(positive_weight)

    def call(self, y_true, y_pred):
        y_true = tf.cast(y_true, tf.float32)
        loss = tf.nn.sigmoid_cross_entropy_with_logits(y_true, y_pred)
        return tf.reduce_mean(loss * (1.0 + self.positive_weight * y_true), axis=[1, 2, 3])

    def get_config(self):
        return {**super().get_config(), "positive_weight": self.positive_weight}
