"""Accuracy studies (``python -m tools.studies.<name>`` from the repository root); each
writes its sections into a results document named in ``tools.bench.benchlib.DOCS``."""
