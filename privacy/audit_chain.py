"""The hash chain under the audit log: making entries and checking them (PRIVACY.md 14).

Each entry carries the hash of the one before it, so changing, dropping or
reordering any entry breaks every hash after it, and the checker names the first
entry that does not hold. What a chain cannot show on its own is that its tail was
cut off or the whole log rewritten: ``manifest.json`` names the head, and an
auditor who keeps the head from an earlier check (``--expect-head``) detects a
rewrite (Crosby and Wallach 2009: the log is tamper-evident against a commitment
held outside it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from schemas.audit import GENESIS, HASH_DOMAIN, LOG_FIELDS


def canonical_json(value: object) -> bytes:
    """The one byte form that hashes are taken over: sorted keys, no spaces, ASCII."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode()


def entry_hash(entry: dict) -> str:
    """The hash of a log entry: sha256 over the domain tag and every field but ``hash``."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(HASH_DOMAIN + canonical_json(body)).hexdigest()


def entry_line(entry: dict) -> bytes:
    """An entry as one line of the log file."""
    return canonical_json(entry) + b"\n"


def make_entry(prev: str, seq: int, *, at: str, op: str, op_id: str, kind: str,
               recording_id: str | None = None, segment_index: int | None = None,
               counts: dict | None = None) -> dict:
    """A new entry chained onto ``prev``.

    Raises:
        ValueError: ``counts`` holds something JSON cannot carry exactly (NaN, objects).
    """
    entry = {"seq": seq, "prev": prev, "at": at, "op": op, "op_id": op_id, "kind": kind,
             "recording_id": recording_id, "segment_index": segment_index,
             "counts": dict(counts or {})}
    entry["hash"] = entry_hash(entry)
    return entry


def _is_hex64(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and \
        all(c in "0123456789abcdef" for c in value)


@dataclass(slots=True)
class ChainCheck:
    """What checking a log found.

    Attributes:
        entries: the entries that hold, in order, up to the first broken one.
        head: hash of the last entry that holds (``GENESIS`` for an empty log).
        line: 1-based line number of the first broken entry, or None.
        problem: why that entry is broken, or None when the whole chain holds.
    """

    entries: list[dict] = field(default_factory=list)
    head: str = GENESIS
    line: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def where(self) -> str:
        return f"line {self.line} (seq {self.line - 1})" if self.line else "the log"


def check_chain(data: bytes) -> ChainCheck:
    """Check every entry of a log file in order; stop at the first one that does not hold.

    An entry holds when it is one JSON object with exactly ``LOG_FIELDS``, its
    ``seq`` is its position, its ``prev`` is the previous entry's hash (``GENESIS``
    for the first) and its ``hash`` is the hash of its content.
    """
    result = ChainCheck()
    if data and not data.endswith(b"\n"):
        data += b"\n"  # a missing final newline is reported below as a short last line
    lines = data.split(b"\n")[:-1] if data else []
    for number, raw in enumerate(lines, start=1):
        seq = number - 1

        def broken(problem: str, line: int = number) -> ChainCheck:
            result.line, result.problem = line, problem
            return result

        try:
            entry = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return broken("not a JSON object (the line was altered or cut)")
        if not isinstance(entry, dict):
            return broken("not a JSON object")
        if set(entry) != set(LOG_FIELDS):
            missing = sorted(set(LOG_FIELDS) - set(entry))
            extra = sorted(set(entry) - set(LOG_FIELDS))
            return broken(f"fields differ from the log format (missing {missing}, "
                          f"extra {extra})")
        if entry["seq"] != seq:
            return broken(f"seq is {entry['seq']!r}, expected {seq} (entries were removed, "
                          "added or reordered)")
        if entry["prev"] != result.head:
            return broken("prev does not match the hash of the entry before it (entries were "
                          "removed, added or reordered)")
        if not _is_hex64(entry["hash"]) or entry_hash(entry) != entry["hash"]:
            return broken("hash does not match the entry's content (the entry was altered)")
        result.entries.append(entry)
        result.head = entry["hash"]
    return result


def chain_events(prev: str, next_seq: int, events: Iterable[dict], *, at: str, op: str,
                 op_id: str) -> list[dict]:
    """Entries for ``events`` (dicts with kind, recording_id, segment_index, counts)."""
    entries = []
    for event in events:
        entry = make_entry(prev, next_seq, at=at, op=op, op_id=op_id, kind=event["kind"],
                           recording_id=event.get("recording_id"),
                           segment_index=event.get("segment_index"),
                           counts=event.get("counts"))
        entries.append(entry)
        prev, next_seq = entry["hash"], next_seq + 1
    return entries


def files_digest(files: Iterable[dict]) -> str:
    """One hash over a published file list (path, kind, sha256, bytes, rows), order-free."""
    rows = sorted(([f["path"], f.get("kind"), f["sha256"], f.get("bytes"), f.get("rows")]
                   for f in files), key=lambda r: r[0])
    return hashlib.sha256(HASH_DOMAIN + canonical_json(rows)).hexdigest()
