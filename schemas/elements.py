"""Element types that flow between the pipeline's stages.

Raw locations (``uri``) travel only as far as decoding needs them; every field
that reaches an output is a keyed pseudonym, a content hash or a number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# How a recording's views are packed: the frame source that reads it back
# (``transforms.media.sources``). ``pair`` (two files, the manifest's ``pair_uri``),
# ``vrs`` (Project Aria camera streams) and ``image`` (a still image, for ``egoveil
# redact``) are set at admission, never by the manifest.
LAYOUTS = ("none", "sbs", "tb", "streams", "pair", "vrs", "image")
SINGLE_VIEW_LAYOUTS = ("none", "image")
STEREO_VIEWS = ("left", "right")


@dataclass(slots=True, frozen=True)
class VideoInfo:
    """What probing the container said, before any frame is decoded."""

    width: int
    height: int
    fps: float | None
    duration_s: float | None
    frame_count: int | None
    rotation: int
    codec: str
    has_audio: bool


@dataclass(slots=True, frozen=True)
class Recording:
    """An admitted recording: consented, hashed, probed and pseudonymized.

    Attributes:
        uri: where to read it; never written out.
        content_sha256: hash of the file's bytes (the same input twice is one recording).
        recording_id: keyed pseudonym of the content hash.
        wearer_id: keyed pseudonym of the wearer, or None when the manifest has none.
        device_id: keyed pseudonym of the device serial, or None.
        video: probe results.
        view: which camera the frames come from (``rgb`` for a monocular recording).
        location_cell: the coarse location cell a run was configured to keep, or None
            (the exact location never gets this far).
        layout: how the views are packed (``LAYOUTS``); ``none`` is one view, ``view``.
        pair_uri: the right eye's file for ``layout="pair"``; never written out.
        pair_sha256: hash of that file's bytes (part of the deduplication key).
        streams: for ``vrs``, the allow-listed stream ids read, in the order of ``views``.
        stream_views: for ``vrs``, the view name of each stream in ``streams``.
        input_id: keyed pseudonym of the input's location (dead letters name it).
    """

    uri: str
    content_sha256: str
    recording_id: str
    wearer_id: str | None
    device_id: str | None
    video: VideoInfo
    view: str = "rgb"
    size_bytes: int = 0
    location_cell: str | None = None
    layout: str = "none"
    pair_uri: str | None = None
    pair_sha256: str | None = None
    streams: tuple[str, ...] = ()
    stream_views: tuple[str, ...] = ()
    input_id: str | None = None

    @property
    def views(self) -> tuple[str, ...]:
        """The views every time step of this recording has, in a fixed order."""
        if self.layout in SINGLE_VIEW_LAYOUTS:
            return (self.view,)
        if self.layout == "vrs":
            return self.stream_views
        return STEREO_VIEWS

    @property
    def stereo_pairs(self) -> tuple[tuple[str, str], ...]:
        """Pairs of views that see the same scene from two eyes (cross-view search, pair ids)."""
        views = self.views
        return (STEREO_VIEWS,) if all(v in views for v in STEREO_VIEWS) else ()


@dataclass(slots=True, frozen=True)
class Segment:
    """A time window [start_s, end_s) of one recording: the unit of parallel work."""

    recording: Recording
    index: int
    start_s: float
    end_s: float
    is_last: bool = False


@dataclass(slots=True)
class Clip:
    """Anonymized frames of one clip, at the encoder's input geometry.

    Attributes:
        frames: uint8 array (T, H, W, 3), redacted, resized and cropped for the encoder.
        frame_count: real frames in the clip; the rest of ``frames`` repeats the last one.
        faces_redacted: face boxes redacted over the clip's frames.
        pair_id: shared by the two views of a stereo pair over the same frames (None for
            a view without a partner); a ``stereo`` clip holds both views side by side.
        input_id: keyed pseudonym of the input's location (for dead letters).
    """

    clip_id: str
    recording_id: str
    wearer_id: str | None
    view: str
    segment_index: int
    clip_index: int
    start_s: float
    end_s: float
    frame_count: int
    fps: float
    frames: np.ndarray
    faces_redacted: int
    qa_status: str
    device_id: str | None = None
    location_cell: str | None = None
    pair_id: str | None = None
    input_id: str | None = None


@dataclass(slots=True)
class LatentRow:
    """One shard row: a clip's latents and what an auditor or trainer needs about it.

    ``embedding`` and ``tokens`` hold little-endian float16 or bfloat16 values, as
    the run's ``LatentLayout`` says.
    """

    clip_id: str
    recording_id: str
    wearer_id: str | None
    view: str
    segment_index: int
    clip_index: int
    start_s: float
    end_s: float
    frame_count: int
    fps: float
    encoder_id: str
    encoder_pretrained: bool
    embedding: bytes
    faces_redacted: int
    qa_status: str
    device_id: str | None = None
    location_cell: str | None = None
    tokens: bytes | None = None  # the token grid, when the run stores it
    pair_id: str | None = None

    def nbytes(self) -> int:
        return len(self.embedding) + len(self.tokens or b"") + 160


@dataclass(slots=True, frozen=True)
class ShardFile:
    """A shard written to staging, waiting to be published by the manifest."""

    index: int
    staging_path: str
    rows: int
    size_bytes: int
    sha256: str
