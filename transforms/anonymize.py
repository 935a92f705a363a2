"""The fused per-segment stage: decode, detect, track, redact, strip, and cut clips.

A segment covers every view of its recording (the two eyes of a stereo pair, the
SLAM cameras of a Project Aria file), so the views are decoded and anonymized
together and a face found in one eye is searched for in the other in memory.
Each view gets its own clips; the two views of a pair share a ``pair_id``, or,
with ``ClipPlan.joint_pairs``, go to the encoder together as one ``stereo`` clip
(left and right side by side, each squeezed to half the width).

Frames never leave this stage unredacted and never cross a shuffle: the stage
emits ``Clip`` elements holding encoder-sized redacted frames, and (with
``--clips``) writes the redacted video of each clip. A segment's outputs are
held back until the whole segment succeeded; if detection fails on any frame,
nothing of the segment is emitted and a dead letter says why (fail closed).

Metrics (namespace ``egoveil``): ``segments_ok``, ``segments_failed``,
``frames_decoded``, ``frames_redacted``, ``faces_detected``, ``clips``,
``faces_recovered_cross_view``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import apache_beam as beam
import cv2
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from privacy.anonymizer import FrameOut, SegmentAnonymizer, ViewFrames
from privacy.config import AnonymizationConfig
from privacy.detectors import DetectorError, FaceDetector, build_detector
from privacy.stereo import CrossViewCounts, CrossViewSearch, unrectified
from privacy.verification import RedactionVerifier, VerificationSummary
from schemas.elements import Clip, Segment
from schemas.records import AuditEvent, DeadLetter
from transforms.media.frame_sources import iter_instants
from transforms.media.video import DecodeStats, MediaError, VideoWriter
from transforms.models.encoders import FrameGeometry
from transforms.stores.keys import load_key
from transforms.stores.progress import ProgressReporter
from transforms.stores.segment_cache import SegmentCache

STEREO_VIEW = "stereo"  # the view of a clip holding both eyes of a pair

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
        joint_pairs: embed the two views of a stereo pair as one ``stereo`` clip instead
            of one clip per view.
    """

    frames_per_clip: int
    frame_stride: int
    geometry: FrameGeometry
    write_clips: bool = False
    joint_pairs: bool = False

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


def pair_id_for(recording_id: str, segment_index: int, clip_index: int,
                config_fingerprint: str) -> str:
    blob = f"{recording_id}|pair|{segment_index}|{clip_index}|{config_fingerprint}"
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _sampled(window: Iterator, step: int) -> Iterator[ViewFrames]:
    """Every ``step``-th instant inside the window, with context instants at the same step."""
    before: list = []
    inside = after = 0
    for item, is_inside in window:
        if is_inside:
            if before:  # context instants at step distances before the first inside one
                for early in before[::-1][step - 1::step][::-1]:
                    yield ViewFrames(early.time_s, early.views(), emit=False)
                before = []
            if inside % step == 0:
                yield ViewFrames(item.time_s, item.views(), emit=True)
            inside += 1
        elif inside == 0:
            before.append(item)
        else:
            if after % step == 0:
                yield ViewFrames(item.time_s, item.views(), emit=False)
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
                 verifier_factory: Callable[[], FaceDetector] | None = None,
                 cache: SegmentCache | None = None) -> None:
        self._config = config
        self._cache = cache
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
        self._recovered = Metrics.counter(NAMESPACE, "faces_recovered_cross_view")

    def setup(self) -> None:
        self._key = load_key(self._key_file)
        verification = self._config.verification
        self._verifier = RedactionVerifier(
            verification, self._verifier_factory() if self._verifier_factory else None) \
            if verification.enabled else None
        self._anonymizer = self._build(self._config, self._detector_factory)
        self._strong: SegmentAnonymizer | None = None  # built on first need

    def _build(self, config: AnonymizationConfig,
               factory: Callable[[], FaceDetector] | None = None) -> SegmentAnonymizer:
        detector = factory() if factory else build_detector(config.detector_spec)
        search = config.cross_view
        band = build_detector(search.detector) if search.detector != "none" else None
        return SegmentAnonymizer(detector, config.redaction,
                                 temporal_window=config.temporal_window,
                                 detect_timeout_s=config.detect_timeout_s,
                                 verifier=self._verifier,
                                 batch_size=config.detect_batch_size,
                                 cross_view=CrossViewSearch(search, band)
                                 if search.enabled else None)

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
        self._recovered.inc(counts.get("cross_view_recovered", 0))
        self._clips.inc(len(clips))
        self._progress.report(segments=1, frames=counts["frames_emitted"],
                              busy_s=time.perf_counter() - started)
        events.append(AuditEvent(kind="segment_anonymized", recording_id=rec.recording_id,
                                 segment_index=segment.index, counts=counts))
        if self._cache is not None:
            self._cache.mark_done(segment, [clip.clip_id for clip in clips], events, files)
        for event in events:
            yield beam.pvalue.TaggedOutput(AUDIT, event)
        for info in files:
            yield beam.pvalue.TaggedOutput(FILES, info)
        yield from clips

    def _attempt(self, segment: Segment, anonymizer: SegmentAnonymizer) -> _Attempt:
        """Decode, detect, redact and verify one segment; clip files stay in temp files."""
        rec, plan = segment.recording, self._plan
        detect_step = 1 if plan.write_clips else plan.frame_stride
        stats = DecodeStats()
        window = iter_instants(rec, segment.start_s, None if segment.is_last else segment.end_s,
                               context=self._config.temporal_window * detect_step, stats=stats)
        rng = np.random.default_rng(self._key.seed(rec.recording_id, rec.view, segment.index))
        builder = _ClipBuilder(self, segment, rec.video.fps or 30.0)
        search = anonymizer.cross_view
        if search is not None and rec.layout == "vrs":
            search = unrectified(search)  # Aria's front SLAM pair is not rectified
        try:
            for out in anonymizer.process_views(_sampled(window, detect_step), rng,
                                                pairs=rec.stereo_pairs, cross_view=search):
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
        if len(rec.views) > 1:
            cross: CrossViewCounts = anonymizer.cross_view_counts
            counts.update(views=len(rec.views), cross_view_searched=cross.searched,
                          cross_view_recovered=builder.recovered)
        return _Attempt(builder, counts, anonymizer.verification)


class _ViewTrack:
    """One view's frames for the clip being built, and its clip video."""

    __slots__ = ("frames", "writer", "writer_path", "faces")

    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []
        self.writer: VideoWriter | None = None
        self.writer_path: str | None = None
        self.faces = 0


class _ClipBuilder:
    """Groups a segment's redacted instants into clips, one per view (or one per pair).

    Clip videos are held in temp files until the segment succeeded.
    """

    def __init__(self, fn: AnonymizeSegmentFn, segment: Segment, fps: float) -> None:
        self.fn, self.segment, self.fps = fn, segment, fps
        self.plan = fn._plan
        rec = segment.recording
        self.pairs = rec.stereo_pairs
        self.joint = self.plan.joint_pairs and bool(self.pairs)
        self.clips: list[Clip] = []
        self.frames_emitted = self.faces_detected = self.boxes = self.recovered = 0
        self._temp: list[tuple[str, str, int]] = []  # (temp path, clip id, frames)
        self._index = 0
        self._reset()

    def _reset(self) -> None:
        self._tracks: dict[str, _ViewTrack] = {}
        self._times: list[float] = []
        self._count = 0  # decoded instants placed in the current clip

    def add(self, outs: dict[str, FrameOut]) -> None:
        plan = self.plan
        take = self._count % plan.frame_stride == 0 if plan.write_clips else True
        time_s = next(iter(outs.values())).time_s
        if plan.write_clips:
            videos = {view: out.image for view, out in outs.items()}
            if self.joint:  # the pair's clip video holds both eyes side by side, full size
                left, right = self.pairs[0]
                videos[STEREO_VIEW] = np.concatenate([videos.pop(left), videos.pop(right)], 1)
            for view, image in videos.items():
                track = self._tracks.setdefault(view, _ViewTrack())
                if track.writer is None:
                    fd, track.writer_path = tempfile.mkstemp(suffix=".mp4",
                                                             prefix="egoveil-clip-")
                    os.close(fd)
                    h, w = image.shape[:2]
                    track.writer = VideoWriter(track.writer_path, ".mp4", w, h, self.fps)
                track.writer.write(image, time_s)
        paired = self.pairs[0] if self.joint else ()
        if take and self.joint:
            self._tracks.setdefault(STEREO_VIEW, _ViewTrack()).frames.append(
                self._joint_frame(outs[paired[0]].image, outs[paired[1]].image))
        for view, out in outs.items():
            track = self._tracks.setdefault(STEREO_VIEW if view in paired else view,
                                            _ViewTrack())
            if take and view not in paired:
                track.frames.append(plan.geometry.apply(out.image))
            track.faces += out.detected
            self.frames_emitted += 1
            self.faces_detected += out.detected
            self.boxes += out.redacted
            self.recovered += out.recovered
        if take:
            self._times.append(time_s)
        self._count += 1
        if self._count >= (plan.span if plan.write_clips else plan.frames_per_clip):
            self._close_clip()

    def _joint_frame(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """Both eyes side by side, each squeezed to half the encoder's width."""
        h, w = self.plan.geometry.output_hw
        halves = [cv2.resize(self.plan.geometry.apply(v), (w // 2, h),
                             interpolation=cv2.INTER_AREA) for v in (left, right)]
        joined = np.concatenate(halves, axis=1)
        if joined.shape[1] != w:  # odd width: pad the last column
            joined = np.pad(joined, ((0, 0), (0, w - joined.shape[1]), (0, 0)))
        return joined

    def _close_clip(self) -> None:
        if not self._times:
            return
        seg, rec = self.segment, self.segment.recording
        index = self._index
        paired = {v for pair in self.pairs for v in pair} | {STEREO_VIEW}
        pair_id = pair_id_for(rec.recording_id, seg.index, index, self.fn._fingerprint) \
            if self.pairs else None
        groups: list[tuple[str, list[np.ndarray], int, str | None]] = []
        for view, track in self._tracks.items():
            if track.writer is not None:
                track.writer.close()
                self._temp.append((track.writer_path,
                                   clip_id_for(rec.recording_id, view, seg.index, index,
                                               self.fn._fingerprint), track.writer.frames))
                track.writer = None
            if track.frames:
                groups.append((view, track.frames, track.faces,
                               pair_id if view in paired else None))
        for view, frames, faces, group_pair in groups:
            real = len(frames)
            frames = frames + [frames[-1]] * (self.plan.frames_per_clip - real)
            self.clips.append(Clip(
                clip_id=clip_id_for(rec.recording_id, view, seg.index, index,
                                    self.fn._fingerprint),
                recording_id=rec.recording_id, wearer_id=rec.wearer_id,
                view=view, segment_index=seg.index, clip_index=index,
                start_s=self._times[0],
                end_s=self._times[-1] + self.plan.frame_stride / self.fps,
                frame_count=real, fps=float(self.fps), frames=np.stack(frames),
                faces_redacted=faces, qa_status="pending",
                device_id=rec.device_id, location_cell=rec.location_cell, pair_id=group_pair))
        self._index += 1
        self._reset()

    def finish(self) -> None:
        self._close_clip()
        for track in self._tracks.values():  # frames without an encoder frame: drop the file
            if track.writer is not None:
                track.writer.close()
                os.unlink(track.writer_path)
                track.writer = None

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
        for track in self._tracks.values():
            if track.writer is not None:
                try:
                    track.writer.close()
                except Exception:  # noqa: BLE001 - the file is deleted anyway
                    pass
                self._temp.append((track.writer_path, "", 0))
                track.writer = None
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
