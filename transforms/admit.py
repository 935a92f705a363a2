"""Admission: the consent gate, content hashing, probing and pseudonymization.

A recording whose wearer has not consented to the run's purpose, or whose wearer
was erased from the output, is counted and never opened; one whose content was
erased is hashed (to know it) and never probed or decoded. An admitted recording
leaves this stage with keyed pseudonyms in place of its raw identifiers
(``privacy.identifiers``); only its ``uri`` (needed to decode) stays raw, and no
stage writes it out. The same content delivered twice is processed once.

The input-format registry (``transforms.media.sources``) says which frame source
reads a request and probes it. Stereo recordings are admitted as one recording with two views: packed in one
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

import apache_beam as beam
from apache_beam.metrics import Metrics

from privacy import identifiers
from privacy.consent import ConsentRegistry
from privacy.metadata_policy import LocationPolicy
from privacy.tombstones import Tombstones
from schemas.elements import Recording
from schemas.records import AuditEvent, DeadLetter
from schemas.sidecar import RecordingRequest
from schemas.stages import AUDIT, DEADLETTER, Admitted
from transforms.media.inputs import DecodeCaps, MediaError, content_sha256
from transforms.media.sources import source_for
from transforms.stores.filesystems import read_file
from transforms.stores.keys import load_key
from transforms.stores.progress import ProgressReporter


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
        self._consent = ConsentRegistry.from_bytes(read_file(self._consent_file)) \
            if self._consent_file else None

    def _erased_event(self, match: str) -> beam.pvalue.TaggedOutput:
        self._erased.inc()
        self._progress.report(recordings=1, recordings_excluded=1)
        return beam.pvalue.TaggedOutput(AUDIT, AuditEvent(
            kind="erasure_excluded", counts={"match": match}))

    def process(self, request: RecordingRequest):
        key = self._key
        ids = identifiers.request_ids(key, request)
        if self._tombstones.match(wearer_id=ids.wearer_id):
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
            sha, size, head = content_sha256(request.uri, self._caps.max_bytes)
            recording_id = identifiers.recording_id(key, sha)
            if self._tombstones.match(recording_id=recording_id):
                yield self._erased_event("recording")
                return
            base = Recording(
                uri=request.uri, content_sha256=sha, recording_id=recording_id,
                wearer_id=ids.wearer_id, device_id=ids.device_id, video=None, size_bytes=size,
                location_cell=self._location.coarsen(request.location), input_id=ids.input_id)
            source = source_for(request, head)
            if not source.recordings:
                raise MediaError("unsupported", f"a {source.name} is not a recording; "
                                                "anonymize it with `egoveil redact`")
            probed = source.probe(request, base, self._caps)
        except MediaError as exc:
            self._rejected.inc()
            self._progress.report(recordings=1, recordings_failed=1)
            yield beam.pvalue.TaggedOutput(DEADLETTER, DeadLetter(
                input_id=ids.input_id, stage="admit", reason=exc.reason, detail=exc.detail))
            return
        self._admitted.inc()
        if probed.event is not None:
            yield beam.pvalue.TaggedOutput(AUDIT, probed.event)
        yield from probed.recordings


def _pick_one(keyed):
    """One recording per content (``privacy.identifiers.choose_duplicate``); the others
    are counted as duplicates."""
    _, recordings = keyed
    first, duplicates = identifiers.choose_duplicate(recordings)
    duration = first.video.duration_s
    counts = {"duration_s": round(duration, 3) if duration else None,
              "fps": round(first.video.fps, 3) if first.video.fps else None}
    if first.layout != "none":
        counts.update(layout=first.layout, views=list(first.views))
    yield beam.pvalue.TaggedOutput(AUDIT, AuditEvent(
        kind="recording_admitted", recording_id=first.recording_id, counts=counts))
    yield first
    for dup in duplicates:
        yield beam.pvalue.TaggedOutput(AUDIT, AuditEvent(
            kind="duplicate_input", recording_id=dup.recording_id))


class AdmitRecordings(beam.PTransform):
    """Requests -> ``Admitted``: consented, probed, deduplicated recordings."""

    def __init__(self, fn: AdmitRecordingFn) -> None:
        super().__init__()
        self._fn = fn

    def expand(self, requests) -> Admitted:
        admitted = requests | "Admit" >> beam.ParDo(self._fn).with_outputs(
            DEADLETTER, AUDIT, main="recordings")
        unique = (admitted.recordings
                  | "ByContent" >> beam.Map(lambda r: (identifiers.content_key(r), r))
                  | "GroupByContent" >> beam.GroupByKey()
                  | "OnePerContent" >> beam.FlatMap(_pick_one).with_outputs(
                      AUDIT, main="recordings"))
        audit = (admitted[AUDIT], unique[AUDIT]) | "AdmitAudit" >> beam.Flatten()
        return Admitted(recordings=unique.recordings, deadletters=admitted[DEADLETTER],
                        audit=audit)
