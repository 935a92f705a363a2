"""Detect, propagate over time and redact a stream of frames, failing closed.

A frame is emitted only after detection succeeded on its neighbours in the
temporal window (and on itself, unless its class's schedule skips it); a face
found in a neighbouring detected frame is redacted here too, so one missed
detection does not leak a face. A class detected on keyframes only
(``privacy.schedule``) counts its window in detected frames: a frame between
keyframes is released once the ``temporal_window`` nearest keyframes after it are
detected, and it masks the boxes of those on both sides (grown with distance) and
the boxes interpolated between them; a class that follows motion (plates, text)
carries those boxes along the optical flow between the frames instead
(``privacy.motion``). A class with coarse keyframes (faces: a pass at reduced
resolution between full-resolution ones) also waits for, and borrows from, the nearest
full-resolution keyframe on each side, which carries the small faces a coarse pass
cannot see. Memory holds ``2 * window * gap + 1`` frames at most (``2 * full gap +
1`` where that is more), whatever the stream's length.

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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from privacy.detectors.base import Detections, Detector, DetectorError, nms
from privacy.motion import CarriedBoxes, Flow, MotionTracker
from privacy.redaction import RedactionConfig, redact, scale_boxes
from privacy.schedule import COARSE, DetectionSchedule, Pass, Scheduler
from privacy.stereo import CrossViewCounts, CrossViewSearch, unrectified
from privacy.tracking import followed_boxes, propagated_boxes
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
        detected: boxes the class's detector found in this frame (0 where it did not run).
        redacted: boxes redacted (its own, its neighbours', the other view's).
        recovered: boxes the other view of a stereo pair gave.
        boxes: the boxes redacted, by class, before the mask scale is applied.
        ran: the classes whose detector ran on this frame (the others borrowed boxes
            from the detected frames around it).
        coarse: of ``ran``, the classes detected here by a coarse pass (reduced
            resolution) only.
    """

    time_s: float
    image: np.ndarray
    detected: dict[str, int]
    redacted: dict[str, int]
    recovered: dict[str, int]
    boxes: dict[str, np.ndarray]
    ran: frozenset[str]
    coarse: frozenset[str] = frozenset()


@dataclass(slots=True)
class ClassDetector:
    """One class's detector and how its detections are spread and redacted.

    Args:
        detector: a loaded detector; its ``detection_class`` names the class.
        redaction: how this class is redacted.
        temporal_window: neighbours on each side whose boxes of this class also cover
            a frame.
        cross_view: searches each stereo pair's other view for what one view found.
        schedule: which frames the detector runs on; the window then counts detected
            frames.
        coarse: the detector of the schedule's coarse keyframes (the same spec at the
            schedule's ``coarse_scale``); required with coarse keyframes.
        follow_motion: carry the boxes borrowed from neighbouring keyframes along the
            measured motion (``privacy.motion``) instead of growing them in place: for
            what stays put in the world while the camera moves (plates, text).
    """

    detector: Detector
    redaction: RedactionConfig
    temporal_window: int = 2
    cross_view: CrossViewSearch | None = None
    schedule: DetectionSchedule = DetectionSchedule()
    coarse: Detector | None = None
    follow_motion: bool = False

    def __post_init__(self) -> None:
        if self.temporal_window < 0:
            raise ValueError(f"temporal_window must be >= 0, got {self.temporal_window}")
        if not self.schedule.is_every_frame and self.temporal_window < 1:
            raise ValueError("a class detected on keyframes needs temporal_window >= 1")
        if self.schedule.coarse and self.coarse is None:
            raise ValueError("a schedule with coarse keyframes needs a coarse detector")
        if self.coarse is not None and \
                self.coarse.detection_class != self.detector.detection_class:
            raise ValueError(f"the coarse detector finds {self.coarse.detection_class}, not "
                             f"{self.detector.detection_class}")

    @property
    def name(self) -> str:
        return self.detector.detection_class


@dataclass(slots=True)
class _Pending:
    frames: ViewFrames
    # class -> view -> own plus cross-view boxes; a class absent: not detected here
    dets: dict[str, dict[str, Detections]]
    own: dict[str, dict[str, int]]
    recovered: dict[str, dict[str, int]]
    # the classes of ``dets`` detected by a coarse pass only
    coarse: frozenset[str] = frozenset()
    # view -> the motion from the previous instant (kept where a class follows motion)
    flows: dict[str, Flow | None] | None = None
    # (class, view, forward) -> this keyframe's boxes carried towards its neighbours
    carried: dict[tuple[str, str, bool], CarriedBoxes] = field(default_factory=dict)


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
        # The classes besides faces whose check a sampled frame handed on to their next
        # keyframe, and that frame's check arguments by view (see ``_finish``).
        self._owed: set[str] = set()
        self._handed_on: list[tuple] = []
        self.broken = False
        self.batch_size = batch_size
        self.verifier = verifier
        self.verification = VerificationSummary()
        self.cross_view_counts = CrossViewCounts()
        self._emitted = 0

    def context(self, step: int = 1) -> int:
        """Instants of context each side of a segment so that its edges see full windows.

        The first instant given and the last are detected by every class, at full
        resolution, and a class's keyframes are at most its cap apart: ``(w - 1) * cap + 1``
        instants hold ``w`` of its keyframes (a full-resolution one among them) before the
        segment's first frame and after its last.

        Args:
            step: source frames per instant (see ``process_views``).
        """
        return max((c.temporal_window - 1) * c.schedule.instants(step) + 1
                   if c.temporal_window else 0 for c in self.classes)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        if self._verify_pool is not None:
            self._verify_pool.shutdown(wait=True, cancel_futures=True)
            self._verify_pool = None

    def _timed(self, call, *args):
        """Run a detector call under the timeout (fail closed on expiry)."""
        return self._timed_all([(call, *args)])[0]

    def _timed_all(self, calls: list[tuple]) -> list:
        """Run detector calls side by side, each under the timeout (fail closed on expiry).

        Classes detected on the same instants run at once: PP-OCR and CenterFace each leave
        part of the machine idle between layers, and the other fills it.
        """
        if self.broken:
            raise DetectorError("detector unusable after an earlier timeout")
        if self.timeout is None and len(calls) == 1:
            call, *args = calls[0]
            return [call(*args)]
        if self._pool is None:
            # One thread per detector: each class's, and its coarse pass's.
            self._pool = concurrent.futures.ThreadPoolExecutor(
                sum(1 + (c.coarse is not None) for c in self.classes), "egoveil-detect")
        futures = [self._pool.submit(call, *args) for call, *args in calls]
        done, pending = concurrent.futures.wait(futures, timeout=self.timeout)
        if pending:
            # The backend may still be running in its thread: never reuse it.
            self.broken = True
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            raise DetectorError(f"detection timed out after {self.timeout:.1f} s")
        return [future.result() for future in futures]

    def _detect_batch(self, batch: list[tuple[ViewFrames, dict[str, Pass],
                                              dict[str, Flow | None] | None]],
                      pairs: tuple[tuple[str, str], ...], rectified: bool) -> Iterator[_Pending]:
        """Detect each instant of ``batch`` with the classes due on it, one call per class
        and pass (full resolution, coarse)."""
        dets: list[dict[str, dict[str, Detections]]] = [{} for _ in batch]
        own: list[dict[str, dict[str, int]]] = [{} for _ in batch]
        recovered: list[dict[str, dict[str, int]]] = [{} for _ in batch]
        # One call per class and pass (full resolution, coarse), all side by side.
        due_keys = {(cls.name, coarse): [(i, view) for i, (item, due, _) in enumerate(batch)
                                         if cls.name in due
                                         and (due[cls.name] == COARSE) == coarse
                                         for view in item.images]
                    for cls in self.classes for coarse in (False, True)}
        calls = [(cls, coarse) for cls in self.classes for coarse in (False, True)
                 if due_keys[cls.name, coarse]]
        results = self._timed_all([
            ((cls.coarse if coarse else cls.detector).detect_batch,
             [batch[i][0].images[view] for i, view in due_keys[cls.name, coarse]])
            for cls, coarse in calls]) if calls else []
        found_by: dict[str, dict[int, dict[str, Detections]]] = {}
        for (cls, coarse), found in zip(calls, results):
            for (i, view), d in zip(due_keys[cls.name, coarse], found):
                found_by.setdefault(cls.name, {}).setdefault(i, {})[view] = d
        for cls in self.classes:
            by_view = found_by.get(cls.name)
            if not by_view:
                continue
            search = cls.cross_view
            if search is not None and not rectified:
                search = unrectified(search)
            for i, views in by_view.items():
                item = batch[i][0]
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
        for i, (item, due, flows) in enumerate(batch):
            yield _Pending(item, dets[i], own[i], recovered[i],
                           frozenset(name for name, level in due.items() if level == COARSE),
                           flows)

    def _detected(self, frames: Iterable[ViewFrames], pairs: tuple[tuple[str, str], ...],
                  rectified: bool, step: int) -> Iterator[_Pending]:
        """Instants in order, each detected by the classes whose schedule is due on it.

        Instants are batched until ``batch_size`` of them need a detector; the last
        instant of the stream is always detected (one instant of look-ahead tells it).
        """
        # The other eye is searched on every instant the detector runs on, and a face one
        # eye's detector misses is recovered instant by instant: with pairs, faces are
        # detected on every instant, whatever their schedule. Plates and text keep theirs
        # (PP-OCR costs three CenterFace passes a view): their other eye is searched on
        # their keyframes, and what it recovers is carried between them like their own boxes.
        schedulers = [(cls.name, Scheduler(
            DetectionSchedule() if pairs and cls.cross_view is not None and cls.name == FACE
            else cls.schedule, step)) for cls in self.classes]
        batch: list[tuple[ViewFrames, dict[str, Pass], dict[str, Flow | None] | None]] = []
        trackers: dict[str, MotionTracker] | None = \
            {} if any(c.follow_motion for c in self.classes) else None
        detected = 0
        iterator = iter(frames)
        item = next(iterator, None)
        first = True
        while item is not None:
            following = next(iterator, None)
            levels = ((name, scheduler.due(item.images, first, following is None,
                                           item.time_s))
                      for name, scheduler in schedulers)
            due = {name: level for name, level in levels if level is not None}
            first = False
            flows = None if trackers is None else {
                view: trackers.setdefault(view, MotionTracker()).push(image)
                for view, image in item.images.items()}
            batch.append((item, due, flows))
            detected += bool(due)
            if detected == self.batch_size:
                yield from self._detect_batch(batch, pairs, rectified)
                batch, detected = [], 0
            item = following
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
                      pairs: tuple[tuple[str, str], ...] = (), rectified: bool = True,
                      step: int = 1) -> Iterator[dict[str, FrameOut]]:
        """Yield each emitted instant's redacted views, in order.

        Args:
            frames: instants, each with the same views.
            rng: noise for ``pixelate``.
            pairs: (left, right) view names searched against each other.
            rectified: whether the pairs are rectified (a face on the same rows in both
                eyes); unrectified pairs are searched over a wider band.
            step: source frames per instant (every ``step``-th frame is given), which
                scales the detection schedules' caps.

        Raises:
            DetectorError: detection failed on some frame (including context frames).
        """
        window: list[_Pending] = []
        centre = 0  # index in ``window`` of the next instant to finish
        self.verification = VerificationSummary()
        self.cross_view_counts = CrossViewCounts()
        self._emitted = 0
        self._owed, self._handed_on = set(), []
        self._checks = []
        try:
            for pending in self._detected(frames, pairs, rectified, step):
                window.append(pending)
                while centre < len(window) and self._ready(window, centre):
                    out = self._finish(window, centre, rng)
                    if out is not None:
                        yield out
                    centre += 1
                    drop = self._droppable(window, centre)
                    del window[:drop]
                    centre -= drop
            while centre < len(window):
                out = self._finish(window, centre, rng, flushing=True)
                if out is not None:
                    yield out
                centre += 1
            # A check handed on that no emitted keyframe took (``_handed_on`` is empty
            # whenever nothing is owed): done on the frame that handed it on, where an
            # uncovered region is counted between keyframes.
            for args in self._handed_on:
                self._checks.append(self._verify_pool.submit(
                    self.verifier.check, *args, faces=False, classes=frozenset(self._owed)))
            # The segment is not done until every check is back: a failed check raises
            # here, before the caller can release anything of the segment.
            for check in self._checks:
                self.verification.add(check.result())
        finally:
            for check in self._checks:
                check.cancel()
            concurrent.futures.wait(self._checks)
            self._checks = []

    def _ready(self, window: list[_Pending], centre: int) -> bool:
        """Whether every class has its window's detected instants after ``centre`` (and,
        with coarse keyframes, a full-resolution one)."""
        for cls in self.classes:
            need = cls.temporal_window
            if need == 0:
                continue
            found, full = 0, not cls.schedule.coarse
            for pending in window[centre + 1:]:
                if cls.name in pending.dets:
                    found += 1
                    full = full or cls.name not in pending.coarse
                if found >= need and full:
                    break
            else:
                return False
        return True

    def _droppable(self, window: list[_Pending], centre: int) -> int:
        """How many instants at the window's start no class needs for ``centre`` on."""
        keep = centre
        for cls in self.classes:
            found, full, start = 0, not cls.schedule.coarse, centre
            for j in range(centre - 1, -1, -1):
                if found >= cls.temporal_window and full:
                    break
                if cls.name in window[j].dets:
                    found += 1
                    full = full or cls.name not in window[j].coarse
                    start = j
            keep = min(keep, start)
        return keep

    def _neighbours(self, window: list[_Pending], centre: int, cls: ClassDetector,
                    view: str, everything: bool = False) -> list[tuple[int, np.ndarray]]:
        """(offset, boxes) of the ``temporal_window`` nearest detected instants on each side
        and, with coarse keyframes, of the nearest full-resolution one on each side if they
        are all coarse; or of every detected instant in ``window`` but the centre with
        ``everything``."""
        out: list[tuple[int, np.ndarray]] = []
        reach = len(window) if everything else cls.temporal_window
        for direction in (-1, 1):
            found, full, j = 0, not cls.schedule.coarse, centre + direction
            while (found < reach or not full) and 0 <= j < len(window):
                views = window[j].dets.get(cls.name)
                if views is not None:
                    coarse = cls.name in window[j].coarse
                    # Past the window, only the full-resolution keyframe is borrowed from.
                    if found < reach or not coarse:
                        if view in views:
                            out.append((j - centre, views[view].boxes))
                    found += 1
                    full = full or not coarse
                j += direction
        return out

    @staticmethod
    def _carried(window: list[_Pending], centre: int, offset: int, name: str, view: str,
                 boxes: np.ndarray) -> np.ndarray | None:
        """Class ``name``'s boxes of the instant ``offset`` from ``centre`` carried to
        ``centre`` along the motion between them; None where some of it is unknown."""
        source = centre + offset
        forward = offset < 0
        key = (name, view, forward)
        chain = window[source].carried.get(key)
        if chain is None:
            chain = window[source].carried[key] = CarriedBoxes(boxes, forward)

        def flow(d: int) -> Flow | None:
            # Forward: the flow into each instant after the source; backward: into the
            # source and each instant down to the one after the centre.
            return (window[source + d if forward else source - d + 1].flows or {}).get(view)

        return chain.to(abs(offset), flow)

    def _finish(self, window: list[_Pending], centre: int, rng: np.random.Generator | None,
                flushing: bool = False) -> dict[str, FrameOut] | None:
        item = window[centre]
        if not item.frames.emit:
            return None
        sampled = self.verifier is not None and \
            self._emitted % self.verifier.config.every_n_frames == 0
        if sampled:
            self._owed.update(cls.name for cls in self.classes if cls.name != FACE)
        # Plates and text are checked on their own keyframes, where a region the check
        # finds uncovered fails the unit: a sampled frame between them hands its check on
        # to the class's next emitted keyframe (in a segment with context before it, the
        # first emitted frame is rarely one).
        due = frozenset(name for name in self._owed if name in item.dets)
        self._owed -= due
        verify = sampled or bool(due)
        checks = []
        outputs = {}
        for view, image in item.frames.images.items():
            if not image.flags.writeable:
                image = image.copy()
            original = image.copy() if verify else None
            redacted: dict[str, int] = {}
            masked: dict[str, np.ndarray] = {}
            for cls in self.classes:
                name = cls.name
                # At the end of a stream the classes with the widest window borrow from
                # every detected instant still held (nothing is dropped once the stream has
                # ended), so the last frames are covered more, never less.
                everything = flushing and cls.temporal_window == self.window
                neighbours = self._neighbours(window, centre, cls, view, everything)
                borrowed = followed_boxes([
                    (offset, boxes, self._carried(window, centre, offset, name, view, boxes))
                    for offset, boxes in neighbours]) if cls.follow_motion else \
                    propagated_boxes(neighbours)
                views = item.dets.get(name)
                own = views[view].boxes if views is not None and view in views else \
                    np.zeros((0, 4), np.float32)
                boxes = np.concatenate([own, borrowed]) if borrowed.shape[0] else own
                redact(image, boxes, cls.redaction, rng)
                redacted[name] = int(boxes.shape[0])
                masked[name] = boxes
            if verify:
                if self._verify_pool is None:
                    self._verify_pool = concurrent.futures.ThreadPoolExecutor(
                        1, "egoveil-verify")
                faces = _faces_to_check(item, view, masked)
                painted = {cls.name: scale_boxes(masked[cls.name], cls.redaction.mask_scale,
                                                 image.shape[1], image.shape[0])
                           for cls in self.classes if cls.name != FACE}
                # A keyframe that only takes a class's check handed on reads no redacted
                # copy (its faces are not checked): the frame itself stands in for one.
                checks.append((original, image.copy() if sampled else image, faces, painted,
                               frozenset(item.dets)))
                self._checks.append(self._verify_pool.submit(
                    self.verifier.check, *checks[-1], faces=sampled, classes=due))
            outputs[view] = FrameOut(
                item.frames.time_s, image,
                detected={cls.name: item.own.get(cls.name, {}).get(view, 0)
                          for cls in self.classes},
                redacted=redacted,
                recovered={cls.name: item.recovered.get(cls.name, {}).get(view, 0)
                           for cls in self.classes},
                boxes=masked, ran=frozenset(item.dets), coarse=item.coarse)
        if sampled and self._owed:
            self._handed_on = checks
        elif not self._owed:
            self._handed_on = []
        self._emitted += 1
        return outputs


def _faces_to_check(item: _Pending, view: str, masked: dict[str, np.ndarray]) -> np.ndarray:
    """The faces a check compares: the frame's own, or where the face detector skipped the
    frame, the tightest of the boxes it borrowed (one per face: overlapping ones merged)."""
    if FACE in item.dets:
        return item.dets[FACE][view].boxes if view in item.dets[FACE] else \
            np.zeros((0, 4), np.float32)
    boxes = masked.get(FACE, np.zeros((0, 4), np.float32))
    if boxes.shape[0] == 0:
        return boxes
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return boxes[nms(boxes, -areas.astype(np.float32), 0.3)]
