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

Plates and text have no independent detector and no recognition check: on the same
sampled frames, each class's own detector runs again on the redacted frame, and any
region of the class it finds there fails the frame. A region overlapping a mask means
the mask left part of a plate or a line readable; a region elsewhere is one the
detection missed, typically on a frame between keyframes that borrowed its boxes from
the keyframes around it (a plate that came into view, or moved faster than the
interpolation). Both are releases of what the class exists to remove, so both fail,
counted apart (``output_<class>`` and ``output_<class>_in_mask``).

A segment that fails is redacted again more strongly or quarantined by the
caller; the counts go to the run's audit events.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from privacy.coverage import face_size
from privacy.detectors import Detector, DetectorError, build_detector
from privacy.detectors.base import DLIB_LOCK, import_face_recognition
from privacy.redaction import scale_boxes

FACE_RECOGNITION_TOLERANCE = 0.6
BLANK_MARGIN = 0.05
BLANK_VALUE = 128
# How a class besides faces is verified, as the record of processing says it.
CLASS_CHECK = ("its own detector re-run on each checked redacted frame; any region it "
               "finds fails the frame")


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
        found: by class besides faces, the regions its own detector still found on
            checked redacted frames (every one fails the unit).
        found_in_mask: the share of those that overlap a mask of the class.
    """

    frames_checked: int = 0
    faces_checked: int = 0
    linkable_faces: int = 0
    output_faces: int = 0
    found: dict[str, int] = field(default_factory=dict)
    found_in_mask: dict[str, int] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.linkable_faces == 0 and self.output_faces == 0 \
            and not any(self.found.values())

    def add(self, other: VerificationSummary) -> None:
        self.frames_checked += other.frames_checked
        self.faces_checked += other.faces_checked
        self.linkable_faces += other.linkable_faces
        self.output_faces += other.output_faces
        for mine, theirs in ((self.found, other.found),
                             (self.found_in_mask, other.found_in_mask)):
            for name, count in theirs.items():
                mine[name] = mine.get(name, 0) + count

    def to_dict(self) -> dict:
        """Flat counts (audit events); a class checked besides faces adds
        ``output_<class>`` and ``output_<class>_in_mask``."""
        out = {"frames_checked": self.frames_checked, "faces_checked": self.faces_checked,
               "linkable_faces": self.linkable_faces, "output_faces": self.output_faces}
        for name in sorted(self.found):
            out[f"output_{name}"] = self.found[name]
            out[f"output_{name}_in_mask"] = self.found_in_mask.get(name, 0)
        return out

    def findings(self) -> str:
        """What failed, naming each class: ``2 faces found, 0 linkable, 1 plate found``."""
        parts = [f"{self.output_faces} faces found", f"{self.linkable_faces} linkable"]
        parts += [f"{count} {name} regions found" for name, count in sorted(self.found.items())
                  if count]
        return ", ".join(parts)


def _overlapping(found: np.ndarray, masks: np.ndarray | None) -> int:
    """How many ``found`` boxes overlap any of ``masks``."""
    if masks is None or found.shape[0] == 0 or len(masks) == 0:
        return 0
    masks = np.asarray(masks, np.float32).reshape(-1, 4)
    ix = np.minimum(found[:, None, 2], masks[None, :, 2]) - np.maximum(found[:, None, 0],
                                                                       masks[None, :, 0])
    iy = np.minimum(found[:, None, 3], masks[None, :, 3]) - np.maximum(found[:, None, 1],
                                                                       masks[None, :, 1])
    return int(((ix > 0) & (iy > 0)).any(axis=1).sum())


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
              masks: Mapping[str, np.ndarray] | None = None) -> VerificationSummary:
        """Verify one frame.

        Args:
            original: the frame before redaction.
            redacted: the same frame after redaction.
            face_boxes: the faces the pipeline found (unscaled boxes).
            masks: by class besides faces, the regions painted (pixel bounds, as
                ``privacy.redaction.scale_boxes`` gives them).
        """
        self.wait()
        summary = VerificationSummary(frames_checked=1)
        masks = masks or {}
        for name, detector in self._classes.items():
            found = detector.detect(redacted).boxes
            summary.found[name] = int(found.shape[0])
            summary.found_in_mask[name] = _overlapping(found, masks.get(name))
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
