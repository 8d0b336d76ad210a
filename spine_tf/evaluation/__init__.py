"""Scoring trained models: metrics over a dataset split with TTA (``evaluate``), a run
folder's evaluation and hotspot measurement (``runs``), the branch-point sweep (``sweep``)."""
