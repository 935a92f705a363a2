"""Resuming: finished segments come back from the segment cache instead of being redone.

``ResumeSegmentFn`` sends segments still to do on, and a finished segment's rows,
audit events and clip files to their outputs; ``RememberRowFn`` stores each latent
row in the cache as it leaves the encoder. The cache itself is
``transforms.stores.segment_cache``.

Metrics (namespace ``egoveil``): ``segments_cached``; ``segments_cache_rejected``, cache
entries whose MAC did not hold (changed in the output folder), whose segments are
done again and recorded as ``segment_cache_rejected`` audit events.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from schemas.elements import LatentRow, Segment
from schemas.records import AuditEvent
from schemas.stages import AUDIT, CACHED, FILES, Resumed
from transforms.stores.progress import ProgressReporter
from transforms.stores.segment_cache import CacheEntryRejected, SegmentCache


class ResumeSegmentFn(beam.DoFn):
    """Segments -> the ones still to do (main); finished ones' rows, events, files tagged."""

    def __init__(self, cache: SegmentCache, with_files: bool,
                 progress: ProgressReporter | None = None) -> None:
        self._cache = cache
        self._with_files = with_files
        self._progress = progress or ProgressReporter(None)
        self._hits = Metrics.counter("egoveil", "segments_cached")
        self._rejected = Metrics.counter("egoveil", "segments_cache_rejected")

    def process(self, segment: Segment):
        try:
            found = self._cache.get(segment, self._with_files)
        except CacheEntryRejected:
            self._rejected.inc()
            yield beam.pvalue.TaggedOutput(AUDIT, AuditEvent(
                kind="segment_cache_rejected", recording_id=segment.recording.recording_id,
                segment_index=segment.index, counts={"reason": "mac_mismatch"}))
            found = None
        if found is None:
            yield segment
            return
        self._hits.inc()
        frames = sum(e.counts.get("frames_emitted", 0) for e in found["events"]
                     if e.kind == "segment_anonymized")
        self._progress.report(segments=1, frames=frames)
        for row in found["rows"]:
            yield beam.pvalue.TaggedOutput(CACHED, row)
        for event in found["events"]:
            yield beam.pvalue.TaggedOutput(AUDIT, event)
        yield beam.pvalue.TaggedOutput(AUDIT, AuditEvent(
            kind="segment_cached", recording_id=segment.recording.recording_id,
            segment_index=segment.index))
        for info in found["files"]:
            yield beam.pvalue.TaggedOutput(FILES, info)


class RememberRowFn(beam.DoFn):
    """Stores each latent row in the cache as it leaves the encoder; passes it on."""

    def __init__(self, cache: SegmentCache) -> None:
        self._cache = cache

    def process(self, row: LatentRow):
        self._cache.put_row(row)
        yield row


class ResumeSegments(beam.PTransform):
    """Segments -> ``Resumed(todo, rows, audit, files)``: finished ones come from the cache."""

    def __init__(self, fn: ResumeSegmentFn) -> None:
        super().__init__()
        self._fn = fn

    def expand(self, segments) -> Resumed:
        out = segments | "ResumeSegment" >> beam.ParDo(self._fn).with_outputs(
            CACHED, AUDIT, FILES, main="todo")
        return Resumed(todo=out.todo, rows=out[CACHED], audit=out[AUDIT], files=out[FILES])
