"""``egoveil erase DIR --wearer ID | --recording URI_OR_PSEUDONYM``: the right to erasure.

An erasure reaches every derived artifact of a published output (PRIVACY.md 12):

1. every shard holding affected rows is rewritten without them, to a new file, with
   the schema, file metadata and write settings it had;
2. the tombstone file gains the wearers and recordings, so no later run brings
   them back (``egoveil run`` refuses recordings that match, before decoding);
3. the dead letters of the erased recordings are dropped;
4. an ``erasure`` event (counts and an erasure id, no pseudonyms) is chained onto
   the audit log, the new file list is sealed into it (signed with the audit key
   derived from the pseudonym key), and ``manifest.json`` is swapped for one that
   lists the new files and names the log's new head;
5. only then are the old shards, the erased rows' clips and any shard or clip
   file the manifest does not list deleted.

Readers trust only the manifest, so at every moment it names a complete,
consistent set of files. The erasure checks the key against the one the output
was written with: under another key every pseudonym would differ and the
erasure would silently match nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from pipeline.audit_append import append_and_reseal, check_log
from pipeline.errors import UserError
from pipeline.output_files import (
    UnsafePath,
    confined,
    delete_if_present,
    read_bytes,
    write_atomically,
    write_new,
)
from privacy import identifiers
from privacy.audit_log import file_entry
from privacy.erasure import (
    ErasureError,
    ErasureRequest,
    dead_letter_reached,
    erase_rows,
    tombstones_for,
)
from privacy.pseudonyms import PseudonymKey, PseudonymKeyError
from privacy.tombstones import TOMBSTONE_PATH, TombstoneError, is_pseudonym
from schemas.audit import EVENTS_FILE, MANIFEST, RECORD_FILE, SUCCESS
from schemas.records import AuditEvent
from transforms.discover import normalize_uri
from transforms.media.inputs import MediaError, content_sha256
from transforms.publish import SHARD_NAME, unlisted_outputs
from transforms.stores.keys import load_key
from transforms.stores.segment_cache import CACHE_DIR
from transforms.stores.shards import shard_writer
from transforms.stores.tombstones import read_tombstones, tombstone_uri

log = logging.getLogger("egoveil")

_NO_SIZE_CAP = 1 << 62


@dataclass(slots=True)
class ErasureSummary:
    """What one erasure changed."""

    erasure_id: str
    rows_removed: int = 0
    shards_rewritten: int = 0
    shards_removed: int = 0
    clips_deleted: int = 0
    unlisted_files_deleted: int = 0
    deadletters_removed: int = 0
    tombstones_added: int = 0
    recordings_found: set = field(default_factory=set)

    def counts(self) -> dict:
        return {"erasure_id": self.erasure_id, "rows_removed": self.rows_removed,
                "shards_rewritten": self.shards_rewritten,
                "shards_removed": self.shards_removed, "clips_deleted": self.clips_deleted,
                "unlisted_files_deleted": self.unlisted_files_deleted,
                "deadletters_removed": self.deadletters_removed,
                "recordings": len(self.recordings_found),
                "tombstones_added": self.tombstones_added}


def _load_key(key_file: str | None, output: str) -> PseudonymKey:
    try:
        key = load_key(key_file)
    except PseudonymKeyError as exc:
        raise UserError(str(exc)) from None
    try:
        record = json.loads(read_bytes(FileSystems.join(output, RECORD_FILE)))
    except (OSError, ValueError):
        raise UserError("DIR has no readable audit/record.json, so the key it was written "
                        "with is unknown; nothing was erased") from None
    if record.get("key_id") != key.key_id:
        raise UserError(f"the key given (key id {key.key_id}) is not the key DIR was written "
                        f"with (key id {record.get('key_id')}); erasing with it would match "
                        "nothing. Pass that key with --key-file")
    return key


def _check_no_run_in_progress(output: str) -> None:
    staging = FileSystems.join(output, ".staging")
    if "://" not in output:
        busy = os.path.isdir(staging) and bool(os.listdir(staging))
    else:
        busy = bool(FileSystems.match([FileSystems.join(staging, "*")])[0].metadata_list)
    if busy:
        raise UserError("a run into DIR is in progress or was killed (DIR/.staging is not "
                        "empty); wait for it to finish, or delete DIR/.staging if it was "
                        "killed, then erase again")


def _exists(uri: str) -> bool:
    try:
        return FileSystems.exists(uri)
    except Exception:  # noqa: BLE001 - unknown scheme or missing extra: not a readable file
        return False


def _request(key: PseudonymKey, wearers: list[str], recordings: list[str]) -> ErasureRequest:
    wearer_ids = {identifiers.wearer_id(key, w) for w in wearers}
    recording_ids, input_ids = set(), set()
    for number, value in enumerate(recordings, start=1):
        uri = normalize_uri(value)
        if _exists(uri):
            try:
                sha, _, _ = content_sha256(uri, _NO_SIZE_CAP)
            except MediaError as exc:
                raise UserError(f"--recording #{number} cannot be read ({exc.detail})") \
                    from None
            recording_ids.add(identifiers.recording_id(key, sha))
            input_ids.add(identifiers.input_id(key, uri))
        elif is_pseudonym(value):
            recording_ids.add(value)
        else:
            raise UserError(f"--recording #{number} is neither a readable file nor a recording "
                            "pseudonym (32 hex digits, as in the shards' recording_id)")
    try:
        return ErasureRequest(wearers=frozenset(wearer_ids), recordings=frozenset(recording_ids),
                              input_ids=frozenset(input_ids))
    except ErasureError as exc:
        raise UserError(str(exc)) from None


def _rewritten_shard(data: bytes, kept: pa.Table) -> bytes:
    """The shard without the erased rows, written as a run writes shards (the measured
    layout, the source's row-group size)."""
    source = pq.ParquetFile(pa.BufferReader(data))
    meta = source.metadata
    sink = io.BytesIO()
    with shard_writer(sink, kept.schema) as writer:
        writer.write_table(kept, meta.row_group(0).num_rows if meta.num_row_groups else None)
    out = sink.getvalue()
    written = pq.read_schema(pa.BufferReader(out))
    if not written.equals(source.schema_arrow, check_metadata=True):
        raise ErasureError("a rewritten shard would not keep its schema and file metadata")
    return out


def _manifest(output: str) -> dict:
    if not FileSystems.exists(FileSystems.join(output, SUCCESS)):
        raise UserError("DIR is not a published egoveil output (no _SUCCESS); nothing erased")
    try:
        manifest = json.loads(read_bytes(FileSystems.join(output, MANIFEST)))
        files = manifest["files"]
        for entry in files:
            confined(output, entry["path"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        detail = str(exc) if isinstance(exc, UnsafePath) else "not readable"
        raise UserError(f"DIR/manifest.json: {detail}; nothing was erased") from None
    return manifest


def _verified(output: str, entry: dict) -> bytes:
    data = read_bytes(confined(output, entry["path"]))
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise UserError(f"{entry['path']} does not match manifest.json (changed since it was "
                        "published); nothing was erased")
    return data


@dataclass(slots=True)
class _Plan:
    """Everything an erasure will write and delete, worked out before anything changes."""

    files: list = field(default_factory=list)        # the new manifest's file list
    new_files: list = field(default_factory=list)    # (path, bytes): new shards, never replaced
    replaced: list = field(default_factory=list)     # (path, bytes): small files replaced whole
    old_shards: list = field(default_factory=list)
    clip_files: list = field(default_factory=list)


def _plan_shards(output: str, manifest: dict, request: ErasureRequest,
                 summary: ErasureSummary) -> tuple[_Plan, set[str]]:
    plan, erased_clips = _Plan(), set()
    try:
        for entry in manifest["files"]:
            if entry["kind"] != "latents":
                plan.files.append(entry)
                continue
            data = _verified(output, entry)
            result = erase_rows(pq.read_table(pa.BufferReader(data)), request)
            if not result.removed_rows:
                plan.files.append(entry)
                continue
            summary.rows_removed += result.removed_rows
            summary.recordings_found |= result.recordings
            erased_clips.update(result.clip_ids)
            plan.old_shards.append(confined(output, entry["path"]))
            if result.kept.num_rows == 0:
                summary.shards_removed += 1
                continue
            new = _rewritten_shard(data, result.kept)
            digest = hashlib.sha256(new).hexdigest()
            match = SHARD_NAME.match(entry["path"])
            rel = f"latents/part-{match.group(1) if match else '00000'}-{digest[:12]}.parquet"
            plan.new_files.append((confined(output, rel), new))
            plan.files.append({**entry, "path": rel, "sha256": digest, "bytes": len(new),
                               "rows": result.kept.num_rows})
            summary.shards_rewritten += 1
    except ErasureError as exc:
        raise UserError(f"{exc}; nothing was erased") from None
    return plan, erased_clips


def _plan_clips_and_dead_letters(output: str, plan: _Plan, erased_clips: set[str],
                                 request: ErasureRequest, summary: ErasureSummary) -> None:
    clip_paths = {f"clips/{c}.mp4" for c in erased_clips if re.fullmatch(r"[0-9a-f]{32}", c)}
    plan.files = [f for f in plan.files if f["path"] not in clip_paths]
    plan.clip_files = [confined(output, p) for p in sorted(clip_paths)
                       if FileSystems.exists(confined(output, p))]
    summary.clips_deleted = len(plan.clip_files)
    erased_recordings = set(request.recordings) | summary.recordings_found
    for index, entry in enumerate(plan.files):
        if entry["kind"] != "deadletter":
            continue
        records = [json.loads(line) for line in
                   _verified(output, entry).decode().splitlines() if line.strip()]
        kept = [r for r in records
                if not dead_letter_reached(r, erased_recordings, request.input_ids)]
        if len(kept) == len(records):
            continue
        summary.deadletters_removed += len(records) - len(kept)
        data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept).encode()
        plan.replaced.append((confined(output, entry["path"]), data))
        plan.files[index] = {**entry, "sha256": hashlib.sha256(data).hexdigest(),
                             "bytes": len(data), "rows": len(kept)}


class _Lock:
    """One erasure at a time per local output: two at once could lose a tombstone."""

    def __init__(self, output: str) -> None:
        self._path = None if "://" in output else os.path.join(output, "erasure", ".lock")

    def __enter__(self) -> _Lock:
        if self._path is not None:
            os.makedirs(os.path.dirname(self._path), exist_ok=True)
            try:
                os.close(os.open(self._path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            except FileExistsError:
                raise UserError("another erasure of DIR is running (DIR/erasure/.lock exists); "
                                "wait for it, or delete the lock if it was killed") from None
        return self

    def __exit__(self, *exc) -> None:
        if self._path is not None:
            os.unlink(self._path)


def erase(output_dir: str, wearers: list[str], recordings: list[str],
          key_file: str | None) -> ErasureSummary:
    """Erase wearers and recordings from a published output.

    Running it again after it was interrupted finishes the job: the tombstones and
    the new shards are idempotent, and debris the manifest does not list is removed.

    Raises:
        UserError: nothing to erase, a wrong key, an output that is not published, in
            use or fails its manifest; nothing is changed then.
    """
    output = normalize_uri(output_dir)
    manifest = _manifest(output)
    check_log(output)
    key = _load_key(key_file, output)
    check_log(output, key.seal_signer())
    request = _request(key, wearers, recordings)
    with _Lock(output):
        try:
            tombstones = read_tombstones(output)
            tombstones.check_key(key.key_id)
        except TombstoneError as exc:
            raise UserError(str(exc)) from None
        _check_no_run_in_progress(output)
        summary = ErasureSummary(erasure_id=secrets.token_hex(8))
        plan, erased_clips = _plan_shards(output, manifest, request, summary)
        _plan_clips_and_dead_letters(output, plan, erased_clips, request, summary)
        unlisted = unlisted_outputs(output, {f["path"] for f in plan.files}
                             | {f["path"] for f in manifest["files"]})
        summary.unlisted_files_deleted = len(unlisted)
        new_tombstones = tombstones.adding(key.key_id, tombstones_for(
            request, summary.recordings_found, summary.erasure_id,
            datetime.now(timezone.utc).isoformat(timespec="seconds")))
        summary.tombstones_added = len(new_tombstones) - len(tombstones)

        # New files first; the old ones stay listed and readable until the manifest swap.
        for path, data in plan.new_files:
            write_new(path, data)
        tombstone_bytes = new_tombstones.dumps()
        write_atomically(tombstone_uri(output), tombstone_bytes)
        for path, data in plan.replaced:
            write_atomically(path, data)
        files = [f for f in plan.files if f["path"] not in (EVENTS_FILE, TOMBSTONE_PATH)]
        files.append(file_entry(TOMBSTONE_PATH, tombstone_bytes, "erasure_tombstones", None))
        shards = [f for f in files if f["kind"] == "latents"]
        totals = dict(manifest.get("totals", {}), latent_rows=sum(f["rows"] for f in shards),
                      shards=len(shards), clips=sum(f["kind"] == "clip" for f in files),
                      deadletters=sum(f["rows"] or 0 for f in files
                                      if f["kind"] == "deadletter"))
        append_and_reseal(output, dict(manifest, files=files, totals=totals), op="erase",
                          op_id=summary.erasure_id,
                          events=[AuditEvent(kind="erasure", counts=summary.counts())],
                          signer=key.seal_signer())

        # Only now, with the manifest no longer naming them, the old files go; and the
        # finished-segment cache, which may hold the erased rows (a rerun rebuilds it).
        delete_if_present(plan.old_shards + plan.clip_files + unlisted)
        delete_if_present([FileSystems.join(output, CACHE_DIR)])
    return summary
