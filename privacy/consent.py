"""The consent gate: only recordings whose wearer consented to this purpose are read.

The registry is a CSV with the header ``wearer_id,purpose,granted_at,withdrawn_at``
(DESIGN.md). A grant is valid when it names the run's purpose, was given before
the recording was captured (where the capture time is known) and before now,
and has not been withdrawn. Raw wearer ids stay inside this module's caller on
the worker; they are never written anywhere.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime, timezone

HEADER = ("wearer_id", "purpose", "granted_at", "withdrawn_at")
DEFAULT_PURPOSE = "world-model-training"


class ConsentFileError(ValueError):
    """The consent file cannot be used; the message names the line and column, not values."""


@dataclass(slots=True, frozen=True)
class Grant:
    purpose: str
    granted_at: datetime
    withdrawn_at: datetime | None


def _parse_time(text: str, line: int, column: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConsentFileError(f"consent file line {line}: {column} is not an ISO 8601 time") \
            from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


class ConsentRegistry:
    """Consent grants by wearer."""

    def __init__(self, grants: dict[str, list[Grant]]) -> None:
        self._grants = grants

    @staticmethod
    def parse(text: str) -> ConsentRegistry:
        """Parse the CSV text.

        Raises:
            ConsentFileError: wrong header, missing fields or bad times.
        """
        reader = csv.reader(io.StringIO(text))
        try:
            header = tuple(h.strip() for h in next(reader))
        except StopIteration:
            raise ConsentFileError("consent file is empty") from None
        if header != HEADER:
            raise ConsentFileError(f"consent file header must be {','.join(HEADER)}")
        grants: dict[str, list[Grant]] = {}
        for line, row in enumerate(reader, start=2):
            if not row or not any(cell.strip() for cell in row):
                continue
            if len(row) != 4:
                raise ConsentFileError(f"consent file line {line}: expected 4 fields")
            wearer, purpose, granted, withdrawn = (cell.strip() for cell in row)
            if not wearer or not purpose or not granted:
                raise ConsentFileError(f"consent file line {line}: wearer_id, purpose and "
                                       "granted_at are required")
            grants.setdefault(wearer, []).append(Grant(
                purpose=purpose,
                granted_at=_parse_time(granted, line, "granted_at"),
                withdrawn_at=_parse_time(withdrawn, line, "withdrawn_at") if withdrawn else None))
        return ConsentRegistry(grants)

    @staticmethod
    def from_bytes(data: bytes) -> ConsentRegistry:
        """Parse the file's bytes (UTF-8, with or without a byte-order mark).

        Raises:
            ConsentFileError: not UTF-8, or not a valid registry.
        """
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ConsentFileError("the consent file is not UTF-8 text") from None
        return ConsentRegistry.parse(text)

    def decide(self, wearer_id: str | None, purpose: str, captured_at: datetime | None = None,
               now: datetime | None = None) -> str | None:
        """None when processing is allowed, else the reason it is not."""
        if not wearer_id:
            return "no_wearer_id"
        grants = [g for g in self._grants.get(wearer_id, []) if g.purpose == purpose]
        if not grants:
            return "no_grant_for_purpose"
        now = now or datetime.now(timezone.utc)
        for grant in grants:
            if grant.granted_at > now:
                continue
            if grant.withdrawn_at is not None and grant.withdrawn_at <= now:
                continue
            if captured_at is not None and captured_at < grant.granted_at:
                continue
            return None
        if all(g.withdrawn_at is not None and g.withdrawn_at <= now for g in grants):
            return "withdrawn"
        return "not_valid_for_capture_time"
