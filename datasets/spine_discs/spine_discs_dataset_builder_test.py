"""TFDS's own builder test of ``spine_discs`` on ``dummy_data/`` (``folder`` and ``spider``).

``dummy_data/`` is written by ``tools/make_dummy_data``; the split counts are
fixed by its patients (splits come from a hash of the patient id) and their
visible discs: folder: ph0-00011 (6 discs) and ph0-00007 (4, cut off) in
train, ph0-00021 (6) in validation, ph0-00000 (6) in test; SPIDER: patient 1
(6) in train, 9 (5) in validation, 24 (6) in test.
"""

import pytest
import tensorflow_datasets as tfds

# tfds.testing imports dill (a tensorflow-datasets test dependency, in spine-tf[test]).
pytest.importorskip("dill", reason="tfds.testing needs dill: pip install 'spine-tf[test]'")

from spine_discs import spine_discs_dataset_builder  # noqa: E402


class FolderTest(tfds.testing.DatasetBuilderTestCase):
    """The ``folder`` config on ``dummy_data/folder``."""

    DATASET_CLASS = spine_discs_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["folder"]
    EXAMPLE_DIR = DATASET_CLASS.code_path.parent / "dummy_data" / "folder"
    SPLITS = {"train": 10, "validation": 6, "test": 6}
    SKIP_CHECKSUMS = True


class SpiderTest(tfds.testing.DatasetBuilderTestCase):
    """The ``spider`` config on ``dummy_data/spider`` (needs SimpleITK)."""

    DATASET_CLASS = spine_discs_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["spider"]
    EXAMPLE_DIR = DATASET_CLASS.code_path.parent / "dummy_data" / "spider"
    SPLITS = {"train": 6, "validation": 5, "test": 6}
    SKIP_CHECKSUMS = True

    @classmethod
    def setUpClass(cls):
        pytest.importorskip("SimpleITK")
        super().setUpClass()


if __name__ == "__main__":
    tfds.testing.test_main()
