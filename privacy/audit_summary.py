"""Counting what a run did from its events and dead letters: the outcomes of the record of
processing, and the figures of the audit report. Plain counts, no personal data."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

ADMISSION_STAGES = ("discover", "admit")  # dead letters of a recording, not of a segment


@dataclass(slots=True)
class RecordingFigures:
    """One recording, by pseudonym."""

    recording_id: str
    duration_s: float | None = None
    segments_ok: int = 0
    segments_failed: int = 0
    frames_decoded: int = 0
    faces_detected: int = 0
    boxes_redacted: int = 0
    detected_by_class: Counter = field(default_factory=Counter)
    redacted_by_class: Counter = field(default_factory=Counter)
    frames_detected_by_class: Counter = field(default_factory=Counter)

    @property
    def anonymized_s(self) -> float | None:
        """Seconds of video whose segments were all redacted; segments are of equal length
        but for the last, so a share of segments is a share of the duration."""
        segments = self.segments_ok + self.segments_failed
        if self.duration_s is None or not segments:
            return None
        return self.duration_s * self.segments_ok / segments

    @property
    def faces_per_minute(self) -> float | None:
        seconds = self.anonymized_s
        return self.faces_detected / (seconds / 60) if seconds else None


@dataclass(slots=True)
class Outcomes:
    """What a set of events says happened."""

    recordings: dict[str, RecordingFigures] = field(default_factory=dict)
    consent_excluded: Counter = field(default_factory=Counter)
    duplicates: int = 0
    erased_skipped: Counter = field(default_factory=Counter)
    rejected_by_stage: Counter = field(default_factory=Counter)
    deadletters: Counter = field(default_factory=Counter)
    segment_failures: Counter = field(default_factory=Counter)
    verification: Counter = field(default_factory=Counter)
    verification_checks: Counter = field(default_factory=Counter)
    # Verification passes (first passes redone, second passes quarantined) that failed on
    # each class: faces found or linkable, plates or text regions found.
    verification_failed_by_class: Counter = field(default_factory=Counter)
    erasures: list[dict] = field(default_factory=list)
    other_kinds: Counter = field(default_factory=Counter)

    def recording(self, recording_id: str) -> RecordingFigures:
        if recording_id not in self.recordings:
            self.recordings[recording_id] = RecordingFigures(recording_id)
        return self.recordings[recording_id]

    @property
    def admitted(self) -> int:
        return sum(1 for r in self.recordings.values() if r.duration_s is not None
                   or r.segments_ok or r.segments_failed)

    @property
    def rejected_at_admission(self) -> int:
        return sum(self.rejected_by_stage.values())

    @property
    def consent_passed(self) -> int:
        """Recordings that passed the consent gate (rejected afterwards or not)."""
        return self.admitted + self.duplicates + self.rejected_by_stage["admit"]

    @property
    def seen(self) -> int:
        return (self.admitted + sum(self.consent_excluded.values()) + self.duplicates
                + self.rejected_at_admission + sum(self.erased_skipped.values()))

    def total(self, name: str) -> float:
        return sum(getattr(r, name) or 0 for r in self.recordings.values())

    def by_class(self, name: str) -> dict[str, int]:
        """``detected_by_class``, ``redacted_by_class`` or ``frames_detected_by_class``
        summed over recordings."""
        total: Counter = Counter()
        for rec in self.recordings.values():
            total.update(getattr(rec, name))
        return dict(sorted(total.items()))

    @property
    def anonymized_minutes(self) -> float:
        return self.total("anonymized_s") / 60

    @property
    def faces_per_minute(self) -> float | None:
        minutes = self.anonymized_minutes
        return self.total("faces_detected") / minutes if minutes else None

    @property
    def consent_coverage(self) -> float | None:
        """Share of the recordings that reached the consent gate that passed it."""
        checked = self.consent_passed + sum(self.consent_excluded.values())
        return self.consent_passed / checked if checked else None

    def to_record(self) -> dict:
        """The ``outcomes`` block of the record of processing."""
        return {
            "recordings_seen": self.seen,
            "recordings_admitted": self.admitted,
            "recordings_consent_excluded": sum(self.consent_excluded.values()),
            "consent_excluded_by_reason": dict(sorted(self.consent_excluded.items())),
            "recordings_duplicate": self.duplicates,
            "recordings_erased_skipped": sum(self.erased_skipped.values()),
            "recordings_rejected": self.rejected_at_admission,
            "segments_anonymized": int(self.total("segments_ok")),
            "segments_failed": int(self.total("segments_failed")),
            "frames_decoded": int(self.total("frames_decoded")),
            "faces_detected": int(self.total("faces_detected")),
            "boxes_redacted": int(self.total("boxes_redacted")),
            "detections_by_class": self.by_class("detected_by_class"),
            "boxes_redacted_by_class": self.by_class("redacted_by_class"),
            "frames_detected_by_class": self.by_class("frames_detected_by_class"),
            "video_seconds_admitted": round(self.total("duration_s"), 3),
            "video_seconds_anonymized": round(self.total("anonymized_s"), 3),
            "deadletters_by_reason": dict(sorted(self.deadletters.items())),
            "segments_by_verification": dict(sorted(self.verification.items())),
            "verification_checks": dict(sorted(self.verification_checks.items())),
            "verification_failed_by_class": dict(sorted(
                self.verification_failed_by_class.items())),
        }


def failed_classes(checks: dict) -> list[str]:
    """The classes a verification pass's counts (``VerificationSummary.to_dict``) failed on:
    ``face`` for faces found or linkable, each other class for regions found."""
    failed = ["face"] if checks.get("output_faces") or checks.get("linkable_faces") else []
    failed += sorted(key[len("output_"):] for key, value in checks.items()
                     if key.startswith("output_") and key != "output_faces"
                     and isinstance(value, int) and value)
    return failed


def count_outcomes(events: Iterable[dict], deadletters: Iterable[dict] = ()) -> Outcomes:
    """Outcomes of ``events`` (log entries or ``AuditEvent.to_dict()``s) and dead letters.

    Dead letters are counted from ``deadletters`` when given, else from the
    log's ``deadletter`` entries, never from both.
    """
    out = Outcomes()
    deadletters = list(deadletters)
    logged_deadletters = []
    for event in events:
        kind, counts = event["kind"], event.get("counts") or {}
        rec_id = event.get("recording_id")
        if kind == "recording_admitted" and rec_id:
            out.recording(rec_id).duration_s = counts.get("duration_s")
        elif kind == "segment_anonymized" and rec_id:
            fig = out.recording(rec_id)
            fig.segments_ok += 1
            fig.frames_decoded += counts.get("frames_decoded", 0)
            fig.faces_detected += counts.get("faces_detected", 0)
            fig.boxes_redacted += counts.get("boxes_redacted", 0)
            # Logs written before detections had classes hold faces only.
            classes = counts.get("classes") or {"face": {
                "detected": counts.get("faces_detected", 0),
                "redacted": counts.get("boxes_redacted", 0)}}
            for name, figures in classes.items():
                fig.detected_by_class[name] += figures.get("detected", 0)
                fig.redacted_by_class[name] += figures.get("redacted", 0)
                if "frames_detected" in figures:
                    fig.frames_detected_by_class[name] += figures["frames_detected"]
            if counts.get("qa_status"):
                out.verification[counts["qa_status"]] += 1
            for key, value in counts.items():
                if key.startswith("verify_") and isinstance(value, int) \
                        and not isinstance(value, bool):
                    out.verification_checks[key[len("verify_"):]] += value
        elif kind == "segment_failed":
            if rec_id:
                out.recording(rec_id).segments_failed += 1
            out.segment_failures[counts.get("reason", "unknown")] += 1
            if counts.get("reason") == "verification_failed":
                out.verification["quarantined"] += 1
                out.verification_failed_by_class.update(failed_classes(counts))
        elif kind == "consent_excluded":
            out.consent_excluded[counts.get("reason", "unknown")] += 1
        elif kind == "duplicate_input":
            out.duplicates += 1
        elif kind == "erasure_excluded":
            out.erased_skipped[counts.get("match", "unknown")] += 1
        elif kind == "verification_failed":
            out.verification["first_pass_failed"] += 1
            out.verification_failed_by_class.update(failed_classes(counts))
        elif kind == "erasure":
            out.erasures.append(event)
        elif kind == "deadletter":
            logged_deadletters.append(counts)
        elif kind not in ("run_record", "contract_validated", "files_sealed"):
            out.other_kinds[kind] += 1
    for letter in deadletters or logged_deadletters:
        out.deadletters[letter.get("reason", "unknown")] += 1
        if letter.get("stage") in ADMISSION_STAGES:
            out.rejected_by_stage[letter["stage"]] += 1
    return out


@dataclass(slots=True)
class ExportStatus:
    """One export of a folder, as its log tells it, and whether erasures reached it since."""

    export_id: str
    format: str
    at: str
    rows: int
    last_sync: str | None = None
    erasures_since: int = 0

    @property
    def in_sync(self) -> bool:
        """No erasure was recorded after the export or its last sync."""
        return self.erasures_since == 0


def export_status(entries: Iterable[dict]) -> list[ExportStatus]:
    """Every export the log records, oldest first, with the erasures made since each
    was written or last synced (``egoveil export DIR --sync DEST`` catches up)."""
    exports: dict[str, ExportStatus] = {}
    for entry in entries:
        kind, counts = entry["kind"], entry.get("counts") or {}
        if kind == "export":
            exports[counts.get("export_id", entry["op_id"])] = ExportStatus(
                counts.get("export_id", entry["op_id"]), counts.get("format", "unknown"),
                entry["at"], counts.get("rows", 0))
        elif kind == "export_synced" and counts.get("export_id") in exports:
            status = exports[counts["export_id"]]
            status.last_sync, status.erasures_since = entry["at"], 0
            status.rows = counts.get("rows", status.rows)
        elif kind == "erasure":
            for status in exports.values():
                status.erasures_since += 1
    return list(exports.values())
