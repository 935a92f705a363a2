"""The input-format registry: every format the pipeline reads, as a ``FrameSource``.

Admission asks ``source_for`` which source reads a request and lets it probe the
request into recordings; the anonymize stage asks ``source_of`` for the source
of a recording's layout and iterates a window of its instants; discovery picks
up the files whose names ``discovery_extensions`` lists. A new input format is
one module implementing ``FrameSource`` and one entry in ``REGISTRY``.
"""

from __future__ import annotations

from collections.abc import Iterator

from schemas.elements import Recording
from schemas.sidecar import RecordingRequest
from transforms.media.inputs import DecodeStats
from transforms.media.sources.base import FrameSource, Instant, Probed
from transforms.media.sources.image import ImageSource
from transforms.media.sources.stereo import (
    PackedStereoSource,
    StereoPairSource,
    StereoStreamsSource,
)
from transforms.media.sources.video import VideoSource
from transforms.media.sources.vrs_source import VrsSource

# Asked in this order; the first source that recognises a request reads it. The plain
# video source recognises everything, so it comes last.
REGISTRY: tuple[FrameSource, ...] = (
    VrsSource(),
    StereoPairSource(),
    StereoStreamsSource(),
    PackedStereoSource(),
    ImageSource(),
    VideoSource(),
)


def source_for(request: RecordingRequest, head: bytes) -> FrameSource:
    """The source that reads ``request``, whose file starts with ``head``."""
    return next(source for source in REGISTRY if source.recognises(request, head))


def source_of(recording: Recording) -> FrameSource:
    """The source that admitted ``recording`` (by its layout)."""
    for source in REGISTRY:
        if recording.layout in source.layouts:
            return source
    raise ValueError(f"no frame source reads layout {recording.layout!r}")


def discovery_extensions() -> tuple[str, ...]:
    """File name endings a folder search picks up for ``egoveil run``."""
    return tuple(ext for source in REGISTRY if source.recordings for ext in source.extensions)


def iter_instants(rec: Recording, start_s: float = 0.0, end_s: float | None = None,
                  context: int = 0, stats: DecodeStats | None = None
                  ) -> Iterator[tuple[Instant, bool]]:
    """The instants of [start_s, end_s) of a recording plus ``context`` on each side."""
    stats = stats if stats is not None else DecodeStats()
    return source_of(rec).instants(rec, start_s, end_s, context, stats)


__all__ = ["REGISTRY", "FrameSource", "Instant", "Probed", "discovery_extensions",
           "iter_instants", "source_for", "source_of"]
