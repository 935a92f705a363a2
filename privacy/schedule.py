"""Detection schedules: which frames a class's detector runs on, and at what resolution.

Detection dominates the cost of redaction (CenterFace at 1080p is 0.2-0.4 s a frame on
two cores). A schedule runs a class's detector on keyframes (at least every ``every``
frames, the hard cap on the gap, and, where ``seconds`` is set, at least every that many
seconds of video), on frames that changed since the last keyframe (``motion``), and on the
first and last frame of every stream; the anonymizer
(``privacy.anonymizer``) releases a frame between keyframes only once the keyframes
around it are detected, and masks in it every box those keyframes hold (grown with
distance) and every box interpolated between them (``privacy.tracking``).

With coarse keyframes (``full_every``) only every ``full_every``-th frame, and the first
and last, is detected at full resolution; the keyframes between them are detected at
``coarse_scale`` (CenterFace's cost goes with the pixels), which finds the large faces,
and the small faces only a full pass finds are carried from the nearest full-resolution
keyframe on each side. Frames too small to reduce (``COARSE_MIN_SIDE``) are detected at
full resolution on every keyframe. The stronger second pass after a failed verification always
detects every frame at full resolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

# The longest gap, in frames, between two frames a class's detector runs on.
MAX_DETECT_EVERY = 16
# The longest gap, in seconds, a schedule may ask for (``MAX_DETECT_EVERY`` frames bounds
# it further at any frame rate above 8 fps).
MAX_DETECT_SECONDS = 2.0
# The longest gap, in frames, between two full-resolution detections (coarse keyframes).
MAX_FULL_EVERY = 16
# Motion is measured on grey thumbnails of this size (width, height): cheap and blind to
# noise and compression artefacts.
THUMBNAIL = (64, 36)

# A coarse pass never reduces a frame's shorter side below this many pixels: smaller
# frames cost little at full resolution, and at 180 px CenterFace's low threshold
# finds faces in a licence plate (tests/test_classes.py's street scene).
COARSE_MIN_SIDE = 360

FULL = "full"
COARSE = "coarse"
Pass = Literal["full", "coarse"]


@dataclass(slots=True, frozen=True)
class DetectionSchedule:
    """Which frames a class's detector runs on; the frames between borrow its boxes.

    The detector runs on the first and the last frame of every stream, on at least
    every ``every``-th frame between them (the hard cap on the gap), where ``seconds`` is
    set on the first frame at least that long after the last keyframe, and on any frame
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
        full_every: with coarse keyframes, the detector runs at full resolution on at
            least every this many frames (counted in source frames, scaled by the stride
            like ``every``) and on the first and last frame; the keyframes between run at
            ``coarse_scale``. None: every keyframe at full resolution.
        coarse_scale: the resolution of the coarse pass relative to the frame (set with
            ``full_every``).
        seconds: the detector also runs on the first frame at least this many seconds of
            video after the last one it ran on (by the frames' timestamps). A gap in
            seconds keeps what a schedule was measured to cover at one frame rate at
            another: the camera moves, and plates enter the view, per second, not per
            frame. ``every`` stays the cap in frames (it bounds the frames held).
    """

    every: int = 1
    motion: float = 0.0
    full_every: int | None = None
    coarse_scale: float | None = None
    seconds: float | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.every <= MAX_DETECT_EVERY:
            raise ValueError(f"detection schedule: every must be in [1, {MAX_DETECT_EVERY}], "
                             f"got {self.every}")
        if not 0.0 <= self.motion <= 255.0:
            raise ValueError(f"detection schedule: motion must be in [0, 255], got {self.motion}")
        if (self.full_every is None) != (self.coarse_scale is None):
            raise ValueError("detection schedule: full_every and coarse_scale go together")
        if self.full_every is not None and \
                not self.every < self.full_every <= MAX_FULL_EVERY:
            raise ValueError(f"detection schedule: full_every must be in ({self.every}, "
                             f"{MAX_FULL_EVERY}] (above every), got {self.full_every}")
        if self.coarse_scale is not None and not 0.1 <= self.coarse_scale < 1.0:
            raise ValueError(f"detection schedule: coarse_scale must be in [0.1, 1), got "
                             f"{self.coarse_scale}")
        if self.seconds is not None and not 0.0 < self.seconds <= MAX_DETECT_SECONDS:
            raise ValueError(f"detection schedule: seconds must be in (0, "
                             f"{MAX_DETECT_SECONDS:g}], got {self.seconds}")

    @property
    def is_every_frame(self) -> bool:
        """Whether every frame is detected at full resolution (nothing is borrowed)."""
        return self.every == 1 and not self.coarse

    @property
    def coarse(self) -> bool:
        """Whether keyframes between the full-resolution ones run a coarse pass."""
        return self.full_every is not None

    def instants(self, step: int) -> int:
        """The cap in anonymized frames when only every ``step``-th source frame is."""
        return max(1, self.every // max(1, step))

    def full_instants(self, step: int) -> int:
        """The full-resolution cap in anonymized frames (``instants`` without coarse
        keyframes)."""
        if self.full_every is None:
            return self.instants(step)
        return max(1, self.full_every // max(1, step))

    def describe(self) -> dict:
        """The settings for the record; without coarse keyframes or seconds, as before
        they existed."""
        described = {"every": self.every, "motion": self.motion}
        if self.seconds is not None:
            described["seconds"] = self.seconds
        if self.coarse:
            described.update(full_every=self.full_every, coarse_scale=self.coarse_scale)
        return described

    def text(self) -> str:
        """The schedule as ``parse`` reads it."""
        every = f"{self.seconds:g}s" if self.seconds is not None else str(self.every)
        text = f"{every}:{self.motion:g}"
        return f"{text}:{self.full_every}" if self.coarse else text

    @staticmethod
    def parse(text: str, coarse_scale: float | None = None) -> DetectionSchedule:
        """``every`` (``1`` for every frame), ``every:motion``, e.g. ``4:12``, or, where the
        class has coarse keyframes, ``every:motion:full_every``, e.g. ``4:8:8``. Where it
        has none, ``every`` may be a gap in seconds, e.g. ``0.6s`` or ``0.6s:12`` (at least
        every 0.6 s of video, and at least every ``MAX_DETECT_EVERY``-th frame).

        Args:
            coarse_scale: the coarse pass's scale; None where the class has no coarse
                keyframes (a third field is then an error).

        Raises:
            ValueError: a malformed or out-of-range value; the message says which.
        """
        fields = text.strip().split(":")
        shape = "EVERY[:MOTION[:FULL_EVERY]]" if coarse_scale is not None else \
            "EVERY or EVERY:MOTION, EVERY frames or seconds (e.g. 0.6s)"
        try:
            if len(fields) > (3 if coarse_scale is not None else 2):
                raise ValueError(text)
            seconds = None
            if fields[0].endswith("s") and coarse_scale is None:
                seconds, every = float(fields[0][:-1]), MAX_DETECT_EVERY
            else:
                every = int(fields[0])
            motion = float(fields[1]) if len(fields) > 1 and fields[1] else 0.0
            full_every = int(fields[2]) if len(fields) > 2 else None
            return DetectionSchedule(every, motion, full_every,
                                     coarse_scale if full_every is not None else None,
                                     seconds)
        except ValueError as exc:
            if "detection schedule" in str(exc):
                raise
            raise ValueError(f"detection schedule must be {shape}, got {text!r}") from None



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
        self.full_cap = schedule.full_instants(step)
        self._since = 0  # instants since the last detected one
        self._since_full = 0  # instants since the last one detected at full resolution
        self._thumbs: dict[str, np.ndarray] | None = None  # the last detected instant's
        self._detected_at: float | None = None  # the last detected instant's time

    def due(self, images: dict[str, np.ndarray], first: bool, last: bool,
            time_s: float | None = None) -> Pass | None:
        """Which pass the detector runs on this instant (``FULL``, ``COARSE``, or None for
        none); call once per instant, in order.

        Args:
            images: the instant's views.
            first, last: the instant opens or closes the stream (always detected at full
                resolution, like views too small for the coarse pass).
            time_s: the instant's timestamp (for a schedule in seconds; without one, the
                cap in frames alone decides).
        """
        self._since += 1
        self._since_full += 1
        if self.full_cap == 1:
            return FULL
        motion = self.schedule.motion
        thumbs = {v: thumbnail(i) for v, i in images.items()} if motion > 0 else {}
        full = first or last or self._thumbs is None or self._since_full >= self.full_cap
        run = full or self._since >= self.cap
        seconds = self.schedule.seconds
        if not run and seconds is not None and time_s is not None and \
                self._detected_at is not None:
            # A millisecond of slack: timestamps in a container's time base round.
            run = time_s - self._detected_at >= seconds - 1e-3
        if not run and motion > 0:
            run = any(view not in self._thumbs
                      or float(np.abs(thumb - self._thumbs[view]).mean()) > motion
                      for view, thumb in thumbs.items())
        if not run:
            return None
        self._since = 0
        self._thumbs = thumbs
        self._detected_at = time_s
        if full or not self.schedule.coarse or any(
                min(i.shape[:2]) * self.schedule.coarse_scale < COARSE_MIN_SIDE
                for i in images.values()):
            self._since_full = 0
            return FULL
        return COARSE
