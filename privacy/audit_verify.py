"""``egoveil audit verify``: does a published folder hold what its audit trail says?

Checks, in this order, and reports every problem with the first one first:

1. the folder is published: ``manifest.json`` parses and ``_SUCCESS`` exists;
2. the log's hash chain holds, entry by entry (the first broken entry is named);
3. the log is the one the manifest names: same sha256 and entry count, same head,
   and an externally kept head (``expect_head``) is one of its entries;
4. every seal is signed, all by one audit key, the one the manifest and the record
   name, and, when the auditor gives the owner's public key (``key``), by that key;
   the manifest's file list is the one the log sealed last;
5. every listed file exists with its sha256, size and row count, and no file is
   there that the manifest does not list (the output's lock excepted). A shard or
   clip that a publish (or an erasure) cut short moved in is not counted as tampering
   when its signed ``PUBLISHING`` note names it with its sha256 and the log has not
   sealed that operation: it is reported as a notice (a reader that lists
   ``latents/`` would see it) and the next publish or erasure removes it;
6. the record of processing is the one the log recorded for the publishing run,
   names what a record must name, and agrees with the manifest's totals unless a
   later operation (an erasure) resealed the folder.

A reader that reads some listed files anyway (``egoveil export``) may take their
content check over (``read_later``): it hashes each as it reads it and checks it
with ``content_findings``, the same check, so every byte it uses is checked and
none is read twice.

Without ``key`` the seals are checked against the key they name: that catches a
seal appended by anyone else, but not a forger who re-signs every seal and rewrites
the record with a key of their own. ``key`` (or a head kept from an earlier check,
``expect_head``) catches that too.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from privacy.audit_chain import check_chain, files_digest
from privacy.audit_seal import SealKey, is_signed, note_signer_key, seal_signer_key
from privacy.output_store import OutputStore
from schemas.audit import (
    EVENTS_FILE,
    GENESIS,
    MANIFEST,
    OUTPUT_LOCK,
    PUBLISHING,
    RECORD_FILE,
    SUCCESS,
    WORK_PREFIXES,
)

RECORD_REQUIRED = ("run_id", "purpose", "consent_checked", "key_id", "audit_key",
                   "config_sha256", "anonymization", "detector", "encoder", "totals",
                   "outcomes", "published_at")
_BLOCK = 1 << 22


@dataclass(slots=True, frozen=True)
class Finding:
    """One thing that does not hold: where (a file, or a file and line) and what."""

    where: str
    problem: str

    def __str__(self) -> str:
        return f"{self.where}: {self.problem}"


@dataclass(slots=True)
class VerifyReport:
    """The outcome of verifying one folder."""

    findings: list[Finding] = field(default_factory=list)
    notices: list[Finding] = field(default_factory=list)
    head: str | None = None
    entries: int = 0
    files_checked: int = 0
    run_id: str | None = None
    audit_key: str | None = None     # fingerprint of the key every seal was signed with
    key_checked: bool = False        # the seals were checked against the auditor's key

    @property
    def ok(self) -> bool:
        return not self.findings

    def add(self, where: str, problem: str) -> None:
        self.findings.append(Finding(where, problem))


def _sha256_and_size(store: OutputStore, rel: str) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with store.open(rel) as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def count_rows(store: OutputStore, rel: str, kind: str | None) -> int | None:
    """Rows as the manifest counts them for ``kind``; None where the kind has no rows.

    Raises:
        ValueError: the file cannot be read as its kind.
    """
    if kind == "latents":
        import pyarrow.parquet as pq

        with store.open(rel) as handle:
            return pq.ParquetFile(handle).metadata.num_rows
    if kind in ("deadletter", "audit_events"):
        return store.read(rel).count(b"\n")
    if kind == "clip":
        import av

        # Counting needs the container's index, not pixels: without skip_frame, opening
        # decodes frames to probe the stream, five times the cost of the count (about
        # 6 ms against 1.2 ms for a 640x360 clip).
        with store.open(rel) as handle, av.open(handle,
                                                stream_options=[{"skip_frame": "all"}]) \
                as container:
            stream = container.streams.video[0]
            return stream.frames or sum(1 for _ in container.demux(stream) if _.size)
    return None


def verify_output(store: OutputStore, expect_head: str | None = None,
                  key: SealKey | None = None,
                  read_later: Collection[str] = ()) -> VerifyReport:
    """Verify the published folder in ``store``; see the module docstring for the checks.

    Args:
        store: the output folder.
        expect_head: a log head kept outside the folder from an earlier check.
        key: the folder owner's public audit key; every seal must be signed with it.
        read_later: listed files whose content (sha256, size, rows) the caller checks
            as it reads them, with ``content_findings`` (or ``check_files`` for those it
            ends up not reading); here they are only required to exist.
    """
    report = VerifyReport(key_checked=key is not None)
    if not store.exists(MANIFEST):
        report.add(MANIFEST, "missing: the folder was never published or was cut short")
        return report
    try:
        manifest = json.loads(store.read(MANIFEST))
        files = manifest["files"]
        if not isinstance(files, list):
            raise TypeError("files is not a list")
    except Exception as exc:  # noqa: BLE001 - whatever is wrong, the manifest is unusable
        report.add(MANIFEST, f"unreadable ({type(exc).__name__}): it was altered")
        return report
    report.run_id = manifest.get("run_id")
    if not store.exists(SUCCESS):
        report.add(SUCCESS, "missing: the folder is not published")

    listed = {}
    for entry in files:
        if not isinstance(entry, dict) or not {"path", "sha256"} <= set(entry):
            report.add(MANIFEST, "a file entry lacks path or sha256: it was altered")
            return report
        listed[entry["path"]] = entry

    chain = _check_log(store, manifest, listed, report, expect_head)
    sealed_by = _check_seal(chain, listed, manifest, report, key)
    _check_files(store, listed, report, chain, sealed_by, set(read_later))
    _check_record(store, manifest, chain, report)
    return report


def _check_log(store, manifest, listed, report, expect_head):
    if not store.exists(EVENTS_FILE):
        report.add(EVENTS_FILE, "missing")
        return None
    data = store.read(EVENTS_FILE)
    chain = check_chain(data)
    report.entries = len(chain.entries)
    report.head = chain.head
    if not chain.ok:
        report.add(f"{EVENTS_FILE} {chain.where()}", chain.problem)
        return None
    audit = manifest.get("audit") or {}
    entry = listed.get(EVENTS_FILE) or {}
    if audit.get("entries") is not None and audit["entries"] != len(chain.entries):
        missing = audit["entries"] - len(chain.entries)
        where = f"{EVENTS_FILE} line {len(chain.entries) + 1}" if missing > 0 else EVENTS_FILE
        report.add(where, f"the log has {len(chain.entries)} entries, manifest.json says "
                          f"{audit['entries']}" + (" (its last entries were removed)"
                                                   if missing > 0 else " (entries were added)"))
    elif audit.get("head") != chain.head:
        report.add(EVENTS_FILE, "its head is not the one manifest.json names")
    if expect_head and expect_head not in {e["hash"] for e in chain.entries} | {GENESIS}:
        report.add(EVENTS_FILE, "the head kept outside the folder is not in the log: the log "
                                "was rewritten")
    if not entry:
        report.add(MANIFEST, f"does not list {EVENTS_FILE}")
    return chain


def _check_seal(chain, listed, manifest, report, key: SealKey | None) -> SealKey | None:
    """Check the seals; returns the key that made them (None when none can be trusted)."""
    if chain is None:
        return None
    seals = [e for e in chain.entries if e["kind"] == "files_sealed"]
    if not seals:
        report.add(EVENTS_FILE, "no files_sealed entry: nothing was ever published with it")
        return None
    sealed_by = _check_signatures(seals, report, key)
    last = seals[-1]
    if chain.entries[-1] is not last:
        report.add(f"{EVENTS_FILE} line {chain.entries.index(last) + 2}",
                   "entries follow the last seal: the log was appended to without resealing")
    sealed = [f for path, f in listed.items() if path != EVENTS_FILE]
    if last["counts"].get("files_sha256") != files_digest(sealed):
        report.add(MANIFEST, f"its file list is not the one the log sealed (seq {last['seq']}): "
                             "manifest.json was altered")
    named = (manifest.get("audit") or {}).get("audit_key")
    if sealed_by is not None and named != sealed_by.fingerprint:
        report.add(MANIFEST, f"names audit key {named}, the seals were made with "
                             f"{sealed_by.fingerprint}")
    return sealed_by


def _check_signatures(seals: list[dict], report: VerifyReport,
                      key: SealKey | None) -> SealKey | None:
    """Every seal from the first signed one on must be signed, all by one key (the given one
    when there is one). Unsigned seals before it were written before egoveil signed its
    seals: they are reported as a notice, and a folder with no signed seal at all cannot be
    checked against a key."""
    first: SealKey | None = None
    legacy = 0
    for seal in seals:
        where = f"{EVENTS_FILE} line {seal['seq'] + 1} (seq {seal['seq']})"
        if first is None and not is_signed(seal):
            legacy += 1
            continue
        signer, problem = seal_signer_key(seal)
        if signer is None:
            report.add(where, problem)
            return None
        if key is not None and signer != key:
            report.add(where, f"sealed with audit key {signer.fingerprint}, not with the key "
                              f"given ({key.fingerprint}): someone else made this seal")
            return None
        if first is None:
            first = signer
        elif signer != first:
            report.add(where, f"sealed with audit key {signer.fingerprint}, the seals before "
                              f"it with {first.fingerprint}: someone else made this seal")
            return None
    if first is None:
        if key is not None:
            report.add(EVENTS_FILE, "no seal is signed (the folder was published before egoveil "
                                    "signed its seals): it cannot be checked against a key")
        else:
            report.notices.append(Finding(EVENTS_FILE, (
                f"its {legacy} seals are not signed: the folder was published before egoveil "
                "signed its seals, so anyone who can write to it could have made them; the "
                "next run or erasure with its key signs from then on")))
        return None
    if legacy:
        report.notices.append(Finding(EVENTS_FILE, (
            f"the first {legacy} seals are not signed: they were made before egoveil signed "
            "its seals; every seal since is signed")))
    report.audit_key = first.fingerprint
    return first


def content_findings(path: str, entry: dict, sha256: str, size: int,
                     rows: int | None = None) -> list[Finding]:
    """What does not hold about a listed file's content: its sha256 (checked first: a
    file that differs is altered, whatever else is said of it), its size and, when the
    caller counted them, its rows.

    Args:
        path: the file, as listed.
        entry: its ``manifest.json`` entry.
        sha256, size: of the bytes read.
        rows: the rows counted in those bytes (None: not counted).
    """
    if sha256 != entry["sha256"]:
        return [Finding(path, "sha256 differs from manifest.json: the file was altered")]
    found = []
    if entry.get("bytes") is not None and size != entry["bytes"]:
        found.append(Finding(path, f"{size} bytes, manifest.json says {entry['bytes']}"))
    if rows is not None and entry.get("rows") is not None and rows != entry["rows"]:
        found.append(Finding(path, f"{rows} rows, manifest.json says {entry['rows']}"))
    return found


def _file_findings(store, path: str, entry: dict) -> tuple[bool, list[Finding]]:
    """Whether ``path`` could be read, and what does not hold about it."""
    try:
        sha, size = _sha256_and_size(store, path)
    except OSError as exc:
        return False, [Finding(path, f"unreadable ({type(exc).__name__})")]
    rows = None
    if sha == entry["sha256"] and entry.get("rows") is not None:
        try:
            rows = count_rows(store, path, entry.get("kind"))
        except Exception as exc:  # noqa: BLE001 - a file that does not parse as its kind
            return True, content_findings(path, entry, sha, size) + [
                Finding(path, f"cannot be read as {entry.get('kind')} ({type(exc).__name__})")]
    return True, content_findings(path, entry, sha, size, rows)


def check_files(store: OutputStore, listed: dict[str, dict]) -> dict[str, tuple[bool, list]]:
    """The content check of ``verify_output`` for the listed files given (path -> entry),
    each file's sha256, size and rows: path -> (whether it could be read, its findings).

    Hashing and demuxing run outside the GIL: files are checked on every core.
    """
    paths = sorted(listed)
    if not paths:
        return {}
    with ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1, len(paths)))) as pool:
        return dict(zip(paths, pool.map(lambda p: _file_findings(store, p, listed[p]),
                                        paths)))


def _check_files(store, listed, report, chain, sealed_by: SealKey | None,
                 read_later: set[str]) -> None:
    present = set(store.list_files())
    # Reported in path order, whichever thread found them.
    checked = check_files(store, {p: e for p, e in listed.items()
                                  if p in present and p not in read_later})
    for path in sorted(listed):
        if path not in present:
            report.add(path, "missing (listed in manifest.json)")
            continue
        if path in read_later:
            continue
        read, found = checked[path]
        report.files_checked += read
        report.findings.extend(found)
    unlisted = sorted(p for p in present - set(listed) - {MANIFEST, SUCCESS, OUTPUT_LOCK}
                      if not p.startswith(WORK_PREFIXES))
    excused = _cut_short(store, present, chain, sealed_by, report) if unlisted else {}
    for path in unlisted:
        if path not in excused:
            report.add(path, "not listed in manifest.json: it was added after publishing")
            continue
        try:
            sha, _ = _sha256_and_size(store, path)
        except OSError as exc:
            report.add(path, f"unreadable ({type(exc).__name__})")
            continue
        if sha != excused[path][1]:
            report.add(path, "not listed in manifest.json, and not the file the PUBLISHING "
                             "note that names it was signed for: it was added after publishing")
            continue
        report.notices.append(Finding(path, (
            f"not listed in manifest.json: moved in by run {excused[path][0]}, whose publish "
            "was cut short (its signed PUBLISHING note names it); readers that list latents/ "
            "instead of reading manifest.json see it; the next run or erasure removes it")))


def _cut_short(store, present: set[str], chain, sealed_by: SealKey | None,
               report: VerifyReport) -> dict[str, tuple[str, str]]:
    """Shards and clips a publish that was cut short moved in before its manifest: path ->
    (run id, sha256), from ``PUBLISHING`` notes signed with the folder's audit key by runs
    the log has not sealed, published onto a head of this log."""
    if chain is None or sealed_by is None:
        return {}  # without a trusted key, no note can be told from a forgery
    sealed_runs = {e["op_id"] for e in chain.entries if e["kind"] == "files_sealed"}
    heads = {e["hash"] for e in chain.entries} | {GENESIS}
    named: dict[str, tuple[str, str]] = {}
    for path in sorted(present):
        if not (path.startswith(".staging/") and path.endswith("/" + PUBLISHING)):
            continue
        try:
            note = json.loads(store.read(path))
        except (OSError, ValueError):
            note = None
        if note_signer_key(note) != sealed_by:
            report.add(path, "a PUBLISHING note not signed with the folder's audit key: it "
                             "excuses no file")
            continue
        if note.get("run_id") in sealed_runs or note.get("base_head") not in heads:
            continue  # a finished run's note, or another folder's: it excuses nothing
        for entry in note["files"]:
            if isinstance(entry, dict) and str(entry.get("path", "")).startswith(
                    ("latents/", "clips/")):
                named[entry["path"]] = (str(note["run_id"]), str(entry.get("sha256")))
    return named


def _check_record(store, manifest, chain, report) -> None:
    if not store.exists(RECORD_FILE):
        return  # reported as a missing file already when listed
    try:
        data = store.read(RECORD_FILE)
        record = json.loads(data)
    except Exception as exc:  # noqa: BLE001
        report.add(RECORD_FILE, f"unreadable ({type(exc).__name__})")
        return
    if not isinstance(record, dict):
        report.add(RECORD_FILE, "not a JSON object")
        return
    # A record written before egoveil signed its seals names no audit key; one whose run
    # signed its seal must name the key every seal was made with.
    run_signed = chain is not None and any(
        is_signed(e) for e in chain.entries
        if e["kind"] == "files_sealed" and e["op_id"] == manifest.get("run_id"))
    missing = [k for k in RECORD_REQUIRED if k not in record
               and (k != "audit_key" or run_signed)]
    if missing:
        report.add(RECORD_FILE, f"lacks {', '.join(missing)}")
    if record.get("run_id") != manifest.get("run_id"):
        report.add(RECORD_FILE, "its run_id is not the one manifest.json names")
    if run_signed and report.audit_key and record.get("audit_key") != report.audit_key:
        report.add(RECORD_FILE, f"names audit key {record.get('audit_key')}, the seals were "
                                f"made with {report.audit_key}")
    if chain is None:
        return
    seals = [e for e in chain.entries if e["kind"] == "files_sealed"]
    # Later operations (erasures) change the published totals but not the run's record.
    if seals and seals[-1]["op_id"] == manifest.get("run_id") \
            and record.get("totals") != manifest.get("totals"):
        report.add(RECORD_FILE, "its totals differ from manifest.json's")
    recorded = [e for e in chain.entries if e["kind"] == "run_record"
                and e["op_id"] == manifest.get("run_id")]
    if not recorded:
        report.add(EVENTS_FILE, f"no run_record entry for run {manifest.get('run_id')}")
    elif recorded[-1]["counts"].get("record_sha256") != hashlib.sha256(data).hexdigest():
        report.add(RECORD_FILE, f"is not the record the log holds (seq {recorded[-1]['seq']})")
