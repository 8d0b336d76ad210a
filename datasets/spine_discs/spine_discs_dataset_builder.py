"""TFDS entry point of ``spine_discs``: ``tfds build datasets/spine_discs``.

The builder itself lives in the package (``spine_tf.data.spine_discs``, TFDS
name ``spine_discs``) so the installed ``spine-tf build-data`` command can use
it. TFDS's command line loads a dataset folder by importing this file and
taking the one builder class *defined* in it, named ``Builder``; this class is
that builder under the name TFDS expects, with this folder's ``dummy_data/``,
``checksums.tsv`` and README beside it. ``skip_registration`` keeps it from
clashing with the package builder, which is already registered as
``spine_discs``; both build into ``<data_dir>/spine_discs/<config>/<version>``.

Example:
    tfds build datasets/spine_discs --config phantom_small --data_dir /tmp/tfds
    tfds build datasets/spine_discs --config folder --manual_dir /data/cohort
"""

from spine_tf.data import spine_discs


class Builder(spine_discs.SpineDiscs, skip_registration=True):
    """``spine_discs`` (see ``spine_tf.data.spine_discs``), as a TFDS dataset folder."""

    name = "spine_discs"
