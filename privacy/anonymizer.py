"""Detect, propagate over time and redact a stream of frames, failing closed.

A frame is emitted only after detection succeeded on it and on its neighbours in
the temporal window; a face found in a neighbouring frame is redacted here too,
so one missed detection does not leak a face. Memory holds ``2 * window + 1``
frames, whatever the stream's length.

Any ``DetectorError`` propagates to the caller, which must discard everything
already emitted for the same unit of work (the Beam stage buffers a segment's
outputs until the segment completes).
"""

from __future__ import annotations

import concurrent.futures
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from privacy.detectors.base import Detections, DetectorError, FaceDetector
from privacy.redaction import RedactionConfig, redact

# A face that moves between frames: boxes borrowed from a neighbour grow by this
# fraction per frame of distance, so a moving face stays under the mask.
PROPAGATION_GROWTH_PER_FRAME = 0.15


@dataclass(slots=True)
class FrameIn:
    """A decoded frame (RGB uint8, rotation applied) and whether it is output.

    Context frames (``emit=False``) sit just outside a segment: they are detected
    so that their faces can be propagated into the segment, but never output.
    """

    time_s: float
    image: np.ndarray
    emit: bool = True


@dataclass(slots=True)
class FrameOut:
    time_s: float
    image: np.ndarray
    detected: int
    redacted: int


@dataclass(slots=True)
class _Pending:
    frame: FrameIn
    dets: Detections


def _grow(boxes: np.ndarray, factor: float) -> np.ndarray:
    if boxes.shape[0] == 0 or factor == 1.0:
        return boxes
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    hw = (boxes[:, 2] - boxes[:, 0]) * factor / 2
    hh = (boxes[:, 3] - boxes[:, 1]) * factor / 2
    return np.stack([cx - hw, cy - hh, cx + hw, cy + hh], axis=1).astype(np.float32)


class SegmentAnonymizer:
    """Streams frames through detection, temporal propagation and redaction.

    Args:
        detector: a loaded detector.
        redaction: how to redact.
        temporal_window: neighbours on each side whose faces are also redacted here.
        detect_timeout_s: a detection taking longer fails (fail closed); None for no limit.
    """

    def __init__(self, detector: FaceDetector, redaction: RedactionConfig,
                 temporal_window: int = 2, detect_timeout_s: float | None = 60.0) -> None:
        if temporal_window < 0:
            raise ValueError(f"temporal_window must be >= 0, got {temporal_window}")
        if detect_timeout_s is not None and detect_timeout_s <= 0:
            raise ValueError(f"detect_timeout_s must be positive, got {detect_timeout_s}")
        self.detector = detector
        self.redaction = redaction
        self.window = temporal_window
        self.timeout = detect_timeout_s
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.broken = False

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _detect(self, image: np.ndarray) -> Detections:
        if self.broken:
            raise DetectorError("detector unusable after an earlier timeout")
        if self.timeout is None:
            return self.detector.detect(image)
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(1, "egoveil-detect")
        future = self._pool.submit(self.detector.detect, image)
        try:
            return future.result(timeout=self.timeout)
        except concurrent.futures.TimeoutError:
            # The backend may still be running in its thread: never reuse it.
            self.broken = True
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            raise DetectorError(f"detection timed out after {self.timeout:.1f} s") from None

    def process(self, frames: Iterable[FrameIn],
                rng: np.random.Generator | None = None) -> Iterator[FrameOut]:
        """Yield redacted frames for every input frame with ``emit=True``, in order.

        Raises:
            DetectorError: detection failed on some frame (including context frames).
        """
        window: deque[_Pending] = deque()
        centre = 0  # index in ``window`` of the next frame to finish
        for frame in frames:
            window.append(_Pending(frame, self._detect(frame.image)))
            while centre < len(window) and len(window) - 1 - centre >= self.window:
                out = self._finish(window, centre, rng)
                if out is not None:
                    yield out
                centre += 1
                while centre > self.window:
                    window.popleft()
                    centre -= 1
        while centre < len(window):
            out = self._finish(window, centre, rng)
            if out is not None:
                yield out
            centre += 1

    def _finish(self, window: deque[_Pending], centre: int,
                rng: np.random.Generator | None) -> FrameOut | None:
        item = window[centre]
        if not item.frame.emit:
            return None
        parts = [item.dets.boxes]
        for j, other in enumerate(window):
            if j != centre and len(other.dets):
                parts.append(_grow(other.dets.boxes,
                                   1.0 + PROPAGATION_GROWTH_PER_FRAME * abs(j - centre)))
        boxes = np.concatenate(parts) if len(parts) > 1 else parts[0]
        image = item.frame.image
        if not image.flags.writeable:
            image = image.copy()
        redact(image, boxes, self.redaction, rng)
        return FrameOut(item.frame.time_s, image, len(item.dets), int(boxes.shape[0]))
