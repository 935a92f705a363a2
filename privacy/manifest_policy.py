"""Which manifest line a file is processed under when several lines name it (PRIVACY.md 9, 12).

A manifest line says whose recording a file is, from which device, when and how
its views are packed: the wearer decides whose consent is checked and which
pseudonym the rows carry. Lines that name the same file and say the same thing
are one input. Lines that name the same file and disagree on anything are a
conflict: the file is processed under none of them, since picking one would check
the wrong consent or attach the wrong pseudonym; it becomes one dead letter
(``manifest_conflict``) that names the fields in disagreement, never their values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from schemas.sidecar import RecordingRequest


@dataclasses.dataclass(slots=True, frozen=True)
class ManifestChoice:
    """What the manifest says about one file.

    Attributes:
        request: the request to process it under, or None (no line, or a conflict).
        lines: how many manifest lines named it.
        conflicting: the fields the lines disagree on (empty when they agree).
    """

    request: RecordingRequest | None
    lines: int
    conflicting: tuple[str, ...] = ()

    @property
    def conflict(self) -> bool:
        return bool(self.conflicting)


def choose(entries: Iterable[RecordingRequest]) -> ManifestChoice:
    """The request for one file from every manifest line that names it."""
    entries = list(entries)
    distinct = list(dict.fromkeys(entries))  # identical lines are one, in the manifest's order
    if len(distinct) <= 1:
        return ManifestChoice(distinct[0] if distinct else None, len(entries))
    differing = tuple(f.name for f in dataclasses.fields(RecordingRequest)
                      if len({getattr(e, f.name) for e in distinct}) > 1)
    return ManifestChoice(None, len(entries), differing)
