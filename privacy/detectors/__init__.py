"""Detectors behind one interface (``Detector``, one class of things each), and the factory.

Faces (CenterFace, YuNet, dlib), licence plates and text (PP-OCR detection, a plate ONNX
the user supplies); each backend's ``detection_class`` says which. The default face
backend is chosen by measurement (bench/): see ``DEFAULT_DETECTOR``; the plate and text
backends by bench/plates.py.
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
