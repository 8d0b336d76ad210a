"""Speed benchmarks (``python -m tools.bench.<name>`` from the repository root) and
``benchlib``, the helpers they share with ``tools.studies``."""
