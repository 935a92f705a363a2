"""Detect, propagate over time and redact a stream of frames, failing closed.

A frame is emitted only after detection succeeded on it and on its neighbours in
the temporal window; a face found in a neighbouring frame is redacted here too,
so one missed detection does not leak a face. Memory holds ``2 * window + 1``
frames, whatever the stream's length.

Several views of one instant (the two eyes of a stereo pair, the cameras of a
Project Aria recording) go through together: each view is detected, a face found
in one eye is searched for in the other (``privacy.stereo``), and each view is
propagated over time and redacted on its own.

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
from privacy.stereo import CrossViewCounts, CrossViewSearch
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
class ViewFrames:
    """The views of one instant (RGB uint8 each, rotation applied), by view name."""

    time_s: float
    images: dict[str, np.ndarray]
    emit: bool = True


@dataclass(slots=True)
class FrameOut:
    """A redacted frame: faces detected in it, boxes redacted, and boxes the other view gave."""

    time_s: float
    image: np.ndarray
    detected: int
    redacted: int
    recovered: int = 0


@dataclass(slots=True)
class _Pending:
    frames: ViewFrames
    dets: dict[str, Detections]  # each view's own detections plus cross-view recoveries
    own: dict[str, int]
    recovered: dict[str, int]


_MONO = "_"


class SegmentAnonymizer:
    """Streams frames through detection, temporal propagation and redaction.

    Args:
        detector: a loaded detector.
        redaction: how to redact.
        temporal_window: neighbours on each side whose faces are also redacted here.
        detect_timeout_s: a detection taking longer fails (fail closed); None for no limit.
        verifier: checks sampled redacted frames against their originals; the counts of
            the last ``process`` call are in ``verification``.
        batch_size: instants detected per detector call (larger on a GPU).
        cross_view: searches each stereo pair's other view for faces found in one.
    """

    def __init__(self, detector: FaceDetector, redaction: RedactionConfig,
                 temporal_window: int = 2, detect_timeout_s: float | None = 60.0,
                 verifier: RedactionVerifier | None = None, batch_size: int = 1,
                 cross_view: CrossViewSearch | None = None) -> None:
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
        # Verification runs on its own thread while detection goes on: HOG and the
        # face encodings release the GIL, so their cost mostly hides behind CenterFace.
        self._verify_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._checks: list[concurrent.futures.Future] = []
        self.broken = False
        self.batch_size = batch_size
        self.verifier = verifier
        self.cross_view = cross_view
        self.verification = VerificationSummary()
        self.cross_view_counts = CrossViewCounts()
        self._emitted = 0

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        if self._verify_pool is not None:
            self._verify_pool.shutdown(wait=True, cancel_futures=True)
            self._verify_pool = None

    def _timed(self, call, *args):
        """Run a detector call under the timeout (fail closed on expiry)."""
        if self.broken:
            raise DetectorError("detector unusable after an earlier timeout")
        if self.timeout is None:
            return call(*args)
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(1, "egoveil-detect")
        future = self._pool.submit(call, *args)
        try:
            return future.result(timeout=self.timeout)
        except concurrent.futures.TimeoutError:
            # The backend may still be running in its thread: never reuse it.
            self.broken = True
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            raise DetectorError(f"detection timed out after {self.timeout:.1f} s") from None

    def _detect(self, images: list[np.ndarray]) -> list[Detections]:
        return self._timed(self.detector.detect_batch, images)

    def _detect_batch(self, batch: list[ViewFrames], pairs: tuple[tuple[str, str], ...],
                      search: CrossViewSearch | None) -> Iterator[_Pending]:
        keys = [(i, view) for i, item in enumerate(batch) for view in item.images]
        found = self._detect([batch[i].images[view] for i, view in keys])
        own: list[dict[str, Detections]] = [{} for _ in batch]
        for (i, view), dets in zip(keys, found):
            own[i][view] = dets
        for item, dets in zip(batch, own):
            extra: dict[str, list[Detections]] = {view: [] for view in dets}
            if search is not None:
                for a, b in pairs:
                    if a not in dets or b not in dets:
                        continue
                    for src, dst in ((a, b), (b, a)):
                        extra[dst].append(self._timed(
                            search.recover, item.images[src], dets[src],
                            item.images[dst], dets[dst], self.cross_view_counts))
            yield _Pending(item, {v: Detections.concat([d, *extra[v]]) for v, d in dets.items()},
                           {v: len(d) for v, d in dets.items()},
                           {v: sum(len(e) for e in extra[v]) for v in dets})

    def _detected(self, frames: Iterable[ViewFrames], pairs: tuple[tuple[str, str], ...],
                  search: CrossViewSearch | None) -> Iterator[_Pending]:
        batch: list[ViewFrames] = []
        for item in frames:
            batch.append(item)
            if len(batch) == self.batch_size:
                yield from self._detect_batch(batch, pairs, search)
                batch = []
        if batch:
            yield from self._detect_batch(batch, pairs, search)

    def process(self, frames: Iterable[FrameIn],
                rng: np.random.Generator | None = None) -> Iterator[FrameOut]:
        """Yield redacted frames for every input frame with ``emit=True``, in order.

        Raises:
            DetectorError: detection failed on some frame (including context frames).
        """
        views = (ViewFrames(f.time_s, {_MONO: f.image}, f.emit) for f in frames)
        for out in self.process_views(views, rng):
            yield out[_MONO]

    def process_views(self, frames: Iterable[ViewFrames], rng: np.random.Generator | None = None,
                      pairs: tuple[tuple[str, str], ...] = (),
                      cross_view: CrossViewSearch | None = None
                      ) -> Iterator[dict[str, FrameOut]]:
        """Yield each emitted instant's redacted views, in order.

        Args:
            frames: instants, each with the same views.
            rng: noise for ``pixelate``.
            pairs: (left, right) view names searched against each other.
            cross_view: the search for these pairs (default: the one given at construction).

        Raises:
            DetectorError: detection failed on some frame (including context frames).
        """
        window: deque[_Pending] = deque()
        centre = 0  # index in ``window`` of the next instant to finish
        self.verification = VerificationSummary()
        self.cross_view_counts = CrossViewCounts()
        self._emitted = 0
        search = cross_view if cross_view is not None else self.cross_view
        self._checks = []
        try:
            for pending in self._detected(frames, pairs, search):
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
            # The segment is not done until every check is back: a failed check raises
            # here, before the caller can release anything of the segment.
            for check in self._checks:
                self.verification.add(check.result())
        finally:
            for check in self._checks:
                check.cancel()
            concurrent.futures.wait(self._checks)
            self._checks = []

    def _finish(self, window: deque[_Pending], centre: int,
                rng: np.random.Generator | None) -> dict[str, FrameOut] | None:
        item = window[centre]
        if not item.frames.emit:
            return None
        verify = self.verifier is not None and \
            self._emitted % self.verifier.config.every_n_frames == 0
        outputs = {}
        for view, image in item.frames.images.items():
            borrowed = propagated_boxes([(j - centre, other.dets[view].boxes)
                                         for j, other in enumerate(window)
                                         if j != centre and view in other.dets])
            own = item.dets[view].boxes
            boxes = np.concatenate([own, borrowed]) if borrowed.shape[0] else own
            if not image.flags.writeable:
                image = image.copy()
            original = image.copy() if verify else None
            redact(image, boxes, self.redaction, rng)
            if verify:
                if self._verify_pool is None:
                    self._verify_pool = concurrent.futures.ThreadPoolExecutor(
                        1, "egoveil-verify")
                self._checks.append(self._verify_pool.submit(
                    self.verifier.check, original, image.copy(), own))
            outputs[view] = FrameOut(item.frames.time_s, image, item.own[view],
                                     int(boxes.shape[0]), item.recovered[view])
        self._emitted += 1
        return outputs
