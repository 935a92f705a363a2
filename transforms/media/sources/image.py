"""Still images (JPEG, PNG, WebP, TIFF, BMP): one instant with one view.

``egoveil redact`` anonymizes them; ``egoveil run`` does not admit them, because a
still image is no recording to learn motion from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from schemas.elements import Recording, VideoInfo
from schemas.sidecar import RecordingRequest
from transforms.media.images import IMAGE_EXTENSIONS, read_image
from transforms.media.inputs import DecodeCaps, DecodeStats, MediaError
from transforms.media.sources.base import FrameSource, Instant, Probed

_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"II*\x00", b"MM\x00*")


def _is_image(head: bytes) -> bool:
    return head.startswith(_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


class ImageSource(FrameSource):
    """A still image; its EXIF orientation is applied and none of its metadata is kept."""

    name = "image"
    layouts = ("image",)
    recordings = False

    def recognises(self, request: RecordingRequest, head: bytes) -> bool:
        return request.uri.lower().endswith(IMAGE_EXTENSIONS) or _is_image(head)

    def probe(self, request: RecordingRequest, base: Recording, caps: DecodeCaps) -> Probed:
        image = read_image(request.uri)
        height, width = image.shape[:2]
        if width * height > caps.max_pixels:
            raise MediaError("too_large", f"resolution {width}x{height} is above the cap of "
                                          f"{caps.max_pixels} pixels")
        info = VideoInfo(width=width, height=height, fps=None, duration_s=None, frame_count=1,
                         rotation=0, codec="image", has_audio=False)
        return Probed([dataclasses.replace(base, video=info, layout="image")])

    def instants(self, rec: Recording, start_s: float, end_s: float | None, context: int,
                 stats: DecodeStats) -> Iterator[tuple[Instant, bool]]:
        image = read_image(rec.uri)
        stats.decoded += 1
        view = rec.view
        yield Instant(0.0, lambda: {view: image}), True
