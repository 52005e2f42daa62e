"""GEARS H core: physics conventions, structures, graphs, model, prediction, sparse H/S, I/O.

Importing this package has no side effects (no XLA flags, no x64, no device selection).
"""

__version__ = "0.1.0"
