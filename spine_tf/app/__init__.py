"""Grading scans end to end: finding scans and their discs (``scans``), the models that
grade them (``predictors``), the batch runner (``predict``) and its reports (``render``)."""
