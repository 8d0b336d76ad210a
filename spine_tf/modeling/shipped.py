"""The grading model shipped with the package, by name: ``"shipped"``.

``weights/spider_slices.keras`` is a 1-slice model of the ``spider`` task set trained on every
patient of the SPIDER slices in ``../shared/data/spider-t2-slices`` (CC BY 4.0);
``weights/spider_slices.json`` is its card (what it was trained on, the credit the licence
asks for, how to reproduce it), and ``weights/README.md`` says the same for people. This
module imports no TensorFlow, so commands can resolve the name before loading Keras.
"""

import json
import os

SHIPPED = "shipped"
"""The name that stands for the shipped grading model wherever a model path is asked for."""
WEIGHTS = os.path.join(os.path.dirname(__file__), "weights")
SHIPPED_MODEL = os.path.join(WEIGHTS, "spider_slices.keras")
SHIPPED_CARD = os.path.join(WEIGHTS, "spider_slices.json")


def model_file(path):
    """The file of a model name or path: ``SHIPPED_MODEL`` for ``"shipped"``, else ``path``."""
    return SHIPPED_MODEL if os.fspath(path) == SHIPPED else os.fspath(path)


def shipped_card():
    """The shipped model's card: a dict with ``model``, ``trained_on``, ``licence``,
    ``credit``, ``reproduce`` and its held-out figures."""
    with open(SHIPPED_CARD, encoding="utf-8") as f:
        return json.load(f)
