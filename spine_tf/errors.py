"""The base of every error spine_tf raises for a user to read.

Each names the file, scan, run folder or server and the problem in one line;
``spine-tf`` prints it as ``spine-tf COMMAND: error: ...`` and exits with 1,
and batch jobs record it per scan and go on.
"""


class SpineTFError(Exception):
    """An input or setting spine_tf cannot use; the message says which and why."""


class UsageError(SpineTFError, ValueError):
    """Arguments that do not fit together (a command-line or API misuse)."""
