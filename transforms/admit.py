"""Admission: the consent gate, content hashing, probing and pseudonymization.

A recording whose wearer has not consented to the run's purpose is counted and
never opened. An admitted recording leaves this stage with keyed pseudonyms in
place of its raw identifiers; only its ``uri`` (needed to decode) stays raw, and
no stage writes it out. The same content delivered twice is processed once.

Metrics (namespace ``egoveil``): ``recordings_admitted``, ``recordings_rejected``,
``recordings_without_consent``, ``recordings_duplicate``.
"""

from __future__ import annotations

import hashlib

import apache_beam as beam
from apache_beam.metrics import Metrics

from privacy.consent import ConsentRegistry
from privacy.pseudonyms import PseudonymKey
from schemas.elements import Recording
from schemas.records import AuditEvent, DeadLetter
from schemas.sidecar import RecordingRequest
from transforms.progress import ProgressReporter
from transforms.video_io import DecodeCaps, MediaError, open_binary, probe

DEADLETTER = "deadletter"
AUDIT = "audit"


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
    """``RecordingRequest`` -> ``Recording``; dead letters and audit events tagged."""

    def __init__(self, key_file: str | None, consent_file: str | None, purpose: str,
                 caps: DecodeCaps, progress: ProgressReporter | None = None) -> None:
        self._key_file = key_file
        self._consent_file = consent_file
        self._purpose = purpose
        self._caps = caps
        self._progress = progress or ProgressReporter(None)
        self._admitted = Metrics.counter("egoveil", "recordings_admitted")
        self._rejected = Metrics.counter("egoveil", "recordings_rejected")
        self._no_consent = Metrics.counter("egoveil", "recordings_without_consent")

    def setup(self) -> None:
        self._key = PseudonymKey.load(self._key_file)
        self._consent = ConsentRegistry.load(self._consent_file) if self._consent_file else None

    def process(self, request: RecordingRequest):
        key = self._key
        input_id = key.pseudonym("input", request.uri)
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
            info = probe(request.uri, self._caps)
        except MediaError as exc:
            self._rejected.inc()
            self._progress.report(recordings=1, recordings_failed=1)
            yield beam.pvalue.TaggedOutput(DEADLETTER, DeadLetter(
                input_id=input_id, stage="admit", reason=exc.reason, detail=exc.detail))
            return
        self._admitted.inc()
        yield Recording(
            uri=request.uri, content_sha256=sha,
            recording_id=key.pseudonym("recording", sha),
            wearer_id=key.pseudonym("wearer", request.wearer_id) if request.wearer_id else None,
            device_id=key.pseudonym("device", request.device_serial)
            if request.device_serial else None,
            video=info, size_bytes=size)


def _pick_one(keyed):
    """One recording per content hash; the others are counted as duplicates."""
    _, recordings = keyed
    ordered = sorted(recordings, key=lambda r: (r.wearer_id is None, r.recording_id, r.uri))
    first = ordered[0]
    duration = first.video.duration_s
    yield beam.pvalue.TaggedOutput(AUDIT, AuditEvent(
        kind="recording_admitted", recording_id=first.recording_id,
        counts={"duration_s": round(duration, 3) if duration else None,
                "fps": round(first.video.fps, 3) if first.video.fps else None}))
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
                  | "ByContent" >> beam.Map(lambda r: (r.content_sha256, r))
                  | "GroupByContent" >> beam.GroupByKey()
                  | "OnePerContent" >> beam.FlatMap(_pick_one).with_outputs(
                      AUDIT, main="recordings"))
        audit = (admitted[AUDIT], unique[AUDIT]) | "AdmitAudit" >> beam.Flatten()
        return {"recordings": unique.recordings, DEADLETTER: admitted[DEADLETTER], AUDIT: audit}
