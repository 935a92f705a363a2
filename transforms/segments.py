"""Segmentation: a recording becomes time windows, the unit of parallel work.

Windows are whole multiples of a clip's span, so clips never straddle two
segments, and hold at most ``MAX_SEGMENT_FRAMES`` frames at the recording's frame
rate as well as about ``segment_seconds``: a segment's clips are held until the
whole segment is verified, so its frame count bounds a worker's memory. Video files
always have a duration by now (declared, or measured from their packets at
probing); a source that has neither a duration nor a frame count is one
open-ended segment, and the anonymize stage stops any segment whose frames pass
``segment_frame_limit`` (a file whose timestamps say more than its header).
"""

from __future__ import annotations

import math

import apache_beam as beam

from schemas.elements import Recording, Segment
from transforms.stores.progress import ProgressReporter

DEFAULT_SEGMENT_SECONDS = 4.0
# Decoded frames in one segment at most (4 s at the 240 fps cap is 960).
MAX_SEGMENT_FRAMES = 1024


def plan_segments(recording: Recording, clip_span_frames: int,
                  segment_seconds: float = DEFAULT_SEGMENT_SECONDS,
                  max_frames: int = MAX_SEGMENT_FRAMES) -> list[Segment]:
    """Cut a recording into segments of about ``segment_seconds`` and at most
    ``max_frames`` frames (never less than one clip), aligned to clips."""
    if segment_seconds <= 0:
        raise ValueError("segment_seconds must be positive")
    fps = recording.video.fps or 30.0
    span_s = clip_span_frames / fps
    spans = max(1, round(segment_seconds / span_s))
    spans = max(1, min(spans, max_frames // clip_span_frames))
    length = spans * span_s
    duration = recording.video.duration_s
    if (not duration or duration <= 0) and recording.video.frame_count:
        duration = recording.video.frame_count / fps
    if not duration or duration <= 0:
        return [Segment(recording, 0, 0.0, math.inf, is_last=True)]
    count = max(1, math.ceil(duration / length - 1e-9))
    return [Segment(recording, i, i * length, (i + 1) * length, is_last=(i == count - 1))
            for i in range(count)]


def segment_frame_limit(segment: Segment, max_frames: int = MAX_SEGMENT_FRAMES) -> int:
    """Decoded frames a segment may hold before it is refused (``too_large``): twice its
    planned frames (variable frame rates burst), and at least ``max_frames``."""
    fps = segment.recording.video.fps or 30.0
    span = segment.end_s - segment.start_s
    planned = round(span * fps) if math.isfinite(span) else 0
    return max(2 * planned, max_frames)


class PlanSegments(beam.PTransform):
    """Recordings -> segments, redistributed so that segments spread across workers."""

    def __init__(self, clip_span_frames: int, segment_seconds: float = DEFAULT_SEGMENT_SECONDS,
                 progress: ProgressReporter | None = None) -> None:
        super().__init__()
        self._span = clip_span_frames
        self._seconds = segment_seconds
        self._progress = progress or ProgressReporter(None)

    def expand(self, recordings):
        return (recordings
                | "Cut" >> beam.FlatMap(_cut, self._span, self._seconds, self._progress)
                | "Spread" >> beam.Reshuffle())


def _cut(recording: Recording, span: int, seconds: float,
         progress: ProgressReporter) -> list[Segment]:
    segments = plan_segments(recording, span, seconds)
    progress.report(segments_planned=len(segments))
    return segments
