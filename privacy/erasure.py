"""Which rows, clips and records an erasure request reaches (GDPR Art. 17, PRIVACY.md 12).

A request names wearers and recordings by keyed pseudonym. It reaches every
shard row of those wearers and recordings, every clip of those rows, and every
dead letter of those wearers and recordings; the recordings found through a
wearer's rows or dead letters are tombstoned too, so the same files delivered later
without a wearer id stay out.
The I/O (rewriting shards, the manifest swap) is ``pipeline.erase``'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from privacy.tombstones import Tombstone

# Columns an erasure needs in every shard; a shard without them cannot be erased from.
REQUIRED_COLUMNS = ("clip_id", "recording_id", "wearer_id")


class ErasureError(ValueError):
    """An erasure that cannot be carried out safely; nothing was changed."""


@dataclass(slots=True, frozen=True)
class ErasureRequest:
    """Who or what to erase, as keyed pseudonyms.

    Args:
        wearers: wearer pseudonyms.
        recordings: recording pseudonyms (keyed hashes of the files' content).
        input_ids: input pseudonyms (keyed hashes of the files' locations), which is
            all a dead letter of an unreadable input carries.
    """

    wearers: frozenset = frozenset()
    recordings: frozenset = frozenset()
    input_ids: frozenset = frozenset()

    def __post_init__(self) -> None:
        if not self.wearers and not self.recordings:
            raise ErasureError("an erasure names at least one wearer or recording")


@dataclass(slots=True)
class ShardErasure:
    """What an erasure does to one shard table."""

    kept: pa.Table
    removed_rows: int
    clip_ids: list[str]
    recordings: set[str]


def erase_rows(table: pa.Table, request: ErasureRequest) -> ShardErasure:
    """Split a shard table into the rows to keep and what the removed rows name.

    Raises:
        ErasureError: the table lacks a column erasure needs.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise ErasureError(f"a shard lacks the column(s) {', '.join(missing)}; it cannot be "
                           "erased from")
    hit = pc.or_(
        pc.is_in(table.column("wearer_id"), value_set=pa.array(sorted(request.wearers),
                                                               pa.string())),
        pc.is_in(table.column("recording_id"), value_set=pa.array(sorted(request.recordings),
                                                                  pa.string())))
    hit = pc.fill_null(hit, False)
    removed = table.filter(hit)
    return ShardErasure(kept=table.filter(pc.invert(hit)), removed_rows=removed.num_rows,
                        clip_ids=removed.column("clip_id").to_pylist(),
                        recordings=set(removed.column("recording_id").to_pylist()))


def dead_letter_reached(record: dict, recordings: set[str], input_ids: frozenset,
                        wearers: frozenset = frozenset()) -> bool:
    """Whether a dead-letter record belongs to an erased wearer, recording or input.

    Dead letters name the wearer (keyed pseudonym) when the manifest gave one, so a
    wearer's inputs that failed before producing a row are found too; those written by
    an egoveil that did not record it are found by recording or input only.
    """
    return (record.get("recording_id") in recordings or record.get("input_id") in input_ids
            or (record.get("wearer_id") is not None and record.get("wearer_id") in wearers))


def failed_recordings(records: list[dict], wearers: frozenset) -> set[str]:
    """Recordings of erased wearers that only dead letters name (they produced no rows);
    tombstoned like the others, so that a later run skips them."""
    return {r["recording_id"] for r in records
            if r.get("wearer_id") in wearers and r.get("recording_id")}


def tombstones_for(request: ErasureRequest, found_recordings: set[str], erasure_id: str,
                   erased_at: str) -> list[Tombstone]:
    """Tombstones for the request's wearers and recordings and for every recording found."""
    entries = [Tombstone("wearer", w, erasure_id, erased_at) for w in sorted(request.wearers)]
    entries += [Tombstone("recording", r, erasure_id, erased_at)
                for r in sorted(set(request.recordings) | found_recordings)]
    return entries
