"""What each stage of the graph hands to the next: output tags and named bundles.

Every stage with side outputs returns one of the NamedTuples below (Beam accepts
a NamedTuple of PCollections as a transform's output and as its input), so the
graph builder reads ``anonymized.clips`` or ``anonymized.deadletters`` rather
than positions or strings. The tags name the side outputs of the DoFns behind
the stages; they are declared here once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

# Side-output tags of the stages' DoFns.
DEADLETTER = "deadletter"  # schemas.records.DeadLetter
AUDIT = "audit"            # schemas.records.AuditEvent
FILES = "files"            # PublishedFile: clip videos written by the anonymize stage
CACHED = "cached"          # schemas.elements.LatentRow restored from the segment cache

# ``Any`` stands for ``apache_beam.PCollection``: schemas import nothing of Beam's.
PCollection = Any


class Discovered(NamedTuple):
    """Discover: one ``RecordingRequest`` per input, bad manifest lines as dead letters."""

    requests: PCollection
    deadletters: PCollection


class Admitted(NamedTuple):
    """Admit: consented, probed, pseudonymized, deduplicated ``Recording``s."""

    recordings: PCollection
    deadletters: PCollection
    audit: PCollection


class Resumed(NamedTuple):
    """Resume: segments still to do; finished segments' rows, events and clip files."""

    todo: PCollection
    rows: PCollection
    audit: PCollection
    files: PCollection


class Anonymized(NamedTuple):
    """Anonymize: redacted ``Clip``s for the encoder, clip files, dead letters, events."""

    clips: PCollection
    files: PCollection
    deadletters: PCollection
    audit: PCollection


class Embedded(NamedTuple):
    """Embed: ``LatentRow``s, and dead letters for batches the encoder failed on."""

    rows: PCollection
    deadletters: PCollection


class PublishInputs(NamedTuple):
    """Everything a run publishes, gathered once every shard is staged."""

    shards: PCollection       # schemas.elements.ShardFile
    clip_files: PCollection   # PublishedFile
    deadletters: PCollection  # schemas.records.DeadLetter
    events: PCollection       # schemas.records.AuditEvent
    inputs: PCollection       # one int: inputs found (for the failure-rate gate)


@dataclass(slots=True, frozen=True)
class PublishedFile:
    """A file a run publishes, as ``manifest.json`` lists it.

    Attributes:
        path: relative to the output folder, with ``/``.
        kind: one of ``schemas.audit.FILE_KINDS``.
        sha256: hex digest of the bytes.
        bytes: size.
        rows: what the kind counts (shard rows, clip frames, lines), or None.
    """

    path: str
    kind: str
    sha256: str
    bytes: int
    rows: int | None = None

    def to_entry(self) -> dict:
        """The manifest entry."""
        return asdict(self)

    @staticmethod
    def from_entry(entry: dict) -> PublishedFile:
        return PublishedFile(path=entry["path"], kind=entry["kind"], sha256=entry["sha256"],
                             bytes=int(entry["bytes"]), rows=entry.get("rows"))
