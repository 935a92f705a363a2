"""Dead letters and audit events: what a run says about what it did not or did do.

Neither carries pixels, raw identifiers or input paths. ``input_id`` is a keyed
pseudonym of the input's location, so a dead letter can be matched to an input
by whoever holds the key, and by nobody else.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

# Reasons are a closed vocabulary so that reports can count them.
REASONS = (
    "unreadable",        # zero bytes, random bytes, not a container
    "no_video",          # a container without a video stream
    "unsupported",       # codec or layout outside the allow-list
    "too_large",         # resolution, duration or size above the caps
    "decode_error",      # failed mid-stream
    "corrupt_frames",    # too many corrupt frames in a segment
    "detector_failed",   # detection raised, timed out or returned garbage: fail closed
    "verification_failed",
    "embed_failed",      # the encoder raised on the clip's batch
    "no_consent",
    "bad_manifest",
    "duplicate",
    "internal_error",
)


@dataclass(slots=True, frozen=True)
class DeadLetter:
    """One input or segment that produced no output, and why."""

    input_id: str
    stage: str
    reason: str
    detail: str = ""
    recording_id: str | None = None
    segment_index: int | None = None

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ValueError(f"unknown dead-letter reason {self.reason!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(slots=True, frozen=True)
class AuditEvent:
    """A countable fact about the run (no personal data, pseudonyms only)."""

    kind: str
    recording_id: str | None = None
    segment_index: int | None = None
    counts: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)
