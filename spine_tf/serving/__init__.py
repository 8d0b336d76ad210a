"""Serving: the SavedModel export for TF Serving (``export``) and its REST/gRPC client
(``client``)."""
