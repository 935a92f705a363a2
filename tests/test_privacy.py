"""The decisions in ``privacy/``: detectors, redaction, temporal propagation, pseudonyms."""

from __future__ import annotations

import numpy as np
import pytest

from privacy.anonymizer import ClassDetector, FrameIn, SegmentAnonymizer
from privacy.detectors import Detections, DetectorError, DetectorSpec, build_detector
from privacy.detectors.base import Detector, validate_detections
from privacy.pseudonyms import PseudonymKey
from privacy.redaction import RedactionConfig, redact, scale_boxes
from tests.faults import FaultyDetector


def test_centerface_finds_the_bundled_portraits():
    from skimage import data

    detector = build_detector("centerface")
    dets = detector.detect(np.ascontiguousarray(data.astronaut()))
    assert len(dets) == 1
    x1, y1, x2, y2 = dets.boxes[0]
    assert 170 < x1 < 200 and 50 < y1 < 75 and 255 < x2 < 285 and 165 < y2 < 190
    assert detector.describe()["weights_sha256"]


def test_empty_frame_is_no_face_not_a_failure():
    dets = build_detector("centerface").detect(np.zeros((120, 160, 3), np.uint8))
    assert len(dets) == 0


@pytest.mark.parametrize("frame", [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3), np.float32),
                                   np.zeros((0, 10, 3), np.uint8), "not an image"])
def test_bad_frames_are_detector_errors(frame):
    with pytest.raises(DetectorError):
        build_detector("centerface").detect(frame)


@pytest.mark.parametrize("boxes, scores", [
    ([[np.nan, 0, 1, 1]], [0.5]), ([[5, 5, 1, 1]], [0.5]), ([[0, 0, 1, 1]], [1.5]),
    ([[1e6, 1e6, 1e6 + 1, 1e6 + 1]], [0.5]), ([[0, 0, 1, 1]], [0.5, 0.5]),
])
def test_garbage_detections_are_rejected(boxes, scores):
    with pytest.raises(DetectorError):
        validate_detections(Detections(np.array(boxes, np.float32), np.array(scores, np.float32)),
                            100, 100)


def test_detections_are_clipped_to_the_frame():
    dets = validate_detections(Detections(np.array([[-5, -5, 120, 50]], np.float32),
                                          np.array([0.9], np.float32)), 100, 100)
    assert dets.boxes.tolist() == [[0, 0, 100, 50]]


@pytest.mark.parametrize("text, error", [
    ("", "empty"), ("haar", "unknown detector"), ("centerface:threshold=x", "bad value"),
    ("centerface:foo=1", "unknown detector option"), ("yunet", "needs the model file"),
])
def test_detector_spec_errors_name_the_problem(text, error):
    with pytest.raises(ValueError, match=error):
        DetectorSpec.parse(text)


def test_detector_spec_parses_ensembles():
    spec = DetectorSpec.parse("centerface:threshold=0.1;scales=1,2+yunet:/m.onnx")
    assert [b.kind for b in spec.backends] == ["centerface", "yunet"]
    assert spec.backends[0].scales == (1.0, 2.0) and spec.backends[1].path == "/m.onnx"


def test_mask_scale_below_1_3_is_refused():
    with pytest.raises(ValueError):
        RedactionConfig(mask_scale=1.2)
    with pytest.raises(ValueError):
        RedactionConfig(mode="emoji")


def test_scale_boxes_grows_about_the_centre_and_clips():
    out = scale_boxes(np.array([[10, 10, 20, 30]], np.float32), 1.5, 100, 100)
    assert out.tolist() == [[7, 5, 23, 35]]
    out = scale_boxes(np.array([[0, 0, 20, 20]], np.float32), 2.0, 15, 15)
    assert out.tolist() == [[0, 0, 15, 15]]


@pytest.mark.parametrize("mode", ["solid", "pixelate", "blur"])
def test_redaction_changes_only_the_scaled_box(mode):
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (100, 100, 3), dtype=np.uint8)
    before = frame.copy()
    redact(frame, np.array([[40, 40, 60, 60]], np.float32),
           RedactionConfig(mode=mode, mask_scale=1.5), np.random.default_rng(1))
    changed = np.any(frame != before, axis=-1)
    ys, xs = np.nonzero(changed)
    assert ys.min() >= 35 and ys.max() < 65 and xs.min() >= 35 and xs.max() < 65
    assert changed[40:60, 40:60].mean() > 0.9
    if mode == "solid":
        assert (frame[35:65, 35:65] == 128).all()
    if mode == "pixelate":
        assert len(np.unique(frame[35:65, 35:65].reshape(-1, 3), axis=0)) <= 16


class _Scripted(Detector):
    """Finds one face at a fixed place, except in the frames listed in ``miss``."""

    name = "scripted"

    def __init__(self, miss: set[int]):
        self.miss, self.calls = miss, 0

    def _detect(self, frame):
        i, self.calls = self.calls, self.calls + 1
        if i in self.miss:
            return Detections.empty()
        return Detections(np.array([[40, 40, 60, 60]], np.float32), np.ones(1, np.float32))


def _frames(n: int) -> list[FrameIn]:
    return [FrameIn(i / 10, np.full((100, 100, 3), 200, np.uint8)) for i in range(n)]


def test_a_missed_frame_is_covered_by_its_neighbours():
    anonymizer = SegmentAnonymizer([ClassDetector(_Scripted(miss={3}), RedactionConfig(),
                                                  temporal_window=1)], detect_timeout_s=None)
    outs = list(anonymizer.process(_frames(7)))
    assert [o.detected["face"] for o in outs] == [1, 1, 1, 0, 1, 1, 1]
    assert all((o.image[45:55, 45:55] == 128).all() for o in outs)
    without = SegmentAnonymizer([ClassDetector(_Scripted(miss={3}), RedactionConfig(),
                                               temporal_window=0)], detect_timeout_s=None)
    outs = list(without.process(_frames(7)))
    assert (outs[3].image[45:55, 45:55] == 200).all()


def test_context_frames_are_detected_but_not_emitted():
    frames = _frames(6)
    frames[0].emit = frames[5].emit = False
    detector = _Scripted(miss={1, 2, 3, 4})
    outs = list(SegmentAnonymizer([ClassDetector(detector, RedactionConfig(), temporal_window=1)],
                                  detect_timeout_s=None).process(frames))
    assert [o.time_s for o in outs] == [0.1, 0.2, 0.3, 0.4]
    assert (outs[0].image[45:55, 45:55] == 128).all()  # from context frame 0
    assert (outs[3].image[45:55, 45:55] == 128).all()  # from context frame 5
    assert (outs[1].image[45:55, 45:55] == 200).all()
    assert detector.calls == 6


@pytest.mark.parametrize("fault", ["raise", "nan", "inverted", "type", "far"])
def test_detector_faults_stop_the_stream(fault):
    anonymizer = SegmentAnonymizer([ClassDetector(FaultyDetector(fault, at=2), RedactionConfig(),
                                                  temporal_window=1)], detect_timeout_s=None)
    emitted = []
    with pytest.raises(DetectorError):
        for out in anonymizer.process(_frames(6)):
            emitted.append(out)
    assert len(emitted) <= 1  # the caller discards these: see the segment tests


def test_detector_timeout_fails_and_is_never_reused():
    anonymizer = SegmentAnonymizer([ClassDetector(FaultyDetector("hang", at=1, hang_s=3.0),
                                                  RedactionConfig(), temporal_window=0)],
                                   detect_timeout_s=1.0)
    with pytest.raises(DetectorError, match="timed out"):
        list(anonymizer.process(_frames(4)))
    assert anonymizer.broken
    with pytest.raises(DetectorError, match="unusable"):
        list(anonymizer.process(_frames(1)))
    anonymizer.close()


def test_pseudonyms_are_keyed_and_unlinkable_across_keys():
    a, b = PseudonymKey(b"a" * 32), PseudonymKey(b"b" * 32)
    assert a.pseudonym("wearer", "alice") == a.pseudonym("wearer", "alice")
    assert a.pseudonym("wearer", "alice") != b.pseudonym("wearer", "alice")
    assert a.pseudonym("wearer", "alice") != a.pseudonym("device", "alice")
    assert len(a.pseudonym("wearer", "alice")) == 32
    assert a.key_id != b.key_id and "a" * 16 not in repr(a)


def test_interpolation_follows_a_fast_moving_face():
    from privacy.tracking import propagated_boxes

    # A 40 px face moving 80 px per frame (a head turn): missed in the middle frame.
    before = np.array([[100, 100, 140, 140]], np.float32)
    after = np.array([[260, 100, 300, 140]], np.float32)
    boxes = propagated_boxes([(-1, before), (1, after)])
    frame = np.zeros((300, 400), bool)
    for x1, y1, x2, y2 in boxes.astype(int):
        frame[y1:y2, x1:x2] = True
    assert frame[100:140, 180:220].mean() > 0.95  # where the face actually is


def test_unrelated_faces_are_not_interpolated():
    from privacy.tracking import interpolate

    before = np.array([[0, 0, 20, 20]], np.float32)
    after = np.array([[300, 300, 320, 320]], np.float32)
    assert interpolate(before, after, 1, 1).shape == (0, 4)


def _astronaut_frame():
    from skimage import data

    # The top 300 rows: below them, HOG takes the mission patch for a face.
    return (np.ascontiguousarray(data.astronaut()[:300]),
            np.array([[181, 58, 270, 178]], np.float32))


def test_verifier_passes_solid_redaction_and_catches_light_blur_and_misses():
    import cv2

    from privacy.verification import RedactionVerifier, VerificationConfig

    verifier = RedactionVerifier(VerificationConfig())
    image, box = _astronaut_frame()
    solid = redact(image.copy(), box, RedactionConfig())
    assert verifier.check(image, solid, box).passed
    blurred = image.copy()
    blurred[58:178, 181:270] = cv2.GaussianBlur(blurred[58:178, 181:270], (9, 9), 0)
    result = verifier.check(image, blurred, box)
    assert result.linkable_faces == 1 and not result.passed
    missed = verifier.check(image, image.copy(), np.zeros((0, 4), np.float32))
    assert missed.output_faces == 1 and not missed.passed


def test_fisheye_views_cover_a_face_squeezed_at_the_rim():
    """A frontal portrait re-projected near the rim of a 110-degree fisheye frame."""
    import cv2

    from pipeline.samples import _paste, portrait
    from privacy.coverage import covered_shares, mask_from_boxes

    size, fov = 704, np.radians(110.0)
    f_d = (size / 2) / (fov / 2)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    dx, dy = xs - size / 2, ys - size / 2
    radius = np.sqrt(dx ** 2 + dy ** 2)
    f_u = 1500 / np.tan(fov / 2)
    r_u = f_u * np.tan(np.minimum(radius / f_d, fov / 2 * 0.999))
    scale = np.where(radius > 0, r_u / np.maximum(radius, 1e-6), 1.0)
    map_x, map_y = (1500 + dx * scale).astype(np.float32), (1500 + dy * scale).astype(np.float32)
    scene = np.full((3000, 3000, 3), 90, np.uint8)
    r = f_u * np.tan(0.85 * fov / 2)  # near the rim, on the diagonal
    box = _paste(scene, portrait("astronaut"), 1500 + r * 0.707, 1500 + r * 0.707, 180)
    fisheye = cv2.remap(scene, map_x, map_y, cv2.INTER_LINEAR)
    x1, y1, x2, y2 = box
    inside = (map_x >= x1) & (map_x < x2) & (map_y >= y1) & (map_y < y2)
    fy, fx = np.nonzero(inside)
    truth = np.array([[fx.min(), fy.min(), fx.max() + 1, fy.max() + 1]], np.float32)
    dets = build_detector("centerface:threshold=0.1;fisheye=110").detect(fisheye)
    plain = build_detector("centerface:threshold=0.1").detect(fisheye)
    assert len(dets) == 1  # seen in the whole frame and in a view: one face
    mask = mask_from_boxes(dets.boxes, 1.4, size, size)
    assert covered_shares(truth, mask)[0] >= 0.8
    assert (mask >= mask_from_boxes(plain.boxes, 1.4, size, size)).all()
