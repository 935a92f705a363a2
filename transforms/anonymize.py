"""The fused per-segment stage: decode, detect, track, redact, strip, and cut clips.

Frames never leave this stage unredacted and never cross a shuffle: the stage
emits ``Clip`` elements holding encoder-sized redacted frames, and (with
``--clips``) writes the redacted video of each clip. A segment's outputs are
held back until the whole segment succeeded; if detection fails on any frame,
nothing of the segment is emitted and a dead letter says why (fail closed).

Metrics (namespace ``egoveil``): ``segments_ok``, ``segments_failed``,
``frames_decoded``, ``frames_redacted``, ``faces_detected``, ``clips``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from privacy.anonymizer import FrameIn, SegmentAnonymizer
from privacy.config import AnonymizationConfig
from privacy.detectors import DetectorError, FaceDetector, build_detector
from privacy.pseudonyms import PseudonymKey
from privacy.verification import RedactionVerifier, VerificationSummary
from schemas.elements import Clip, Segment
from schemas.records import AuditEvent, DeadLetter
from transforms.encoders import FrameGeometry
from transforms.progress import ProgressReporter
from transforms.video_io import DecodeStats, MediaError, VideoWriter, iter_window

DEADLETTER = "deadletter"
AUDIT = "audit"
FILES = "files"
NAMESPACE = "egoveil"


@dataclass(slots=True, frozen=True)
class ClipPlan:
    """How a segment is cut into clips for the encoder.

    Args:
        frames_per_clip: frames the encoder takes per clip.
        frame_stride: every how many decoded frames one goes to the encoder.
        geometry: resize and crop to the encoder's input.
        write_clips: also write each clip's redacted video (all frames, full size).
    """

    frames_per_clip: int
    frame_stride: int
    geometry: FrameGeometry
    write_clips: bool = False

    def __post_init__(self) -> None:
        if self.frames_per_clip < 1 or self.frame_stride < 1:
            raise ValueError("frames_per_clip and frame_stride must be >= 1")

    @property
    def span(self) -> int:
        """Decoded frames covered by one clip."""
        return self.frames_per_clip * self.frame_stride


def clip_id_for(recording_id: str, view: str, segment_index: int, clip_index: int,
                config_fingerprint: str) -> str:
    blob = f"{recording_id}|{view}|{segment_index}|{clip_index}|{config_fingerprint}"
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _sampled(window: Iterator, step: int) -> Iterator[FrameIn]:
    """Every ``step``-th frame inside the window, with context frames at the same step."""
    before: list = []
    inside = after = 0
    for frame, is_inside in window:
        if is_inside:
            if before:  # context frames at step distances before the first inside frame
                for item in before[::-1][step - 1::step][::-1]:
                    yield FrameIn(item.time_s, item.to_rgb(), emit=False)
                before = []
            if inside % step == 0:
                yield FrameIn(frame.time_s, frame.to_rgb(), emit=True)
            inside += 1
        elif inside == 0:
            before.append(frame)
        else:
            if after % step == 0:
                yield FrameIn(frame.time_s, frame.to_rgb(), emit=False)
            after += 1


class VerificationFailed(Exception):
    """Redaction could not be verified even after the stronger pass: quarantine."""


@dataclass(slots=True)
class _Attempt:
    builder: _ClipBuilder
    counts: dict
    verification: VerificationSummary


class AnonymizeSegmentFn(beam.DoFn):
    """Segment -> redacted ``Clip`` elements; dead letters, audit events and clip files tagged.

    A segment's clips and clip files are released only after the whole segment was
    detected, redacted and verified. A failed verification redacts the segment again
    with the stronger configuration (``AnonymizationConfig.strong``); a second
    failure quarantines it (dead letter ``verification_failed``).
    """

    def __init__(self, config: AnonymizationConfig, plan: ClipPlan, key_file: str | None,
                 clips_dir: str | None, config_fingerprint: str,
                 progress: ProgressReporter | None = None,
                 detector_factory: Callable[[], FaceDetector] | None = None,
                 verifier_factory: Callable[[], FaceDetector] | None = None) -> None:
        self._config = config
        self._detector_factory = detector_factory
        self._verifier_factory = verifier_factory
        self._plan = plan
        self._key_file = key_file
        self._clips_dir = clips_dir
        self._fingerprint = config_fingerprint
        self._progress = progress or ProgressReporter(None)
        self._ok = Metrics.counter(NAMESPACE, "segments_ok")
        self._failed = Metrics.counter(NAMESPACE, "segments_failed")
        self._reredacted = Metrics.counter(NAMESPACE, "segments_reredacted")
        self._decoded = Metrics.counter(NAMESPACE, "frames_decoded")
        self._redacted = Metrics.counter(NAMESPACE, "frames_redacted")
        self._faces = Metrics.counter(NAMESPACE, "faces_detected")
        self._clips = Metrics.counter(NAMESPACE, "clips")

    def setup(self) -> None:
        self._key = PseudonymKey.load(self._key_file)
        verification = self._config.verification
        self._verifier = RedactionVerifier(
            verification, self._verifier_factory() if self._verifier_factory else None) \
            if verification.enabled else None
        self._anonymizer = self._build(self._config, self._detector_factory)
        self._strong: SegmentAnonymizer | None = None  # built on first need

    def _build(self, config: AnonymizationConfig,
               factory: Callable[[], FaceDetector] | None = None) -> SegmentAnonymizer:
        detector = factory() if factory else build_detector(config.detector_spec)
        return SegmentAnonymizer(detector, config.redaction,
                                 temporal_window=config.temporal_window,
                                 detect_timeout_s=config.detect_timeout_s,
                                 verifier=self._verifier,
                                 batch_size=config.detect_batch_size)

    def teardown(self) -> None:
        for anonymizer in (getattr(self, "_anonymizer", None), getattr(self, "_strong", None)):
            if anonymizer is not None:
                anonymizer.close()

    def process(self, segment: Segment):
        rec = segment.recording
        started = time.perf_counter()
        events = []
        try:
            attempt = self._attempt(segment, self._anonymizer)
            status = "verified" if self._verifier else "redacted_unverified"
            if not attempt.verification.passed:
                events.append(AuditEvent(kind="verification_failed",
                                         recording_id=rec.recording_id,
                                         segment_index=segment.index,
                                         counts={"pass": "first",
                                                 **attempt.verification.to_dict()}))
                attempt.builder.discard()
                if self._strong is None:
                    self._strong = self._build(self._config.strong())
                attempt = self._attempt(segment, self._strong)
                self._reredacted.inc()
                if not attempt.verification.passed:
                    attempt.builder.discard()
                    raise VerificationFailed(
                        f"{attempt.verification.output_faces} faces found and "
                        f"{attempt.verification.linkable_faces} linkable after the stronger pass")
                status = "reredacted_verified"
            files = attempt.builder.publish_files()
        except (DetectorError, MediaError, VerificationFailed) as exc:
            if isinstance(exc, DetectorError):
                reason = "detector_failed"
                for anonymizer in (self._anonymizer, self._strong):
                    if anonymizer is not None and anonymizer.broken:
                        self.teardown()
                        self.setup()
                        break
            elif isinstance(exc, VerificationFailed):
                reason = "verification_failed"
            else:
                reason = exc.reason
            self._failed.inc()
            self._progress.report(segments=1, segments_failed=1)
            yield beam.pvalue.TaggedOutput(DEADLETTER, DeadLetter(
                input_id=self._key.pseudonym("input", rec.uri), stage="anonymize",
                reason=reason, detail=str(exc).splitlines()[0][:200] if str(exc) else reason,
                recording_id=rec.recording_id, segment_index=segment.index))
            for event in events:
                yield beam.pvalue.TaggedOutput(AUDIT, event)
            yield beam.pvalue.TaggedOutput(AUDIT, AuditEvent(
                kind="segment_failed", recording_id=rec.recording_id,
                segment_index=segment.index, counts={"reason": reason}))
            return
        counts = dict(attempt.counts, qa_status=status,
                      **{f"verify_{k}": v for k, v in attempt.verification.to_dict().items()})
        clips = attempt.builder.clips
        for clip in clips:
            clip.qa_status = status
        self._ok.inc()
        self._decoded.inc(counts["frames_decoded"])
        self._redacted.inc(counts["frames_emitted"])
        self._faces.inc(counts["faces_detected"])
        self._clips.inc(len(clips))
        self._progress.report(segments=1, frames=counts["frames_emitted"],
                              busy_s=time.perf_counter() - started)
        for event in events:
            yield beam.pvalue.TaggedOutput(AUDIT, event)
        yield beam.pvalue.TaggedOutput(AUDIT, AuditEvent(
            kind="segment_anonymized", recording_id=rec.recording_id,
            segment_index=segment.index, counts=counts))
        for info in files:
            yield beam.pvalue.TaggedOutput(FILES, info)
        yield from clips

    def _attempt(self, segment: Segment, anonymizer: SegmentAnonymizer) -> _Attempt:
        """Decode, detect, redact and verify one segment; clip files stay in temp files."""
        rec, plan = segment.recording, self._plan
        detect_step = 1 if plan.write_clips else plan.frame_stride
        stats = DecodeStats()
        window = iter_window(rec.uri, segment.start_s,
                             None if segment.is_last else segment.end_s,
                             context=self._config.temporal_window * detect_step, stats=stats)
        rng = np.random.default_rng(self._key.seed(rec.recording_id, rec.view, segment.index))
        builder = _ClipBuilder(self, segment, rec.video.fps or 30.0)
        try:
            for out in anonymizer.process(_sampled(window, detect_step), rng):
                builder.add(out)
            builder.finish()
            total = stats.decoded + stats.corrupt
            if total and stats.corrupt / total > self._config.max_corrupt_fraction:
                raise MediaError("corrupt_frames", f"{stats.corrupt} of {total} frames corrupt")
        except BaseException:
            builder.discard()
            raise
        counts = {"frames_decoded": stats.decoded, "frames_corrupt": stats.corrupt,
                  "frames_emitted": builder.frames_emitted,
                  "faces_detected": builder.faces_detected, "boxes_redacted": builder.boxes,
                  "clips": len(builder.clips)}
        return _Attempt(builder, counts, anonymizer.verification)


class _ClipBuilder:
    """Groups a segment's redacted frames into clips (and clip videos, held in temp files)."""

    def __init__(self, fn: AnonymizeSegmentFn, segment: Segment, fps: float) -> None:
        self.fn, self.segment, self.fps = fn, segment, fps
        self.plan = fn._plan
        self.clips: list[Clip] = []
        self.frames_emitted = self.faces_detected = self.boxes = 0
        self._temp: list[tuple[str, str, int]] = []  # (temp path, clip id, frames)
        self._reset()

    def _reset(self) -> None:
        self._frames: list[np.ndarray] = []
        self._times: list[float] = []
        self._faces = 0
        self._count = 0  # decoded frames placed in the current clip
        self._writer = None
        self._writer_path = None

    def add(self, out) -> None:
        plan = self.plan
        if plan.write_clips and self._writer is None:
            fd, self._writer_path = tempfile.mkstemp(suffix=".mp4", prefix="egoveil-clip-")
            os.close(fd)
            h, w = out.image.shape[:2]
            self._writer = VideoWriter(self._writer_path, ".mp4", w, h, self.fps)
        if self._writer is not None:
            self._writer.write(out.image, out.time_s)
        take = self._count % plan.frame_stride == 0 if plan.write_clips else True
        if take:
            self._frames.append(plan.geometry.apply(out.image))
            self._times.append(out.time_s)
        self._count += 1
        self._faces += out.detected
        self.frames_emitted += 1
        self.faces_detected += out.detected
        self.boxes += out.redacted
        if self._count >= (plan.span if plan.write_clips else plan.frames_per_clip):
            self._close_clip()

    def _close_clip(self) -> None:
        if not self._frames:
            return
        seg, rec = self.segment, self.segment.recording
        index = len(self.clips)
        clip_id = clip_id_for(rec.recording_id, rec.view, seg.index, index, self.fn._fingerprint)
        real = len(self._frames)
        frames = self._frames + [self._frames[-1]] * (self.plan.frames_per_clip - real)
        if self._writer is not None:
            self._writer.close()
            self._temp.append((self._writer_path, clip_id, self._writer.frames))
        self.clips.append(Clip(
            clip_id=clip_id, recording_id=rec.recording_id, wearer_id=rec.wearer_id,
            view=rec.view, segment_index=seg.index, clip_index=index,
            start_s=self._times[0], end_s=self._times[-1] + self.plan.frame_stride / self.fps,
            frame_count=real, fps=float(self.fps), frames=np.stack(frames),
            faces_redacted=self._faces, qa_status="pending",
            device_id=rec.device_id, location_cell=rec.location_cell))
        self._reset()

    def finish(self) -> None:
        self._close_clip()
        if self._writer is not None:  # frames without an encoder frame: drop the file
            self._writer.close()
            os.unlink(self._writer_path)
            self._writer = None

    def publish_files(self) -> list[dict]:
        files = []
        for temp_path, clip_id, frame_count in self._temp:
            with open(temp_path, "rb") as handle:
                data = handle.read()
            rel = f"clips/{clip_id}.mp4"
            dest = FileSystems.join(self.fn._clips_dir, f"{clip_id}.mp4")
            with FileSystems.create(dest, compression_type=CompressionTypes.UNCOMPRESSED) as out:
                out.write(data)
            files.append({"path": rel, "sha256": hashlib.sha256(data).hexdigest(),
                          "bytes": len(data), "frames": frame_count})
            os.unlink(temp_path)
        self._temp = []
        return files

    def discard(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 - the file is deleted anyway
                pass
            self._temp.append((self._writer_path, "", 0))
            self._writer = None
        for temp_path, _, _ in self._temp:
            if os.path.exists(temp_path):
                os.unlink(temp_path)
        self._temp = []
        self.clips = []


class AnonymizeSegments(beam.PTransform):
    """Segments -> clips, with ``deadletter``, ``audit`` and ``files`` side outputs."""

    def __init__(self, fn: AnonymizeSegmentFn) -> None:
        super().__init__()
        self._fn = fn

    def expand(self, segments):
        return segments | "AnonymizeSegment" >> beam.ParDo(self._fn).with_outputs(
            DEADLETTER, AUDIT, FILES, main="clips")
