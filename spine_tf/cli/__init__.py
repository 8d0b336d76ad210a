"""The ``spine-tf`` command line.

Commands (each has ``--help``), one module per group:

  demo.py        demo            phantom cohort -> dataset -> train -> evaluate -> predict
  data.py        phantom         write a phantom cohort (scans, masks, landmarks, labels)
                 build-data      build the spine_discs TFDS dataset
  training.py    train           train SpineNet with model.fit (resumable; --preset)
                 evaluate        score a trained run (TTA, intra-rater, Lootus, confusion)
                 ensemble        average several models into one
                 sweep           the paper's branch-point sweep
  scans.py       extract         cut the disc volumes out of one scan
                 hotspots        evidence hotspots of a scan or a dataset split
                 predict         grade scans: grades, hotspots, HTML report
  serving.py     export          export a model for TF Serving
                 client          grade scans through a TF Serving server
  detection.py   train-detector  train the disc detector
                 evaluate-detector  measure it on annotated images (boxes or masks)

``parser.py`` builds the parser from the groups' ``add_parsers``. Handlers
import heavy modules (TensorFlow, TFDS) inside, so ``spine-tf --help``,
``spine-tf COMMAND --help`` and ``spine-tf phantom`` load none. Every error
spine_tf raises for a user (``spine_tf.errors.SpineTFError``) ends a command
as one line on stderr, ``spine-tf COMMAND: error: MESSAGE``, and exit status 1.
"""

import sys

from spine_tf.cli.parser import build_parser
from spine_tf.errors import SpineTFError

COMMANDS = ("demo", "phantom", "build-data", "train", "evaluate", "ensemble", "sweep", "extract",
            "hotspots", "predict", "export", "client", "train-detector", "evaluate-detector")
"""Every command, in the order ``spine-tf --help`` lists them."""


class CommandFailed(SystemExit):
    """Exit status 1, raised once ``main`` has printed a command's error line;
    ``str()`` gives that line."""

    def __init__(self, line):
        super().__init__(1)
        self.line = line

    def __str__(self):
        return self.line


def main(argv=None):
    """Runs ``spine-tf`` with ``argv`` (default: the command line).

    Returns:
        The command's exit status (2: no command given, help printed).

    Raises:
        CommandFailed: a ``SpineTFError`` ended the command (exit status 1,
            its line already on stderr); SystemExit from argparse as usual.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return args.run(args) or 0
    except SpineTFError as error:
        line = f"spine-tf {args.command}: error: {error}"
        print(line, file=sys.stderr)
        raise CommandFailed(line) from error


if __name__ == "__main__":
    sys.exit(main())
