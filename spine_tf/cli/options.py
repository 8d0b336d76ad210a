"""Options and checks several commands share: scan inputs, the disc detector."""

from spine_tf.errors import UsageError


def add_scan_inputs(parser, optional=False):
    """The scans and their masks or landmarks (``app.scans.find_scans``'s arguments).

    With ``optional`` the scans may be left out (the handler checks that another source,
    such as ``--dicomweb``, is given instead)."""
    parser.add_argument("inputs", nargs="*" if optional else "+", metavar="SCAN_OR_FOLDER",
                        help="scan files (NIfTI, .mha/.nrrd, 2D pictures) or folders of "
                        "them; a folder with scans/, masks/, landmarks/ (spine-tf phantom's "
                        "layout) finds its masks and landmarks itself"
                        + ("; none with --dicomweb" if optional else ""))
    parser.add_argument("--masks",
                        help="folder of label masks named after the scans (or one file)")
    parser.add_argument("--landmarks",
                        help="folder of landmarks JSON named after the scans (or one file)")


def add_detector(parser):
    parser.add_argument("--detector", help="disc detector (.keras, a train-detector folder, "
                        "or 'phantom': the package's phantom-only one) for scans without a "
                        "mask or landmarks (default: the one shipped with spine_tf)")


def load_detector(path, needed=True):
    """The detector for scans without mask or landmarks (None when no scan needs one).

    Raises:
        DetectorError: no such detector.
    """
    if not needed:
        return None
    from spine_tf import detection
    return detection.load(path)


def at_least_one(value, flag):
    """Raises UsageError unless ``value`` (of option ``flag``) is at least 1."""
    if value < 1:
        raise UsageError(f"{flag} must be at least 1")


def add_keras_log(parser):
    parser.add_argument("--keras-log", action="store_true",
                        help="Keras' full line per epoch (every task's numbers) instead of "
                        "one short line; history.csv holds them all either way")


def fit_verbosity(args):
    """``train.train``'s ``verbose``: one short line per epoch, or Keras' full line."""
    return "line" if not args.keras_log else 2
