"""Verification of redaction on the output (PRIVACY.md 5).

On sampled frames, two checks that do not trust the detector that drove the
redaction:

- an independent detector runs on the redacted frame; a face of ``min_face_px``
  or more found there is a leak;
- unlinkability: face-recognition encodings of each original face (from the frame
  before redaction) are compared with encodings taken at the same place after
  redaction; a distance within the library's match tolerance (0.6) means the
  redacted face could still be matched to the person. A content-free patch (the
  region painted one flat grey) also lands near the middle of face space, within
  0.6 of some real faces, so a match counts only when the redacted region is
  closer to the original face than such a blank patch is (by ``BLANK_MARGIN``):
  only then does the redaction carry identity.

Plates and text have no independent detector and no recognition check. For each sampled
frame, each class's own detector (an instance of its own, built from the configured spec,
never an injected one) runs on a frame before redaction, and every region of
``MIN_REGION_PX`` or more it finds there must lie under the class's masks (at least
``COVERED`` of its box painted). The frame is the class's first keyframe at or after the
sampled one (the anonymizer hands the check on): on a frame the class's detector ran on a
region that is not covered is a leak and fails the unit, since the detection there missed
what the configured detector sees (a broken or silently blind instance). Checked on the
sampled frame itself, a blind detector went unnoticed in ``egoveil run``, whose segments
start after frames of context and whose sampled frames are rarely plate keyframes. Where
no emitted keyframe follows (a unit's last sampled frames), the class is checked on the
sampled frame, between keyframes, which borrowed its boxes from the keyframes around it;
there an uncovered region is counted (``<class>_between_keyframes``) and does not fail: on
``arcade_1080p.mp4`` every one was a region the detector did not find on the keyframes
around it either (it comes and goes from frame to frame on signs), and failing on them
sent the default run through the every-frame second pass at 5.7x the faces-only time.
What a schedule misses between keyframes is measured instead, on hand-labelled plates
(``bench/classes.py --coverage``). The detector is not re-run on the redacted frame: the
solid masks' own edges read as plate-shaped text lines to PP-OCR (on
``arcade_1080p.mp4`` it found such regions on every one of 27 checked redacted frames,
keyframes included; ``bench/classes.py --verification``), so a find there cannot tell a
leak from the mask.

A segment that fails is redacted again more strongly or quarantined by the
caller; the counts go to the run's audit events.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from privacy.coverage import face_size
from privacy.detectors import Detector, DetectorError, build_detector
from privacy.detectors.base import DLIB_LOCK, import_face_recognition
from privacy.redaction import scale_boxes
from schemas.detections import FACE

FACE_RECOGNITION_TOLERANCE = 0.6
BLANK_MARGIN = 0.05
BLANK_VALUE = 128
# A plate or text region counts as covered when at least this share of its box is painted
# (bench/plates.py's coverage criterion).
COVERED = 0.8
# Plate and text regions smaller than this (sqrt(w * h) of the detector's box, which is
# grown around the line) are not checked: nothing that small is readable (the targets
# start at plates 30 px wide and text lines 12 px high), and PP-OCR's smallest regions
# come and go from one frame to the next on texture (on arcade_1080p.mp4 a 14 x 10 px
# region on one frame between keyframes failed a whole video).
MIN_REGION_PX = 20
# How a class besides faces is verified, as the record of processing says it.
CLASS_CHECK = (f"its own detector re-run before redaction on the class's first keyframe at "
               f"or after each checked frame (on the checked frame where no keyframe "
               f"follows); a region of at least {MIN_REGION_PX} px (sqrt of its box's area) "
               f"found there with less than {COVERED:.0%} of its box painted fails a frame "
               f"the class was detected on, and is counted on a frame between keyframes")


@dataclass(slots=True, frozen=True)
class VerificationConfig:
    """How redaction is verified.

    Args:
        verifier: detector spec of the independent pass (``none`` to skip it). The
            default, face-recognition's HOG, shares nothing with the default
            CenterFace detector; ``yunet:path=...`` is stronger where available.
        every_n_frames: verify one emitted frame in this many (the first always).
        min_face_px: faces smaller than this (sqrt(w*h)) are not checked.
        tolerance: face-recognition match tolerance for unlinkability.
        max_faces_per_frame: encodings per frame, largest faces first (bounds cost).
    """

    verifier: str = "hog"
    every_n_frames: int = 50
    min_face_px: int = 20
    tolerance: float = FACE_RECOGNITION_TOLERANCE
    max_faces_per_frame: int = 3

    def __post_init__(self) -> None:
        if self.every_n_frames < 1:
            raise ValueError("every_n_frames must be >= 1")
        if not 0 < self.tolerance < 2:
            raise ValueError("tolerance must be in (0, 2)")

    @property
    def enabled(self) -> bool:
        return self.verifier != "none"


@dataclass(slots=True)
class VerificationSummary:
    """Counts over the frames verified in one unit of work.

    Attributes:
        checked: by class besides faces, the regions its own detector found on the
            checked frames before redaction.
        uncovered: how many of those the class's masks did not cover on frames the
            class was detected on (each fails the unit).
        between_keyframes: how many they did not cover on frames between the class's
            keyframes (counted, not failing).
    """

    frames_checked: int = 0
    faces_checked: int = 0
    linkable_faces: int = 0
    output_faces: int = 0
    checked: dict[str, int] = field(default_factory=dict)
    uncovered: dict[str, int] = field(default_factory=dict)
    between_keyframes: dict[str, int] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.linkable_faces == 0 and self.output_faces == 0 \
            and not any(self.uncovered.values())

    def add(self, other: VerificationSummary) -> None:
        self.frames_checked += other.frames_checked
        self.faces_checked += other.faces_checked
        self.linkable_faces += other.linkable_faces
        self.output_faces += other.output_faces
        for mine, theirs in ((self.checked, other.checked),
                             (self.uncovered, other.uncovered),
                             (self.between_keyframes, other.between_keyframes)):
            for name, count in theirs.items():
                mine[name] = mine.get(name, 0) + count

    def to_dict(self) -> dict:
        """Flat counts (audit events); a class checked besides faces adds
        ``<class>_checked``, ``output_<class>`` (uncovered where it was detected: these
        fail) and ``<class>_between_keyframes`` (uncovered between its keyframes)."""
        out = {"frames_checked": self.frames_checked, "faces_checked": self.faces_checked,
               "linkable_faces": self.linkable_faces, "output_faces": self.output_faces}
        for name in sorted(self.checked):
            out[f"{name}_checked"] = self.checked[name]
            out[f"output_{name}"] = self.uncovered.get(name, 0)
            out[f"{name}_between_keyframes"] = self.between_keyframes.get(name, 0)
        return out

    def failed_classes(self) -> frozenset[str]:
        """The classes whose checks failed (``face`` for faces found or linkable)."""
        failed = {name for name, count in self.uncovered.items() if count}
        if self.output_faces or self.linkable_faces:
            failed.add(FACE)
        return frozenset(failed)

    def findings(self) -> str:
        """What was found, naming each class: ``0 faces found, 0 linkable, 1 plate
        regions left uncovered``."""
        parts = [f"{self.output_faces} faces found", f"{self.linkable_faces} linkable"]
        parts += [f"{count} {name} regions left uncovered"
                  for name, count in sorted(self.uncovered.items()) if count]
        return ", ".join(parts)


def painted_shares(boxes: np.ndarray, painted: np.ndarray | None,
                   shape: tuple[int, int]) -> np.ndarray:
    """For each box, the share of its pixels inside any of the ``painted`` regions
    (integer pixel bounds) of a frame of ``shape`` (height, width)."""
    if boxes.shape[0] == 0:
        return np.zeros((0,), np.float32)
    mask = np.zeros(shape, bool)
    for x1, y1, x2, y2 in np.asarray(painted if painted is not None else (),
                                     np.int64).reshape(-1, 4):
        mask[y1:y2, x1:x2] = True
    height, width = shape
    shares = np.ones(boxes.shape[0], np.float32)  # a box with no pixels hides nothing
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        x1, x2 = int(np.clip(np.floor(x1), 0, width)), int(np.clip(np.ceil(x2), 0, width))
        y1, y2 = int(np.clip(np.floor(y1), 0, height)), int(np.clip(np.ceil(y2), 0, height))
        if x2 > x1 and y2 > y1:
            shares[i] = float(mask[y1:y2, x1:x2].mean())
    return shares


def _locations(boxes: np.ndarray) -> list[tuple[int, int, int, int]]:
    """face_recognition's (top, right, bottom, left) from x1, y1, x2, y2."""
    return [(int(y1), int(x2), int(y2), int(x1)) for x1, y1, x2, y2 in boxes]


class RedactionVerifier:
    """Checks redacted frames against their originals.

    Its models (face-recognition's encoder and the independent detector, about 2 s to
    load) load on a thread of their own from construction on, beside the detector's
    loading and the first frames' detection; ``check`` and ``describe`` wait for them.

    Raises:
        DetectorError: from ``check`` when a check cannot run, the models included (fail
            closed: an unverifiable frame is not a verified one).
    """

    def __init__(self, config: VerificationConfig, detector: Detector | None = None,
                 classes: Mapping[str, Callable[[], Detector]] | None = None) -> None:
        self.config = config
        self._loader = threading.Thread(target=self._load, args=(detector, dict(classes or {})),
                                        name="egoveil-verifier-load", daemon=True)
        self._detector: Detector | None = None
        self._classes: dict[str, Detector] = {}
        self._encode = None
        self._error: BaseException | None = None
        # The classes' checks (PP-OCR, on both cores) run beside the faces' (dlib's HOG and
        # encoder, on one): the check of a video's last sampled frame is its tail.
        self._classes_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._loader.start()

    def _load(self, detector: Detector | None,
              classes: dict[str, Callable[[], Detector]]) -> None:
        try:
            self._detector = detector if detector is not None else (
                build_detector(self.config.verifier) if self.config.enabled else None)
            self._encode = import_face_recognition().face_encodings
            # Instances of their own: the detection thread keeps its own busy meanwhile.
            self._classes = {name: build() for name, build in classes.items()}
        except BaseException as exc:  # noqa: BLE001 - raised where the models are used
            self._error = exc

    def wait(self) -> None:
        """Block until the models are loaded.

        Raises:
            DetectorError: they could not be loaded.
        """
        self._loader.join()
        if self._error is not None:
            raise DetectorError(f"verifier cannot be loaded: {self._error}") from self._error

    @property
    def classes(self) -> tuple[str, ...]:
        """The classes besides faces whose own detector re-checks redacted frames."""
        self.wait()
        return tuple(self._classes)

    def describe(self) -> dict:
        self.wait()
        described = {"verifier": self._detector.describe() if self._detector else None,
                     "every_n_frames": self.config.every_n_frames,
                     "min_face_px": self.config.min_face_px,
                     "tolerance": self.config.tolerance}
        if self._classes:
            described["classes"] = {name: CLASS_CHECK for name in self._classes}
        return described

    def check(self, original: np.ndarray, redacted: np.ndarray, face_boxes: np.ndarray,
              masks: Mapping[str, np.ndarray] | None = None,
              detected_here: frozenset[str] | None = None, faces: bool = True,
              classes: frozenset[str] | None = None) -> VerificationSummary:
        """Verify one frame.

        Args:
            original: the frame before redaction.
            redacted: the same frame after redaction.
            face_boxes: the faces the pipeline found (unscaled boxes).
            masks: by class besides faces, the regions painted (pixel bounds, as
                ``privacy.redaction.scale_boxes`` gives them).
            detected_here: the classes whose detector ran on this frame (None: all).
            faces: run the faces' checks (False: the frame is checked for ``classes`` only,
                and is not counted in ``frames_checked``).
            classes: the classes besides faces checked on this frame (None: all).
        """
        self.wait()
        masks = masks or {}
        names = [name for name in self._classes if classes is None or name in classes]
        checking = None
        if names:
            if self._classes_pool is None:
                self._classes_pool = concurrent.futures.ThreadPoolExecutor(
                    1, "egoveil-verify-classes")
            checking = self._classes_pool.submit(self._check_classes, names, original, masks,
                                                 detected_here)
        try:
            summary = self._check_faces(original, redacted, face_boxes) if faces \
                else VerificationSummary()
        finally:
            # Waited for even when the faces' check raised: no check outlives its frame.
            checked = checking.result() if checking is not None else None
        if checked is not None:
            summary.checked, summary.uncovered, summary.between_keyframes = checked
        return summary

    def _check_classes(self, names: list[str], original: np.ndarray,
                       masks: Mapping[str, np.ndarray], detected_here: frozenset[str] | None
                       ) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
        """For each of ``names``: regions checked, uncovered on a keyframe, uncovered
        between keyframes."""
        checked, uncovered, between = {}, {}, {}
        for name in names:
            found = self._classes[name].detect(original).boxes
            found = found[face_size(found) >= MIN_REGION_PX]
            checked[name] = int(found.shape[0])
            missed = int((painted_shares(found, masks.get(name), original.shape[:2])
                          < COVERED).sum())
            keyframe = detected_here is None or name in detected_here
            uncovered[name] = missed if keyframe else 0
            between[name] = 0 if keyframe else missed
        return checked, uncovered, between

    def _check_faces(self, original: np.ndarray, redacted: np.ndarray,
                     face_boxes: np.ndarray) -> VerificationSummary:
        summary = VerificationSummary(frames_checked=1)
        cfg = self.config
        if self._detector is not None:
            found = self._detector.detect(redacted)
            summary.output_faces = int((face_size(found.boxes) >= cfg.min_face_px).sum())
        boxes = np.asarray(face_boxes, np.float32).reshape(-1, 4)
        sizes = face_size(boxes)
        order = np.argsort(-sizes)
        chosen = [i for i in order if sizes[i] >= cfg.min_face_px][:cfg.max_faces_per_frame]
        if chosen:
            locations = _locations(boxes[chosen])
            blank = redacted.copy()
            for x1, y1, x2, y2 in scale_boxes(boxes[chosen], 1.6, blank.shape[1],
                                              blank.shape[0]):
                blank[y1:y2, x1:x2] = BLANK_VALUE
            try:
                with DLIB_LOCK:
                    before, after, baseline = (
                        np.asarray(self._encode(np.ascontiguousarray(img),
                                                known_face_locations=locations))
                        for img in (original, redacted, blank))
            except Exception as exc:  # noqa: BLE001 - dlib failures: cannot verify
                raise DetectorError(f"face encoding failed: {type(exc).__name__}") from exc
            to_redacted = np.linalg.norm(before - after, axis=1)
            to_blank = np.linalg.norm(before - baseline, axis=1)
            summary.faces_checked = len(chosen)
            summary.linkable_faces = int(((to_redacted <= cfg.tolerance)
                                          & (to_redacted + BLANK_MARGIN < to_blank)).sum())
        return summary
