"""Stereo recordings: two eyes packed in one frame, in two streams, or in two files.

``sbs`` packs the left eye in the left half of each frame and the right eye in the
right half; ``tb`` the left eye on top; ``streams`` keeps the eyes as the first two
video streams of one container; a ``pair_uri`` names the right eye's file. Each
comes out as instants with a ``left`` and a ``right`` view.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from schemas.elements import STEREO_VIEWS, Recording, VideoInfo
from schemas.sidecar import RecordingRequest
from transforms.media.inputs import DecodeCaps, DecodeStats, MediaError, content_sha256
from transforms.media.sources.base import FrameSource, Instant, Probed
from transforms.media.video import iter_window, probe


def split_packed(image: np.ndarray, layout: str) -> dict[str, np.ndarray]:
    """The two views of a side-by-side (``sbs``) or top-bottom (``tb``) frame.

    An odd width or height loses its last column or row, so both views are the same size.
    """
    h, w = image.shape[:2]
    if layout == "sbs":
        half = w // 2
        left, right = image[:, :half], image[:, half:2 * half]
    elif layout == "tb":
        half = h // 2
        left, right = image[:half], image[half:2 * half]
    else:
        raise ValueError(f"not a packed stereo layout: {layout!r}")
    return {STEREO_VIEWS[0]: np.ascontiguousarray(left),
            STEREO_VIEWS[1]: np.ascontiguousarray(right)}


def same_geometry(a: VideoInfo, b: VideoInfo) -> None:
    """Raises ``MediaError`` unless two views have one size and one frame rate."""
    if (a.width, a.height) != (b.width, b.height):
        raise MediaError("unsupported", "the two views differ in size "
                                        f"({a.width}x{a.height} and {b.width}x{b.height})")
    if a.fps and b.fps and abs(a.fps - b.fps) > 0.01 * a.fps:
        raise MediaError("unsupported", "the two views differ in frame rate")


def zip_views(left: Iterator, right: Iterator, fps: float | None, stats: DecodeStats
              ) -> Iterator[tuple[Instant, bool]]:
    """Pairs the frames of two synchronised sources by timestamp.

    A frame with no partner within half a frame period (one eye's frame was corrupt
    or missing) is dropped and counted corrupt, so one bad frame never shifts the
    pairing of the rest; the segment's corrupt-frame threshold still applies.
    """
    tolerance = 0.5 / (fps or 30.0)
    matched = unmatched = 0
    a, b = next(left, None), next(right, None)
    while a is not None and b is not None:
        (fa, inside), (fb, _) = a, b
        if fa.time_s < fb.time_s - tolerance:
            unmatched += 1
            a = next(left, None)
        elif fb.time_s < fa.time_s - tolerance:
            unmatched += 1
            b = next(right, None)
        else:
            matched += 1
            yield Instant(fa.time_s, lambda fa=fa, fb=fb: {
                STEREO_VIEWS[0]: fa.to_rgb(), STEREO_VIEWS[1]: fb.to_rgb()}), inside
            a, b = next(left, None), next(right, None)
    unmatched += sum(1 for _ in left) + sum(1 for _ in right) + (a is not None) + (b is not None)
    if unmatched and not matched:
        raise MediaError("unsupported", "the two views are not synchronised: no frame of one "
                                        "has a partner in the other")
    stats.corrupt += unmatched


class PackedStereoSource(FrameSource):
    """Both eyes in one frame: ``stereo`` ``sbs`` (side by side) or ``tb`` (top-bottom)."""

    name = "packed stereo"
    layouts = ("sbs", "tb")

    def recognises(self, request: RecordingRequest, head: bytes) -> bool:
        return request.stereo in self.layouts

    def probe(self, request: RecordingRequest, base: Recording, caps: DecodeCaps) -> Probed:
        info = probe(request.uri, caps)
        if request.stereo == "sbs":
            info = dataclasses.replace(info, width=info.width // 2)
        else:
            info = dataclasses.replace(info, height=info.height // 2)
        return Probed([dataclasses.replace(base, video=info, layout=request.stereo)])

    def instants(self, rec: Recording, start_s: float, end_s: float | None, context: int,
                 stats: DecodeStats) -> Iterator[tuple[Instant, bool]]:
        layout = rec.layout
        for frame, inside in iter_window(rec.uri, start_s, end_s, context, stats):
            yield Instant(frame.time_s,
                          lambda f=frame: split_packed(f.to_rgb(), layout)), inside


class StereoStreamsSource(FrameSource):
    """Both eyes as the first two video streams of one container (``stereo: streams``)."""

    name = "stereo streams"
    layouts = ("streams",)

    def recognises(self, request: RecordingRequest, head: bytes) -> bool:
        return request.stereo == "streams"

    def probe(self, request: RecordingRequest, base: Recording, caps: DecodeCaps) -> Probed:
        info = probe(request.uri, caps)
        same_geometry(info, probe(request.uri, caps, stream_index=1))
        return Probed([dataclasses.replace(base, video=info, layout="streams")])

    def instants(self, rec: Recording, start_s: float, end_s: float | None, context: int,
                 stats: DecodeStats) -> Iterator[tuple[Instant, bool]]:
        left = iter_window(rec.uri, start_s, end_s, context, stats)
        right = iter_window(rec.uri, start_s, end_s, context, DecodeStats(), stream_index=1)
        yield from zip_views(left, right, rec.video.fps, stats)


class StereoPairSource(FrameSource):
    """Two files: ``uri`` is the left eye, ``pair_uri`` the right; one recording whose
    ``recording_id`` comes from the left file and whose duplicates key holds both."""

    name = "stereo file pair"
    layouts = ("pair",)

    def recognises(self, request: RecordingRequest, head: bytes) -> bool:
        return bool(request.pair_uri)

    def probe(self, request: RecordingRequest, base: Recording, caps: DecodeCaps) -> Probed:
        pair_sha, pair_size, _ = content_sha256(request.pair_uri, caps.max_bytes)
        info = probe(request.uri, caps)
        same_geometry(info, probe(request.pair_uri, caps))
        return Probed([dataclasses.replace(base, video=info, layout="pair",
                                           pair_uri=request.pair_uri, pair_sha256=pair_sha,
                                           size_bytes=base.size_bytes + pair_size)])

    def instants(self, rec: Recording, start_s: float, end_s: float | None, context: int,
                 stats: DecodeStats) -> Iterator[tuple[Instant, bool]]:
        left = iter_window(rec.uri, start_s, end_s, context, stats)
        right = iter_window(rec.pair_uri, start_s, end_s, context, DecodeStats())
        yield from zip_views(left, right, rec.video.fps, stats)
