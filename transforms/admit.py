"""Admission: the consent gate, content hashing, probing and pseudonymization.

A recording whose wearer has not consented to the run's purpose, or whose wearer
was erased from the output, is counted and never opened; one whose content was
erased is hashed (to know it) and never probed or decoded. An admitted recording
leaves this stage with keyed pseudonyms in place of its raw identifiers; only
its ``uri`` (needed to decode) stays raw, and no stage writes it out. The same content delivered twice is processed once.

Stereo recordings are admitted as one recording with two views: packed in one
frame (``sbs``, ``tb``), as two video streams (``streams``), or as two files
(``pair_uri``, admitted together: both hashed and probed, ``recording_id`` from
the left file). A Project Aria VRS file becomes one recording per group of
allow-listed cameras (``privacy.aria_streams``): the RGB camera, and the SLAM
cameras, whose front pair is a stereo pair; a ``vrs_streams`` event says which
streams were read and which dropped.

Metrics (namespace ``egoveil``): ``recordings_admitted``, ``recordings_rejected``,
``recordings_without_consent``, ``recordings_erased``, ``recordings_duplicate``.
"""

from __future__ import annotations

import dataclasses
import hashlib

import apache_beam as beam
from apache_beam.metrics import Metrics

from privacy.consent import ConsentRegistry
from privacy.metadata_policy import LocationPolicy
from privacy.tombstones import Tombstones
from schemas.elements import Recording, VideoInfo
from schemas.records import AuditEvent, DeadLetter
from schemas.sidecar import RecordingRequest
from transforms.media.video import DecodeCaps, MediaError, open_binary, probe
from transforms.media.vrs import VRS_EXTENSIONS, VrsFile, is_vrs
from transforms.stores.keys import load_key
from transforms.stores.progress import ProgressReporter

DEADLETTER = "deadletter"
AUDIT = "audit"


def _looks_like_vrs(uri: str) -> bool:
    if uri.lower().endswith(VRS_EXTENSIONS):
        return True
    with open_binary(uri) as handle:
        return is_vrs(handle.read(8))


def _same_geometry(a: VideoInfo, b: VideoInfo) -> None:
    if (a.width, a.height) != (b.width, b.height):
        raise MediaError("unsupported", "the two views differ in size "
                                        f"({a.width}x{a.height} and {b.width}x{b.height})")
    if a.fps and b.fps and abs(a.fps - b.fps) > 0.01 * a.fps:
        raise MediaError("unsupported", "the two views differ in frame rate")


def probe_stereo(request: RecordingRequest, caps: DecodeCaps) -> VideoInfo:
    """Probe a recording's views and return one view's geometry (both are the same).

    Raises:
        MediaError: unreadable, or views of different sizes or rates.
    """
    info = probe(request.uri, caps)
    if request.pair_uri:
        _same_geometry(info, probe(request.pair_uri, caps))
    elif request.stereo == "streams":
        _same_geometry(info, probe(request.uri, caps, stream_index=1))
    elif request.stereo == "sbs":
        info = dataclasses.replace(info, width=info.width // 2)
    elif request.stereo == "tb":
        info = dataclasses.replace(info, height=info.height // 2)
    return info


def content_sha256(uri: str, max_bytes: int) -> tuple[str, int]:
    """The sha256 and size of a file's bytes, read in blocks.

    Raises:
        MediaError: unreadable, or larger than ``max_bytes``.
    """
    digest = hashlib.sha256()
    size = 0
    with open_binary(uri) as handle:
        while True:
            try:
                block = handle.read(1 << 22)
            except OSError as exc:
                raise MediaError("unreadable", f"read failed ({type(exc).__name__})") from None
            if not block:
                break
            size += len(block)
            if size > max_bytes:
                raise MediaError("too_large", f"file is above the cap of {max_bytes} bytes")
            digest.update(block)
    if size == 0:
        raise MediaError("unreadable", "empty file")
    return digest.hexdigest(), size


class AdmitRecordingFn(beam.DoFn):
    """``RecordingRequest`` -> ``Recording``; dead letters and audit events tagged.

    Args:
        tombstones: what was erased from the output (pseudonyms only; the launcher
            read them and checked that they were made with this run's key).
        location: how much of a manifest location survives (default: none of it).
    """

    def __init__(self, key_file: str | None, consent_file: str | None, purpose: str,
                 caps: DecodeCaps, progress: ProgressReporter | None = None,
                 tombstones: Tombstones | None = None,
                 location: LocationPolicy | None = None) -> None:
        self._key_file = key_file
        self._consent_file = consent_file
        self._purpose = purpose
        self._caps = caps
        self._progress = progress or ProgressReporter(None)
        self._tombstones = tombstones or Tombstones()
        self._location = location or LocationPolicy()
        self._admitted = Metrics.counter("egoveil", "recordings_admitted")
        self._rejected = Metrics.counter("egoveil", "recordings_rejected")
        self._no_consent = Metrics.counter("egoveil", "recordings_without_consent")
        self._erased = Metrics.counter("egoveil", "recordings_erased")

    def setup(self) -> None:
        self._key = load_key(self._key_file)
        self._tombstones.check_key(self._key.key_id)
        self._consent = ConsentRegistry.load(self._consent_file) if self._consent_file else None

    def _erased_event(self, match: str) -> beam.pvalue.TaggedOutput:
        self._erased.inc()
        self._progress.report(recordings=1, recordings_excluded=1)
        return beam.pvalue.TaggedOutput(AUDIT, AuditEvent(
            kind="erasure_excluded", counts={"match": match}))

    def process(self, request: RecordingRequest):
        key = self._key
        input_id = key.pseudonym("input", request.uri)
        wearer_id = key.pseudonym("wearer", request.wearer_id) if request.wearer_id else None
        if self._tombstones.match(wearer_id=wearer_id):
            yield self._erased_event("wearer")
            return
        if self._consent is not None:
            reason = self._consent.decide(request.wearer_id, self._purpose,
                                          request.capture_start)
            if reason is not None:
                self._no_consent.inc()
                self._progress.report(recordings=1, recordings_excluded=1)
                yield beam.pvalue.TaggedOutput(AUDIT, AuditEvent(
                    kind="consent_excluded", counts={"reason": reason}))
                return
        try:
            sha, size = content_sha256(request.uri, self._caps.max_bytes)
            recording_id = key.pseudonym("recording", sha)
            if self._tombstones.match(recording_id=recording_id):
                yield self._erased_event("recording")
                return
            base = Recording(
                uri=request.uri, content_sha256=sha, recording_id=recording_id,
                wearer_id=wearer_id, device_id=key.pseudonym("device", request.device_serial)
                if request.device_serial else None, video=None, size_bytes=size,
                location_cell=self._location.coarsen(request.location))
            if _looks_like_vrs(request.uri):
                recordings, event = self._vrs(request, base)
            else:
                recordings, event = [self._video(request, base)], None
        except MediaError as exc:
            self._rejected.inc()
            self._progress.report(recordings=1, recordings_failed=1)
            yield beam.pvalue.TaggedOutput(DEADLETTER, DeadLetter(
                input_id=input_id, stage="admit", reason=exc.reason, detail=exc.detail))
            return
        self._admitted.inc()
        if event is not None:
            yield beam.pvalue.TaggedOutput(AUDIT, event)
        yield from recordings

    def _video(self, request: RecordingRequest, base: Recording) -> Recording:
        if not request.pair_uri:
            return dataclasses.replace(base, video=probe_stereo(request, self._caps),
                                       layout=request.stereo)
        pair_sha, pair_size = content_sha256(request.pair_uri, self._caps.max_bytes)
        return dataclasses.replace(base, video=probe_stereo(request, self._caps), layout="pair",
                                   pair_uri=request.pair_uri, pair_sha256=pair_sha,
                                   size_bytes=base.size_bytes + pair_size)

    def _vrs(self, request: RecordingRequest,
             base: Recording) -> tuple[list[Recording], AuditEvent]:
        if request.stereo != "none" or request.pair_uri:
            raise MediaError("unsupported", "a VRS recording's views come from its camera "
                                            "streams; drop 'stereo' and 'pair_uri'")
        with VrsFile(request.uri) as vrs:
            selection = vrs.selection
            if not selection.groups:
                raise MediaError("no_video", "the VRS file has no allow-listed camera stream")
            recordings = [dataclasses.replace(
                base, video=vrs.probe(group.streams, self._caps).info, layout="vrs",
                view=group.views[0], streams=group.streams, stream_views=group.views)
                for group in selection.groups]
        return recordings, AuditEvent(kind="vrs_streams", recording_id=base.recording_id,
                                      counts=selection.describe())


def _content_key(r: Recording) -> tuple:
    """What makes two recordings the same: content, and which views of it are taken."""
    return (r.content_sha256, r.layout, r.pair_sha256, r.streams)


def _pick_one(keyed):
    """One recording per content hash; the others are counted as duplicates."""
    _, recordings = keyed
    ordered = sorted(recordings, key=lambda r: (r.wearer_id is None, r.recording_id, r.uri))
    first = ordered[0]
    duration = first.video.duration_s
    counts = {"duration_s": round(duration, 3) if duration else None,
              "fps": round(first.video.fps, 3) if first.video.fps else None}
    if first.layout != "none":
        counts.update(layout=first.layout, views=list(first.views))
    yield beam.pvalue.TaggedOutput(AUDIT, AuditEvent(
        kind="recording_admitted", recording_id=first.recording_id, counts=counts))
    yield first
    for dup in ordered[1:]:
        yield beam.pvalue.TaggedOutput(AUDIT, AuditEvent(
            kind="duplicate_input", recording_id=dup.recording_id))


class AdmitRecordings(beam.PTransform):
    """Requests -> admitted, deduplicated recordings, with ``deadletter`` and ``audit``."""

    def __init__(self, fn: AdmitRecordingFn) -> None:
        super().__init__()
        self._fn = fn

    def expand(self, requests):
        admitted = requests | "Admit" >> beam.ParDo(self._fn).with_outputs(
            DEADLETTER, AUDIT, main="recordings")
        unique = (admitted.recordings
                  | "ByContent" >> beam.Map(lambda r: (_content_key(r), r))
                  | "GroupByContent" >> beam.GroupByKey()
                  | "OnePerContent" >> beam.FlatMap(_pick_one).with_outputs(
                      AUDIT, main="recordings"))
        audit = (admitted[AUDIT], unique[AUDIT]) | "AdmitAudit" >> beam.Flatten()
        return {"recordings": unique.recordings, DEADLETTER: admitted[DEADLETTER], AUDIT: audit}
