"""The stored disc volume: uint16 on disk (in the dataset, caches and ``.npz`` files),
float32 in [0, 1] everywhere else.

Example:
    stored = to_stored(volume)                 # numpy float [0, 1] -> uint16
    volume = from_stored(stored)               # -> tf.float32 [0, 1] (numpy or tf input)
"""

import numpy as np

VOLUME_MAX = 65535
"""A stored value v means v / VOLUME_MAX."""


def to_stored(volume):
    """float [0, 1] disc volume (numpy) -> uint16 as stored; values outside are clipped."""
    return np.round(np.clip(volume, 0.0, 1.0) * VOLUME_MAX).astype(np.uint16)


def from_stored(stored):
    """Stored uint16 disc volume (numpy or tf) -> tf.float32 in [0, 1]."""
    import tensorflow as tf
    return tf.cast(stored, tf.float32) / VOLUME_MAX
