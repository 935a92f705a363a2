"""The anonymization settings of a run, validated once and fingerprinted for the record."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from privacy.detectors.factory import DEFAULT_DETECTOR, DetectorSpec
from privacy.redaction import RedactionConfig


@dataclass(slots=True, frozen=True)
class AnonymizationConfig:
    """How frames are anonymized.

    Args:
        detector: detector spec (see ``privacy.detectors.factory``).
        redaction: how detected faces are redacted.
        temporal_window: frames on each side whose detections also cover a frame.
        detect_timeout_s: a single detection slower than this fails the segment.
        max_corrupt_fraction: corrupt frames above this share dead-letter a segment.
    """

    detector: str = DEFAULT_DETECTOR
    redaction: RedactionConfig = field(default_factory=RedactionConfig)
    temporal_window: int = 2
    detect_timeout_s: float = 60.0
    max_corrupt_fraction: float = 0.05

    def __post_init__(self) -> None:
        DetectorSpec.parse(self.detector)  # raises ValueError naming the problem
        if not 0 <= self.temporal_window <= 30:
            raise ValueError(f"temporal_window must be in [0, 30], got {self.temporal_window}")
        if self.detect_timeout_s <= 0:
            raise ValueError(f"detect_timeout_s must be positive, got {self.detect_timeout_s}")
        if not 0 <= self.max_corrupt_fraction <= 1:
            raise ValueError("max_corrupt_fraction must be in [0, 1]")

    @property
    def detector_spec(self) -> DetectorSpec:
        return DetectorSpec.parse(self.detector)

    def describe(self) -> dict:
        return asdict(self)

    def fingerprint(self) -> str:
        blob = json.dumps(self.describe(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()
