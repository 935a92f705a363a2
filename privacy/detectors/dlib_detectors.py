"""face-recognition's dlib detectors: HOG (CPU) and the CNN (practical with CUDA dlib).

Measured on WIDER faces of 20 px and more (DESIGN.md), HOG alone covers 18%: it is
an option for comparison, never the default.
"""

from __future__ import annotations

import numpy as np

from privacy.detectors.base import (
    DLIB_LOCK,
    Detections,
    Detector,
    import_face_recognition,
)


class DlibDetector(Detector):
    """face_recognition.face_locations with ``model='hog'`` or ``model='cnn'``.

    Args:
        model: ``hog`` or ``cnn``.
        upsample: times to upsample the image before detecting (finds smaller faces).
    """

    def __init__(self, model: str = "hog", upsample: int = 1) -> None:
        if model not in ("hog", "cnn"):
            raise ValueError(f"model must be 'hog' or 'cnn', got {model!r}")
        if not 0 <= upsample <= 4:
            raise ValueError(f"upsample must be in [0, 4], got {upsample}")
        face_recognition = import_face_recognition()

        self._face_locations = face_recognition.face_locations
        self.model = model
        self.upsample = upsample
        self.name = f"dlib_{model}"

    def describe(self) -> dict:
        return {"name": self.name, "upsample": self.upsample}

    def _detect(self, frame: np.ndarray) -> Detections:
        with DLIB_LOCK:
            locations = self._face_locations(np.ascontiguousarray(frame),
                                             number_of_times_to_upsample=self.upsample,
                                             model=self.model)
        if not locations:
            return Detections.empty()
        boxes = np.array([[left, top, right, bottom] for top, right, bottom, left in locations],
                         np.float32)
        return Detections(boxes, np.ones((boxes.shape[0],), np.float32))
