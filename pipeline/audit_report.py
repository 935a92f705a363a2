"""``egoveil audit report``: what a published folder's audit trail says, for an auditor.

The report is built from the folder alone (manifest, log, record, dead letters,
shard columns, contract results and redacted clips); it holds counts, pseudonyms,
hashes and redacted thumbnails, never an input, a raw identifier or the key. It
verifies the folder first and says so at the top when anything does not hold.
"""

from __future__ import annotations

import base64
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone

import jinja2

from pipeline import svg_charts
from privacy.audit_chain import check_chain
from privacy.audit_summary import ExportStatus, Outcomes, count_outcomes, export_status
from privacy.audit_verify import VerifyReport, verify_output
from privacy.output_store import OutputStore
from privacy.thumbnails import Thumbnail, redacted_thumbnails
from schemas.audit import DEADLETTER_FILE, EVENTS_FILE, MANIFEST, RECORD_FILE, VALIDATION_JSON

TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")


@dataclass(slots=True)
class Operation:
    """One operation in the log: a run, an erasure, ..."""

    op: str
    op_id: str
    started: str
    entries: int = 0
    kinds: Counter = field(default_factory=Counter)


@dataclass(slots=True)
class AuditReport:
    """Everything the report shows."""

    generated_at: str
    verify: VerifyReport
    manifest: dict
    record: dict
    outcomes: Outcomes
    operations: list[Operation]
    erasures: list[dict]
    qa_status: Counter
    validation: dict | None
    thumbnails: list[Thumbnail]
    clips_published: int
    exports: list[ExportStatus] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return self.manifest.get("run_id") or ""


def _read_json(store: OutputStore, rel: str) -> dict | None:
    try:
        value = json.loads(store.read(rel))
    except Exception:  # noqa: BLE001 - a missing or altered file is shown as absent
        return None
    return value if isinstance(value, dict) else None


def _shard_columns(store: OutputStore, manifest: dict) -> tuple[Counter, dict[str, int]]:
    import pyarrow.parquet as pq

    qa, faces = Counter(), {}
    for entry in manifest.get("files", []):
        if entry.get("kind") != "latents" or not store.exists(entry["path"]):
            continue
        try:
            with store.open(entry["path"]) as handle:
                table = pq.read_table(handle, columns=["clip_id", "faces_redacted", "qa_status"])
        except Exception:  # noqa: BLE001 - verification reports the file; skip it here
            continue
        qa.update(table.column("qa_status").to_pylist())
        faces.update(zip(table.column("clip_id").to_pylist(),
                         table.column("faces_redacted").to_pylist()))
    return qa, faces


def build_report(store: OutputStore, *, thumbnails: int = 12) -> AuditReport:
    """Read and verify the folder in ``store`` and count what the report shows.

    Raises:
        FileNotFoundError: the folder has no ``manifest.json`` (never published).
    """
    if not store.exists(MANIFEST):
        raise FileNotFoundError(MANIFEST)
    verify = verify_output(store)
    manifest = _read_json(store, MANIFEST) or {}
    record = _read_json(store, RECORD_FILE) or {}
    entries = check_chain(store.read(EVENTS_FILE)).entries if store.exists(EVENTS_FILE) else []
    run_id = manifest.get("run_id")
    deadletters = []
    if store.exists(DEADLETTER_FILE):
        deadletters = [json.loads(line) for line in store.read(DEADLETTER_FILE).splitlines()
                       if line.strip()]
    outcomes = count_outcomes([e for e in entries if e["op_id"] == run_id], deadletters)
    operations: dict[str, Operation] = {}
    for entry in entries:
        op = operations.setdefault(entry["op_id"], Operation(entry["op"], entry["op_id"],
                                                             entry["at"]))
        op.entries += 1
        op.kinds[entry["kind"]] += 1
    qa, faces = _shard_columns(store, manifest)
    return AuditReport(
        generated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        verify=verify, manifest=manifest, record=record, outcomes=outcomes,
        operations=list(operations.values()),
        erasures=[e for e in entries if e["kind"] == "erasure"],
        qa_status=qa, validation=_read_json(store, VALIDATION_JSON),
        thumbnails=redacted_thumbnails(store, manifest, faces, limit=thumbnails)
        if thumbnails else [],
        clips_published=sum(1 for f in manifest.get("files", []) if f.get("kind") == "clip"),
        exports=export_status(entries))


def record_classes(record: dict) -> dict[str, dict]:
    """The record's classes (``classes``), or for a record written before detections had
    classes, faces alone as its ``detector`` and ``anonymization`` describe them."""
    if record.get("classes"):
        return record["classes"]
    anonymization = record.get("anonymization") or {}
    return {"face": {"detector": record.get("detector") or {},
                     "redaction": anonymization.get("redaction") or {},
                     "temporal_window": anonymization.get("temporal_window")}}


def _flat(value: object, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(value, dict):
        rows = []
        for key in sorted(value):
            rows.extend(_flat(value[key], f"{prefix}.{key}" if prefix else str(key)))
        return rows
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        rows = []
        for i, item in enumerate(value):
            rows.extend(_flat(item, f"{prefix}[{i}]"))
        return rows
    if isinstance(value, list):
        value = ", ".join(str(v) for v in value)
    return [(prefix, "—" if value is None else str(value))]


def _charts(report: AuditReport) -> dict[str, str]:
    o = report.outcomes
    per_minute = [(r.recording_id[:12], r.faces_per_minute)
                  for r in sorted(o.recordings.values(), key=lambda r: r.recording_id)
                  if r.faces_per_minute is not None]
    labels = {"verified": "verified", "reredacted_verified": "verified after re-redaction",
              "quarantined": "quarantined (dead letter)", "redacted_unverified": "not verified",
              "first_pass_failed": "first pass failed"}
    verification = [(labels.get(k, k), o.verification[k]) for k in labels if o.verification[k]]
    verification += [(k, n) for k, n in sorted(o.verification.items()) if k not in labels]
    consent = [("consented", o.consent_passed, svg_charts.PALETTE[1])]
    consent += [(f"excluded: {reason}", n, svg_charts.PALETTE[3 + i % 3])
                for i, (reason, n) in enumerate(sorted(o.consent_excluded.items()))]
    return {
        "faces_per_minute": svg_charts.bar_chart(
            per_minute, title="Face detections redacted per minute of video", digits=1),
        "verification": svg_charts.bar_chart(
            verification, title="Verification outcomes, segments", color=svg_charts.PALETTE[1]),
        "deadletters": svg_charts.bar_chart(sorted(o.deadletters.items()),
                                            title="Dead letters by reason",
                                            color=svg_charts.PALETTE[3]),
        "consent": svg_charts.stacked_bar(consent, title="Consent coverage"),
    }


def render_html(report: AuditReport) -> str:
    """The report as one self-contained HTML page (inline styles, SVG and JPEG data URIs)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    record = report.record
    classes = record_classes(record)
    models = {
        "Face detector": record.get("detector") or {},
        **{f"{name.capitalize()} detector": cls.get("detector") or {}
           for name, cls in classes.items() if name != "face"},
        "Verification": record.get("verification") or {},
        "Encoder": record.get("encoder") or {},
        "Anonymization": record.get("anonymization") or {},
        "Clips and segments": record.get("clips") or {},
        "Decoding caps": record.get("caps") or {},
    }
    return env.get_template("audit_report.html.j2").render(
        r=report, o=report.outcomes, record=record, classes=classes, charts=_charts(report),
        models={name: _flat(value) for name, value in models.items()},
        thumbs=[(t, base64.b64encode(t.jpeg).decode()) for t in report.thumbnails])


def render_text(report: AuditReport) -> str:
    """A few lines for the console."""
    o, v = report.outcomes, report.verify
    lines = [
        f"run {report.run_id} (purpose {report.record.get('purpose')}, key id "
        f"{report.record.get('key_id')}), published {report.record.get('published_at')}",
        "integrity: " + ("verified" if v.ok else f"FAILED: {v.findings[0]}")
        + f" ({v.entries} log entries, {v.files_checked} files checked, head {v.head})",
        "data contract: " + (("passed" if report.validation.get("success") else "FAILED")
                             + f" ({report.validation.get('expectations')} expectations)"
                             if report.validation else "no results"),
        f"recordings: {o.seen} seen, {o.admitted} admitted, "
        f"{sum(o.consent_excluded.values())} excluded for consent, {o.duplicates} duplicate, "
        f"{o.rejected_at_admission} rejected",
        f"video anonymized: {o.anonymized_minutes:.2f} min, "
        f"{int(o.total('faces_detected'))} face detections redacted"
        + (f" ({o.faces_per_minute:.1f} per minute)" if o.faces_per_minute is not None else ""),
        "detections by class: " + (", ".join(f"{k} {n}" for k, n in o.by_class(
            "detected_by_class").items()) or "none"),
        "verification failures by class: " + (", ".join(
            f"{k} {n}" for k, n in sorted(o.verification_failed_by_class.items())) or "none"),
        "dead letters: " + (", ".join(f"{k} {n}" for k, n in sorted(o.deadletters.items()))
                            or "none"),
        "verification: segments " + (", ".join(f"{k} {n}" for k, n in sorted(
            o.verification.items())) or "none") + "; rows " + (", ".join(
                f"{k} {n}" for k, n in sorted(report.qa_status.items())) or "none"),
        f"erasures: {len(report.erasures)}",
        f"exports: {len(report.exports)}" + "".join(
            f"; {e.export_id} ({e.format}, {e.rows} rows): " + (
                "in sync" if e.in_sync else f"OUT OF SYNC, {e.erasures_since} erasure(s) "
                "since: run `egoveil export DIR --sync DEST`") for e in report.exports),
    ]
    return "\n".join(lines)
