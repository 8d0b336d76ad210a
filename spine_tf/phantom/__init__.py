"""Synthetic T2 sagittal lumbar scans with known labels, lesions and landmarks.

The phantom cohort is spine_tf's built-in data source: tests, demos and the
TFDS builder's dummy data all come from this one generator.
"""

from spine_tf.phantom.anatomy import PhantomConfig
from spine_tf.phantom.cohort import (PhantomPatient, make_patient, parse_patient_id,
                                     patient_anatomy, patient_id, write_cohort)

__all__ = ["PhantomConfig", "PhantomPatient", "make_patient", "parse_patient_id",
           "patient_anatomy", "patient_id", "write_cohort"]
