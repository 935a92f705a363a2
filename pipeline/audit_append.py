"""Appending events to a published output's audit log, outside a run (``egoveil erase``).

Events keep the shape of ``schemas.records.AuditEvent``. The log is plain JSON
Lines for now; when the hash-chained log lands, ``append_events`` is the one
place to point at its append API.

A later run rewrites ``audit/events.jsonl`` with its own events, so erasures are
also appended to ``DIR/erasure/log.jsonl``, which runs never touch: the record
of every erasure outlives the runs after it (GDPR Art. 19 and 30).
"""

from __future__ import annotations

import hashlib
import json

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline.output_files import write_atomically
from schemas.records import AuditEvent
from transforms.publish import EVENTS_FILE

ERASURE_LOG = "erasure/log.jsonl"


def _append(path: str, events: list[AuditEvent]) -> bytes:
    existing = b""
    if FileSystems.exists(path):
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            existing = handle.read()
    if existing and not existing.endswith(b"\n"):
        existing += b"\n"
    data = existing + "".join(json.dumps(e.to_dict(), sort_keys=True) + "\n"
                              for e in events).encode()
    write_atomically(path, data)
    return data


def append_events(output_dir: str, events: list[AuditEvent]) -> dict:
    """Append ``events`` to the audit events and the erasure log.

    Returns:
        The new manifest entry of ``audit/events.jsonl``.
    """
    _append(FileSystems.join(output_dir, ERASURE_LOG), events)
    data = _append(FileSystems.join(output_dir, EVENTS_FILE), events)
    return {"path": EVENTS_FILE, "kind": "audit_events",
            "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
            "rows": data.count(b"\n")}
