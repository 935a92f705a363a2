"""Motion between consecutive frames, to carry a keyframe's boxes to the frames between.

A plate or a sign stays put in the world while the glasses move: between two plate
keyframes up to 0.6 s apart it can cross a tenth of the frame. Grown in place, a carried box
must be made large to still cover it (``privacy.tracking``, 15% per frame of distance);
carried along the measured motion it stays tight, so keyframes can be sparser without
painting more.

Motion is dense optical flow (OpenCV's DIS, ultrafast preset) between grey copies
``FLOW_WIDTH`` pixels wide: about 1 ms a frame, plus 0.6 ms for the copy of a 1080p frame. A
box moves by the median flow inside it; the flow's spread there (its median absolute
deviation) widens the box, so where the flow disagrees (an occlusion, a cut, a blank wall)
the box grows rather than drifts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

FLOW_WIDTH = 480
# A box narrower than this many flow pixels is sampled over this much around its centre.
MIN_SAMPLE = 3


@dataclass(slots=True, frozen=True)
class Flow:
    """The motion from one frame to the next.

    Attributes:
        field: (h, w, 2) float32, where each pixel of the earlier frame's grey copy went,
            in copy pixels.
        scale: copy pixels per frame pixel.
    """

    field: np.ndarray
    scale: float


def _grey(image: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    size = (FLOW_WIDTH, max(1, round(height * FLOW_WIDTH / width)))
    # Grey first: the area resize then reads one channel, not three (0.6 ms a 1080p frame,
    # where resizing every 2nd pixel's colour took 2.6 ms, most of it copying the strided
    # view).
    return cv2.resize(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), size,
                      interpolation=cv2.INTER_AREA)


class MotionTracker:
    """The flow between consecutive frames of one view; ``push`` each frame in order."""

    def __init__(self) -> None:
        self._dis = None
        self._previous: np.ndarray | None = None

    def push(self, image: np.ndarray) -> Flow | None:
        """The flow from the previous frame to ``image``; None for the first frame or after
        a change of frame size."""
        grey = _grey(image)
        previous, self._previous = self._previous, grey
        if previous is None or previous.shape != grey.shape:
            return None
        if self._dis is None:
            self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
        return Flow(self._dis.calc(previous, grey, None), grey.shape[1] / image.shape[1])


def _step(boxes: np.ndarray, margins: np.ndarray, flow: Flow, sign: float) -> None:
    """Move ``boxes`` (frame pixels, in place) by one flow, adding its spread to
    ``margins``; backwards (``sign`` -1) the flow of the later frame is read at the box."""
    height, width = flow.field.shape[:2]
    for i, box in enumerate(boxes):
        x1, y1, x2, y2 = box * flow.scale
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        half_w = max((x2 - x1) / 2, MIN_SAMPLE / 2)
        half_h = max((y2 - y1) / 2, MIN_SAMPLE / 2)
        left, right = max(0, int(cx - half_w)), min(width, int(np.ceil(cx + half_w)))
        top, bottom = max(0, int(cy - half_h)), min(height, int(np.ceil(cy + half_h)))
        if right <= left or bottom <= top:
            continue  # out of the frame: nothing to follow, and nothing there to cover
        vectors = flow.field[top:bottom, left:right].reshape(-1, 2)
        median = np.median(vectors, axis=0)
        spread = np.median(np.abs(vectors - median), axis=0)
        dx, dy = median / flow.scale * sign
        boxes[i] += (dx, dy, dx, dy)
        margins[i] += spread / flow.scale


class CarriedBoxes:
    """One frame's boxes carried frame by frame in one direction, each step taken once.

    The frames between two keyframes are finished in order, and each borrows the boxes of
    both: carried afresh for each, a gap of g frames costs about g * g steps (at 15-frame
    gaps they were the largest Python cost on the main thread in a py-spy profile); kept
    here, g.

    Args:
        boxes: (n, 4) x1, y1, x2, y2 in frame pixels.
        forward: whether the targets are later than the boxes' frame.
    """

    def __init__(self, boxes: np.ndarray, forward: bool) -> None:
        self.forward = forward
        self._boxes = boxes
        # state d: the boxes d frames away and the spread gathered on the way; None once
        # a flow was missing (every farther state is unknown too)
        self._states: list[tuple[np.ndarray, np.ndarray] | None] = [
            (boxes.astype(np.float32).copy(), np.zeros((boxes.shape[0], 2), np.float32))]

    def to(self, distance: int, flow: Callable[[int], Flow | None]) -> np.ndarray | None:
        """The boxes ``distance`` frames away, widened by the flow's spread on the way.

        Args:
            flow: the flow of step d (1 for the step next to the boxes' frame): forward,
                the flow into the d-th frame after it; backward, the flow into the frame
                d - 1 before it.

        Returns:
            The moved boxes; None where a flow on the way is missing (the caller carries
            them without motion).
        """
        if self._boxes.shape[0] == 0:
            return self._boxes
        while len(self._states) <= distance and self._states[-1] is not None:
            step = flow(len(self._states))
            if step is None:
                self._states.append(None)
                break
            moved, margins = (a.copy() for a in self._states[-1])
            _step(moved, margins, step, 1.0 if self.forward else -1.0)
            self._states.append((moved, margins))
        state = self._states[distance] if distance < len(self._states) else None
        if state is None:
            return None
        moved, margins = state
        return np.concatenate([moved[:, :2] - margins, moved[:, 2:] + margins], axis=1)


def carry(boxes: np.ndarray, flows: Sequence[Flow | None], forward: bool) -> np.ndarray | None:
    """``boxes`` of one frame moved to another frame along the flows between them.

    Args:
        boxes: (n, 4) x1, y1, x2, y2 in frame pixels.
        flows: the flows between consecutive frames, nearest the boxes' frame first:
            forward, those of the frames after it up to the target; backward, those of the
            boxes' frame and the frames before it down to the one after the target.
        forward: whether the target is later than the boxes' frame.

    Returns:
        The moved boxes, widened by the flow's spread along the way; None where a flow is
        missing (the caller carries them without motion).
    """
    return CarriedBoxes(boxes, forward).to(len(flows), lambda d: flows[d - 1])
