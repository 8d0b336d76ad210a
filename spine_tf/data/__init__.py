"""Data sources and the ``spine_discs`` TFDS dataset."""
