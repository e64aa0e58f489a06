"""Triton python-backend modules, one per model kind, each copied verbatim as ``1/model.py``."""
