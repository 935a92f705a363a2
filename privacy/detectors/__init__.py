"""Face detectors behind one interface (``FaceDetector``), and the factory that builds them.

The default backend is chosen by measurement (bench/): see ``DEFAULT_DETECTOR``.
"""

from privacy.detectors.base import Detections, DetectorError, FaceDetector
from privacy.detectors.factory import DEFAULT_DETECTOR, DetectorSpec, build_detector

__all__ = [
    "DEFAULT_DETECTOR",
    "Detections",
    "DetectorError",
    "DetectorSpec",
    "FaceDetector",
    "build_detector",
]
