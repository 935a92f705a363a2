"""Segmentation: a recording becomes time windows, the unit of parallel work.

Windows are whole multiples of a clip's span, so clips never straddle two
segments. A recording of unknown duration is one open-ended segment (memory
stays bounded: segments are streamed, not held).
"""

from __future__ import annotations

import math

import apache_beam as beam

from schemas.elements import Recording, Segment
from transforms.stores.progress import ProgressReporter

DEFAULT_SEGMENT_SECONDS = 4.0


def plan_segments(recording: Recording, clip_span_frames: int,
                  segment_seconds: float = DEFAULT_SEGMENT_SECONDS) -> list[Segment]:
    """Cut a recording into segments of about ``segment_seconds``, aligned to clips."""
    if segment_seconds <= 0:
        raise ValueError("segment_seconds must be positive")
    fps = recording.video.fps or 30.0
    span_s = clip_span_frames / fps
    length = max(1, round(segment_seconds / span_s)) * span_s
    duration = recording.video.duration_s
    if not duration or duration <= 0:
        return [Segment(recording, 0, 0.0, math.inf, is_last=True)]
    count = max(1, math.ceil(duration / length - 1e-9))
    return [Segment(recording, i, i * length, (i + 1) * length, is_last=(i == count - 1))
            for i in range(count)]


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
