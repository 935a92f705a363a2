"""Plates and text as classes of the anonymizer: ``--redact`` and the per-class flags, the
policies and what they fingerprint, verification and fail-closed detection per class,
keyframes released after every class's detector ran around them, cross-view search for a
plate, and ``egoveil redact`` on a video with a rendered plate and name badge.

Plates and badges are drawn here (Pillow's bundled font, ``pipeline.samples``) into
scenes and videos the tests make; the detectors are the real PP-OCR networks.
"""

from __future__ import annotations

import threading

import apache_beam as beam
import av
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.anonymization_options import add_anonymization_args, anonymization_config
from pipeline.samples import (
    Sticker,
    badge_patch,
    make_scene_recording,
    paste_patch,
    plate_patch,
    scene,
)
from privacy.anonymization import VerifiedAnonymization, build_class_detector
from privacy.anonymizer import ClassDetector, FrameIn, SegmentAnonymizer, ViewFrames
from privacy.audit_summary import count_outcomes
from privacy.config import (
    STRONG_MASK_SCALE,
    AnonymizationConfig,
    class_policy,
    default_policy,
    redact_classes,
)
from privacy.detectors import Detections, Detector, DetectorError, build_detector
from privacy.detectors.factory import DEFAULT_PLATE_DETECTOR, on_crops, on_device
from privacy.redaction import SOLID_VALUE, RedactionConfig
from privacy.schedule import MAX_DETECT_EVERY, DetectionSchedule
from privacy.verification import RedactionVerifier, VerificationConfig
from schemas.detections import FACE, PLATE, TEXT
from tests.cli import egoveil
from tests.faults import BlindFactory, FaultyFactory, HallucinatingFactory
from transforms.anonymize import AnonymizeSegmentFn, AnonymizeSegments, ClipPlan
from transforms.media.video import probe
from transforms.models.encoders import resolve_encoder
from transforms.segments import plan_segments

FPS = 15
PLATE_TEXT = "KA 482 TB"
BADGE_TEXT = "Kowalczykowska"


def _painted(image: np.ndarray, box) -> float:
    """Share of ``box``'s pixels painted with the solid fill (within encoding noise)."""
    x1, y1, x2, y2 = box
    region = image[y1:y2, x1:x2].astype(int)
    return float((np.abs(region - SOLID_VALUE) <= 12).all(axis=-1).mean())


# ---------------------------------------------------------------- flags and policies


def _parse(*argv: str):
    import argparse

    parser = argparse.ArgumentParser()
    add_anonymization_args(parser)
    return anonymization_config(parser.parse_args(list(argv)))


def test_the_flags_default_to_the_configuration_and_name_their_classes():
    assert _parse() == AnonymizationConfig()
    assert [p.detection_class for p in AnonymizationConfig().policies] == [FACE, PLATE]
    assert AnonymizationConfig().other_classes == (default_policy(PLATE),)
    assert _parse("--redact", "faces").other_classes == ()
    full = _parse("--redact", "text,faces,plates", "--redaction", "pixelate",
                  "--text-schedule", "2:6", "--plate-detector", "ppocr-plates:model=v5")
    plates, text = full.other_classes
    assert (plates.detection_class, text.detection_class) == (PLATE, TEXT)
    assert text.schedule == DetectionSchedule(2, 6.0)
    assert _parse("--plate-schedule", "0.4s").other_classes[0].schedule == \
        DetectionSchedule(MAX_DETECT_EVERY, seconds=0.4)
    assert plates.redaction.mode == text.redaction.mode == "pixelate"
    assert plates.redaction.mask_scale == default_policy(PLATE).redaction.mask_scale
    # A detector of the user's own stays in the stronger second pass.
    assert plates.strong_detector.startswith("ppocr-plates:model=v5+")
    # Each class's mask scale and window are its own.
    own = _parse("--plate-mask-scale", "1.6", "--plate-window", "2", "--mask-scale", "1.5",
                 "--redact", "faces,plates,text").other_classes
    assert [(p.redaction.mask_scale, p.temporal_window) for p in own] == [(1.6, 2), (1.3, 1)]
    assert redact_classes("faces,plates") == (FACE, PLATE)


@pytest.mark.parametrize("args, message", [
    (["--redact", "plates"], "--redact must include faces"),
    (["--redact", "faces,cars"], "unknown class 'cars'"),
    (["--redact", "faces,faces"], "names a class twice"),
    (["--plate-schedule", "17"], "--plate-schedule: detection schedule: every must be in"),
    (["--plate-schedule", "2.5s"], "--plate-schedule: detection schedule: seconds must be in"),
    (["--text-schedule", "often"], "--text-schedule: detection schedule must be"),
    (["--plate-detector", "centerface"], "--plate-detector: detector 'centerface' finds face"),
    (["--text-detector", "ppocr-text:colour=red"], "--text-detector: unknown ppocr-text option"),
    (["--plate-mask-scale", "1.1"], "--plate-mask-scale: "),
    (["--text-window", "0"], "--text-window: a class detected on keyframes needs"),
])
def test_class_mistakes_get_one_line_and_exit_2(args, message):
    result = egoveil("redact", "in.mp4", "out.mp4", *args)
    err = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(err) == 1 and err[0].startswith("egoveil: error: "), err
    assert message in err[0]


def test_classes_and_their_policies_are_fingerprinted_and_faces_only_is_as_before():
    faces = AnonymizationConfig(other_classes=())
    # Faces only describes itself with the fields it had before classes existed.
    assert set(faces.describe()) == {
        "detector", "redaction", "temporal_window", "detect_timeout_s", "max_corrupt_fraction",
        "verification", "strong_detector", "detect_batch_size", "cross_view", "face_schedule"}
    described = AnonymizationConfig().describe()["other_classes"][0]
    assert described["detection_class"] == PLATE
    assert described["detector"] == DEFAULT_PLATE_DETECTOR
    assert described["schedule"] == default_policy(PLATE).schedule.describe()
    # Plates' keyframes are at most 0.6 s of video apart, whatever the frame rate.
    assert described["schedule"]["seconds"] == 0.6
    # Plates and text stay put in the world: their boxes follow the motion between keyframes.
    assert described["follow_motion"] is True and default_policy(TEXT).follow_motion
    configs = [faces, AnonymizationConfig(),
               AnonymizationConfig(other_classes=(default_policy(PLATE), default_policy(TEXT))),
               AnonymizationConfig(other_classes=(class_policy(
                   PLATE, schedule=DetectionSchedule(4)),)),
               AnonymizationConfig(other_classes=(class_policy(
                   PLATE, detector="ppocr-plates:model=v5"),)),
               AnonymizationConfig(other_classes=(class_policy(PLATE, mode="pixelate"),))]
    assert len({c.fingerprint() for c in configs}) == len(configs)


def test_the_second_pass_strengthens_only_the_classes_that_failed():
    config = AnonymizationConfig(other_classes=(default_policy(PLATE), default_policy(TEXT)))
    plates_only = config.strong(frozenset({PLATE}))
    plates, text = plates_only.other_classes
    assert plates.detector == default_policy(PLATE).strong_detector
    assert plates.schedule.is_every_frame and plates.redaction.mode == "solid"
    assert plates.redaction.mask_scale == STRONG_MASK_SCALE
    assert text == default_policy(TEXT)
    assert (plates_only.detector, plates_only.face_schedule) == (config.detector,
                                                                 config.face_schedule)
    everything = config.strong()
    assert everything.face_schedule.is_every_frame
    assert all(p.schedule.is_every_frame for p in everything.other_classes)


def test_device_and_crop_variants_of_the_plate_spec():
    on_gpu = on_device(DEFAULT_PLATE_DETECTOR, "cuda")
    assert on_gpu.count("backend=onnxruntime") == 2
    assert on_device("ppocr-plates:backend=opencv", "cuda") == "ppocr-plates:backend=opencv"
    assert on_crops(DEFAULT_PLATE_DETECTOR).count("max_height=1;max_width=1") == 2
    assert on_crops("ppocr-text:model=v4") == "ppocr-text:model=v4"


# ---------------------------------------------------------------- the anonymizer


def _plate_frames(count: int, plate_in: range | None = None,
                  size: tuple[int, int] = (360, 640)) -> list[np.ndarray]:
    """A still scene; the plate is drawn in the frames ``plate_in`` (every frame: None)."""
    background = scene(size[1], size[0])
    patch = plate_patch(PLATE_TEXT, 30)
    frames = []
    for i in range(count):
        frame = background.copy()
        if plate_in is None or i in plate_in:
            paste_patch(frame, patch, 300, 250)
        frames.append(frame)
    return frames


def _plates_only(schedule: DetectionSchedule) -> AnonymizationConfig:
    return AnonymizationConfig(other_classes=(class_policy(PLATE, schedule=schedule),),
                               verification=VerificationConfig(every_n_frames=3))


def _run_plates(policy: VerifiedAnonymization, frames: list[np.ndarray], context: int = 0):
    """``frames`` through ``policy``, the first and last ``context`` of them as context (not
    emitted), as in egoveil run's segments."""
    emitted = range(context, len(frames) - context)
    try:
        return policy.run(lambda anonymizer: _Kept(list(anonymizer.process(
            FrameIn(i / FPS, f.copy(), emit=i in emitted) for i, f in enumerate(frames)))))
    finally:
        policy.close()


def test_a_silently_blind_plate_detector_is_caught_on_a_keyframe_and_redone():
    # Detection finds nothing; the check on frame 0 (a keyframe) runs the configured plate
    # detector, which sees the plate unpainted: the second pass, with the configured
    # detectors on every frame for plates (faces as before), paints it.
    frames = _plate_frames(10)
    policy = VerifiedAnonymization(_plates_only(DetectionSchedule(every=8)),
                                   factories={PLATE: BlindFactory(PLATE)},
                                   verifier_factories={FACE: BlindFactory()})
    verified = _run_plates(policy, frames)
    first = verified.failed_first
    assert first is not None and first.failed_classes() == {PLATE}
    assert first.to_dict()["output_plate"] >= 1
    assert "plate regions left uncovered" in first.findings()
    assert verified.qa_status == "reredacted_verified"
    outs = verified.attempt.outs
    assert all(_painted(o.image, (300, 250, 400, 280)) > 0.9 for o in outs)
    assert all(PLATE in o.ran for o in outs)  # the second pass: plates on every frame


class _Seen(Detector):
    """The default plate detector, noting the frames it checks (a frame's index is written
    in its first pixel)."""

    name = "seen"
    detection_class = PLATE

    def __init__(self, seen: list) -> None:
        self.inner = build_detector(DEFAULT_PLATE_DETECTOR)
        self.seen = seen

    def _detect(self, frame):
        self.seen.append(int(frame[0, 0, 0]))
        return self.inner._detect(frame)


def _numbered(frames: list[np.ndarray]) -> list[np.ndarray]:
    for i, frame in enumerate(frames):
        frame[0, 0] = i
    return frames


def _checked_on(frames: list[np.ndarray], context: int = 0):
    """``frames`` (numbered) through plates every 8th frame, checks every 3rd: the result
    and the frames the plate check ran on."""
    seen: list = []
    policy = VerifiedAnonymization(_plates_only(DetectionSchedule(every=8)),
                                   verifier_factories={FACE: BlindFactory(),
                                                       PLATE: lambda: _Seen(seen)})
    return _run_plates(policy, _numbered(frames), context), seen


def test_a_plate_check_falling_between_keyframes_moves_to_the_next_keyframe():
    # Frames 0, 3, 6 and 9 are sampled; plate keyframes are 0, 8 and the last, 9. The checks
    # of 3 and 6 move to 8, where a region left uncovered would fail: a plate seen only
    # between keyframes (frames 2-6) is the schedule's blind spot, which no check sees
    # (bench/classes.py --coverage measures it on labelled plates).
    verified, seen = _checked_on(_plate_frames(10, plate_in=range(2, 7)))
    assert verified.failed_first is None and verified.qa_status == "verified"
    counts = verified.verification.to_dict()
    assert counts["frames_checked"] == 4  # the faces' checks: frames 0, 3, 6, 9
    assert sorted(seen) == [0, 8, 9]
    assert counts["output_plate"] == counts["plate_between_keyframes"] == 0


def test_a_blind_plate_detector_is_caught_in_a_segment_with_context():
    # egoveil run's segments: 3 frames of context before the first emitted one and 3 after
    # the last. No sampled frame (3, 6, 9, 12) is a plate keyframe (0, 8, 15): each check
    # moves to frame 8, where the configured detector sees the plate the blind one missed.
    frames = _numbered(_plate_frames(16))
    policy = VerifiedAnonymization(_plates_only(DetectionSchedule(every=8)),
                                   factories={PLATE: BlindFactory(PLATE)},
                                   verifier_factories={FACE: BlindFactory()})
    verified = _run_plates(policy, frames, context=3)
    assert verified.failed_first is not None
    assert verified.failed_first.failed_classes() == {PLATE}
    assert verified.qa_status == "reredacted_verified"
    assert all(_painted(o.image, (300, 250, 400, 280)) > 0.9 for o in verified.attempt.outs)


def test_a_plate_check_no_emitted_keyframe_takes_is_done_where_it_was_handed_on():
    # As above, with the plate in frames 10-12 only. The checks of 3 and 6 move to 8; those
    # of 9 and 12 find no emitted keyframe after them (the next, 15, is context), so the
    # check is done on 12, where the plate between keyframes is counted, not failed.
    verified, seen = _checked_on(_plate_frames(16, plate_in=range(10, 13)), context=3)
    assert verified.failed_first is None and verified.qa_status == "verified"
    assert sorted(seen) == [8, 12]
    counts = verified.verification.to_dict()
    assert counts["frames_checked"] == 4 and counts["output_plate"] == 0
    assert counts["plate_between_keyframes"] >= 1


class _Kept:
    def __init__(self, outs) -> None:
        self.outs = outs

    def discard(self) -> None:
        self.outs = []


def test_a_plate_verifier_that_fails_fails_closed():
    policy = VerifiedAnonymization(
        _plates_only(DetectionSchedule()),
        verifier_factories={FACE: BlindFactory(),
                            PLATE: FaultyFactory("raise", at=0, detection_class=PLATE)})
    with pytest.raises(DetectorError, match="illegal memory access"):
        _run_plates(policy, _plate_frames(3))


class _Rendezvous(Detector):
    """Finds nothing, once the other check's detector has started too (or 10 s passed)."""

    name = "rendezvous"

    def __init__(self, detection_class: str, mine: threading.Event,
                 theirs: threading.Event) -> None:
        self.detection_class = detection_class
        self.mine, self.theirs = mine, theirs
        self.met: bool | None = None

    def _detect(self, frame):
        self.mine.set()
        self.met = self.theirs.wait(10)
        return Detections.empty()


def test_a_frames_plate_check_runs_beside_its_face_check():
    # Each check's detector waits for the other's to start: run one after the other, the
    # first would wait out its 10 s alone. Side by side, the checks of a video's last
    # sampled frame (PP-OCR on both cores, dlib's HOG on one) end together.
    faces_started, plates_started = threading.Event(), threading.Event()
    face_check = _Rendezvous(FACE, faces_started, plates_started)
    plate_check = _Rendezvous(PLATE, plates_started, faces_started)
    verifier = RedactionVerifier(VerificationConfig(), detector=face_check,
                                 classes={PLATE: lambda: plate_check})
    frame = np.full((120, 160, 3), 90, np.uint8)
    summary = verifier.check(frame, frame.copy(), np.zeros((0, 4), np.float32),
                             masks={PLATE: np.zeros((0, 4), np.int64)})
    assert face_check.met and plate_check.met
    assert summary.passed and summary.to_dict()["plate_checked"] == 0


class _Boxes(Detector):
    """A still box of one class, and the frames it was asked about (a frame's index is
    written in its first pixel)."""

    name = "boxes"

    def __init__(self, detection_class: str, calls: list) -> None:
        self.detection_class = detection_class
        self.calls = calls

    def _detect(self, frame):
        self.calls.append((self.detection_class, int(frame[0, 0, 0])))
        return Detections(np.array([[10, 10, 40, 40]], np.float32), np.ones(1, np.float32))


def test_a_frame_is_released_only_after_every_class_detected_around_it():
    calls: list = []
    anonymizer = SegmentAnonymizer([
        ClassDetector(_Boxes(FACE, calls), RedactionConfig(), 1, None, DetectionSchedule(4)),
        ClassDetector(_Boxes(PLATE, calls), RedactionConfig(), 1, None, DetectionSchedule(8))],
        detect_timeout_s=None)
    frames = []
    for i in range(20):
        image = np.full((64, 64, 3), 200, np.uint8)
        image[0, 0, 0] = i
        frames.append(FrameIn(i / FPS, image))
    keyframes = {FACE: (0, 4, 8, 12, 16, 19), PLATE: (0, 8, 16, 19)}
    released = 0
    for out in anonymizer.process(frames):
        index = round(out.time_s * FPS)
        for name, keys in keyframes.items():
            later = [k for k in keys if k > index]
            if later:  # the class's next keyframe was detected before this frame left
                assert (name, later[0]) in calls, (index, name)
        assert out.redacted[FACE] >= 1 and out.redacted[PLATE] >= 1
        released += 1
    assert released == 20
    assert {i for c, i in calls if c == PLATE} == set(keyframes[PLATE])
    assert {i for c, i in calls if c == FACE} == set(keyframes[FACE])


def test_the_other_eye_recovers_a_plate_its_detector_missed():
    from skimage import data

    from privacy.stereo import CrossViewCounts

    left, right, _ = data.stereo_motorcycle()
    left, right = left.copy(), right.copy()
    patch = plate_patch(PLATE_TEXT, 34)
    # What one eye may see of a plate the other sees well: defocus, haze, noise.
    rng = np.random.default_rng(3)
    blurred = (0.6 * cv2_blur(patch, 3.0).astype(np.float32) + 0.4 * 150
               + rng.normal(0, 6, patch.shape))
    paste_patch(left, patch, 300, 380)
    right_box = paste_patch(right, np.clip(blurred, 0, 255).astype(np.uint8), 260, 380)
    config = AnonymizationConfig()
    plates = build_class_detector(default_policy(PLATE), config)
    seen_left, seen_right = plates.detector.detect_batch([left, right])
    assert any(_overlap(b, (300, 380, 427, 414)) > 0.8 for b in seen_left.boxes)
    assert not any(_overlap(b, right_box) > 0.5 for b in seen_right.boxes), "should be hard"
    anonymizer = SegmentAnonymizer([plates], detect_timeout_s=None)
    outs = list(anonymizer.process_views([ViewFrames(0.0, {"left": left, "right": right})],
                                         pairs=(("left", "right"),)))
    assert outs[0]["right"].recovered[PLATE] >= 1
    assert _painted(outs[0]["right"].image, right_box) > 0.95
    assert isinstance(anonymizer.cross_view_counts, CrossViewCounts)
    assert anonymizer.cross_view_counts.recovered >= 1


def cv2_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(image, (0, 0), sigma)


def _overlap(box, target) -> float:
    """Share of ``target`` inside ``box``."""
    x1, y1, x2, y2 = target
    inter = max(0, min(box[2], x2) - max(box[0], x1)) * max(0, min(box[3], y2) - max(box[1], y1))
    return inter / ((x2 - x1) * (y2 - y1))


# ---------------------------------------------------------------- the Beam stage


@pytest.fixture(scope="module")
def plate_clip(tmp_path_factory, key):
    """A 1 s recording of a scene with a plate, as admission would describe it."""
    import hashlib

    from schemas.elements import Recording

    path = str(tmp_path_factory.mktemp("plates") / "plate.mp4")
    make_scene_recording(path, seconds=1.0, fps=10, tracks=(), audio=False,
                         stickers=(Sticker(PLATE, plate_patch(PLATE_TEXT, 30)),))
    data = open(path, "rb").read()
    sha = hashlib.sha256(data).hexdigest()
    return Recording(uri=path, content_sha256=sha, recording_id=key.pseudonym("recording", sha),
                     wearer_id=key.pseudonym("wearer", "w1"), device_id=None,
                     video=probe(path), view="rgb", size_bytes=len(data))


def _plan() -> ClipPlan:
    spec = resolve_encoder("random:vjepa2-tiny")
    return ClipPlan(spec.frames_per_clip, 2, spec.geometry, write_clips=True)


def test_a_plate_that_stays_unverifiable_quarantines_the_segment(plate_clip, key_file, tmp_path):
    plan = _plan()
    # A plate verifier that sees a plate where nothing was painted, in both passes.
    fn = AnonymizeSegmentFn(AnonymizationConfig(), plan, key_file, str(tmp_path / "clips"),
                            "cfg", verifier_factories={FACE: BlindFactory(),
                                                       PLATE: HallucinatingFactory(PLATE)})
    with TestPipeline() as p:
        out = p | beam.Create(plan_segments(plate_clip, plan.span, 1.0)) | AnonymizeSegments(fn)
        assert_that(out.clips, equal_to([]))
        assert_that(out.files, equal_to([]), label="no files")
        assert_that(out.deadletters | beam.Map(
            lambda d: (d.reason, "plate regions left uncovered" in d.detail)),
            equal_to([("verification_failed", True)]), label="deadletter")
        assert_that(out.audit | beam.Map(lambda e: e.to_dict()) | beam.combiners.ToList()
                    | beam.Map(lambda events: (
                        count_outcomes(events).verification_failed_by_class,
                        sorted(e["kind"] for e in events))),
                    equal_to([({PLATE: 2}, ["segment_failed", "verification_failed"])]),
                    label="audit")
    assert not list((tmp_path / "clips").glob("*")) if (tmp_path / "clips").exists() else True


@pytest.mark.parametrize("fault", ["raise", "nan"])
def test_a_plate_detector_fault_dead_letters_the_segment(plate_clip, key_file, tmp_path, fault):
    plan = _plan()
    fn = AnonymizeSegmentFn(AnonymizationConfig(), plan, key_file, str(tmp_path / "clips"),
                            "cfg", detector_factories={
                                PLATE: FaultyFactory(fault, at=1, detection_class=PLATE)})
    with TestPipeline() as p:
        out = p | beam.Create(plan_segments(plate_clip, plan.span, 1.0)) | AnonymizeSegments(fn)
        assert_that(out.clips, equal_to([]))
        assert_that(out.deadletters | beam.Map(lambda d: d.reason),
                    equal_to(["detector_failed"]), label="deadletter")


# ---------------------------------------------------------------- egoveil redact


@pytest.fixture(scope="module")
def plate_video(tmp_path_factory):
    """2 s of a panning scene with a plate and a name badge fixed in it (no faces)."""
    path = str(tmp_path_factory.mktemp("classes") / "street.mp4")
    drawn = make_scene_recording(path, seconds=2.0, fps=FPS, tracks=(), audio=False,
                                 stickers=(Sticker(PLATE, plate_patch(PLATE_TEXT, 30)),
                                           Sticker(TEXT, badge_patch(BADGE_TEXT, 28),
                                                   at=(360 / 640, 130 / 360))))
    assert all(len(boxes) == 1 for name in (PLATE, TEXT) for boxes in drawn[name])
    return path, drawn


def _decoded(path: str) -> list[np.ndarray]:
    with av.open(path) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def _line(box) -> tuple:
    """The badge's text line inside its card (the card's margin is one line high)."""
    x1, y1, x2, y2 = box
    pad = (y2 - y1) // 3
    return (x1 + pad, y1 + pad, x2 - pad, y2 - pad)


def test_redact_paints_the_plate_in_every_frame_and_faces_only_leaves_it(plate_video,
                                                                          tmp_path):
    video, drawn = plate_video
    default, faces = tmp_path / "default.mp4", tmp_path / "faces.mp4"
    result = egoveil("redact", video, str(default))
    assert result.returncode == 0, result.stderr
    assert "plate detections redacted" in result.stderr
    assert egoveil("redact", video, str(faces), "--redact", "faces").returncode == 0
    source, painted, kept = _decoded(video), _decoded(str(default)), _decoded(str(faces))
    assert len(painted) == len(kept) == len(source) == len(drawn[PLATE])
    for i, boxes in enumerate(drawn[PLATE]):
        (box,) = boxes
        x1, y1, x2, y2 = box
        assert _painted(painted[i], box) > 0.95, i
        changed = np.abs(painted[i][y1:y2, x1:x2].astype(int) - source[i][y1:y2, x1:x2])
        assert changed.mean() > 40, i
        assert _painted(kept[i], box) < 0.1, i
        same = np.abs(kept[i][y1:y2, x1:x2].astype(int) - source[i][y1:y2, x1:x2])
        assert same.mean() < 12, i


def test_text_is_opt_in_and_paints_the_name_badge(plate_video, tmp_path):
    video, drawn = plate_video
    dest = tmp_path / "text.mp4"
    result = egoveil("redact", video, str(dest), "--redact", "faces,text")
    assert result.returncode == 0, result.stderr
    assert "text detections redacted" in result.stderr
    assert "plate detections" not in result.stderr
    frames = _decoded(str(dest))
    for i, boxes in enumerate(drawn[TEXT]):
        (box,) = boxes
        assert _painted(frames[i], _line(box)) > 0.95, i
        # A plate's characters are a line of text too (its border is no text).
        x1, y1, x2, y2 = drawn[PLATE][i][0]
        pad_x, pad_y = (y2 - y1) // 4 + 2, (y2 - y1) // 5
        assert _painted(frames[i], (x1 + pad_x, y1 + pad_y, x2 - pad_x, y2 - pad_y)) > 0.95, i
