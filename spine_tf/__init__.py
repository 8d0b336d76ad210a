"""spine_tf: lumbar disc grading on T2 sagittal MRI with evidence hotspots.

The SpineNet method (Jamaludin, Kadir & Zisserman, MICCAI 2016) in
TensorFlow / Keras 3. See README.md for the command line and formats.
"""

__version__ = "0.1.0"
