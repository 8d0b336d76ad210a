"""Scripts of the repository, run from its root as modules.

``python -m tools.bench.<name>``: speed benchmarks, written to docs/benchmarks.md.
``python -m tools.studies.<name>``: accuracy studies, written to docs/results/.
The shared helpers and the documents each writes are in ``tools.bench.benchlib``.
"""
