"""``egoveil redact INPUT OUTPUT``: one video or image through the run's anonymizer.

The same detection, temporal propagation, redaction and verification as ``run``:
if verification fails, the file is redacted again with the stronger
configuration, and if that fails too nothing is written. The output goes to a
temporary file beside the destination and is renamed into place only at the end,
so a failure leaves no partial output. Videos keep their frame count and
timestamps; nothing but the video stream is written (no audio, no metadata).
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass

from pipeline.errors import UserError
from privacy.anonymizer import FrameIn, SegmentAnonymizer
from privacy.config import AnonymizationConfig
from privacy.detectors import DetectorError, build_detector
from privacy.verification import RedactionVerifier, VerificationSummary
from transforms.media.video import (
    IMAGE_EXTENSIONS,
    OUTPUT_FORMATS,
    DecodeCaps,
    MediaError,
    VideoWriter,
    iter_window,
    probe,
    read_image,
    write_image,
)


@dataclass(slots=True)
class RedactStats:
    frames: int
    faces_detected: int
    wall_s: float
    verification: VerificationSummary
    reredacted: bool = False

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0


def _anonymizer(config: AnonymizationConfig,
                verifier: RedactionVerifier | None) -> SegmentAnonymizer:
    try:
        return SegmentAnonymizer(build_detector(config.detector_spec), config.redaction,
                                 config.temporal_window, config.detect_timeout_s,
                                 verifier=verifier, batch_size=config.detect_batch_size)
    except (DetectorError, ValueError) as exc:
        raise UserError(f"detector cannot be loaded: {exc}") from None


def _write(source: str, temp: str, dst_ext: str, is_image: bool, anonymizer: SegmentAnonymizer,
           caps: DecodeCaps | None) -> tuple[int, int]:
    if is_image:
        image = read_image(source)
        (out,) = list(anonymizer.process([FrameIn(0.0, image)]))
        write_image(out.image, temp)
        return 1, out.detected
    info = probe(source, caps)
    writer = VideoWriter(temp, dst_ext, info.width, info.height, info.fps or 30.0)
    frames = faces = 0
    try:
        stream = (FrameIn(f.time_s, f.to_rgb()) for f, _ in iter_window(source))
        for out in anonymizer.process(stream):
            writer.write(out.image, out.time_s)
            frames += 1
            faces += out.detected
    finally:
        writer.close()
    return frames, faces


def redact_file(source: str, dest: str, config: AnonymizationConfig | None = None,
                caps: DecodeCaps | None = None) -> RedactStats:
    """Anonymize one video or image file.

    Raises:
        UserError: unreadable input, unsupported output extension, detection failed or
            verification failed twice (nothing is written then).
    """
    config = config or AnonymizationConfig()
    src_ext = os.path.splitext(source)[1].lower()
    dst_ext = os.path.splitext(dest)[1].lower()
    if os.path.abspath(source) == os.path.abspath(dest):
        raise UserError("OUTPUT must differ from INPUT")
    if not os.path.isfile(source):
        raise UserError("INPUT does not exist or is not a file")
    is_image = src_ext in IMAGE_EXTENSIONS
    if is_image and dst_ext not in IMAGE_EXTENSIONS:
        raise UserError(f"an image must be written as one of {', '.join(IMAGE_EXTENSIONS)}")
    if not is_image and dst_ext not in OUTPUT_FORMATS:
        raise UserError(f"a video must be written as one of {', '.join(OUTPUT_FORMATS)}")
    verifier = RedactionVerifier(config.verification) if config.verification.enabled else None
    out_dir = os.path.dirname(os.path.abspath(dest))
    os.makedirs(out_dir, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=out_dir, prefix=".egoveil-", suffix=dst_ext)
    os.close(fd)
    started = time.perf_counter()
    reredacted = False
    try:
        for attempt, cfg in enumerate((config, config.strong())):
            anonymizer = _anonymizer(cfg, verifier)
            try:
                frames, faces = _write(source, temp, dst_ext, is_image, anonymizer, caps)
            finally:
                anonymizer.close()
            if anonymizer.verification.passed:
                break
            reredacted = True
            if attempt == 1:
                raise UserError("redaction could not be verified even after the stronger pass "
                                f"({anonymizer.verification.output_faces} faces found, "
                                f"{anonymizer.verification.linkable_faces} linkable); nothing "
                                "was written")
        os.replace(temp, dest)
    except MediaError as exc:
        raise UserError(f"INPUT cannot be used: {exc.reason}: {exc.detail}") from None
    except DetectorError as exc:
        raise UserError(f"detection failed, nothing was written: {exc}") from None
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
    return RedactStats(frames=frames, faces_detected=faces, wall_s=time.perf_counter() - started,
                       verification=anonymizer.verification, reredacted=reredacted)
