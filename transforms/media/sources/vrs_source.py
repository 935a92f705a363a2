"""Project Aria VRS files: one recording per group of allow-listed cameras.

The RGB camera is one recording; the SLAM cameras another, whose front pair is a
stereo pair (``privacy.aria_streams``). Every other stream is never asked for data;
the ``vrs_streams`` audit event says which streams were read and which dropped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from schemas.elements import Recording
from schemas.records import AuditEvent
from schemas.sidecar import RecordingRequest
from transforms.media.inputs import DecodeCaps, DecodeStats, MediaError
from transforms.media.sources.base import FrameSource, Instant, Probed
from transforms.media.vrs import VRS_EXTENSIONS, VrsFile, is_vrs, iter_vrs_window


class VrsSource(FrameSource):
    """A Project Aria VRS file (needs projectaria-tools, the ``aria`` extra)."""

    name = "Project Aria VRS"
    layouts = ("vrs",)
    extensions = VRS_EXTENSIONS

    def recognises(self, request: RecordingRequest, head: bytes) -> bool:
        return request.uri.lower().endswith(VRS_EXTENSIONS) or is_vrs(head)

    def probe(self, request: RecordingRequest, base: Recording, caps: DecodeCaps) -> Probed:
        if request.stereo != "none" or request.pair_uri:
            raise MediaError("unsupported", "a VRS recording's views come from its camera "
                                            "streams; drop 'stereo' and 'pair_uri'")
        with VrsFile(request.uri) as vrs:
            selection = vrs.selection
            if not selection.groups:
                raise MediaError("no_video", "the VRS file has no allow-listed camera stream")
            recordings = [dataclasses.replace(
                base, video=vrs.probe(group.streams, caps).info, layout="vrs",
                view=group.views[0], streams=group.streams, stream_views=group.views)
                for group in selection.groups]
        return Probed(recordings, AuditEvent(kind="vrs_streams",
                                             recording_id=base.recording_id,
                                             counts=selection.describe()))

    def instants(self, rec: Recording, start_s: float, end_s: float | None, context: int,
                 stats: DecodeStats) -> Iterator[tuple[Instant, bool]]:
        for time_s, images, inside in iter_vrs_window(rec.uri, rec.streams, rec.stream_views,
                                                      start_s, end_s, context, stats):
            yield Instant(time_s, lambda images=images: images), inside
