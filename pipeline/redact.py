"""``egoveil redact INPUT OUTPUT``: one video or image through the run's anonymizer.

The same frame sources, detectors, temporal propagation, redaction, cross-view
search (for a stereo video packed side by side or top-bottom) and
verify-and-retry policy as ``run`` (``privacy.anonymization``): if verification
fails, the file is redacted again with the stronger configuration, and if that
fails too nothing is written. The output goes to a temporary file beside the
destination and is renamed into place only at the end, so a failure leaves no
partial output. Videos keep their frame count and timestamps; nothing but the
video stream is written (no audio, no metadata).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from pipeline.errors import UserError
from privacy.anonymization import VerificationFailed, VerifiedAnonymization
from privacy.anonymizer import SegmentAnonymizer, ViewFrames
from privacy.config import AnonymizationConfig
from privacy.detectors import DetectorError
from privacy.verification import VerificationSummary
from schemas.detections import FACE
from schemas.elements import Recording
from schemas.sidecar import RecordingRequest
from transforms.media.images import IMAGE_EXTENSIONS, write_image
from transforms.media.inputs import DecodeCaps, DecodeStats, MediaError, open_binary
from transforms.media.sources import FrameSource, source_for
from transforms.media.video import (
    OUTPUT_FORMATS,
    BackgroundWriter,
    VideoWriter,
    use_decode_device,
)

# How a redacted stereo frame is packed back: the views side by side or stacked.
_PACKING = {"sbs": 1, "tb": 0}
STEREO_CHOICES = ("none", *_PACKING)


@dataclass(slots=True)
class RedactStats:
    """What ``redact_file`` did.

    Attributes:
        detected: detections by class (frames a class's detector skipped count none).
    """

    frames: int
    faces_detected: int
    wall_s: float
    verification: VerificationSummary
    reredacted: bool = False
    detected: dict[str, int] = field(default_factory=dict)

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0


@dataclass(slots=True)
class _Written:
    """One attempt's output in the temporary file."""

    path: str
    frames: int
    faces: int
    detected: Counter = field(default_factory=Counter)

    def discard(self) -> None:
        if os.path.exists(self.path):
            os.truncate(self.path, 0)


def _packed(outs: dict, views: tuple[str, ...], axis: int | None) -> np.ndarray:
    if axis is None:
        return outs[views[0]].image
    return np.concatenate([outs[view].image for view in views], axis=axis)


def _write(source: FrameSource, rec: Recording, temp: str, dst_ext: str,
           anonymizer: SegmentAnonymizer) -> _Written:
    axis = _PACKING.get(rec.layout)
    instants = ((instant, inside) for instant, inside
                in source.instants(rec, 0.0, None, 0, DecodeStats()))
    frames: Iterator[ViewFrames] = (ViewFrames(i.time_s, i.views()) for i, _ in instants)
    outputs = anonymizer.process_views(frames, pairs=rec.stereo_pairs)
    count = faces = 0
    detected: Counter = Counter()
    if rec.layout == "image":
        for outs in outputs:
            write_image(_packed(outs, rec.views, None), temp)
            count, faces = 1, outs[rec.view].detected.get(FACE, 0)
            detected.update(outs[rec.view].detected)
        return _Written(temp, count, faces, detected)
    info = rec.video
    width = info.width * (2 if axis == 1 else 1)
    height = info.height * (2 if axis == 0 else 1)
    writer = BackgroundWriter(VideoWriter(temp, dst_ext, width, height, info.fps or 30.0))
    try:
        for outs in outputs:
            writer.write(_packed(outs, rec.views, axis), next(iter(outs.values())).time_s)
            count += 1
            faces += sum(out.detected.get(FACE, 0) for out in outs.values())
            for out in outs.values():
                detected.update(out.detected)
    finally:
        writer.close()
    return _Written(temp, count, faces, detected)


def _recording(source_path: str, stereo: str, caps: DecodeCaps) -> tuple[FrameSource, Recording]:
    request = RecordingRequest(uri=source_path, stereo=stereo)
    with open_binary(source_path) as handle:
        head = handle.read(64)
    source = source_for(request, head)
    if source.layouts[0] not in ("none", "image", *_PACKING):
        raise UserError(f"`egoveil redact` writes one video or image; a {source.name} input "
                        "goes through `egoveil run`")
    base = Recording(uri=source_path, content_sha256="", recording_id="", wearer_id=None,
                     device_id=None, video=None)
    return source, source.probe(request, base, caps).recordings[0]


def redact_file(source: str, dest: str, config: AnonymizationConfig | None = None,
                caps: DecodeCaps | None = None, stereo: str = "none") -> RedactStats:
    """Anonymize one video or image file.

    Args:
        stereo: ``sbs`` or ``tb`` for a stereo video packed in one frame: each eye is
            anonymized as a view of its own, searched against the other, and packed back.

    Raises:
        UserError: unreadable input, unsupported output extension, detection failed or
            verification failed twice (nothing is written then).
    """
    config = config or AnonymizationConfig()
    caps = caps or DecodeCaps()
    dst_ext = os.path.splitext(dest)[1].lower()
    if os.path.abspath(source) == os.path.abspath(dest):
        raise UserError("OUTPUT must differ from INPUT")
    if not os.path.isfile(source):
        raise UserError("INPUT does not exist or is not a file")
    if stereo not in STEREO_CHOICES:
        raise UserError(f"--stereo must be one of {', '.join(STEREO_CHOICES)}")
    out_dir = os.path.dirname(os.path.abspath(dest))
    started = time.perf_counter()
    use_decode_device(config.device)
    try:
        frame_source, rec = _recording(source, stereo, caps)
        is_image = rec.layout == "image"
        if is_image and dst_ext not in IMAGE_EXTENSIONS:
            raise UserError(f"an image must be written as one of {', '.join(IMAGE_EXTENSIONS)}")
        if not is_image and dst_ext not in OUTPUT_FORMATS:
            raise UserError(f"a video must be written as one of {', '.join(OUTPUT_FORMATS)}")
        policy = VerifiedAnonymization(config)
        try:
            policy.load()
        except (DetectorError, ValueError) as exc:
            raise UserError(f"detector cannot be loaded: {exc}") from None
        os.makedirs(out_dir, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=out_dir, prefix=".egoveil-", suffix=dst_ext)
        os.close(fd)
        try:
            verified = policy.run(lambda anonymizer: _write(frame_source, rec, temp, dst_ext,
                                                            anonymizer))
            os.replace(temp, dest)
        finally:
            policy.close()
            if os.path.exists(temp):
                os.unlink(temp)
    except MediaError as exc:
        raise UserError(f"INPUT cannot be used: {exc.reason}: {exc.detail}") from None
    except DetectorError as exc:
        raise UserError(f"detection failed, nothing was written: {exc}") from None
    except VerificationFailed as exc:
        raise UserError("redaction could not be verified even after the stronger pass "
                        f"({exc.second.findings()}); nothing was written") from None
    written = verified.attempt
    return RedactStats(frames=written.frames, faces_detected=written.faces,
                       wall_s=time.perf_counter() - started,
                       verification=verified.verification,
                       reredacted=verified.failed_first is not None,
                       detected=dict(written.detected))
