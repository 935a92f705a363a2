"""Detection schedules (``privacy.schedule``): keyframes, the gap cap, coarse keyframes between
full-resolution ones, and failing closed."""

from __future__ import annotations

import numpy as np
import pytest

from privacy.anonymizer import ClassDetector, FrameIn, SegmentAnonymizer
from privacy.config import (
    DEFAULT_FACE_SCHEDULE,
    FACE_COARSE_SCALE,
    MAX_FACE_DETECT_EVERY,
    MAX_FACE_FULL_EVERY,
    AnonymizationConfig,
    ClassPolicy,
)
from privacy.detectors import Detections, DetectorError
from privacy.detectors.base import Detector
from privacy.redaction import SOLID_VALUE, RedactionConfig
from privacy.schedule import (
    COARSE,
    COARSE_MIN_SIDE,
    FULL,
    MAX_DETECT_EVERY,
    DetectionSchedule,
    Scheduler,
)
from schemas.detections import PLATE
from tests.faults import FaultyDetector

SIZE = 200
BACKGROUND = 200


class _Moving(Detector):
    """A face that moves 10 px a frame; the frame's index is written in its first pixel."""

    name = "moving"

    def __init__(self) -> None:
        self.calls: list[int] = []

    @staticmethod
    def box(index: int) -> np.ndarray:
        return np.array([[20 + 10 * index, 80, 50 + 10 * index, 110]], np.float32)

    def _detect(self, frame):
        index = int(frame[0, 0, 0])
        self.calls.append(index)
        return Detections(self.box(index), np.ones(1, np.float32))


def _stream(n: int, scene_cut_at: int | None = None, size: int = SIZE) -> list[FrameIn]:
    frames = []
    for i in range(n):
        image = np.full((size, size, 3), BACKGROUND, np.uint8)
        if scene_cut_at is not None and i >= scene_cut_at:
            image[1:] = 30  # a cut: the whole picture changes
        image[0, 0, 0] = i
        frames.append(FrameIn(i / 25, image))
    return frames


def _anonymizer(detector: Detector, schedule: DetectionSchedule, window: int = 1,
                batch_size: int = 1) -> SegmentAnonymizer:
    return SegmentAnonymizer([ClassDetector(detector, RedactionConfig(), window, None,
                                            schedule)],
                             detect_timeout_s=None, batch_size=batch_size)


def _masked(image: np.ndarray, box: np.ndarray) -> bool:
    x1, y1, x2, y2 = box[0].astype(int)
    return bool((image[y1:y2, x1:x2] == SOLID_VALUE).all())


@pytest.mark.parametrize("batch_size", [1, 3])
def test_a_face_in_the_keyframes_around_a_skipped_frame_is_masked_in_it(batch_size):
    detector = _Moving()
    outs = list(_anonymizer(detector, DetectionSchedule(every=4), batch_size=batch_size)
                .process(_stream(11)))
    assert detector.calls == [0, 4, 8, 10]  # first, every 4th, last
    assert len(outs) == 11
    for i, out in enumerate(outs):
        assert _masked(out.image, _Moving.box(i)), f"frame {i} leaks the face"
        assert out.ran == (frozenset({"face"}) if i in (0, 4, 8, 10) else frozenset())
        assert out.detected["face"] == (1 if i in (0, 4, 8, 10) else 0)
        assert out.boxes["face"].shape[0] >= 1


def test_the_gap_between_detected_frames_never_exceeds_the_cap():
    for every in (2, 3, 5, 8):
        detector = _Moving()
        list(_anonymizer(detector, DetectionSchedule(every=every)).process(_stream(29)))
        gaps = np.diff(detector.calls)
        assert detector.calls[0] == 0 and detector.calls[-1] == 28
        assert gaps.max() <= every and gaps.min() >= 1


def test_motion_detects_out_of_turn():
    detector = _Moving()
    list(_anonymizer(detector, DetectionSchedule(every=6, motion=10.0)).process(
        _stream(14, scene_cut_at=3)))
    assert detector.calls == [0, 3, 9, 13]  # the cut at 3 restarts the count
    still = _Moving()
    list(_anonymizer(still, DetectionSchedule(every=6, motion=10.0)).process(_stream(14)))
    assert still.calls == [0, 6, 12, 13]


def test_the_cap_counts_source_frames():
    assert Scheduler(DetectionSchedule(every=4), step=2).cap == 2
    assert Scheduler(DetectionSchedule(every=3), step=2).cap == 1
    detector = _Moving()
    outs = list(_anonymizer(detector, DetectionSchedule(every=4)).process_views(
        (_views(f) for f in _stream(9)), step=2))
    assert len(outs) == 9 and detector.calls == [0, 2, 4, 6, 8]


@pytest.mark.parametrize("fps, step, calls", [
    (10, 1, [0, 6, 12, 18, 19]),  # 0.6 s is every 6th frame at 10 fps
    (25, 1, [0, 15, 19]),  # every 15th at 25 fps
    (50, 1, [0, 16, 19]),  # every 30th at 50 fps: the cap in frames comes first
    (25, 2, [0, 16, 18]),  # every 2nd frame given: 0.64 s, the first instant past 0.6 s
])
def test_a_gap_in_seconds_keeps_its_seconds_at_any_frame_rate(fps, step, calls):
    schedule = DetectionSchedule.parse("0.6s")
    assert schedule == DetectionSchedule(every=MAX_DETECT_EVERY, seconds=0.6)
    detector = _Moving()
    frames = [FrameIn(i / fps, f.image) for i, f in enumerate(_stream(20))][::step]
    outs = list(_anonymizer(detector, schedule).process_views(
        (_views(f) for f in frames), step=step))
    assert detector.calls == calls and len(outs) == len(frames)


def test_a_gap_in_seconds_is_read_written_and_recorded():
    schedule = DetectionSchedule.parse("0.5s:12")
    assert (schedule.seconds, schedule.motion, schedule.every) == (0.5, 12.0, MAX_DETECT_EVERY)
    assert DetectionSchedule.parse(schedule.text()) == schedule
    assert schedule.describe() == {"every": MAX_DETECT_EVERY, "motion": 12.0, "seconds": 0.5}
    # Without seconds a schedule describes itself as before they existed.
    assert "seconds" not in DetectionSchedule(every=8).describe()
    with pytest.raises(ValueError, match="seconds must be in"):
        DetectionSchedule.parse("3s")
    with pytest.raises(ValueError, match="EVERY"):
        DetectionSchedule.parse("s")
    # Faces' schedule stays in frames (their recall was measured so).
    with pytest.raises(ValueError, match="EVERY\\[:MOTION\\[:FULL_EVERY\\]\\]"):
        DetectionSchedule.parse("0.2s", FACE_COARSE_SCALE)
    # Without timestamps the cap in frames alone decides.
    scheduler = Scheduler(DetectionSchedule(every=4, seconds=0.1))
    image = {"_": np.zeros((8, 8, 3), np.uint8)}
    assert [scheduler.due(image, i == 0, i == 9) is not None for i in range(10)] == \
        [i in (0, 4, 8, 9) for i in range(10)]


def _views(frame: FrameIn):
    from privacy.anonymizer import ViewFrames

    return ViewFrames(frame.time_s, {"_": frame.image}, frame.emit)


def test_a_face_only_in_a_skipped_frame_next_to_a_keyframe_miss_is_still_covered():
    """A keyframe that misses the face is covered by the keyframes around it (window 2)."""

    class _MissAt4(_Moving):
        def _detect(self, frame):
            if int(frame[0, 0, 0]) == 4:
                self.calls.append(4)
                return Detections.empty()
            return super()._detect(frame)

    outs = list(_anonymizer(_MissAt4(), DetectionSchedule(every=4), window=2)
                .process(_stream(13)))
    for i in (3, 4, 5):
        assert _masked(outs[i].image, _Moving.box(i)), f"frame {i} leaks the face"


@pytest.mark.parametrize("fault", ["raise", "nan", "type"])
def test_a_detector_error_on_a_keyframe_fails_the_stream(fault):
    # Calls 0, 1, 2 are frames 0, 4, 8: the fault hits keyframe 8.
    anonymizer = _anonymizer(FaultyDetector(fault, at=2), DetectionSchedule(every=4))
    emitted = []
    with pytest.raises(DetectorError):
        for out in anonymizer.process(_stream(12)):
            emitted.append(out)
    # Only frames whose keyframes on both sides were detected were released (the caller
    # discards them too: a segment is all or nothing).
    assert len(emitted) <= 4


def test_context_frames_are_detected_on_schedule_but_not_emitted():
    frames = _stream(10)
    frames[0].emit = frames[9].emit = False
    detector = _Moving()
    outs = list(_anonymizer(detector, DetectionSchedule(every=4)).process(frames))
    assert [round(o.time_s * 25) for o in outs] == list(range(1, 9))
    assert detector.calls == [0, 4, 8, 9]
    for o in outs:
        assert _masked(o.image, _Moving.box(round(o.time_s * 25)))


@pytest.mark.parametrize("every, window, step", [(4, 2, 1), (4, 2, 2), (16, 1, 1), (16, 1, 2)])
def test_a_segments_context_holds_its_window_of_keyframes_on_each_side(every, window, step):
    detector = _Moving()
    anonymizer = _anonymizer(detector, DetectionSchedule(every=every), window=window)
    context = anonymizer.context(step)
    assert context == (window - 1) * max(1, every // step) + 1
    # A segment of 8 instants with its context on each side, as transforms.anonymize cuts it.
    frames = [_views(f) for f in _stream(2 * context + 8)]
    for frame in frames[:context] + frames[context + 8:]:
        frame.emit = False
    outs = list(anonymizer.process_views(frames, step=step))
    assert len(outs) == 8
    calls = np.asarray(detector.calls)
    assert (calls < context).sum() >= window and (calls >= context + 8).sum() >= window


def test_schedule_settings_are_validated():
    with pytest.raises(ValueError, match="every"):
        DetectionSchedule(every=0)
    with pytest.raises(ValueError, match="every"):
        DetectionSchedule(every=MAX_DETECT_EVERY + 1)
    with pytest.raises(ValueError, match="motion"):
        DetectionSchedule(motion=-1)
    with pytest.raises(ValueError, match="faces are detected at least every"):
        AnonymizationConfig(face_schedule=DetectionSchedule(every=MAX_FACE_DETECT_EVERY + 1))
    with pytest.raises(ValueError, match="temporal_window"):
        AnonymizationConfig(temporal_window=0)  # keyframes need neighbours to borrow from
    assert DetectionSchedule.parse("4:12") == DetectionSchedule(4, 12.0)
    with pytest.raises(ValueError, match="EVERY"):
        DetectionSchedule.parse("often")


def test_schedules_are_per_class_and_off_is_left_out_of_the_fingerprint():
    every_frame = AnonymizationConfig(face_schedule=DetectionSchedule())
    assert "face_schedule" not in every_frame.describe()
    assert AnonymizationConfig().describe()["face_schedule"] == DEFAULT_FACE_SCHEDULE.describe()
    # Without coarse keyframes a schedule describes itself as it did before they existed.
    assert AnonymizationConfig(face_schedule=DetectionSchedule(4, 8.0)).describe()[
        "face_schedule"] == {"every": 4, "motion": 8.0}
    assert every_frame.fingerprint() != AnonymizationConfig().fingerprint()
    # The stronger second pass detects every frame of every class.
    plates = ClassPolicy(PLATE, "ppocr-plates", schedule=DetectionSchedule(every=8))
    config = AnonymizationConfig(other_classes=(plates,))
    assert config.describe()["other_classes"][0]["schedule"] == {"every": 8, "motion": 0.0}
    strong = config.strong()
    assert strong.face_schedule.is_every_frame
    assert all(p.schedule.is_every_frame for p in strong.other_classes)
    assert "schedule" not in strong.describe()["other_classes"][0]


def test_verification_checks_the_same_frames_whatever_the_schedule():
    """The first and every n-th emitted frame is checked, detected or not (a skipped frame
    is checked at the boxes it borrowed)."""
    from privacy.verification import RedactionVerifier, VerificationConfig
    from tests.faults import BlindDetector

    verifier = RedactionVerifier(VerificationConfig(every_n_frames=3), detector=BlindDetector())
    anonymizer = SegmentAnonymizer([ClassDetector(_Moving(), RedactionConfig(), 1, None,
                                                  DetectionSchedule(every=4))],
                                   detect_timeout_s=None, verifier=verifier)
    outs = list(anonymizer.process(_stream(11)))
    anonymizer.close()
    assert len(outs) == 11
    assert anonymizer.verification.frames_checked == 4  # frames 0, 3, 6, 9
    assert anonymizer.verification.passed


# Coarse keyframes: full resolution on every ``full_every``-th frame and the first and last,
# a coarse pass on the keyframes between.


class _Blind(Detector):
    """A coarse pass that sees nothing (the face is too small for it); counts its calls."""

    name = "blind"

    def __init__(self) -> None:
        self.calls: list[int] = []

    def _detect(self, frame):
        self.calls.append(int(frame[0, 0, 0]))
        return Detections.empty()


def _coarse_anonymizer(full: Detector, coarse: Detector, schedule: DetectionSchedule,
                       window: int = 2, batch_size: int = 1) -> SegmentAnonymizer:
    return SegmentAnonymizer([ClassDetector(full, RedactionConfig(), window, None, schedule,
                                            coarse)],
                             detect_timeout_s=None, batch_size=batch_size)


# Frames large enough for a coarse pass at 0.5 (COARSE_MIN_SIDE on the shorter side).
LARGE = 2 * COARSE_MIN_SIDE


def _levels(schedule: DetectionSchedule, n: int, step: int = 1, cut_at: int | None = None,
            size: int = LARGE) -> list[str | None]:
    scheduler = Scheduler(schedule, step)
    return [scheduler.due({"_": f.image}, i == 0, i == n - 1)
            for i, f in enumerate(_stream(n, scene_cut_at=cut_at, size=size))]


def test_coarse_keyframes_run_between_full_resolution_ones():
    schedule = DetectionSchedule(every=4, full_every=8, coarse_scale=0.5)
    levels = _levels(schedule, 19)
    assert {i: v for i, v in enumerate(levels) if v} == {
        0: FULL, 4: COARSE, 8: FULL, 12: COARSE, 16: FULL, 18: FULL}  # first, cap, last
    # A full-resolution cap that is no multiple of the keyframe cap forces its own frame.
    levels = _levels(DetectionSchedule(every=4, full_every=6, coarse_scale=0.5), 13)
    assert {i: v for i, v in enumerate(levels) if v} == {
        0: FULL, 4: COARSE, 6: FULL, 10: COARSE, 12: FULL}
    # Counted in source frames: at a stride of 2 the caps are 2 and 4 anonymized frames.
    levels = _levels(schedule, 9, step=2)
    assert {i: v for i, v in enumerate(levels) if v} == {
        0: FULL, 2: COARSE, 4: FULL, 6: COARSE, 8: FULL}
    # Motion detects out of turn with the coarse pass, and never delays the full one.
    levels = _levels(DetectionSchedule(every=4, motion=10.0, full_every=8, coarse_scale=0.5),
                     17, cut_at=3)
    assert {i: v for i, v in enumerate(levels) if v} == {
        0: FULL, 3: COARSE, 7: COARSE, 8: FULL, 12: COARSE, 16: FULL}
    # Without coarse keyframes every keyframe is at full resolution, as before; and so is
    # every keyframe of frames too small to reduce.
    assert set(_levels(DetectionSchedule(every=4), 9)) == {FULL, None}
    assert set(_levels(schedule, 9, size=SIZE)) == {FULL, None}


@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize("window", [1, 2])
def test_a_small_face_only_the_full_pass_finds_is_masked_between_full_keyframes(batch_size,
                                                                                 window):
    full, coarse = _Moving(), _Blind()
    # Keyframes every 2nd frame, full resolution every 8th: each frame between two full
    # keyframes has coarse keyframes nearer on both sides, which all miss the face.
    schedule = DetectionSchedule(every=2, full_every=8, coarse_scale=0.5)
    outs = list(_coarse_anonymizer(full, coarse, schedule, window, batch_size)
                .process(_stream(17, size=LARGE)))
    assert full.calls == [0, 8, 16] and coarse.calls == [2, 4, 6, 10, 12, 14]
    assert len(outs) == 17
    for i, out in enumerate(outs):
        assert _masked(out.image, _Moving.box(i)), f"frame {i} leaks the face"
        assert out.ran == (frozenset({"face"}) if i % 2 == 0 else frozenset())
        assert out.coarse == (frozenset({"face"}) if i in coarse.calls else frozenset())


def test_a_coarse_pass_error_fails_the_stream():
    from tests.faults import FaultyDetector

    schedule = DetectionSchedule(every=4, full_every=8, coarse_scale=0.5)
    # The coarse pass's first call is frame 4: it raises.
    anonymizer = _coarse_anonymizer(_Moving(), FaultyDetector("raise", at=0), schedule)
    emitted = []
    with pytest.raises(DetectorError):
        for out in anonymizer.process(_stream(17, size=LARGE)):
            emitted.append(out)
    assert emitted == []  # nothing was ready: frame 0 waits for the keyframes after it
    with pytest.raises(ValueError, match="coarse detector"):
        ClassDetector(_Moving(), RedactionConfig(), 2, None, schedule)


def test_a_single_image_is_detected_at_full_resolution():
    full, coarse = _Moving(), _Blind()
    schedule = DetectionSchedule(every=4, motion=8.0, full_every=8, coarse_scale=0.5)
    outs = list(_coarse_anonymizer(full, coarse, schedule).process(_stream(1, size=LARGE)))
    assert full.calls == [0] and coarse.calls == []
    assert outs[0].ran == frozenset({"face"}) and outs[0].coarse == frozenset()


def test_the_coarse_detector_is_the_spec_at_the_coarse_scale():
    from privacy.anonymization import build_class_detector
    from privacy.detectors.factory import at_scale

    assert at_scale("centerface:threshold=0.09", 0.5) == "centerface:threshold=0.09;scales=0.5"
    assert at_scale("centerface:scales=1,2+hog", 0.5) == "centerface:scales=0.5,1+hog"
    config = AnonymizationConfig(other_classes=(), face_schedule=DetectionSchedule(
        4, 8.0, 8, FACE_COARSE_SCALE))
    built = build_class_detector(config.face_policy(), config)
    assert built.detector.describe()["scales"] == [1.0]
    assert built.coarse.describe()["scales"] == [FACE_COARSE_SCALE]
    assert built.coarse.describe()["threshold"] == built.detector.describe()["threshold"]
    # The stronger second pass detects every frame at full resolution.
    assert config.strong().face_schedule.is_every_frame
    assert config.describe()["face_schedule"] == {"every": 4, "motion": 8.0, "full_every": 8,
                                                  "coarse_scale": FACE_COARSE_SCALE}


def test_coarse_settings_are_validated():
    with pytest.raises(ValueError, match="full_every must be in"):
        DetectionSchedule(every=4, full_every=4, coarse_scale=0.5)
    with pytest.raises(ValueError, match="go together"):
        DetectionSchedule(every=4, full_every=8)
    with pytest.raises(ValueError, match="coarse_scale must be in"):
        DetectionSchedule(every=4, full_every=8, coarse_scale=1.0)
    with pytest.raises(ValueError, match="at full resolution at least every"):
        AnonymizationConfig(face_schedule=DetectionSchedule(4, 8.0, MAX_FACE_FULL_EVERY + 1,
                                                            0.5))
    with pytest.raises(ValueError, match="faces only"):
        ClassPolicy(PLATE, "ppocr-plates", schedule=DetectionSchedule(4, 0.0, 8, 0.5))
    assert DetectionSchedule.parse("4:8:8", 0.5) == DetectionSchedule(4, 8.0, 8, 0.5)
    assert DetectionSchedule.parse("4:8:8", 0.5).text() == "4:8:8"
    assert DetectionSchedule.parse("4:8", 0.5) == DetectionSchedule(4, 8.0)
    with pytest.raises(ValueError, match="EVERY or EVERY:MOTION"):
        DetectionSchedule.parse("4:8:8")  # a class without coarse keyframes


@pytest.mark.parametrize("command", ["redact", "run"])
def test_the_face_schedule_flag_takes_full_every(command):
    from pipeline.anonymization_options import anonymization_config
    from pipeline.cli import _parser

    if command == "redact":
        args = _parser().parse_args(["redact", "in.mp4", "out.mp4",
                                          "--face-schedule", "4:8:8"])
    else:
        from apache_beam.options.pipeline_options import PipelineOptions

        from pipeline.options import EgoveilOptions

        args = PipelineOptions(["--face-schedule", "4:8:8"]).view_as(EgoveilOptions)
    assert anonymization_config(args).face_schedule == DetectionSchedule(
        4, 8.0, 8, FACE_COARSE_SCALE)


@pytest.mark.parametrize("value, message", [
    ("4:8:x", "--face-schedule: detection schedule must be EVERY[:MOTION[:FULL_EVERY]]"),
    ("4:8:2", "--face-schedule: detection schedule: full_every must be in (4, 16]"),
    ("4:8:12", "at full resolution at least every 8 frames, got 12"),
    ("4:8:8:1", "--face-schedule: detection schedule must be"),
])
def test_bad_face_schedules_get_one_line_and_exit_2(value, message, capsys):
    import logging

    from pipeline.cli import main

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        code = main(["redact", "in.mp4", "out.mp4", "--face-schedule", value])
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("egoveil: error: "), err
    assert message in err[0]


def test_the_record_of_processing_describes_the_face_schedule():
    from pipeline.runner import _describe_models
    from privacy.verification import VerificationConfig

    config = AnonymizationConfig(other_classes=(), verification=VerificationConfig(
        verifier="none"))
    classes, _ = _describe_models(config)
    assert classes["face"]["schedule"] == {"every": 4, "motion": 8.0, "full_every": 8,
                                           "coarse_scale": FACE_COARSE_SCALE}
    plain = AnonymizationConfig(other_classes=(), face_schedule=DetectionSchedule(4, 8.0),
                                verification=VerificationConfig(verifier="none"))
    assert _describe_models(plain)[0]["face"]["schedule"] == {"every": 4, "motion": 8.0}
