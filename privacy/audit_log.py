"""The audit log of an output folder, and the one way to append to it (PRIVACY.md 13, 14, 18).

Runs append through ``transforms.publish``; any later operation that changes a
published folder (erasure, re-verification) appends with ``record_operation``:
it adds the operation's events, seals the current file list into the chain, and
rewrites ``manifest.json`` to name the new head. An operation that also rewrote
files (shards without erased rows, say) updates their manifest entries with
``file_entry`` first, so the seal covers the new files::

    manifest = load_manifest(store)
    replace_entry(manifest, file_entry("latents/part-00000.parquet", data, "latents", rows))
    record_operation(store, manifest, op="erase", op_id=erase_id, signer=key.seal_signer(),
                     events=[{"kind": "erasure", "counts": {"rows": 12, "clips": 3}}])

Every seal is signed with the folder owner's audit key (``privacy.audit_seal``), so
only the key holder can close the log over a file list. A log whose chain is
broken is never appended to: that would bury the evidence; nor is one sealed with
another key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import datetime, timezone

from privacy.audit_chain import (
    ChainCheck,
    chain_events,
    check_chain,
    entry_line,
    files_digest,
    make_entry,
)
from privacy.audit_seal import SealKey, SealSigner, seal_signer_key, sign_seal
from privacy.output_store import OutputStore
from schemas.audit import EVENTS_FILE, GENESIS, MANIFEST


class AuditLogBroken(ValueError):
    """The existing log does not verify; the message names the first broken entry."""


class AuditLogForeign(ValueError):
    """The existing log was sealed with another audit key than the one at hand."""


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class AuditLog:
    """An append-only, hash-chained list of audit entries.

    Args:
        entries: entries that already form a valid chain (see ``AuditLog.parse``).
    """

    def __init__(self, entries: list[dict] | None = None) -> None:
        self.entries: list[dict] = list(entries or [])

    @staticmethod
    def parse(data: bytes) -> AuditLog:
        """The log in ``data``.

        Raises:
            AuditLogBroken: the chain does not hold; the message names the first broken entry.
        """
        check: ChainCheck = check_chain(data)
        if not check.ok:
            raise AuditLogBroken(f"{EVENTS_FILE} {check.where()}: {check.problem}")
        return AuditLog(check.entries)

    @staticmethod
    def load(store: OutputStore) -> AuditLog:
        """The output folder's log (empty when the folder has none yet)."""
        return AuditLog.parse(store.read(EVENTS_FILE)) if store.exists(EVENTS_FILE) \
            else AuditLog()

    @property
    def head(self) -> str:
        return self.entries[-1]["hash"] if self.entries else GENESIS

    def __len__(self) -> int:
        return len(self.entries)

    def append(self, kind: str, *, op: str, op_id: str, at: str | None = None,
               recording_id: str | None = None, segment_index: int | None = None,
               counts: dict | None = None) -> dict:
        entry = make_entry(self.head, len(self.entries), at=at or utc_now(), op=op,
                           op_id=op_id, kind=kind, recording_id=recording_id,
                           segment_index=segment_index, counts=counts)
        self.entries.append(entry)
        return entry

    def extend(self, events: Iterable[dict], *, op: str, op_id: str,
               at: str | None = None) -> list[dict]:
        """Append events given as dicts with ``kind`` and optional ``recording_id``,
        ``segment_index`` and ``counts``."""
        new = chain_events(self.head, len(self.entries), events, at=at or utc_now(), op=op,
                           op_id=op_id)
        self.entries.extend(new)
        return new

    def seal(self, signer: SealSigner, *, op: str, op_id: str, at: str | None = None,
             counts: dict) -> dict:
        """Append a ``files_sealed`` entry signed by ``signer``."""
        entry = sign_seal(make_entry(self.head, len(self.entries), at=at or utc_now(), op=op,
                                     op_id=op_id, kind="files_sealed", counts=counts), signer)
        self.entries.append(entry)
        return entry

    def check_sealed_by(self, key: SealKey) -> None:
        """Raises AuditLogForeign unless every seal so far was made with ``key``."""
        for entry in self.entries:
            if entry["kind"] != "files_sealed":
                continue
            signer, problem = seal_signer_key(entry)
            if signer != key:
                raise AuditLogForeign(
                    f"{EVENTS_FILE} line {entry['seq'] + 1} was "
                    + (f"sealed with another audit key ({signer.fingerprint})" if signer
                       else f"not sealed by this key ({problem})"))

    def of_operation(self, op_id: str) -> list[dict]:
        return [e for e in self.entries if e["op_id"] == op_id]

    def to_bytes(self) -> bytes:
        return b"".join(entry_line(e) for e in self.entries)


def file_entry(rel: str, data: bytes, kind: str, rows: int | None) -> dict:
    """A manifest entry for a file whose bytes are at hand."""
    return {"path": rel, "kind": kind, "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data), "rows": rows}


def replace_entry(manifest: dict, entry: dict | None, path: str | None = None) -> None:
    """Put ``entry`` in place of the manifest's entry for the same path (``None`` removes
    ``path``)."""
    target = entry["path"] if entry else path
    manifest["files"] = [f for f in manifest["files"] if f["path"] != target]
    if entry:
        manifest["files"].append(entry)


def load_manifest(store: OutputStore) -> dict:
    return json.loads(store.read(MANIFEST))


def manifest_bytes(manifest: dict) -> bytes:
    return json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"


def seal_and_write(store: OutputStore, manifest: dict, log: AuditLog, *, op: str,
                   op_id: str, signer: SealSigner, at: str | None = None) -> dict:
    """Seal ``manifest``'s file list into ``log``, write the log, then ``manifest.json``.

    The log's own entry is left out of the seal (it cannot hash itself); the
    manifest lists the log with its sha256 and names its head and the audit key
    that signed the seal instead.

    Returns:
        The manifest as written.
    """
    files = sorted((f for f in manifest["files"] if f["path"] != EVENTS_FILE),
                   key=lambda f: f["path"])
    log.seal(signer, op=op, op_id=op_id, at=at,
             counts={"files": len(files), "files_sha256": files_digest(files)})
    data = log.to_bytes()
    store.write(EVENTS_FILE, data)
    files.append(file_entry(EVENTS_FILE, data, "audit_events", len(log)))
    written = dict(manifest, files=sorted(files, key=lambda f: f["path"]),
                   audit={"log": EVENTS_FILE, "head": log.head, "entries": len(log),
                          "audit_key": signer.public.fingerprint})
    store.write(MANIFEST, manifest_bytes(written))
    return written


def record_operation(store: OutputStore, manifest: dict, *, op: str, op_id: str,
                     events: Iterable[dict], signer: SealSigner,
                     at: str | None = None) -> dict:
    """Append an operation's events to a published folder's log and reseal it.

    Args:
        store: the output folder.
        manifest: its manifest, with entries of any file the operation rewrote
            already replaced (``replace_entry``).
        op: what kind of operation (``schemas.audit.OPERATIONS``).
        op_id: this operation's id (16 hex characters, like a run id).
        events: the operation's events (``kind``, ``counts``, optionally
            ``recording_id`` and ``segment_index``); no personal data.
        signer: the folder owner's audit key (``PseudonymKey.seal_signer``).

    Returns:
        The manifest as written.

    Raises:
        AuditLogBroken: the folder's log does not verify; nothing was written.
        AuditLogForeign: the log was sealed with another key; nothing was written.
    """
    log = AuditLog.load(store)
    log.check_sealed_by(signer.public)
    at = at or utc_now()
    log.extend(events, op=op, op_id=op_id, at=at)
    return seal_and_write(store, manifest, log, op=op, op_id=op_id, signer=signer, at=at)
