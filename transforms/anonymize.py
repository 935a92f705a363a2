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

Metrics (namespace ``egoveil``): ``segments_ok``, ``segments_failed``, ``segments_reredacted``,
``frames_decoded``, ``frames_redacted``, ``faces_detected``, ``clips``,
``faces_recovered_cross_view``; distribution ``decode_wait_ms`` (per segment, the wall
time spent waiting on the decoder).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import apache_beam as beam
import cv2
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from privacy import identifiers
from privacy.anonymization import DetectorFactory, VerificationFailed, VerifiedAnonymization
from privacy.anonymizer import FrameOut, SegmentAnonymizer, ViewFrames
from privacy.config import AnonymizationConfig
from privacy.detectors import DetectorError
from privacy.gates import corrupt_share_exceeded
from privacy.verification import VerificationSummary
from schemas.detections import FACE
from schemas.elements import Clip, Segment
from schemas.records import AuditEvent, DeadLetter
from schemas.stages import AUDIT, DEADLETTER, FILES, Anonymized, PublishedFile
from transforms.media.inputs import DecodeCaps, DecodeStats, MediaError
from transforms.media.sources import iter_instants
from transforms.media.video import VideoWriter, use_decode_device
from transforms.models.encoders import FrameGeometry
from transforms.segments import segment_frame_limit
from transforms.stores.keys import load_key
from transforms.stores.progress import ProgressReporter
from transforms.stores.segment_cache import SegmentCache

STEREO_VIEW = "stereo"  # the view of a clip holding both eyes of a pair
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


def _bounded(window: Iterator, max_inside: int, max_time_s: float) -> Iterator:
    """The window, refused (``too_large``) as soon as it holds more frames than its segment
    may, or a frame later than the duration cap: a file's header can understate both,
    and a segment's frames are held until it is verified."""
    inside = 0
    for item, is_inside in window:
        if is_inside:
            inside += 1
            if inside > max_inside:
                raise MediaError("too_large", f"more than {max_inside} frames in one segment: "
                                              "the frame rate is above what the file declares")
            if item.time_s > max_time_s:
                raise MediaError("too_large", f"a frame at {item.time_s:.0f} s is past the "
                                              f"duration cap of {max_time_s:.0f} s")
        yield item, is_inside


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


class _Clocked:
    """An iterator that adds up the wall time its caller waits on it (the decoder)."""

    def __init__(self, inner: Iterator) -> None:
        self._inner = inner
        self.seconds = 0.0

    def __iter__(self) -> _Clocked:
        return self

    def __next__(self):
        started = time.perf_counter()
        try:
            return next(self._inner)
        finally:
            self.seconds += time.perf_counter() - started


@dataclass(slots=True)
class _Attempt:
    """One anonymization of a segment, held back until it is verified."""

    builder: _ClipBuilder
    counts: dict
    decode_s: float = 0.0  # spent waiting on the decoder

    def discard(self) -> None:
        self.builder.discard()


class AnonymizeSegmentFn(beam.DoFn):
    """Segment -> redacted ``Clip`` elements; dead letters, audit events and clip files tagged.

    A segment's clips and clip files are released only after the whole segment was
    detected, redacted and verified, under the verify-and-retry policy of
    ``privacy.anonymization`` (a segment that fails twice is quarantined as a
    ``verification_failed`` dead letter).

    Args:
        clips_dir: where clip videos are staged (the run's staging folder; publishing
            moves them into ``DIR/clips``, so a run that dies leaves none there).
        detector_factories: detectors by class to use instead of the configured ones
            (tests inject faulty detectors this way).
        verifier_factories: by class, the detectors verification runs instead of the
            configured ones (``face``: the independent detector).
        caps: the decoding caps; a segment whose frames pass its frame limit or the
            duration cap becomes a ``too_large`` dead letter.
    """

    def __init__(self, config: AnonymizationConfig, plan: ClipPlan, key_file: str | None,
                 clips_dir: str | None, config_fingerprint: str,
                 progress: ProgressReporter | None = None,
                 detector_factories: dict[str, DetectorFactory] | None = None,
                 verifier_factories: dict[str, DetectorFactory] | None = None,
                 cache: SegmentCache | None = None, caps: DecodeCaps | None = None) -> None:
        self._config = config
        self._caps = caps or DecodeCaps()
        self._cache = cache
        self._factories = detector_factories
        self._verifier_factories = verifier_factories
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
        self._decode_ms = Metrics.distribution(NAMESPACE, "decode_wait_ms")

    def setup(self) -> None:
        use_decode_device(self._config.device)
        self._key = load_key(self._key_file)
        self._policy = VerifiedAnonymization(self._config, self._factories,
                                             self._verifier_factories)
        self._policy.load()

    def teardown(self) -> None:
        policy = getattr(self, "_policy", None)
        if policy is not None:
            policy.close()

    def process(self, segment: Segment):
        rec = segment.recording
        started = time.perf_counter()
        events = []
        try:
            verified = self._policy.run(lambda anonymizer: self._attempt(segment, anonymizer))
            if verified.failed_first is not None:
                events.append(self._first_pass_failed(segment, verified.failed_first))
                self._reredacted.inc()
            files = verified.attempt.builder.stage_files()
        except (DetectorError, MediaError, VerificationFailed) as exc:
            if isinstance(exc, DetectorError):
                reason = "detector_failed"
                self._policy.reset_if_broken()
            elif isinstance(exc, VerificationFailed):
                reason = "verification_failed"
                events.append(self._first_pass_failed(segment, exc.first))
            else:
                reason = exc.reason
            self._failed.inc()
            self._progress.report(segments=1, segments_failed=1)
            yield beam.pvalue.TaggedOutput(DEADLETTER, DeadLetter(
                input_id=rec.input_id or identifiers.input_id(self._key, rec.uri),
                stage="anonymize", reason=reason,
                detail=str(exc).splitlines()[0][:200] if str(exc) else reason,
                recording_id=rec.recording_id, segment_index=segment.index,
                wearer_id=rec.wearer_id))
            for event in events:
                yield beam.pvalue.TaggedOutput(AUDIT, event)
            failed = {"reason": reason}
            if isinstance(exc, VerificationFailed):  # what the stronger pass still found
                failed.update({"pass": "second", **exc.second.to_dict()})
            yield beam.pvalue.TaggedOutput(AUDIT, AuditEvent(
                kind="segment_failed", recording_id=rec.recording_id,
                segment_index=segment.index, counts=failed))
            return
        attempt, status = verified.attempt, verified.qa_status
        counts = dict(attempt.counts, qa_status=status,
                      **{f"verify_{k}": v for k, v in verified.verification.to_dict().items()})
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
                              busy_s=time.perf_counter() - started,
                              decode_s=attempt.decode_s)
        self._decode_ms.update(int(attempt.decode_s * 1000))
        events.append(AuditEvent(kind="segment_anonymized", recording_id=rec.recording_id,
                                 segment_index=segment.index, counts=counts))
        if self._cache is not None:
            self._cache.mark_done(segment, [clip.clip_id for clip in clips], events, files)
        for event in events:
            yield beam.pvalue.TaggedOutput(AUDIT, event)
        for info in files:
            yield beam.pvalue.TaggedOutput(FILES, info)
        yield from clips

    @staticmethod
    def _first_pass_failed(segment: Segment, summary: VerificationSummary) -> AuditEvent:
        return AuditEvent(kind="verification_failed",
                          recording_id=segment.recording.recording_id,
                          segment_index=segment.index,
                          counts={"pass": "first", **summary.to_dict()})

    def _attempt(self, segment: Segment, anonymizer: SegmentAnonymizer) -> _Attempt:
        """Decode, detect, redact and verify one segment; clip files stay in temp files."""
        rec, plan = segment.recording, self._plan
        detect_step = 1 if plan.write_clips else plan.frame_stride
        stats = DecodeStats()
        window = _bounded(iter_instants(rec, segment.start_s,
                                        None if segment.is_last else segment.end_s,
                                        context=anonymizer.context(detect_step) * detect_step,
                                        stats=stats),
                          segment_frame_limit(segment), self._caps.max_duration_s)
        frames = _Clocked(_sampled(window, detect_step))  # decoding and RGB conversion
        rng = np.random.default_rng(self._key.seed(rec.recording_id, rec.view, segment.index))
        builder = _ClipBuilder(self, segment, rec.video.fps or 30.0)
        try:
            # Aria's front SLAM pair is not rectified: the other eye is searched wider.
            for out in anonymizer.process_views(frames, rng,
                                                pairs=rec.stereo_pairs,
                                                rectified=rec.layout != "vrs",
                                                step=detect_step):
                builder.add(out)
            builder.finish()
            if corrupt_share_exceeded(stats.decoded, stats.corrupt,
                                      self._config.max_corrupt_fraction):
                raise MediaError("corrupt_frames", f"{stats.corrupt} of "
                                 f"{stats.decoded + stats.corrupt} frames corrupt")
        except BaseException:
            builder.discard()
            raise
        counts = {"frames_decoded": stats.decoded, "frames_corrupt": stats.corrupt,
                  "frames_emitted": builder.frames_emitted,
                  "faces_detected": builder.detected.get(FACE, 0),
                  "boxes_redacted": sum(builder.redacted.values()),
                  "clips": len(builder.clips),
                  "classes": {name: {"detected": builder.detected.get(name, 0),
                                     "redacted": builder.redacted.get(name, 0),
                                     "frames_detected": builder.ran.get(name, 0),
                                     **({"recovered_cross_view": builder.recovered_by.get(
                                         name, 0)} if len(rec.views) > 1 else {})}
                              for name in builder.redacted}}
        if len(rec.views) > 1:
            counts.update(views=len(rec.views),
                          cross_view_searched=anonymizer.cross_view_counts.searched,
                          cross_view_recovered=builder.recovered)
        return _Attempt(builder, counts, frames.seconds)


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
        self.frames_emitted = self.recovered = 0
        self.detected: Counter = Counter()  # by detection class
        self.redacted: Counter = Counter()
        self.ran: Counter = Counter()  # frames each class's detector ran on (schedules)
        self.recovered_by: Counter = Counter()  # by class: boxes the other eye gave
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
            track.faces += out.detected.get(FACE, 0)
            self.frames_emitted += 1
            self.detected.update(out.detected)
            self.redacted.update(out.redacted)
            self.ran.update(out.ran)
            self.recovered += out.recovered.get(FACE, 0)
            self.recovered_by.update(out.recovered)
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
        pair_id = identifiers.pair_id(rec.recording_id, seg.index, index, self.fn._fingerprint) \
            if self.pairs else None
        groups: list[tuple[str, list[np.ndarray], int, str | None]] = []
        for view, track in self._tracks.items():
            if track.writer is not None:
                track.writer.close()
                self._temp.append((track.writer_path,
                                   identifiers.clip_id(rec.recording_id, view, seg.index,
                                                       index, self.fn._fingerprint),
                                   track.writer.frames))
                track.writer = None
            if track.frames:
                groups.append((view, track.frames, track.faces,
                               pair_id if view in paired else None))
        for view, frames, faces, group_pair in groups:
            real = len(frames)
            frames = frames + [frames[-1]] * (self.plan.frames_per_clip - real)
            self.clips.append(Clip(
                clip_id=identifiers.clip_id(rec.recording_id, view, seg.index, index,
                                            self.fn._fingerprint),
                recording_id=rec.recording_id, wearer_id=rec.wearer_id,
                view=view, segment_index=seg.index, clip_index=index,
                start_s=self._times[0],
                end_s=self._times[-1] + self.plan.frame_stride / self.fps,
                frame_count=real, fps=float(self.fps), frames=np.stack(frames),
                faces_redacted=faces, qa_status="pending",
                device_id=rec.device_id, location_cell=rec.location_cell, pair_id=group_pair,
                input_id=rec.input_id))
        self._index += 1
        self._reset()

    def finish(self) -> None:
        self._close_clip()
        for track in self._tracks.values():  # frames without an encoder frame: drop the file
            if track.writer is not None:
                track.writer.close()
                os.unlink(track.writer_path)
                track.writer = None

    def stage_files(self) -> list[PublishedFile]:
        """Copy the verified segment's clip videos to the staging folder; their entries name
        the place they will be published at (``clips/<clip_id>.mp4``)."""
        files = []
        for temp_path, clip_id, frame_count in self._temp:
            with open(temp_path, "rb") as handle:
                data = handle.read()
            rel = f"clips/{clip_id}.mp4"
            dest = FileSystems.join(self.fn._clips_dir, f"{clip_id}.mp4")
            with FileSystems.create(dest, compression_type=CompressionTypes.UNCOMPRESSED) as out:
                out.write(data)
            files.append(PublishedFile(path=rel, kind="clip",
                                       sha256=hashlib.sha256(data).hexdigest(),
                                       bytes=len(data), rows=frame_count))
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
    """Segments -> ``Anonymized(clips, files, deadletters, audit)``."""

    def __init__(self, fn: AnonymizeSegmentFn) -> None:
        super().__init__()
        self._fn = fn

    def expand(self, segments) -> Anonymized:
        out = segments | "AnonymizeSegment" >> beam.ParDo(self._fn).with_outputs(
            DEADLETTER, AUDIT, FILES, main="clips")
        return Anonymized(clips=out.clips, files=out[FILES], deadletters=out[DEADLETTER],
                          audit=out[AUDIT])
