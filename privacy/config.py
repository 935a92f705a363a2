"""The anonymization settings of a run, validated once and fingerprinted for the record.

This module is the one source of defaults: the command line (``pipeline.options``,
``egoveil redact``) takes its defaults from these dataclasses, never from literals
of its own.

Detections come in classes (``schemas.detections``); each class has a
``ClassPolicy``: its detector (with its threshold), its redaction (mode, mask
scale), its temporal window, the detector of the stronger second pass, and
whether the other eye of a stereo pair is searched for it, and its detection
schedule (``DetectionSchedule``: the detector on every frame, or on keyframes with
tracking between them and a hard cap on the gap). Faces are the first
class and their policy is spelt by ``AnonymizationConfig``'s own fields, which is
how the configuration was written before classes existed: a faces-only
configuration describes itself, and fingerprints, exactly as it did then, so its
clip ids are unchanged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Collection
from dataclasses import asdict, dataclass, field

from privacy.detectors.factory import (
    DEFAULT_DETECTOR,
    DEFAULT_PLATE_DETECTOR,
    DEFAULT_TEXT_DETECTOR,
    DetectorSpec,
    on_device,
)
from privacy.redaction import RedactionConfig
from privacy.schedule import MAX_DETECT_EVERY, DetectionSchedule
from privacy.stereo import CrossViewConfig
from privacy.verification import VerificationConfig
from schemas.detections import DETECTION_CLASSES, FACE, PLATE, TEXT

# A segment that fails verification is redacted again with this detector, the
# verifier's own detector added, and this mask scale; if it fails again it is
# quarantined.
STRONG_DETECTOR = "centerface:threshold=0.1;scales=1,2"
STRONG_MASK_SCALE = 1.6
# Instants per detector call on a GPU (CenterFace at 1080p: 16 frames are ~0.5 GB).
GPU_DETECT_BATCH = 16
DEFAULT_TEMPORAL_WINDOW = 2
MAX_TEMPORAL_WINDOW = 30
# Faces' privacy floor: whatever is configured, their detector runs at least this often
# (bench/videos.py measures per-frame recall at the default; see bench/results/speed.md).
MAX_FACE_DETECT_EVERY = 4


# Measured on ../shared/media/videos (bench/videos.py, bench/speed.py): faces detected
# on every 4th frame and on motion keep per-frame recall >= 0.99 and leak nothing. Motion
# 12 missed one of the three reference faces of the Aria fisheye walk (its frames change
# by 10-16 grey levels from one to the next); 8 covers it, for 14% more detections on
# arcade_1080p.mp4 than 12.
# Coarse keyframes (``--face-schedule EVERY:MOTION:FULL_EVERY``): the keyframes between
# full-resolution ones run CenterFace at this scale of the frame, and full resolution comes
# at least every FULL_EVERY frames, at most every MAX_FACE_FULL_EVERY-th. Measured with
# bench/coarse.py (results/coarse.json; 1080p costs 0.24 CPU-s a frame at full resolution,
# 0.14 at 0.75, 0.06 at 0.5): 0.5 missed one of the three reference faces of the Aria
# fisheye walk (27 px, in one frame only, between full-resolution keyframes) at every
# FULL_EVERY tried; 0.75 covers them all, and at full resolution every 8th frame keeps
# per-frame recall >= 0.99 on arcade and stage at frame strides 1 and 2. Every 12th and
# 16th held recall too but masked up to 0.30 of arcade's frames (0.19 at 8, 0.18 without
# coarse keyframes): small faces are carried from farther keyframes, grown more.
FACE_COARSE_SCALE = 0.75
MAX_FACE_FULL_EVERY = 8
DEFAULT_FACE_SCHEDULE = DetectionSchedule(every=4, motion=8.0, full_every=8,
                                          coarse_scale=FACE_COARSE_SCALE)

# Plates and text (bench/plates.py chose the detectors, bench/classes.py the schedules:
# results/plates.md, results/classes.md). PP-OCR costs more than CenterFace per 1080p frame,
# so these classes are detected on keyframes and a frame between borrows the boxes of the
# one keyframe on each side, carried along the measured motion (``follow_motion``,
# privacy.motion). Plates' keyframes are at most 0.6 s of video apart (and at most
# ``MAX_DETECT_EVERY`` frames): a plate stays put while the glasses move, and how far they
# move between keyframes goes with the seconds, not the frames. On the hand-labelled Aria
# clip (10 fps, a walk past parked cars) gaps of 0.5, 0.6 and 0.7 s (every 5th-7th frame)
# cover every readable plate in every frame, wherever the keyframes fall; 0.8 s misses one
# plate in one frame of 164 (over the 8 places the keyframes can fall). At 25 fps
# (arcade_1080p.mp4) 0.6 s is every 15th frame, 1.32-1.42x the faces-only time; the
# settings within 1.3x cost coverage (v4 alone, PP-OCR at 0.75 scale; PP-OCRv4 alone at 0.75
# beside v5 covers the Aria plates at 0.75 and 0.875 but not at 0.7 or 0.8). Text boxes hug the
# line (a plate's are grown to the plate); under a fast pan (23 px a frame at 640 px,
# tests/test_classes.py's scene) every 8th frame paints every character when the boxes
# follow the motion, and left a third of them unpainted for 3 frames when they were grown
# in place; text has no labelled video to set a gap in seconds on, so it keeps every 8th
# frame.
DEFAULT_PLATE_SCHEDULE = DetectionSchedule(every=MAX_DETECT_EVERY, seconds=0.6)
DEFAULT_TEXT_SCHEDULE = DetectionSchedule(every=8, motion=0.0)
CLASS_TEMPORAL_WINDOW = 1
# Plates' and text's masks: the box scaled 1.3, the floor every class keeps (the data
# contract's). A plate box is the detected line (PP-OCRv5's grown 10%, ppocr.PLATE_SHAPES)
# and a text box the line itself, so 1.3 is their whole margin. Measured per detection
# (bench/results/plates.md), against the earlier 1.4 over plate lines grown 1.15 x 1.5:
# the area painted outside the plates falls from 5.3% / 6.0% of the synthetic tuning /
# held-out images to 2.5% / 2.9% with the same plates >= 30 px covered (98.9% held out),
# and on the Aria clip (tuned on) from 8.1% to 4.8%; text from 3.2% to 2.3%, every line
# >= 6 px still covered.
CLASS_MASK_SCALE = 1.3
# The second pass after a failed verification: the same networks on every frame with a
# lower binarization threshold and box score (more, and larger, regions).
STRONG_PLATE_DETECTOR = ("ppocr-plates:model=v4;threshold=0.2;box_threshold=0.4"
                         "+ppocr-plates:model=v5;threshold=0.2;box_threshold=0.4")
STRONG_TEXT_DETECTOR = "ppocr-text:model=v4;threshold=0.2;box_threshold=0.4"

# What ``--redact`` names, and the classes redacted by default: faces and plates (EgoBlur's
# pair); text is opt-in (it also removes every sign, label and screen: bench/results/plates.md).
REDACT_NAMES = {"faces": FACE, "plates": PLATE, "text": TEXT}
DEFAULT_REDACT = ("faces", "plates")


@dataclass(slots=True, frozen=True)
class ClassPolicy:
    """How one class of detections is found and redacted.

    Args:
        detection_class: one of ``schemas.detections.DETECTION_CLASSES``.
        detector: detector spec (``privacy.detectors.factory``); thresholds live in it.
        redaction: mode and mask scale.
        temporal_window: frames on each side whose detections of this class also
            cover a frame.
        strong_detector: detector spec of the second pass after a failed verification.
        cross_view: search the other eye of a stereo pair for what one eye found.
        schedule: which frames the detector runs on (every frame by default).
        follow_motion: carry boxes between keyframes along the measured motion rather
            than grow them in place (plates and text stay put while the glasses move).
    """

    detection_class: str
    detector: str
    redaction: RedactionConfig = field(default_factory=RedactionConfig)
    temporal_window: int = DEFAULT_TEMPORAL_WINDOW
    strong_detector: str | None = None
    cross_view: bool = False
    schedule: DetectionSchedule = field(default_factory=DetectionSchedule)
    follow_motion: bool = False

    def __post_init__(self) -> None:
        if self.detection_class not in DETECTION_CLASSES:
            raise ValueError(f"unknown detection class {self.detection_class!r}; choose from "
                             f"{', '.join(DETECTION_CLASSES)}")
        for spec in filter(None, (self.detector, self.strong_detector)):
            found = DetectorSpec.parse(spec).detection_class  # ValueError naming the problem
            if found != self.detection_class:
                raise ValueError(f"detector {spec!r} finds {found}, not "
                                 f"{self.detection_class}")
        if not 0 <= self.temporal_window <= MAX_TEMPORAL_WINDOW:
            raise ValueError(f"temporal_window must be in [0, {MAX_TEMPORAL_WINDOW}], got "
                             f"{self.temporal_window}")
        if self.detection_class == FACE and self.schedule.every > MAX_FACE_DETECT_EVERY:
            raise ValueError(f"faces are detected at least every {MAX_FACE_DETECT_EVERY} "
                             f"frames, got a schedule of every {self.schedule.every}")
        if self.detection_class == FACE and self.schedule.coarse and \
                self.schedule.full_every > MAX_FACE_FULL_EVERY:
            raise ValueError(f"faces are detected at full resolution at least every "
                             f"{MAX_FACE_FULL_EVERY} frames, got {self.schedule.full_every}")
        if self.detection_class != FACE and self.schedule.coarse:
            raise ValueError("coarse keyframes are for faces only")
        if not self.schedule.is_every_frame and self.temporal_window < 1:
            raise ValueError("a class detected on keyframes needs temporal_window >= 1: the "
                             "frames between keyframes borrow their boxes")


_DEFAULT_POLICIES = {
    PLATE: ClassPolicy(PLATE, DEFAULT_PLATE_DETECTOR,
                       redaction=RedactionConfig(mask_scale=CLASS_MASK_SCALE),
                       temporal_window=CLASS_TEMPORAL_WINDOW,
                       strong_detector=STRONG_PLATE_DETECTOR, cross_view=True,
                       schedule=DEFAULT_PLATE_SCHEDULE, follow_motion=True),
    TEXT: ClassPolicy(TEXT, DEFAULT_TEXT_DETECTOR,
                      redaction=RedactionConfig(mask_scale=CLASS_MASK_SCALE),
                      temporal_window=CLASS_TEMPORAL_WINDOW,
                      strong_detector=STRONG_TEXT_DETECTOR, cross_view=True,
                      schedule=DEFAULT_TEXT_SCHEDULE, follow_motion=True),
}


def default_policy(detection_class: str) -> ClassPolicy:
    """The default policy of a class besides faces (faces' is ``AnonymizationConfig``'s own
    fields): its chosen detector, a solid mask at ``CLASS_MASK_SCALE`` (the scale its
    coverage and altered area were measured at), a temporal window of 1 detected frame on each side, its
    keyframe schedule, a stronger detector for the second pass, and cross-view search on.

    Raises:
        ValueError: faces, or an unknown class.
    """
    if detection_class not in _DEFAULT_POLICIES:
        raise ValueError(f"no default policy besides faces' for {detection_class!r}; choose "
                         f"from {', '.join(_DEFAULT_POLICIES)}")
    return _DEFAULT_POLICIES[detection_class]


def class_policy(detection_class: str, detector: str | None = None,
                 schedule: DetectionSchedule | None = None,
                 mode: str | None = None, mask_scale: float | None = None,
                 temporal_window: int | None = None) -> ClassPolicy:
    """A class's default policy with its detector, schedule, redaction mode, mask scale or
    temporal window replaced.

    A detector other than the default is kept in the stronger second pass too, beside
    the default's stronger one, so that the second pass finds at least what it finds.

    Raises:
        ValueError: an unknown class, or a detector spec that does not parse or finds
            another class.
    """
    policy = default_policy(detection_class)
    changes: dict = {}
    if detector is not None and detector != policy.detector:
        changes.update(detector=detector, strong_detector=f"{detector}+{policy.strong_detector}")
    if schedule is not None:
        changes["schedule"] = schedule
    redaction = {k: v for k, v in (("mode", mode), ("mask_scale", mask_scale))
                 if v is not None}
    if redaction:
        changes["redaction"] = dataclasses.replace(policy.redaction, **redaction)
    if temporal_window is not None:
        changes["temporal_window"] = temporal_window
    return dataclasses.replace(policy, **changes)


def redact_classes(text: str) -> tuple[str, ...]:
    """The detection classes a ``--redact`` list names (``faces,plates,text``), faces first.

    Raises:
        ValueError: an unknown or repeated name, or a list without faces.
    """
    names = [n.strip().lower() for n in text.split(",")]
    unknown = [n for n in names if n not in REDACT_NAMES]
    if unknown:
        raise ValueError(f"--redact: unknown class {unknown[0]!r}; choose from "
                         f"{', '.join(REDACT_NAMES)}")
    if len(set(names)) != len(names):
        raise ValueError("--redact names a class twice")
    if "faces" not in names:
        raise ValueError("--redact must include faces: faces are always redacted")
    return tuple(REDACT_NAMES[n] for n in REDACT_NAMES if n in names)


@dataclass(slots=True, frozen=True)
class AnonymizationConfig:
    """How frames are anonymized.

    Args:
        detector: face detector spec (see ``privacy.detectors.factory``).
        redaction: how detected faces are redacted.
        temporal_window: frames on each side whose face detections also cover a frame.
        detect_timeout_s: a single detection slower than this fails the segment.
        max_corrupt_fraction: corrupt frames above this share dead-letter a segment.
        verification: the independent checks on redacted frames.
        strong_detector: face detector spec of the second, stronger pass after a failed
            verification (the verifier's detector is added to it).
        detect_batch_size: frames per detector call (raise it on a GPU backend).
        cross_view: how a face found in one eye of a stereo pair is searched for in the other.
        other_classes: the policies of the classes redacted besides faces (default:
            plates, ``default_policy(PLATE)``; ``()`` for faces only).
        face_schedule: which frames the face detector runs on. Every frame when
            ``every`` is 1; the stronger second pass always detects every frame.
        device: where detection and decoding run, ``cpu`` or ``cuda`` (set by
            ``on_device``, which also moves the detectors there).
    """

    detector: str = DEFAULT_DETECTOR
    redaction: RedactionConfig = field(default_factory=RedactionConfig)
    temporal_window: int = DEFAULT_TEMPORAL_WINDOW
    detect_timeout_s: float = 60.0
    max_corrupt_fraction: float = 0.05
    verification: VerificationConfig = field(default_factory=VerificationConfig)
    strong_detector: str = STRONG_DETECTOR
    detect_batch_size: int = 1
    cross_view: CrossViewConfig = field(default_factory=CrossViewConfig)
    other_classes: tuple[ClassPolicy, ...] = (_DEFAULT_POLICIES[PLATE],)
    face_schedule: DetectionSchedule = DEFAULT_FACE_SCHEDULE
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.face_policy()  # validates the face detector specs and window
        if self.cross_view.detector != "none":
            DetectorSpec.parse(self.cross_view.detector)
        if self.verification.enabled:
            DetectorSpec.parse(self.verification.verifier)
        classes = [p.detection_class for p in self.other_classes]
        if FACE in classes or len(set(classes)) != len(classes):
            raise ValueError("each class other than faces may have one policy")
        if self.detect_timeout_s <= 0:
            raise ValueError(f"detect_timeout_s must be positive, got {self.detect_timeout_s}")
        if not 1 <= self.detect_batch_size <= 256:
            raise ValueError("detect_batch_size must be in [1, 256]")
        if not 0 <= self.max_corrupt_fraction <= 1:
            raise ValueError("max_corrupt_fraction must be in [0, 1]")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be cpu or cuda, got {self.device!r}")

    def on_device(self, device: str) -> AnonymizationConfig:
        """This configuration with detection on ``device`` (``cuda``: CenterFace through
        onnxruntime's CUDA or TensorRT provider, batched; decoding on NVDEC where FFmpeg
        offers it)."""
        if device == self.device:
            return self
        if device == "cpu":
            raise ValueError("a configuration moves to the GPU, not back")
        return dataclasses.replace(
            self, device=device, detector=on_device(self.detector, device),
            strong_detector=on_device(self.strong_detector, device),
            detect_batch_size=max(self.detect_batch_size, GPU_DETECT_BATCH),
            other_classes=tuple(dataclasses.replace(
                p, detector=on_device(p.detector, device),
                strong_detector=p.strong_detector and on_device(p.strong_detector, device))
                for p in self.other_classes))

    @property
    def detector_spec(self) -> DetectorSpec:
        return DetectorSpec.parse(self.detector)

    def face_policy(self) -> ClassPolicy:
        """Faces' policy, spelt by this configuration's own fields."""
        return ClassPolicy(FACE, self.detector, self.redaction, self.temporal_window,
                           self.strong_detector, cross_view=self.cross_view.enabled,
                           schedule=self.face_schedule)

    @property
    def policies(self) -> tuple[ClassPolicy, ...]:
        """Every class redacted, faces first."""
        return (self.face_policy(), *self.other_classes)

    def strong(self, classes: Collection[str] | None = None) -> AnonymizationConfig:
        """The configuration of the second pass after a failed verification.

        Each class strengthened gets a solid mask of at least ``STRONG_MASK_SCALE``, is
        detected on every frame, and gets its stronger detector: faces
        ``strong_detector`` with the verifier's own detector added, the other classes the
        one their policy names. The others keep their settings, whose checks passed.

        Args:
            classes: the classes to strengthen (those whose checks failed); None for all.
        """
        def chosen(name: str) -> bool:
            return classes is None or name in classes

        others = tuple(dataclasses.replace(
            p, detector=p.strong_detector or p.detector, schedule=DetectionSchedule(),
            redaction=RedactionConfig(mode="solid", mask_scale=max(STRONG_MASK_SCALE,
                                                                   p.redaction.mask_scale)))
            if chosen(p.detection_class) else p for p in self.other_classes)
        if not chosen(FACE):
            return dataclasses.replace(self, other_classes=others)
        spec = self.strong_detector
        if self.verification.enabled:
            spec = f"{spec}+{self.verification.verifier}"
        return dataclasses.replace(
            self, detector=spec,
            redaction=RedactionConfig(mode="solid",
                                      mask_scale=max(STRONG_MASK_SCALE,
                                                     self.redaction.mask_scale)),
            other_classes=others, face_schedule=DetectionSchedule())

    def describe(self) -> dict:
        """Every setting; what is off is left out (classes besides faces, detection on
        every frame), so a configuration without them describes itself, and fingerprints,
        as it did before they existed."""
        described = asdict(self)
        if not self.other_classes:
            del described["other_classes"]
        for policy, kept in zip(described.get("other_classes", ()), self.other_classes):
            if kept.schedule == DetectionSchedule():
                del policy["schedule"]
            else:
                policy["schedule"] = kept.schedule.describe()
        if self.face_schedule.is_every_frame:
            del described["face_schedule"]
        else:
            described["face_schedule"] = self.face_schedule.describe()
        if self.device == "cpu":
            del described["device"]
        return described

    def fingerprint(self) -> str:
        blob = json.dumps(self.describe(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()
