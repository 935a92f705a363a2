"""Detect, propagate over time and redact a stream of frames, failing closed.

A frame is emitted only after detection succeeded on it and on its neighbours in
the temporal window; a face found in a neighbouring frame is redacted here too,
so one missed detection does not leak a face. Memory holds ``2 * window + 1``
frames, whatever the stream's length.

Each class of detections (faces, plates, text) has its own detector, temporal
window and redaction (``ClassDetector``); boxes of different classes are never
merged, and every count is kept per class.

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

from privacy.detectors.base import Detections, Detector, DetectorError
from privacy.redaction import RedactionConfig, redact
from privacy.stereo import CrossViewCounts, CrossViewSearch, unrectified
from privacy.tracking import propagated_boxes
from privacy.verification import RedactionVerifier, VerificationSummary
from schemas.detections import FACE


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
    """A redacted frame and, by detection class, what was found and redacted in it.

    Attributes:
        detected: boxes the class's detector found in this frame.
        redacted: boxes redacted (its own, its neighbours', the other view's).
        recovered: boxes the other view of a stereo pair gave.
    """

    time_s: float
    image: np.ndarray
    detected: dict[str, int]
    redacted: dict[str, int]
    recovered: dict[str, int]


@dataclass(slots=True)
class ClassDetector:
    """One class's detector and how its detections are spread and redacted.

    Args:
        detector: a loaded detector; its ``detection_class`` names the class.
        redaction: how this class is redacted.
        temporal_window: neighbours on each side whose boxes of this class also cover
            a frame.
        cross_view: searches each stereo pair's other view for what one view found.
    """

    detector: Detector
    redaction: RedactionConfig
    temporal_window: int = 2
    cross_view: CrossViewSearch | None = None

    def __post_init__(self) -> None:
        if self.temporal_window < 0:
            raise ValueError(f"temporal_window must be >= 0, got {self.temporal_window}")

    @property
    def name(self) -> str:
        return self.detector.detection_class


@dataclass(slots=True)
class _Pending:
    frames: ViewFrames
    dets: dict[str, dict[str, Detections]]  # class -> view -> own plus cross-view boxes
    own: dict[str, dict[str, int]]
    recovered: dict[str, dict[str, int]]


_MONO = "_"


class SegmentAnonymizer:
    """Streams frames through detection, temporal propagation and redaction, per class.

    Args:
        classes: one ``ClassDetector`` per class to redact (faces, plates, text); their
            detections are never merged across classes.
        detect_timeout_s: a detection taking longer fails (fail closed); None for no limit.
        verifier: checks sampled redacted frames against their originals (faces); the
            counts of the last ``process`` call are in ``verification``.
        batch_size: instants detected per detector call (larger on a GPU).
    """

    def __init__(self, classes: list[ClassDetector], detect_timeout_s: float | None = 60.0,
                 verifier: RedactionVerifier | None = None, batch_size: int = 1) -> None:
        if not classes:
            raise ValueError("at least one class must be detected")
        names = [c.name for c in classes]
        if len(set(names)) != len(names):
            raise ValueError(f"one detector per class, got {', '.join(names)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if detect_timeout_s is not None and detect_timeout_s <= 0:
            raise ValueError(f"detect_timeout_s must be positive, got {detect_timeout_s}")
        self.classes = list(classes)
        self.window = max(c.temporal_window for c in self.classes)
        self.timeout = detect_timeout_s
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        # Verification runs on its own thread while detection goes on: HOG and the
        # face encodings release the GIL, so their cost mostly hides behind CenterFace.
        self._verify_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._checks: list[concurrent.futures.Future] = []
        self.broken = False
        self.batch_size = batch_size
        self.verifier = verifier
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

    def _detect_batch(self, batch: list[ViewFrames], pairs: tuple[tuple[str, str], ...],
                      rectified: bool) -> Iterator[_Pending]:
        keys = [(i, view) for i, item in enumerate(batch) for view in item.images]
        images = [batch[i].images[view] for i, view in keys]
        dets: list[dict[str, dict[str, Detections]]] = [{} for _ in batch]
        own: list[dict[str, dict[str, int]]] = [{} for _ in batch]
        recovered: list[dict[str, dict[str, int]]] = [{} for _ in batch]
        for cls in self.classes:
            found = self._timed(cls.detector.detect_batch, images)
            by_view: list[dict[str, Detections]] = [{} for _ in batch]
            for (i, view), d in zip(keys, found):
                by_view[i][view] = d
            search = cls.cross_view
            if search is not None and not rectified:
                search = unrectified(search)
            for i, item in enumerate(batch):
                views = by_view[i]
                extra: dict[str, list[Detections]] = {view: [] for view in views}
                if search is not None:
                    for a, b in pairs:
                        if a not in views or b not in views:
                            continue
                        for src, dst in ((a, b), (b, a)):
                            extra[dst].append(self._timed(
                                search.recover, item.images[src], views[src],
                                item.images[dst], views[dst], self.cross_view_counts))
                dets[i][cls.name] = {v: Detections.concat([d, *extra[v]])
                                     for v, d in views.items()}
                own[i][cls.name] = {v: len(d) for v, d in views.items()}
                recovered[i][cls.name] = {v: sum(len(e) for e in extra[v]) for v in views}
        for i, item in enumerate(batch):
            yield _Pending(item, dets[i], own[i], recovered[i])

    def _detected(self, frames: Iterable[ViewFrames], pairs: tuple[tuple[str, str], ...],
                  rectified: bool) -> Iterator[_Pending]:
        batch: list[ViewFrames] = []
        for item in frames:
            batch.append(item)
            if len(batch) == self.batch_size:
                yield from self._detect_batch(batch, pairs, rectified)
                batch = []
        if batch:
            yield from self._detect_batch(batch, pairs, rectified)

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
                      pairs: tuple[tuple[str, str], ...] = (), rectified: bool = True
                      ) -> Iterator[dict[str, FrameOut]]:
        """Yield each emitted instant's redacted views, in order.

        Args:
            frames: instants, each with the same views.
            rng: noise for ``pixelate``.
            pairs: (left, right) view names searched against each other.
            rectified: whether the pairs are rectified (a face on the same rows in both
                eyes); unrectified pairs are searched over a wider band.

        Raises:
            DetectorError: detection failed on some frame (including context frames).
        """
        window: deque[_Pending] = deque()
        centre = 0  # index in ``window`` of the next instant to finish
        self.verification = VerificationSummary()
        self.cross_view_counts = CrossViewCounts()
        self._emitted = 0
        self._checks = []
        try:
            for pending in self._detected(frames, pairs, rectified):
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
            if not image.flags.writeable:
                image = image.copy()
            original = image.copy() if verify else None
            redacted: dict[str, int] = {}
            for cls in self.classes:
                name = cls.name
                # The classes with the widest window borrow from every instant still held:
                # at the end of a stream that reaches past the window (held instants are no
                # longer dropped), so the last frames are covered more, never less.
                widest = cls.temporal_window == self.window
                borrowed = propagated_boxes([
                    (j - centre, other.dets[name][view].boxes)
                    for j, other in enumerate(window)
                    if j != centre and (widest or abs(j - centre) <= cls.temporal_window)
                    and view in other.dets[name]])
                own = item.dets[name][view].boxes
                boxes = np.concatenate([own, borrowed]) if borrowed.shape[0] else own
                redact(image, boxes, cls.redaction, rng)
                redacted[name] = int(boxes.shape[0])
            if verify:
                if self._verify_pool is None:
                    self._verify_pool = concurrent.futures.ThreadPoolExecutor(
                        1, "egoveil-verify")
                faces = item.dets[FACE][view].boxes if FACE in item.dets else \
                    np.zeros((0, 4), np.float32)
                self._checks.append(self._verify_pool.submit(
                    self.verifier.check, original, image.copy(), faces))
            outputs[view] = FrameOut(
                item.frames.time_s, image,
                detected={name: counts[view] for name, counts in item.own.items()},
                redacted=redacted,
                recovered={name: counts[view] for name, counts in item.recovered.items()})
        self._emitted += 1
        return outputs
