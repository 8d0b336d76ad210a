"""The model: VGG-M trunk and task heads (``model``), the masked class-balanced loss
(``losses``) and the metrics (``metrics``)."""
