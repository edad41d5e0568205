"""Latency predicted without hardware: the Pixel 1 preset, calibrated predictors and per-layer lookup tables.

Pure Python and numpy: importing this package imports neither TensorFlow nor LiteRT, so the search loop can
predict thousands of children a second. Measuring models on this host or a phone, and the registry that names
every backend ('pixel1', 'host', 'lut:FILE', ...), are one layer up, in `measure`.
"""

from __future__ import annotations

from mnas.search.latency.base import LatencyModel, Measurement
from mnas.search.latency.calibrate import pixel1_preset
from mnas.search.latency.lut import LookupTable
from mnas.search.latency.predictor import CalibratedPredictor, TransferPredictor, load_predictor

__all__ = ["CalibratedPredictor", "LatencyModel", "LookupTable", "Measurement", "TransferPredictor",
           "load_predictor", "pixel1_preset"]
