"""The ``spine-tf`` argument parser: the program's own options, then each command
group's sub-parsers (the ``add_parsers`` of every group module), in help order."""

import argparse

from spine_tf import __version__
from spine_tf.cli import data, demo, detection, scans, serving, training

GROUPS = (demo, data, training, scans, serving, detection)


def build_parser():
    """The ``spine-tf`` parser; each command's ``run`` default is its handler."""
    parser = argparse.ArgumentParser(
        prog="spine-tf", description="Lumbar disc grading on T2 sagittal MRI (SpineNet).")
    parser.add_argument("--version", action="version", version=f"spine-tf {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in GROUPS:
        group.add_parsers(commands)
    return parser
