"""Appending an operation's events to a published output's audit log (``egoveil erase``).

The log is the hash-chained one of ``privacy.audit_log``: the events are chained
onto it, the new file list is sealed into it, and ``manifest.json`` is rewritten
to name the new head. Runs append to the same log, so every erasure stays on
record after the runs that follow it (GDPR Art. 19 and 30).
"""

from __future__ import annotations

from pipeline.errors import UserError
from privacy.audit_log import AuditLog, AuditLogBroken, AuditLogForeign, record_operation
from privacy.audit_seal import SealSigner
from schemas.records import AuditEvent
from transforms.stores.filesystems import FileSystemsStore


def check_log(output_dir: str, signer: SealSigner | None = None) -> None:
    """Refuse to touch an output whose audit log does not verify, or that ``signer``
    did not seal.

    Raises:
        UserError: the log is broken (the message names the first broken entry), or
            sealed with another key.
    """
    try:
        log = AuditLog.load(FileSystemsStore(output_dir))
        if signer is not None:
            log.check_sealed_by(signer.public)
    except AuditLogBroken as exc:
        raise UserError(f"DIR holds an audit log that does not verify ({exc}); nothing was "
                        "changed") from None
    except AuditLogForeign as exc:
        raise UserError(f"DIR holds an audit log that this key did not seal ({exc}); nothing "
                        "was changed") from None


def append_and_reseal(output_dir: str, manifest: dict, *, op: str, op_id: str,
                      events: list[AuditEvent], signer: SealSigner) -> dict:
    """Chain ``events`` onto the log, seal ``manifest``'s file list, write log and manifest.

    Args:
        output_dir: the published output.
        manifest: the manifest to publish, its file list already holding every file the
            operation rewrote (the log's own entry is replaced).
        op: the operation (``erase``).
        op_id: its id, 16 hex characters.
        events: what it did; no personal data.
        signer: the folder owner's audit key, which signs the new seal.

    Returns:
        The manifest as written.
    """
    try:
        return record_operation(FileSystemsStore(output_dir), manifest, op=op, op_id=op_id,
                                events=[e.to_dict() for e in events], signer=signer)
    except (AuditLogBroken, AuditLogForeign) as exc:
        raise UserError(f"DIR holds an audit log that does not verify ({exc}); the erasure's "
                        "new files are written but not published: restore the log and erase "
                        "again") from None
