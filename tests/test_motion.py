"""Boxes carried between keyframes along the measured motion (``privacy.motion``): where a
pan takes a plate, what happens without motion, and what the anonymizer paints with it.

The scenes pan over a photo with a rendered plate fixed in it (``pipeline.samples``); the
plate detector is the real PP-OCR pair.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.samples import paste_patch, plate_patch, scene
from privacy.anonymizer import ClassDetector, FrameIn, SegmentAnonymizer
from privacy.config import default_policy
from privacy.detectors import build_detector
from privacy.motion import MotionTracker, carry
from privacy.redaction import scale_boxes
from privacy.schedule import DetectionSchedule
from privacy.tracking import CARRY_GROWTH_PER_FRAME, followed_boxes, grow
from schemas.detections import PLATE

WIDTH, HEIGHT = 640, 360


def _pan(count: int, step: int, plate_x: int = 520, plate_y: int = 250
         ) -> tuple[list[np.ndarray], list[tuple[int, int, int, int]]]:
    """Frames of a camera panning right ``step`` pixels a frame over a scene with a plate,
    and the plate's box in each (the scene moves left)."""
    world = scene(WIDTH + step * count, HEIGHT)
    x1, y1, x2, y2 = paste_patch(world, plate_patch("KA 482 TB", 30), plate_x, plate_y)
    frames = [np.ascontiguousarray(world[:, i * step:i * step + WIDTH]) for i in range(count)]
    boxes = [(x1 - i * step, y1, x2 - i * step, y2) for i in range(count)]
    return frames, boxes


def _flows(frames: list[np.ndarray]) -> list:
    tracker = MotionTracker()
    return [tracker.push(frame) for frame in frames]


def test_a_box_is_carried_along_a_pan_forward_and_back():
    frames, boxes = _pan(9, 15)
    flows = _flows(frames)
    assert flows[0] is None and all(f is not None for f in flows[1:])
    start, end = np.asarray([boxes[0]], np.float32), np.asarray([boxes[8]], np.float32)
    forward = carry(start, flows[1:9], forward=True)
    backward = carry(end, flows[8:0:-1], forward=False)
    # 120 px of pan either way; each lands within a few pixels, barely widened.
    assert np.abs(forward - end).max() < 4
    assert np.abs(backward - start).max() < 4
    # Grown in place instead, the same box needs to be more than twice as wide to reach.
    assert (start[0, 2] - end[0, 0]) / (start[0, 2] - start[0, 0]) > 2


def test_without_motion_a_box_is_grown_in_place():
    boxes = np.asarray([[100, 100, 160, 130]], np.float32)
    assert carry(boxes, [None], forward=True) is None
    assert carry(np.zeros((0, 4), np.float32), [None], forward=True).shape == (0, 4)
    # The anonymizer then falls back to the growth of boxes that do not follow motion.
    borrowed = followed_boxes([(-3, boxes, None)])
    np.testing.assert_allclose(borrowed, grow(boxes, 1 + 3 * CARRY_GROWTH_PER_FRAME))


def test_a_blank_wall_widens_the_box_rather_than_guess():
    # Noise has no consistent motion: the flow's spread widens the carried box.
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(4)]
    box = np.asarray([[300, 150, 360, 180]], np.float32)
    moved = carry(box, _flows(frames)[1:], forward=True)
    assert moved[0, 2] - moved[0, 0] > 60 and moved[0, 3] - moved[0, 1] > 30


def _painted_share(out, box) -> tuple[float, float]:
    """Share of the plate's box under the plate masks, and of the frame."""
    height, width = out.image.shape[:2]
    mask = np.zeros((height, width), bool)
    for x1, y1, x2, y2 in scale_boxes(out.boxes[PLATE],
                                      default_policy(PLATE).redaction.mask_scale, width, height):
        mask[y1:y2, x1:x2] = True
    x1, y1, x2, y2 = (max(0, v) for v in box)
    return float(mask[y1:y2, x1:x2].mean()), float(mask.mean())


@pytest.fixture(scope="module")
def plate_detector():
    return build_detector(default_policy(PLATE).detector)


def test_plates_between_keyframes_are_covered_and_following_motion_paints_less(
        plate_detector):
    frames, boxes = _pan(17, 12)
    policy = default_policy(PLATE)
    painted = {}
    for follow in (True, False):
        anonymizer = SegmentAnonymizer([ClassDetector(
            plate_detector, policy.redaction, 1, None, DetectionSchedule(every=8),
            follow_motion=follow)], detect_timeout_s=None)
        outs = list(anonymizer.process(FrameIn(i / 15, f.copy())
                                       for i, f in enumerate(frames)))
        anonymizer.close()
        assert [PLATE in o.ran for o in outs] == [i in (0, 8, 16) for i in range(17)]
        shares = [_painted_share(o, box) for o, box in zip(outs, boxes)]
        assert all(covered > 0.95 for covered, _ in shares), (follow, shares)
        painted[follow] = np.mean([frame for (_, frame), o in zip(shares, outs)
                                   if PLATE not in o.ran])
    # Grown in place (15% a frame of distance, to reach the plate 48 px away four frames
    # on), the masks between keyframes paint more than twice what followed ones do.
    assert painted[True] < 0.5 * painted[False], painted


@pytest.mark.parametrize("fps, keyframes", [(10, (0, 6, 12, 18, 24, 30)), (25, (0, 15, 30))])
def test_the_default_plate_schedule_covers_a_pan_at_its_seconds(plate_detector, fps, keyframes):
    # 0.6 s between keyframes: every 6th frame at 10 fps, every 15th at 25 fps, the boxes
    # carried 14 frames along the motion at most.
    frames, boxes = _pan(31, 8, plate_x=560)
    policy = default_policy(PLATE)
    anonymizer = SegmentAnonymizer([ClassDetector(
        plate_detector, policy.redaction, policy.temporal_window, None, policy.schedule,
        follow_motion=policy.follow_motion)], detect_timeout_s=None)
    outs = list(anonymizer.process(FrameIn(i / fps, f.copy()) for i, f in enumerate(frames)))
    anonymizer.close()
    assert [i for i, o in enumerate(outs) if PLATE in o.ran] == list(keyframes)
    shares = [_painted_share(o, box)[0] for o, box in zip(outs, boxes)]
    assert min(shares) > 0.95, shares
