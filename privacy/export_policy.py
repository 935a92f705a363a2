"""What an export may hold: its rows, its columns, its splits, and how erasures find it.

The decisions behind ``egoveil export`` (PRIVACY.md 12), plain Python over Arrow
tables; the writers are ``pipeline.export``'s.

- Rows: by default only rows whose redaction was verified (``verified``,
  ``reredacted_verified``); filters narrow that down further.
- Columns: the wearer and device pseudonyms are left out unless asked for: a
  trainer does not need them, and each links rows to a person.
- Splits by wearer: a wearer's rows all go to one split, chosen from the keyed
  pseudonym alone (so a wearer stays in the same split when the dataset grows),
  and no identity spans train and validation. Rows without a wearer pseudonym
  (runs without a manifest) are placed by recording, the finest identity known.
- Erasure tags: the export's lineage names each row by its clip id and by two
  salted tags, one of its wearer and one of its recording. ``--sync`` recomputes
  the tags of the source's tombstones to find the rows to remove. A tag is unique
  to its row (the clip id is inside the hash), so the tags link no two rows, and
  dropping the wearer column is not undone by the lineage.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from schemas.latents import LATENT_COLUMNS, QA_STATUSES

DEFAULT_QA_STATUSES = ("verified", "reredacted_verified")
PSEUDONYM_COLUMNS = ("wearer_id", "device_id")
# Always exported: the sample key, and what erasure and splits are decided on.
KEY_COLUMN = "clip_id"
# Read for the decisions whether or not they are exported.
DECISION_COLUMNS = ("clip_id", "recording_id", "wearer_id", "view", "encoder_id", "qa_status",
                    "frame_count", "start_s", "end_s")
_SPLIT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_SPLIT_DOMAIN = b"egoveil-split-v1\x00"
_TAG_DOMAIN = b"egoveil-export-tag-v1\x00"


class ExportPolicyError(ValueError):
    """A filter, split or column choice that cannot be honoured (one line, no values)."""


@dataclass(slots=True, frozen=True)
class SplitSpec:
    """Named splits and the share of identities each should get.

    Args:
        shares: (name, fraction) pairs in order; the fractions sum to 1.
        seed: mixed into the assignment, so that two exports can split differently.
    """

    shares: tuple[tuple[str, float], ...] = (("train", 1.0),)
    seed: str = ""

    def __post_init__(self) -> None:
        names = [n for n, _ in self.shares]
        if not names:
            raise ExportPolicyError("--split names no split")
        for name, fraction in self.shares:
            if not _SPLIT_NAME.match(name):
                raise ExportPolicyError(f"--split: {name!r} is not a split name (lowercase "
                                        "letters, digits and _, starting with a letter)")
            if not (0 < fraction <= 1) or math.isnan(fraction):
                raise ExportPolicyError(f"--split: the share of {name} must be in (0, 1]")
        if len(set(names)) != len(names):
            raise ExportPolicyError("--split names a split twice")
        if abs(sum(f for _, f in self.shares) - 1) > 1e-6:
            raise ExportPolicyError("--split shares must add up to 1 (e.g. train=0.9,val=0.1)")

    @staticmethod
    def parse(text: str | None, seed: str = "") -> SplitSpec:
        """``train=0.9,val=0.1`` (or None for one ``train`` split)."""
        if not text:
            return SplitSpec(seed=seed)
        shares = []
        for part in text.split(","):
            name, sep, value = part.strip().partition("=")
            try:
                shares.append((name.strip(), float(value)))
            except ValueError:
                raise ExportPolicyError("--split takes NAME=SHARE pairs, e.g. "
                                        "train=0.9,val=0.1") from None
            if not sep:
                raise ExportPolicyError("--split takes NAME=SHARE pairs, e.g. train=0.9,val=0.1")
        return SplitSpec(tuple(shares), seed)

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.shares]

    def describe(self) -> dict:
        return {"shares": dict(self.shares), "by": "wearer pseudonym (recording without one)",
                "seed": self.seed}

    def split_of(self, identity: str) -> str:
        """The split of one identity: where its hash falls among the cumulative shares."""
        digest = hashlib.sha256(_SPLIT_DOMAIN + self.seed.encode() + b"\x00"
                                + identity.encode()).digest()
        point = int.from_bytes(digest[:8], "big") / 2**64
        edge = 0.0
        for name, fraction in self.shares:
            edge += fraction
            if point < edge:
                return name
        return self.shares[-1][0]


def identities(wearers: Sequence[str | None], recordings: Sequence[str]) -> list[str]:
    """The identity each row is split by: its wearer, else its recording."""
    return [f"wearer:{w}" if w else f"recording:{r}" for w, r in zip(wearers, recordings)]


def check_splits(spec: SplitSpec, rows_by_split: dict[str, int],
                 identities_by_split: dict[str, int]) -> None:
    """Refuse an assignment that leaves a split empty.

    Raises:
        ExportPolicyError: one line naming the empty split and the number of identities.
    """
    total = sum(identities_by_split.values())
    for name in spec.names:
        if not rows_by_split.get(name):
            raise ExportPolicyError(
                f"--split cannot be satisfied: no wearer falls in {name!r} ({total} "
                "identities in the selected rows, each kept whole in one split); give it a "
                "larger share, another --split-seed, or fewer splits")


def _values(text: str | Iterable[str] | None) -> tuple[str, ...]:
    if text is None:
        return ()
    parts = text.split(",") if isinstance(text, str) else list(text)
    return tuple(dict.fromkeys(p.strip() for p in parts if p.strip()))


@dataclass(slots=True, frozen=True)
class ExportFilter:
    """Which rows and columns an export takes.

    Args:
        qa_statuses: rows whose ``qa_status`` is one of these (default: verified only).
        views: rows of these views (default: all).
        encoders: rows of these encoder ids (default: all).
        min_frames: rows of at least this many frames.
        time_range: (start, end) seconds from the recording start; a row is kept when it
            lies inside (None for an open end).
        columns: the columns to keep (default: all but the pseudonyms); the clip id is
            always kept.
        keep_pseudonyms: keep ``wearer_id`` and ``device_id``.
    """

    qa_statuses: tuple[str, ...] = DEFAULT_QA_STATUSES
    views: tuple[str, ...] = ()
    encoders: tuple[str, ...] = ()
    min_frames: int = 0
    time_range: tuple[float | None, float | None] = (None, None)
    columns: tuple[str, ...] = ()
    keep_pseudonyms: bool = False

    def __post_init__(self) -> None:
        bad = [s for s in self.qa_statuses if s not in QA_STATUSES]
        if bad or not self.qa_statuses:
            raise ExportPolicyError(f"--qa-status takes {', '.join(QA_STATUSES)}")
        if self.min_frames < 0:
            raise ExportPolicyError("--min-frames must be 0 or more")
        start, end = self.time_range
        if start is not None and end is not None and end <= start:
            raise ExportPolicyError("--time-range: END must be after START")
        if not self.keep_pseudonyms:
            listed = [c for c in self.columns if c in PSEUDONYM_COLUMNS]
            if listed:
                raise ExportPolicyError(f"--columns lists {listed[0]}, a pseudonym: add "
                                        "--keep-pseudonyms to export it")

    @staticmethod
    def from_options(qa_status: str | None = None, view: str | None = None,
                     encoder: str | None = None, min_frames: int = 0,
                     time_range: str | None = None, columns: str | None = None,
                     keep_pseudonyms: bool = False) -> ExportFilter:
        """The filter from command-line strings (comma lists, ``START:END``)."""
        span: tuple[float | None, float | None] = (None, None)
        if time_range:
            start, sep, end = time_range.partition(":")
            try:
                span = (float(start) if start.strip() else None,
                        float(end) if end.strip() else None)
            except ValueError:
                raise ExportPolicyError("--time-range takes START:END in seconds from the "
                                        "recording start (either side may be empty)") from None
            if not sep:
                raise ExportPolicyError("--time-range takes START:END in seconds")
        return ExportFilter(qa_statuses=_values(qa_status) or DEFAULT_QA_STATUSES,
                            views=_values(view), encoders=_values(encoder),
                            min_frames=min_frames, time_range=span,
                            columns=_values(columns), keep_pseudonyms=keep_pseudonyms)

    def describe(self) -> dict:
        return {"qa_status": list(self.qa_statuses), "view": list(self.views) or None,
                "encoder": list(self.encoders) or None, "min_frames": self.min_frames,
                "time_range_s": list(self.time_range), "columns": list(self.columns) or None,
                "keep_pseudonyms": self.keep_pseudonyms}

    def output_columns(self, schema_names: Sequence[str]) -> list[str]:
        """The source columns the export holds, in the source's order.

        Raises:
            ExportPolicyError: ``columns`` names a column the shards do not have.
        """
        unknown = [c for c in self.columns if c not in schema_names]
        if unknown:
            raise ExportPolicyError(f"--columns: the shards have no column {unknown[0]!r} "
                                    f"(they have {', '.join(schema_names)})")
        wanted = set(self.columns) | {KEY_COLUMN} if self.columns else set(schema_names)
        if not self.keep_pseudonyms:
            wanted -= set(PSEUDONYM_COLUMNS)
        return [c for c in schema_names if c in wanted]

    def mask(self, table: pa.Table) -> pa.Array:
        """Which rows of ``table`` (holding ``DECISION_COLUMNS``) the export takes."""
        keep = pc.is_in(table.column("qa_status"), value_set=pa.array(self.qa_statuses))
        if self.views:
            keep = pc.and_(keep, pc.is_in(table.column("view"), value_set=pa.array(self.views)))
        if self.encoders:
            keep = pc.and_(keep, pc.is_in(table.column("encoder_id"),
                                          value_set=pa.array(self.encoders)))
        if self.min_frames:
            keep = pc.and_(keep, pc.greater_equal(table.column("frame_count"), self.min_frames))
        start, end = self.time_range
        if start is not None:
            keep = pc.and_(keep, pc.greater_equal(table.column("start_s"), start))
        if end is not None:
            keep = pc.and_(keep, pc.less_equal(table.column("end_s"), end))
        keep = pc.fill_null(keep, False)
        return keep.combine_chunks() if isinstance(keep, pa.ChunkedArray) else keep


def latent_columns(columns: Sequence[str]) -> list[str]:
    return [c for c in columns if c in LATENT_COLUMNS]


def erasure_tag(salt: str, clip_id: str, kind: str, pseudonym: str | None) -> str | None:
    """The salted tag of a row's wearer or recording (None when the row has none)."""
    if not pseudonym:
        return None
    blob = "\x00".join((salt, clip_id, kind, pseudonym)).encode()
    return hashlib.sha256(_TAG_DOMAIN + blob).hexdigest()[:32]


def rows_reached(rows: Iterable[dict], salt: str, wearers: Iterable[str],
                 recordings: Iterable[str]) -> set[str]:
    """Clip ids of the lineage rows (``clip_id``, ``wearer_tag``, ``recording_tag``) that
    belong to an erased wearer or recording."""
    wearers, recordings = sorted(wearers), sorted(recordings)
    reached = set()
    for row in rows:
        clip = row["clip_id"]
        if row.get("wearer_tag") and any(
                erasure_tag(salt, clip, "wearer", w) == row["wearer_tag"] for w in wearers):
            reached.add(clip)
        elif row.get("recording_tag") and any(
                erasure_tag(salt, clip, "recording", r) == row["recording_tag"]
                for r in recordings):
            reached.add(clip)
    return reached
