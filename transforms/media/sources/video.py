"""A video file with one view (MP4/MOV, Matroska/WebM, AVI): the default source."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from schemas.elements import Recording
from schemas.sidecar import RecordingRequest
from transforms.media.inputs import DecodeCaps, DecodeStats
from transforms.media.sources.base import FrameSource, Instant, Probed
from transforms.media.video import VIDEO_EXTENSIONS, iter_window, probe


class VideoSource(FrameSource):
    """One video stream; its frames are the recording's only view (``rgb``).

    It recognises every request that no other source did, so that anything
    unrecognised is probed as a container and refused with the container's reason
    (``unreadable``, ``no_video``, ``unsupported``).
    """

    name = "video"
    layouts = ("none",)
    extensions = VIDEO_EXTENSIONS

    def recognises(self, request: RecordingRequest, head: bytes) -> bool:
        return True

    def probe(self, request: RecordingRequest, base: Recording, caps: DecodeCaps) -> Probed:
        return Probed([dataclasses.replace(base, video=probe(request.uri, caps),
                                           layout="none")])

    def instants(self, rec: Recording, start_s: float, end_s: float | None, context: int,
                 stats: DecodeStats) -> Iterator[tuple[Instant, bool]]:
        view = rec.view
        for frame, inside in iter_window(rec.uri, start_s, end_s, context, stats):
            yield Instant(frame.time_s, lambda f=frame: {view: f.to_rgb()}), inside
