"""Scan reading, orientation and masks: every scan in one sagittal frame.

See :mod:`spine_tf.io.scan` for the internal frame, ('L', 'I', 'P').
"""

from spine_tf.io.scan import INTERNAL_AXCODES
from spine_tf.io.scan import Scan
from spine_tf.io.scan import ScanError
from spine_tf.io.scan import lip_affine
from spine_tf.io.scan import read_mask
from spine_tf.io.scan import read_scan
from spine_tf.io.scan import reorient_to_internal
from spine_tf.io.scan import save_nifti
from spine_tf.io.scan import scan_from_array
from spine_tf.io.scan import scan_name

__all__ = [
    "INTERNAL_AXCODES",
    "Scan",
    "ScanError",
    "lip_affine",
    "read_mask",
    "read_scan",
    "reorient_to_internal",
    "save_nifti",
    "scan_from_array",
    "scan_name",
]
