"""The detector interface and the checks that make detection fail closed.

``Detector.detect`` either returns validated boxes inside the frame or raises
``DetectorError``: "nothing found" (an empty result) and "detection failed" (an
exception) are never confused, and garbage (NaN, inverted or absurd boxes) is a
failure, not an empty result. A detector finds one class of things
(``detection_class``: faces, plates or text); the anonymizer runs one per class.
"""

from __future__ import annotations

import abc
import threading
from dataclasses import dataclass

import numpy as np

from schemas.detections import DETECTION_CLASSES, FACE

MAX_DETECTIONS_PER_FRAME = 10000


# face_recognition keeps one dlib detector, pose model and encoder per process; the
# verifier runs beside detection in another thread, so every call into them takes
# this lock (dlib releases the GIL, and its models are not documented as thread-safe).
DLIB_LOCK = threading.Lock()


def import_face_recognition_models():
    """face_recognition_models, imported without its ``pkg_resources`` deprecation warning.

    The package imports ``pkg_resources`` to find its model files; setuptools warns
    about that on every import, and the warning would be the first line a user sees.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated",
                                category=UserWarning)
        import face_recognition_models
    return face_recognition_models


def import_face_recognition():
    """face_recognition, imported after its models package (see above), without warnings."""
    import_face_recognition_models()
    import face_recognition

    return face_recognition


class DetectorError(RuntimeError):
    """Detection did not succeed on a frame; nothing derived from it may be output."""


@dataclass(slots=True, frozen=True)
class Detections:
    """Boxes of one class in one frame, in pixels of that frame.

    Attributes:
        boxes: float32 (N, 4) as x1, y1, x2, y2.
        scores: float32 (N,) confidences in [0, 1].
    """

    boxes: np.ndarray
    scores: np.ndarray

    @staticmethod
    def empty() -> Detections:
        return Detections(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @staticmethod
    def concat(parts: list[Detections]) -> Detections:
        parts = [p for p in parts if len(p)]
        if not parts:
            return Detections.empty()
        return Detections(np.concatenate([p.boxes for p in parts]).astype(np.float32),
                          np.concatenate([p.scores for p in parts]).astype(np.float32))


def validate_frame(frame: np.ndarray) -> None:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 \
            or frame.shape[2] != 3 or frame.shape[0] < 1 or frame.shape[1] < 1:
        raise DetectorError(
            f"expected an RGB uint8 frame (H, W, 3), got {getattr(frame, 'dtype', type(frame))} "
            f"{getattr(frame, 'shape', '')}")


def validate_detections(dets: object, height: int, width: int) -> Detections:
    """Check a backend's output and clip it to the frame.

    Raises:
        DetectorError: the output is not a ``Detections``, has non-finite or inverted
            boxes, scores outside [0, 1], boxes wholly outside the frame, or an
            implausible count.
    """
    if not isinstance(dets, Detections):
        raise DetectorError(f"detector returned {type(dets).__name__}, not Detections")
    boxes, scores = dets.boxes, dets.scores
    if not isinstance(boxes, np.ndarray) or boxes.ndim != 2 or boxes.shape[1] != 4:
        raise DetectorError(f"boxes must be (N, 4), got {getattr(boxes, 'shape', None)}")
    if not isinstance(scores, np.ndarray) or scores.shape != (boxes.shape[0],):
        raise DetectorError("scores must be (N,) and match the boxes")
    if boxes.shape[0] > MAX_DETECTIONS_PER_FRAME:
        raise DetectorError(f"implausible detection count {boxes.shape[0]}")
    if boxes.shape[0] == 0:
        return Detections.empty()
    if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
        raise DetectorError("non-finite box or score")
    if (scores < 0).any() or (scores > 1.0 + 1e-6).any():
        raise DetectorError("score outside [0, 1]")
    if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
        raise DetectorError("inverted box (x2 < x1 or y2 < y1)")
    margin_x, margin_y = 0.5 * width, 0.5 * height
    if ((boxes[:, 2] < -margin_x) | (boxes[:, 0] > width + margin_x)
            | (boxes[:, 3] < -margin_y) | (boxes[:, 1] > height + margin_y)).any():
        raise DetectorError("box far outside the frame")
    clipped = boxes.astype(np.float32).copy()
    np.clip(clipped[:, 0::2], 0, width, out=clipped[:, 0::2])
    np.clip(clipped[:, 1::2], 0, height, out=clipped[:, 1::2])
    return Detections(clipped, scores.astype(np.float32))


class Detector(abc.ABC):
    """A detector of one class: RGB uint8 frames in, validated boxes out.

    Subclasses implement ``_detect``; callers use ``detect``, which validates both
    sides and turns every backend exception into ``DetectorError``.

    Attributes:
        name: the backend, for the record of processing.
        detection_class: what it finds, one of ``schemas.detections.DETECTION_CLASSES``.
    """

    name: str = "detector"
    detection_class: str = FACE

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if cls.detection_class not in DETECTION_CLASSES:
            raise TypeError(f"{cls.__name__}.detection_class must be one of "
                            f"{', '.join(DETECTION_CLASSES)}")

    @abc.abstractmethod
    def _detect(self, frame: np.ndarray) -> Detections:
        """Backend detection on an RGB uint8 frame."""

    def _detect_batch(self, frames: list[np.ndarray]) -> list[Detections]:
        """Backend detection on several frames; backends that batch override this."""
        return [self._detect(frame) for frame in frames]

    def detect(self, frame: np.ndarray) -> Detections:
        return self.detect_batch([frame])[0]

    def detect_batch(self, frames: list[np.ndarray]) -> list[Detections]:
        """Validated detections for each frame, in order; any failure fails the batch."""
        for frame in frames:
            validate_frame(frame)
        try:
            results = self._detect_batch(list(frames))
        except DetectorError:
            raise
        except Exception as exc:  # any backend failure means: not detected
            raise DetectorError(f"{self.name} failed: {type(exc).__name__}: {exc}") from exc
        if not isinstance(results, list) or len(results) != len(frames):
            raise DetectorError(f"{self.name} returned {type(results).__name__} for "
                                f"{len(frames)} frames")
        return [validate_detections(d, f.shape[0], f.shape[1]) for d, f in zip(results, frames)]

    def describe(self) -> dict:
        """Name, weights hash and thresholds, for the record of processing."""
        return {"name": self.name}


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, highest score first."""
    if boxes.shape[0] == 0:
        return np.zeros((0,), np.int64)
    x1, y1, x2, y2 = boxes.T
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        union = areas[i] + areas[rest] - inter
        overlap = np.where(union > 0, inter / np.maximum(union, 1e-9), 0)
        order = rest[overlap < iou]
    return np.asarray(keep, np.int64)
