"""The ``spine_discs`` TFDS dataset folder (builder in ``spine_tf.data.spine_discs``)."""
