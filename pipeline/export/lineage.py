"""An export's lineage (``DEST/egoveil-export.json``) and ``egoveil export DIR --sync DEST``.

The lineage names the source by what can be checked, never by a path: its run
id, key id, manifest ``content_sha256``, the log head that was verified before
reading, and the hash of the log entry that recorded the export. It lists every
file with its sha256 and, per row, the clip id and two salted erasure tags
(``privacy.export_policy``), so that erasure follows the data:

After ``egoveil erase DIR ...``, ``egoveil export DIR --sync DEST`` finds the
exported rows of every wearer and recording the source has tombstoned, rewrites
only the files holding them (each replaced in one rename), updates the card and
the lineage, and records an ``export_synced`` event in the source's log. While a
sync runs, the lineage names the files' new hashes under ``pending``, so a sync
that was cut short is finished by running it again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone

from pipeline.errors import UserError
from pipeline.export.files import HashingSink, created, file_sha256, open_read
from pipeline.output_files import UnsafePath, confined
from privacy.audit_log import AuditLogBroken, AuditLogForeign, load_manifest, record_operation
from privacy.audit_summary import export_status
from privacy.export_card import erasures
from privacy.export_policy import rows_reached
from transforms.discover import normalize_uri
from transforms.stores.filesystems import FileSystemsStore

log = logging.getLogger("egoveil")

EXPORT_FILE = "egoveil-export.json"
CARD_FILE = "README.md"
FORMAT = "egoveil-export"
VERSION = 1
FORMATS = ("webdataset", "hf")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _digest(values) -> str:
    return hashlib.sha256("\n".join(values).encode()).hexdigest()


@dataclass(slots=True)
class Lineage:
    """The content of ``egoveil-export.json``."""

    export_id: str
    to: str
    created_at: str
    source: dict
    selection: dict
    layout: dict
    columns: list
    salt: str
    splits: dict
    files: list
    erasures_applied: list = field(default_factory=list)
    syncs: list = field(default_factory=list)
    pending: dict | None = None

    @property
    def rows(self) -> int:
        return sum(f["rows"] for f in self.files)

    def clip_ids(self) -> list[str]:
        return [s["clip_id"] for f in self.files for s in f["samples"]]

    def files_sha256(self) -> str:
        return _digest(f"{f['path']} {f['sha256']}" for f in self.files)

    @staticmethod
    def new(cfg, files: list[dict]) -> Lineage:
        splits = {}
        for name, stats in cfg.splits.items():
            mine = [f for f in files if f["split"] == name]
            splits[name] = {"rows": sum(f["rows"] for f in mine), "files": len(mine),
                            "bytes": sum(f["bytes"] for f in mine),
                            "arrow_bytes": sum(f.get("arrow_bytes", 0) for f in mine),
                            "identities": stats["identities"]}
        return Lineage(
            export_id=cfg.export_id, to=cfg.to, created_at=_now(),
            source={"run_id": None, "key_id": None, "content_sha256": None,
                    "audit_head": cfg.verified_head, "audit_entry": None},
            selection=cfg.request, layout=cfg.layout, columns=list(cfg.columns),
            salt=cfg.salt, splits=splits,
            files=[{k: f[k] for k in ("path", "split", "rows", "bytes", "sha256",
                                      "arrow_bytes", "samples")} for f in files])

    def to_bytes(self) -> bytes:
        body = {"format": FORMAT, "version": VERSION, "export_id": self.export_id,
                "to": self.to, "created_at": self.created_at, "source": self.source,
                "selection": self.selection, "layout": self.layout, "columns": self.columns,
                "salt": self.salt, "splits": self.splits, "rows": self.rows,
                "erasures_applied": self.erasures_applied, "syncs": self.syncs,
                "pending": self.pending, "files": self.files}
        return json.dumps(body, indent=1, sort_keys=True).encode() + b"\n"

    @staticmethod
    def parse(data: bytes) -> Lineage:
        body = json.loads(data)
        if body.get("format") != FORMAT or body.get("version") != VERSION:
            raise ValueError("not an egoveil export lineage")
        return Lineage(**{k: body[k] for k in (
            "export_id", "to", "created_at", "source", "selection", "layout", "columns",
            "salt", "splits", "files", "erasures_applied", "syncs", "pending")})


def record_in_source(source, lineage: Lineage, signer) -> str:
    """Append the export's event to the source's log and reseal it; returns the event's hash.

    Raises:
        UserError: the log no longer verifies.
    """
    lineage.source.update(run_id=source.manifest.get("run_id"),
                          key_id=source.record.get("key_id"),
                          content_sha256=source.content_sha256,
                          record_sha256=_record_sha256(source))
    lineage.erasures_applied = [e["erasure_id"] for e in erasures(source.entries)]
    counts = {"export_id": lineage.export_id, "format": lineage.to, "rows": lineage.rows,
              "files": len(lineage.files), "bytes": sum(f["bytes"] for f in lineage.files),
              "splits": {name: s["rows"] for name, s in lineage.splits.items()},
              "rows_sha256": _digest(sorted(lineage.clip_ids())),
              "files_sha256": lineage.files_sha256(),
              "content_sha256": source.content_sha256}
    return _record(source, "export", lineage.export_id, counts, signer)


def _record_sha256(source) -> str:
    return hashlib.sha256(source.store.read("audit/record.json")).hexdigest()


def _record(source, kind: str, op_id: str, counts: dict, signer) -> str:
    store = FileSystemsStore(source.uri)
    try:
        record_operation(store, load_manifest(store), op="export", op_id=op_id,
                         events=[{"kind": kind, "counts": counts}], signer=signer)
    except (AuditLogBroken, AuditLogForeign) as exc:
        raise UserError(f"DIR holds an audit log that does not verify ({exc}); nothing was "
                        "recorded") from None
    from privacy.audit_log import AuditLog

    entries = AuditLog.load(store).of_operation(op_id)
    return next(e["hash"] for e in entries if e["kind"] == kind)


def _head(uri: str) -> str:
    from privacy.audit_log import AuditLog

    return AuditLog.load(FileSystemsStore(uri)).head


def write_card_and_lineage(dest: str, source, lineage: Lineage) -> None:
    """The card first, the lineage last: a folder with a lineage is a finished export."""
    from pipeline.export.card import render_card

    store = FileSystemsStore(dest)
    store.write(CARD_FILE, render_card(source, lineage).encode())
    store.write(EXPORT_FILE, lineage.to_bytes())


# ------------------------------------------------------------------------------- sync


@dataclass(slots=True)
class SyncSummary:
    """What a sync changed."""

    export_id: str
    sync_id: str | None
    rows_removed: int = 0
    files_rewritten: int = 0
    erasures_applied: list = field(default_factory=list)
    in_sync_already: bool = False


def load_lineage(dest: str) -> Lineage:
    store = FileSystemsStore(dest)
    if not store.exists(EXPORT_FILE):
        raise UserError("DEST holds no egoveil-export.json: it is not an egoveil export (or "
                        "its export did not finish)")
    try:
        lineage = Lineage.parse(store.read(EXPORT_FILE))
        for entry in lineage.files:
            confined(dest, entry["path"])
    except UnsafePath:
        raise UserError("DEST/egoveil-export.json names a file outside DEST; nothing was "
                        "changed") from None
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError("DEST/egoveil-export.json cannot be read; nothing was changed") \
            from None
    return lineage


def _check_files(dest: str, lineage: Lineage) -> None:
    pending = lineage.pending or {}
    for entry in lineage.files:
        try:
            sha, _ = file_sha256(confined(dest, entry["path"]))
        except OSError:
            raise UserError(f"DEST/{entry['path']} is missing or unreadable; nothing was "
                            "changed") from None
        if sha not in (entry["sha256"], pending.get(entry["path"])):
            raise UserError(f"DEST/{entry['path']} does not match egoveil-export.json (changed "
                            "since the export); nothing was changed")


def sync(directory: str, dest_dir: str, key_file: str | None = None) -> SyncSummary:
    """Remove from an export every row the source has erased since.

    Raises:
        UserError: DEST is not an export of DIR, a file changed, or DIR does not verify.
    """
    from pipeline.erase import OutputLock, check_no_run_in_progress
    from pipeline.export.source import open_source, owner_signer

    dest = normalize_uri(dest_dir)
    lineage = load_lineage(dest)
    source = open_source(directory, action="synced")
    signer = owner_signer(key_file, source, "synced")
    if lineage.source.get("audit_entry") not in {e["hash"] for e in source.entries}:
        raise UserError("DIR is not the output DEST was exported from (its log does not hold "
                        "the export's entry); nothing was changed")
    _check_files(dest, lineage)
    status = {s.export_id: s for s in export_status(source.entries)}.get(lineage.export_id)
    summary = SyncSummary(lineage.export_id, None)
    with OutputLock(source.uri, "export"):
        check_no_run_in_progress(source.uri, "sync")
        source = open_source(directory, action="synced", verify=False, expect_head=source.head)
        reached = rows_reached((s for f in lineage.files for s in f["samples"]), lineage.salt,
                               source.tombstones.wearers, source.tombstones.recordings)
        applied = [e["erasure_id"] for e in erasures(source.entries)
                   if e["erasure_id"] not in lineage.erasures_applied]
        if not reached and not applied and not lineage.pending and status and status.in_sync:
            summary.in_sync_already = True
            return summary
        summary.sync_id = secrets.token_hex(8)
        summary.erasures_applied = applied
        _rewrite(dest, lineage, reached, summary)
        lineage.erasures_applied += applied
        lineage.syncs.append({"sync_id": summary.sync_id, "at": _now(),
                              "rows_removed": summary.rows_removed,
                              "files_rewritten": summary.files_rewritten,
                              "erasures_applied": applied})
        counts = {"export_id": lineage.export_id, "rows_removed": summary.rows_removed,
                  "files_rewritten": summary.files_rewritten,
                  "erasures_applied": len(applied), "rows": lineage.rows,
                  "files_sha256": lineage.files_sha256()}
        entry = _record(source, "export_synced", summary.sync_id, counts, signer)
        lineage.syncs[-1]["audit_entry"] = entry
        after = open_source(directory, action="synced", verify=False,
                            expect_head=_head(source.uri))
        write_card_and_lineage(dest, after, lineage)
    return summary


class _Discard:
    """A sink that keeps nothing (a rewrite hashed before it is written)."""

    def write(self, data) -> int:
        return memoryview(data).nbytes

    def flush(self) -> None:
        pass


def _rewritten(module, dest: str, entry: dict, reached: set[str], sink: HashingSink) -> list:
    with open_read(confined(dest, entry["path"])) as handle:
        return module.rewrite_without(handle, sink, reached)[1]


def _rewrite(dest: str, lineage: Lineage, reached: set[str], summary: SyncSummary) -> None:
    """Rewrite the files holding reached rows; the lineage names their new hashes first.

    Rewrites are deterministic, so each file is rewritten twice, one file in memory at a
    time: once to learn its new hash, and once for real, beside it, then renamed over it.
    """
    from pipeline.export import hf, webdataset

    affected = [f for f in lineage.files
                if any(s["clip_id"] in reached for s in f["samples"])]
    if not affected:
        return
    module = webdataset if lineage.to == "webdataset" else hf
    pending = {}
    for entry in affected:
        sink = HashingSink(_Discard())
        _rewritten(module, dest, entry, reached, sink)
        pending[entry["path"]] = sink.sha256
    # Said before any file changes, so that a sync cut short is finished by the next one.
    lineage.pending = pending
    FileSystemsStore(dest).write(EXPORT_FILE, lineage.to_bytes())
    for entry in affected:
        with created(confined(dest, entry["path"]), replace=True) as sink:
            keys = _rewritten(module, dest, entry, reached, sink)
        if sink.sha256 != pending[entry["path"]]:
            raise RuntimeError("an export file's rewrite is not deterministic")
        removed = entry["rows"] - len(keys)
        summary.rows_removed += removed
        summary.files_rewritten += 1
        kept = set(keys)
        # In-memory Arrow size (the card's num_bytes): rows of one file are alike.
        arrow_bytes = entry.get("arrow_bytes", 0) * len(keys) // max(1, entry["rows"])
        entry.update(sha256=sink.sha256, bytes=sink.size, rows=len(keys),
                     arrow_bytes=arrow_bytes,
                     samples=[s for s in entry["samples"] if s["clip_id"] in kept])
        lineage.splits[entry["split"]]["rows"] -= removed
    for name, split in lineage.splits.items():
        mine = [f for f in lineage.files if f["split"] == name]
        split["bytes"] = sum(f["bytes"] for f in mine)
        split["arrow_bytes"] = sum(f.get("arrow_bytes", 0) for f in mine)
    lineage.pending = None
