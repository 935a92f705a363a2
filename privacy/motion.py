"""Motion between consecutive frames, to carry a keyframe's boxes to the frames between.

A plate or a sign stays put in the world while the glasses move: between two plate
keyframes 0.3-0.8 s apart it can cross a tenth of the frame. Grown in place, a carried box
must be made large to still cover it (``privacy.tracking``, 15% per frame of distance);
carried along the measured motion it stays tight, so keyframes can be sparser without
painting more.

Motion is dense optical flow (OpenCV's DIS, ultrafast preset) between grey copies
``FLOW_WIDTH`` pixels wide: about 1 ms a frame, plus 3 ms for the copy of a 1080p frame. A
box moves by the median flow inside it; the flow's spread there (its median absolute
deviation) widens the box, so where the flow disagrees (an occlusion, a cut, a blank wall)
the box grows rather than drifts.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    # Every 2nd pixel first where that stays above the copy's size: a quarter of the work.
    sparse = image[::2, ::2] if width >= 2 * FLOW_WIDTH else image
    return cv2.cvtColor(cv2.resize(sparse, size, interpolation=cv2.INTER_AREA),
                        cv2.COLOR_RGB2GRAY)


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
    if boxes.shape[0] == 0:
        return boxes
    if any(flow is None for flow in flows):
        return None
    moved = boxes.astype(np.float32).copy()
    margins = np.zeros((boxes.shape[0], 2), np.float32)
    for flow in flows:
        _step(moved, margins, flow, 1.0 if forward else -1.0)
    return np.concatenate([moved[:, :2] - margins, moved[:, 2:] + margins], axis=1)
