"""Faulty detectors for fail-closed tests: a real detector with faults injected at chosen frames.

These are backends behind the ``Detector`` interface, the way a broken model,
a hung accelerator or a corrupted weight file would present itself.
"""

from __future__ import annotations

import time

import numpy as np

from privacy.detectors import Detections, Detector, build_detector
from privacy.detectors.factory import DEFAULT_PLATE_DETECTOR
from schemas.detections import FACE, PLATE


class FaultyDetector(Detector):
    """Wraps the default detector; on call number ``at`` (0-based) it misbehaves.

    Args:
        fault: ``raise`` (an exception), ``hang`` (sleeps ``hang_s``), ``nan`` (NaN boxes),
            ``inverted`` (x2 < x1), ``type`` (returns a list), ``far`` (boxes far outside).
        at: which call misbehaves; every later call too when ``sticky``.
    """

    name = "faulty"
    spec = "centerface"

    def __init__(self, fault: str, at: int = 3, hang_s: float = 5.0, sticky: bool = False):
        self.inner = build_detector(self.spec)
        self.fault, self.at, self.hang_s, self.sticky = fault, at, hang_s, sticky
        self.calls = 0

    def _detect(self, frame):
        call = self.calls
        self.calls += 1
        if call == self.at or (self.sticky and call > self.at):
            if self.fault == "raise":
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            if self.fault == "hang":
                time.sleep(self.hang_s)
            if self.fault == "nan":
                return Detections(np.full((1, 4), np.nan, np.float32), np.ones(1, np.float32))
            if self.fault == "inverted":
                return Detections(np.array([[50, 50, 10, 10]], np.float32), np.ones(1, np.float32))
            if self.fault == "type":
                return [[0, 0, 10, 10]]
            if self.fault == "far":
                return Detections(np.array([[1e6, 1e6, 1e6 + 5, 1e6 + 5]], np.float32),
                                  np.ones(1, np.float32))
        return self.inner._detect(frame)


class FaultyPlateDetector(FaultyDetector):
    """The same faults around the default plate detector (PP-OCR)."""

    name = "faulty-plates"
    spec = DEFAULT_PLATE_DETECTOR
    detection_class = PLATE


class FaultyFactory:
    """A picklable factory, so a DoFn can build the faulty detector in ``setup()``.

    Args:
        detection_class: ``face`` (around CenterFace) or ``plate`` (around PP-OCR).
    """

    def __init__(self, fault: str, at: int = 3, detection_class: str = FACE, **kwargs):
        self.fault, self.at, self.kwargs = fault, at, kwargs
        self.cls = FaultyPlateDetector if detection_class == PLATE else FaultyDetector

    def __call__(self) -> FaultyDetector:
        return self.cls(self.fault, self.at, **self.kwargs)


class BlindDetector(Detector):
    """Succeeds on every frame and never finds a face: a silently broken model."""

    name = "blind"

    def _detect(self, frame):
        return Detections.empty()


class BlindPlateDetector(BlindDetector):
    """Never finds a plate."""

    name = "blind-plates"
    detection_class = PLATE


class BlindFactory:
    def __init__(self, detection_class: str = FACE) -> None:
        self.detection_class = detection_class

    def __call__(self) -> BlindDetector:
        return BlindPlateDetector() if self.detection_class == PLATE else BlindDetector()


class HallucinatingDetector(Detector):
    """Always sees a 60 px face in the top-left corner, whatever the frame holds."""

    name = "hallucinating"

    def _detect(self, frame):
        return Detections(np.array([[0, 0, 60, 60]], np.float32), np.ones(1, np.float32))


class HallucinatingPlateDetector(HallucinatingDetector):
    """Always sees a 60 x 20 px plate in the top-left corner."""

    name = "hallucinating-plates"
    detection_class = PLATE

    def _detect(self, frame):
        return Detections(np.array([[0, 0, 60, 20]], np.float32), np.ones(1, np.float32))


class HallucinatingFactory:
    def __init__(self, detection_class: str = FACE) -> None:
        self.detection_class = detection_class

    def __call__(self) -> HallucinatingDetector:
        return HallucinatingPlateDetector() if self.detection_class == PLATE else \
            HallucinatingDetector()
