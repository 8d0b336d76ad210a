"""The disc detector: finds and names the discs of a raw sagittal scan.

``detect(scan, detector)`` gives the same ``Localisation`` a label mask or
landmarks give, so extraction, prediction and hotspots work on a scan alone.
The detector is a small U-Net trained on phantom label maps painted with
random appearance (``data``, ``synth``, ``train``), then fine-tuned on real
slices (SPIDER's disc boxes and annotated masks); ``load()`` returns it
(``weights/detector.keras``; both commands in ``weights/README.md``).
"""

import os

from spine_tf.errors import SpineTFError

WEIGHTS = os.path.join(os.path.dirname(__file__), "weights", "detector.keras")
"""The detector shipped with the package (phantom-trained, fine-tuned on real slices)."""
PHANTOM_WEIGHTS = os.path.join(os.path.dirname(__file__), "weights", "detector_phantom.keras")
"""The shipped detector before fine-tuning: trained on phantom slices alone."""
SHIPPED = {"shipped": WEIGHTS, "phantom": PHANTOM_WEIGHTS}
"""Names ``load`` (and ``--detector``, ``--init``) accept for the package's detectors."""
DETECTOR_FILE = "detector.keras"
"""The detector in a ``spine-tf train-detector`` folder."""


class DetectorError(SpineTFError, FileNotFoundError):
    """No detector file at the path given, or one Keras cannot load."""


def load(path=None):
    """A detector for inference: ``path`` (a ``.keras`` file, a training folder, or a name
    in ``SHIPPED``), or the package's default. Its ``source`` attribute says which
    (outputs record it).

    Raises:
        DetectorError: no such detector, or a file that is not one (the message
            starts with "cannot load the detector").
    """
    import keras
    from spine_tf.detection import model as _layers  # noqa: F401 (registers its layers)
    file = os.fspath(SHIPPED.get(path, path) if path else WEIGHTS)
    if os.path.isdir(file):
        file = os.path.join(file, DETECTOR_FILE)
    if not os.path.isfile(file):
        raise DetectorError(f"cannot load the detector: {file}: no detector file")
    try:
        detector = keras.saving.load_model(file, compile=False)
    except ValueError as error:  # Keras' error for a file that is not a model
        raise DetectorError(f"cannot load the detector: {error}") from error
    detector.source = os.fspath(path) if path else "shipped with spine_tf"
    return detector


def detect(scan, detector, pixel_sizes=None):
    """See ``spine_tf.detection.inference.detect``."""
    from spine_tf.detection.inference import detect as _detect
    return _detect(scan, detector, pixel_sizes)


def dataset_detector(config, path=None, use=True):
    """``SpineDiscs``'s ``detect`` for a dataset config: the detector (``path``, else the
    default) with its pixel-size search from the anatomy for ``spider_slices`` (listed
    spacings are wrong for some of those images; docs/data.md), None for the others or when
    ``use`` is False. The detector loads on its first scan, so a dataset already built costs
    nothing. A ``spider_slices`` build without it leaves out every image without boxes."""
    if config != "spider_slices" or not use:
        return None
    import functools
    from spine_tf.detection.inference import PIXEL_SEARCH_MM
    loaded = functools.lru_cache(maxsize=1)(lambda: load(path))
    return lambda scan: detect(scan, loaded(), pixel_sizes=PIXEL_SEARCH_MM)
