"""Neutral segment specs → deployable graphs (format registry), int8, validation, the one bundle writer.

The middle layer: imports `device_runners` (the bundle contract, backends, the device's
self-check) and never `edge_ee` (`tests/test_layers.py` checks it). See docs/ARCHITECTURE.md.
"""
