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
from privacy.tracking import propagated_boxes
from privacy.verification import RedactionVerifier, VerificationSummary


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


class SegmentAnonymizer:
    """Streams frames through detection, temporal propagation and redaction.

    Args:
        detector: a loaded detector.
        redaction: how to redact.
        temporal_window: neighbours on each side whose faces are also redacted here.
        detect_timeout_s: a detection taking longer fails (fail closed); None for no limit.
        verifier: checks sampled redacted frames against their originals; the counts of
            the last ``process`` call are in ``verification``.
        batch_size: frames detected per detector call (larger on a GPU).
    """

    def __init__(self, detector: FaceDetector, redaction: RedactionConfig,
                 temporal_window: int = 2, detect_timeout_s: float | None = 60.0,
                 verifier: RedactionVerifier | None = None, batch_size: int = 1) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
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
        self.batch_size = batch_size
        self.verifier = verifier
        self.verification = VerificationSummary()
        self._emitted = 0

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _detect(self, images: list[np.ndarray]) -> list[Detections]:
        if self.broken:
            raise DetectorError("detector unusable after an earlier timeout")
        if self.timeout is None:
            return self.detector.detect_batch(images)
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(1, "egoveil-detect")
        future = self._pool.submit(self.detector.detect_batch, images)
        try:
            return future.result(timeout=self.timeout)
        except concurrent.futures.TimeoutError:
            # The backend may still be running in its thread: never reuse it.
            self.broken = True
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            raise DetectorError(f"detection timed out after {self.timeout:.1f} s") from None

    def _detected(self, frames: Iterable[FrameIn]) -> Iterator[_Pending]:
        batch: list[FrameIn] = []
        for frame in frames:
            batch.append(frame)
            if len(batch) == self.batch_size:
                yield from map(_Pending, batch, self._detect([f.image for f in batch]))
                batch = []
        if batch:
            yield from map(_Pending, batch, self._detect([f.image for f in batch]))

    def process(self, frames: Iterable[FrameIn],
                rng: np.random.Generator | None = None) -> Iterator[FrameOut]:
        """Yield redacted frames for every input frame with ``emit=True``, in order.

        Raises:
            DetectorError: detection failed on some frame (including context frames).
        """
        window: deque[_Pending] = deque()
        centre = 0  # index in ``window`` of the next frame to finish
        self.verification = VerificationSummary()
        self._emitted = 0
        for pending in self._detected(frames):
            window.append(pending)
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
        borrowed = propagated_boxes([(j - centre, other.dets.boxes)
                                     for j, other in enumerate(window) if j != centre])
        boxes = np.concatenate([item.dets.boxes, borrowed]) if borrowed.shape[0] \
            else item.dets.boxes
        image = item.frame.image
        if not image.flags.writeable:
            image = image.copy()
        verify = self.verifier is not None and \
            self._emitted % self.verifier.config.every_n_frames == 0
        original = image.copy() if verify else None
        redact(image, boxes, self.redaction, rng)
        if verify:
            self.verification.add(self.verifier.check(original, image, item.dets.boxes))
        self._emitted += 1
        return FrameOut(item.frame.time_s, image, len(item.dets), int(boxes.shape[0]))
