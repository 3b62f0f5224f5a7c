"""edge-ee host library: make trained networks early-exit, calibrate, export, report.

Importing `edge_ee` does not import torch; the submodules that need it do.
"""

__version__ = "0.1.0"
