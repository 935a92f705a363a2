"""Detectors behind one interface (``Detector``, one class of things each), and the factory.

The default backend is chosen by measurement (bench/): see ``DEFAULT_DETECTOR``.
"""

from privacy.detectors.base import Detections, Detector, DetectorError
from privacy.detectors.factory import DEFAULT_DETECTOR, DetectorSpec, build_detector

__all__ = [
    "DEFAULT_DETECTOR",
    "Detections",
    "DetectorError",
    "DetectorSpec",
    "Detector",
    "build_detector",
]
