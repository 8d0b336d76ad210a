"""Training with ``model.fit``: the tf.data input pipeline (``input_pipeline``), the
training loop (``train``), its callbacks (``callbacks``) and the run folder (``rundir``)."""
