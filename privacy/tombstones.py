"""Tombstones: what was erased from an output, so that no later run brings it back.

``egoveil erase`` adds entries; ``egoveil run`` into the same output refuses every
recording whose wearer or content matches one, before decoding it (PRIVACY.md 12).
Entries hold keyed pseudonyms only, never a raw id or a path, and the file names
the key id they were made with: under another key the pseudonyms would not match,
so a run with another key is refused instead of silently bringing rows back.

File (``DIR/erasure/tombstones.json``)::

    {"format": "egoveil-tombstones", "version": 1, "key_id": "<16 hex>",
     "entries": [{"kind": "wearer" | "recording", "pseudonym": "<32 hex>",
                  "erasure_id": "<16 hex>", "erased_at": "<ISO 8601 UTC>"}]}
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

TOMBSTONE_PATH = "erasure/tombstones.json"
FORMAT = "egoveil-tombstones"
VERSION = 1
KINDS = ("wearer", "recording")
_PSEUDONYM = re.compile(r"^[0-9a-f]{32}$")
_KEY_ID = re.compile(r"^[0-9a-f]{16}$")


class TombstoneError(ValueError):
    """A tombstone file that cannot be honoured, or a key that does not match it."""


def is_pseudonym(text: str) -> bool:
    """Whether ``text`` has the shape of a keyed pseudonym (32 lowercase hex digits)."""
    return bool(_PSEUDONYM.match(text))


@dataclass(slots=True, frozen=True)
class Tombstone:
    """One erased wearer or recording."""

    kind: str
    pseudonym: str
    erasure_id: str
    erased_at: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise TombstoneError(f"tombstone kind must be one of {', '.join(KINDS)}")
        if not is_pseudonym(self.pseudonym):
            raise TombstoneError("a tombstone holds a keyed pseudonym (32 hex digits) only")


@dataclass(slots=True, frozen=True)
class Tombstones:
    """Every tombstone of one output, and the key id their pseudonyms were made with."""

    key_id: str | None = None
    entries: tuple[Tombstone, ...] = ()
    _wearers: frozenset = field(default=frozenset(), repr=False, compare=False)
    _recordings: frozenset = field(default=frozenset(), repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.entries and not (self.key_id and _KEY_ID.match(self.key_id)):
            raise TombstoneError("tombstones must name the key id they were made with")
        object.__setattr__(self, "_wearers", frozenset(
            t.pseudonym for t in self.entries if t.kind == "wearer"))
        object.__setattr__(self, "_recordings", frozenset(
            t.pseudonym for t in self.entries if t.kind == "recording"))

    @property
    def wearers(self) -> frozenset:
        return self._wearers

    @property
    def recordings(self) -> frozenset:
        return self._recordings

    def __len__(self) -> int:
        return len(self.entries)

    def check_key(self, key_id: str, legacy_key_id: str | None = None) -> None:
        """Raises ``TombstoneError`` when the tombstones were made with another key.

        Args:
            legacy_key_id: the same key's id as outputs written before key ids were
                derived name it (``PseudonymKey.legacy_key_id``).
        """
        if self.entries and self.key_id not in (key_id, legacy_key_id):
            raise TombstoneError(
                f"this output has erasure tombstones made with key id {self.key_id}, but the "
                f"key given has id {key_id}; use the key the output was written with, or "
                "erased data could come back")

    def match(self, wearer_id: str | None = None, recording_id: str | None = None) -> str | None:
        """``wearer`` or ``recording`` when a pseudonym is tombstoned, else None."""
        if wearer_id is not None and wearer_id in self._wearers:
            return "wearer"
        if recording_id is not None and recording_id in self._recordings:
            return "recording"
        return None

    def adding(self, key_id: str, new: list[Tombstone],
               legacy_key_id: str | None = None) -> Tombstones:
        """These tombstones plus ``new`` (an entry already present is kept as it was), under
        ``key_id`` (tombstones of the same key's legacy id take the current one)."""
        self.check_key(key_id, legacy_key_id)
        seen = {(t.kind, t.pseudonym) for t in self.entries}
        merged = list(self.entries)
        for entry in new:
            if (entry.kind, entry.pseudonym) not in seen:
                seen.add((entry.kind, entry.pseudonym))
                merged.append(entry)
        return Tombstones(key_id=key_id, entries=tuple(merged))

    def dumps(self) -> bytes:
        doc = {"format": FORMAT, "version": VERSION, "key_id": self.key_id,
               "entries": [{"kind": t.kind, "pseudonym": t.pseudonym,
                            "erasure_id": t.erasure_id, "erased_at": t.erased_at}
                           for t in self.entries]}
        return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()

    def fingerprint(self) -> str:
        """A hash of the entries: a run compares it at publish time with the one it started on."""
        blob = "\n".join(sorted(f"{t.kind}:{t.pseudonym}" for t in self.entries))
        return hashlib.sha256(blob.encode()).hexdigest()

    @staticmethod
    def parse(data: bytes) -> Tombstones:
        """Read a tombstone file.

        Raises:
            TombstoneError: not a tombstone file, or an entry that is not a pseudonym.
        """
        try:
            doc = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise TombstoneError("the tombstone file is not valid JSON") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise TombstoneError("not an egoveil tombstone file")
        if doc.get("version") != VERSION:
            raise TombstoneError(f"tombstone file version {doc.get('version')!r} is not "
                                 f"supported (expected {VERSION})")
        entries = doc.get("entries")
        if not isinstance(entries, list):
            raise TombstoneError("tombstone file has no entry list")
        try:
            parsed = tuple(Tombstone(kind=e["kind"], pseudonym=e["pseudonym"],
                                     erasure_id=str(e["erasure_id"]),
                                     erased_at=str(e["erased_at"])) for e in entries)
        except (KeyError, TypeError):
            raise TombstoneError("a tombstone entry lacks kind, pseudonym, erasure_id or "
                                 "erased_at") from None
        return Tombstones(key_id=doc.get("key_id"), entries=parsed)
