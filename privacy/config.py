"""The anonymization settings of a run, validated once and fingerprinted for the record."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass, field

from privacy.detectors.factory import DEFAULT_DETECTOR, DetectorSpec
from privacy.redaction import RedactionConfig
from privacy.stereo import CrossViewConfig
from privacy.verification import VerificationConfig

# A segment that fails verification is redacted again with this detector, the
# verifier's own detector added, and this mask scale; if it fails again it is
# quarantined.
STRONG_DETECTOR = "centerface:threshold=0.1;scales=1,2"
STRONG_MASK_SCALE = 1.6


@dataclass(slots=True, frozen=True)
class AnonymizationConfig:
    """How frames are anonymized.

    Args:
        detector: detector spec (see ``privacy.detectors.factory``).
        redaction: how detected faces are redacted.
        temporal_window: frames on each side whose detections also cover a frame.
        detect_timeout_s: a single detection slower than this fails the segment.
        max_corrupt_fraction: corrupt frames above this share dead-letter a segment.
        verification: the independent checks on redacted frames.
        strong_detector: detector spec of the second, stronger pass after a failed
            verification (the verifier's detector is added to it).
        detect_batch_size: frames per detector call (raise it on a GPU backend).
        cross_view: how a face found in one eye of a stereo pair is searched for in the other.
    """

    detector: str = DEFAULT_DETECTOR
    redaction: RedactionConfig = field(default_factory=RedactionConfig)
    temporal_window: int = 2
    detect_timeout_s: float = 60.0
    max_corrupt_fraction: float = 0.05
    verification: VerificationConfig = field(default_factory=VerificationConfig)
    strong_detector: str = STRONG_DETECTOR
    detect_batch_size: int = 1
    cross_view: CrossViewConfig = field(default_factory=CrossViewConfig)

    def __post_init__(self) -> None:
        DetectorSpec.parse(self.detector)  # raises ValueError naming the problem
        DetectorSpec.parse(self.strong_detector)
        if self.cross_view.detector != "none":
            DetectorSpec.parse(self.cross_view.detector)
        if self.verification.enabled:
            DetectorSpec.parse(self.verification.verifier)
        if not 0 <= self.temporal_window <= 30:
            raise ValueError(f"temporal_window must be in [0, 30], got {self.temporal_window}")
        if self.detect_timeout_s <= 0:
            raise ValueError(f"detect_timeout_s must be positive, got {self.detect_timeout_s}")
        if not 1 <= self.detect_batch_size <= 256:
            raise ValueError("detect_batch_size must be in [1, 256]")
        if not 0 <= self.max_corrupt_fraction <= 1:
            raise ValueError("max_corrupt_fraction must be in [0, 1]")

    @property
    def detector_spec(self) -> DetectorSpec:
        return DetectorSpec.parse(self.detector)

    def strong(self) -> AnonymizationConfig:
        """The configuration of the second pass after a failed verification."""
        spec = self.strong_detector
        if self.verification.enabled:
            spec = f"{spec}+{self.verification.verifier}"
        return dataclasses.replace(
            self, detector=spec,
            redaction=RedactionConfig(mode="solid",
                                      mask_scale=max(STRONG_MASK_SCALE,
                                                     self.redaction.mask_scale)))

    def describe(self) -> dict:
        return asdict(self)

    def fingerprint(self) -> str:
        blob = json.dumps(self.describe(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()
