"""Detection schedules: which frames a class's detector runs on.

Detection dominates the cost of redaction (CenterFace at 1080p is 0.3-0.4 s a frame on
two cores). A schedule runs a class's detector on keyframes (at least every ``every``
frames, the hard cap on the gap), on frames that changed since the last keyframe
(``motion``), and on the first and last frame of every stream; the anonymizer
(``privacy.anonymizer``) releases a frame between keyframes only once the keyframes
around it are detected, and masks in it every box those keyframes hold (grown with
distance) and every box interpolated between them (``privacy.tracking``). The
stronger second pass after a failed verification always detects every frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# The longest gap, in frames, between two frames a class's detector runs on.
MAX_DETECT_EVERY = 8
# Motion is measured on grey thumbnails of this size (width, height): cheap and blind to
# noise and compression artefacts.
THUMBNAIL = (64, 36)


@dataclass(slots=True, frozen=True)
class DetectionSchedule:
    """Which frames a class's detector runs on; the frames between borrow its boxes.

    The detector runs on the first and the last frame of every stream, on at least
    every ``every``-th frame between them (the hard cap on the gap), and on any frame
    that changed more than ``motion`` since the last frame it ran on. A frame it does
    not run on is released only after the detected frames around it are in: it gets
    the boxes of the ``temporal_window`` nearest detected frames on each side, grown
    with their distance, and boxes interpolated between them (``privacy.tracking``).
    Stereo pairs whose class is searched across views are detected on every frame (the
    search recovers what one eye missed frame by frame).

    Args:
        every: the detector runs on at least every this many frames (1: every frame).
            Counted in source frames: where only every n-th frame is anonymized (``egoveil
            run`` without clips), it runs on every ``max(1, every // n)``-th of those.
        motion: mean absolute difference (grey levels, 0-255, on a 64x36 thumbnail) from
            the last detected frame above which a frame is detected out of turn; 0 detects
            on the cap alone.
    """

    every: int = 1
    motion: float = 0.0

    def __post_init__(self) -> None:
        if not 1 <= self.every <= MAX_DETECT_EVERY:
            raise ValueError(f"detection schedule: every must be in [1, {MAX_DETECT_EVERY}], "
                             f"got {self.every}")
        if not 0.0 <= self.motion <= 255.0:
            raise ValueError(f"detection schedule: motion must be in [0, 255], got {self.motion}")

    @property
    def is_every_frame(self) -> bool:
        return self.every == 1

    def instants(self, step: int) -> int:
        """The cap in anonymized frames when only every ``step``-th source frame is."""
        return max(1, self.every // max(1, step))

    @staticmethod
    def parse(text: str) -> DetectionSchedule:
        """``every`` (``1`` for every frame) or ``every:motion``, e.g. ``4:12``.

        Raises:
            ValueError: a malformed or out-of-range value; the message says which.
        """
        every, _, motion = text.strip().partition(":")
        try:
            return DetectionSchedule(int(every), float(motion) if motion else 0.0)
        except ValueError as exc:
            if "detection schedule" in str(exc):
                raise
            raise ValueError(f"detection schedule must be EVERY or EVERY:MOTION, got "
                             f"{text!r}") from None




def thumbnail(image: np.ndarray) -> np.ndarray:
    """The grey thumbnail that motion is measured on (float32, ``THUMBNAIL`` sized)."""
    # Every 4th pixel first: area-averaging a whole 1080p frame costs 3 ms, this 0.3 ms.
    sparse = image[::4, ::4] if min(image.shape[:2]) >= 4 * THUMBNAIL[1] else image
    small = cv2.resize(sparse, THUMBNAIL, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32)


class Scheduler:
    """One class's schedule over one stream of instants (each with one or more views).

    Args:
        schedule: the class's schedule.
        step: source frames per instant the anonymizer sees (``egoveil run`` without clips
            anonymizes every ``frame_stride``-th frame).
    """

    def __init__(self, schedule: DetectionSchedule, step: int = 1) -> None:
        self.schedule = schedule
        self.cap = schedule.instants(step)
        self._since = 0  # instants since the last detected one
        self._thumbs: dict[str, np.ndarray] | None = None  # the last detected instant's

    def due(self, images: dict[str, np.ndarray], first: bool, last: bool) -> bool:
        """Whether the detector runs on this instant; call once per instant, in order.

        Args:
            images: the instant's views.
            first, last: the instant opens or closes the stream (always detected).
        """
        self._since += 1
        if self.cap == 1:
            return True
        motion = self.schedule.motion
        thumbs = {v: thumbnail(i) for v, i in images.items()} if motion > 0 else {}
        run = first or last or self._thumbs is None or self._since >= self.cap
        if not run and motion > 0:
            run = any(view not in self._thumbs
                      or float(np.abs(thumb - self._thumbs[view]).mean()) > motion
                      for view, thumb in thumbs.items())
        if run:
            self._since = 0
            self._thumbs = thumbs
        return run
