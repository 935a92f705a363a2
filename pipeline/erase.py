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
5. only then are the old shards, the erased rows' clips and the files an earlier
   manifest or a dead run's ``PUBLISHING`` note named and the new manifest retires
   deleted (never through a symbolic link; a file nothing named is not egoveil's).

Readers trust only the manifest, so at every moment it names a complete,
consistent set of files. The erasure holds the output's lock (``pipeline.output_lock``)
throughout, and names the new shards it writes in a ``PUBLISHING`` note of its own
first, so that one killed midway leaves nothing unnamed. It checks the key against
the one the output was written with: under another key every pseudonym would differ
and the erasure would silently match nothing.
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
from pipeline.output_lock import (
    RUNNING,
    Holder,
    OutputLockError,
    dead_here,
    dead_staging,
    hold_output,
    holder_here,
    staging_marker,
)
from privacy import identifiers
from privacy.audit_log import file_entry
from privacy.audit_seal import signed_note
from privacy.erasure import (
    ErasureError,
    ErasureRequest,
    dead_letter_reached,
    erase_rows,
    failed_recordings,
    tombstones_for,
)
from privacy.pseudonyms import PseudonymKey, PseudonymKeyError
from privacy.tombstones import TOMBSTONE_PATH, TombstoneError, is_pseudonym
from schemas.audit import EVENTS_FILE, MANIFEST, PUBLISHING, RECORD_FILE, SUCCESS
from schemas.records import AuditEvent
from transforms.discover import normalize_uri
from transforms.media.inputs import MediaError, content_sha256
from transforms.stores.cleanup import (
    SHARD_NAME,
    LinkedFolder,
    check_owned_folders,
    delete_owned,
    named_outputs,
    publishing_notes,
    retired_outputs,
    stale_temporaries,
)
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
    if not key.names(record.get("key_id")):
        raise UserError(f"the key given (key id {key.key_id}) is not the key DIR was written "
                        f"with (key id {record.get('key_id')}); erasing with it would match "
                        "nothing. Pass that key with --key-file")
    return key


def check_no_run_in_progress(output: str, action: str = "erase", own_id: str = "") -> list[str]:
    """Refuse while a run into ``output`` may still publish; call it holding the output's
    lock (``OutputLock``).

    Staging folders of runs and erasures that held the lock and died, or that a gate
    refused, cannot publish any more (the caller holds the lock now); they are returned,
    for an erasure to remove (what they staged may hold the erased rows). Any other
    staging folder (of an egoveil before the lock) refuses: its run may still be going.

    Raises:
        UserError: a staging folder that does not say whose it is.
    """
    dead, gated, unknown = dead_staging(output, own_id)
    if unknown:
        raise UserError("a run into DIR is in progress or was killed (DIR/.staging is not "
                        "empty and does not say which run it is of); wait for it to finish, "
                        f"or delete DIR/.staging if it was killed, then {action} again")
    return dead + gated


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
    """The erased rows' clips, and every dead letter of the erased wearers, recordings
    and inputs; a wearer's recordings that only dead letters name are tombstoned too."""
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
        summary.recordings_found |= failed_recordings(records, request.wearers)
        kept = [r for r in records
                if not dead_letter_reached(r, erased_recordings, request.input_ids,
                                           request.wearers)]
        if len(kept) == len(records):
            continue
        summary.deadletters_removed += len(records) - len(kept)
        data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept).encode()
        plan.replaced.append((confined(output, entry["path"]), data))
        plan.files[index] = {**entry, "sha256": hashlib.sha256(data).hexdigest(),
                             "bytes": len(data), "rows": len(kept)}


class OutputLock:
    """One run, erasure, export or sync at a time per output: the output's lock
    (``pipeline.output_lock``), held throughout. Inside it, the marker egoveil took before
    that lock existed (``DIR/erasure/.lock``) is still taken, so that an older egoveil's
    erasure and this one never overlap; it names its holder, and one left by an erasure
    or export of this host that was killed is taken over.

    Args:
        output: the output folder.
        action: what holds it (``erasure``, ``export``, ``sync``), for messages.
        op_id: the operation's id (16 hex characters; a new one when None).
        wait_s: how long to wait for a run or another operation that holds the output.

    Raises:
        UserError: another run or operation holds it.
    """

    def __init__(self, output: str, action: str = "erasure", op_id: str | None = None,
                 wait_s: float = 0.0) -> None:
        self._path = None if "://" in output else os.path.join(output, "erasure", ".lock")
        self._action = action
        self._held = hold_output(output, action, op_id or secrets.token_hex(8), wait_s)

    def __enter__(self) -> OutputLock:
        try:
            self._held.__enter__()
        except OutputLockError as exc:
            message = str(exc).replace("--output", "DIR")
            if self._action != "erasure":  # only run and erase take --wait-for-lock
                message = message.replace("or pass --wait-for-lock SECONDS to wait",
                                          f"then run the {self._action} again")
            raise UserError(message) from None
        if self._path is None:
            return self
        try:
            self._take_marker()
        except BaseException:
            self._held.__exit__(None, None, None)
            raise
        return self

    def _take_marker(self) -> None:
        os.makedirs(os.path.dirname(self._path), exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self._path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            except FileExistsError:
                with open(self._path, "rb") as handle:
                    holder = Holder.parse(handle.read())
                if holder is not None and dead_here(holder):
                    os.unlink(self._path)  # its erasure was killed; we hold the output
                    continue
                raise UserError(f"another erasure or export of DIR is running (DIR/erasure/.lock "
                                f"exists); wait for it, or delete the lock if it was killed, "
                                f"then run the {self._action} again") from None
            with os.fdopen(fd, "wb") as handle:
                handle.write(holder_here(self._action).to_bytes())
            return
        raise UserError("DIR/erasure/.lock cannot be taken; delete it if no erasure is going")

    def __exit__(self, *exc) -> None:
        try:
            if self._path is not None:
                os.unlink(self._path)
        finally:
            self._held.__exit__(*exc)


def erase(output_dir: str, wearers: list[str], recordings: list[str],
          key_file: str | None, wait_s: float = 0.0) -> ErasureSummary:
    """Erase wearers and recordings from a published output.

    Holds the output's lock throughout (``pipeline.output_lock``); ``wait_s`` is how long
    to wait for a run or erasure that holds it.

    Running it again after it was interrupted finishes the job: the tombstones and
    the new shards are idempotent, and what an earlier manifest or note named and the
    current one no longer lists is removed.

    Raises:
        UserError: nothing to erase, a wrong key, an output that is not published, in
            use or fails its manifest; nothing is changed then.
    """
    output = normalize_uri(output_dir)
    _manifest(output)
    check_log(output)
    key = _load_key(key_file, output)
    check_log(output, key.seal_signer())
    request = _request(key, wearers, recordings)
    try:
        check_owned_folders(output)
    except LinkedFolder as exc:
        raise UserError(f"DIR: {exc}; nothing was erased") from None
    summary = ErasureSummary(erasure_id=secrets.token_hex(8))
    with OutputLock(output, "erasure", summary.erasure_id, wait_s):
        return _erase_locked(output, key, request, summary)


def _erase_locked(output: str, key: PseudonymKey, request: ErasureRequest,
                  summary: ErasureSummary) -> ErasureSummary:
    manifest = _manifest(output)  # read again: a run may have published since
    signer = key.seal_signer()
    base_head = check_log(output, signer)
    try:
        tombstones = read_tombstones(output)
        tombstones.check_key(key.key_id, key.legacy_key_id)
    except TombstoneError as exc:
        raise UserError(str(exc)) from None
    dead = check_no_run_in_progress(output, "erase", summary.erasure_id)
    plan, erased_clips = _plan_shards(output, manifest, request, summary)
    _plan_clips_and_dead_letters(output, plan, erased_clips, request, summary)
    listed = {f["path"] for f in plan.files}
    old = {p.rsplit("/", 1)[-1] for p in plan.old_shards + plan.clip_files}
    named = named_outputs(manifest, publishing_notes(output, signer.public))
    retired = retired_outputs(output, named, listed)
    summary.unlisted_files_deleted = sum(
        1 for p in retired if p.rsplit("/", 1)[-1] not in old)
    new_tombstones = tombstones.adding(
        key.key_id, tombstones_for(request, summary.recordings_found, summary.erasure_id,
                                   datetime.now(timezone.utc).isoformat(timespec="seconds")),
        legacy_key_id=key.legacy_key_id)
    summary.tombstones_added = len(new_tombstones) - len(tombstones)

    # Said first, so that new shards of an erasure killed before its manifest swap are
    # known for egoveil's (by `audit verify` and by the next run, which removes them).
    staging = FileSystems.join(output, ".staging", summary.erasure_id)
    write_atomically(FileSystems.join(staging, RUNNING),
                     staging_marker("erase", summary.erasure_id))
    new_entries = [f for f in plan.files if confined(output, f["path"]) in
                   {path for path, _ in plan.new_files}]
    write_atomically(FileSystems.join(staging, PUBLISHING), json.dumps(
        signed_note(summary.erasure_id, base_head, new_entries, signer),
        sort_keys=True).encode())
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
    append_and_reseal(output, dict(manifest, files=files, totals=totals, retired=retired),
                      op="erase", op_id=summary.erasure_id,
                      events=[AuditEvent(kind="erasure", counts=summary.counts())],
                      signer=signer)

    # Only now, with the manifest no longer naming them, the old files go; and the
    # finished-segment cache, which may hold the erased rows (a rerun rebuilds it), and
    # what dead runs staged, which may too.
    delete_owned(output, retired)
    delete_if_present(stale_temporaries(output) + [FileSystems.join(output, CACHE_DIR)]
                      + dead + [staging])
    return summary

