"""Verified anonymization: anonymize, verify, redo once stronger, else quarantine.

One policy for every unit of work, whether it is a segment of ``egoveil run`` or
a whole file of ``egoveil redact``: the unit is anonymized with the configured
detectors; if verification of the output fails, everything of that attempt is
discarded and the unit is anonymized again with the stronger configuration
(``AnonymizationConfig.strong``, for the classes whose checks failed); if that
fails too, the unit is quarantined (``VerificationFailed``) and nothing of it may
be released. The anonymizers are
built here from the configuration, one detector per class, the same way for
both commands (stereo cross-view search included).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from privacy.anonymizer import ClassDetector, SegmentAnonymizer
from privacy.config import AnonymizationConfig, ClassPolicy
from privacy.detectors import Detector, build_detector
from privacy.detectors.factory import at_scale, on_crops
from privacy.stereo import CrossViewSearch
from privacy.verification import RedactionVerifier, VerificationSummary
from schemas.detections import FACE
from schemas.latents import QA_REREDACTED_VERIFIED, QA_UNVERIFIED, QA_VERIFIED


class VerificationFailed(Exception):
    """Redaction could not be verified even after the stronger pass: quarantine.

    Attributes:
        first: the first pass's verification counts.
        second: the stronger pass's.
    """

    def __init__(self, first: VerificationSummary, second: VerificationSummary) -> None:
        super().__init__(f"{second.findings()} after the stronger pass")
        self.first = first
        self.second = second


class Attempt(Protocol):
    """What one anonymization of a unit produced, held back until it is verified."""

    def discard(self) -> None:
        """Drop everything the attempt produced (temporary files, frames)."""


A = TypeVar("A", bound=Attempt)


@dataclass(slots=True)
class Verified(Generic[A]):
    """An attempt that may be released, and how it got there.

    Attributes:
        attempt: the attempt whose output passed (or was not verified).
        qa_status: ``verified``, ``reredacted_verified`` or ``redacted_unverified``.
        verification: the counts of the released attempt's checks.
        failed_first: the first pass's counts when it failed and was redone.
    """

    attempt: A
    qa_status: str
    verification: VerificationSummary
    failed_first: VerificationSummary | None = None


DetectorFactory = Callable[[], Detector]


def build_class_detector(policy: ClassPolicy, config: AnonymizationConfig,
                         factory: DetectorFactory | None = None) -> ClassDetector:
    """One class's detector with its redaction, window and cross-view search, and with
    coarse keyframes, a second instance of the same spec at the coarse scale (an injected
    ``factory`` is called twice instead)."""
    detector = factory() if factory else build_detector(policy.detector)
    if detector.detection_class != policy.detection_class:
        raise ValueError(f"the {policy.detection_class} policy got a detector of "
                         f"{detector.detection_class}")
    coarse = None
    if policy.schedule.coarse:
        coarse = factory() if factory else \
            build_detector(at_scale(policy.detector, policy.schedule.coarse_scale))
    search = None
    if policy.cross_view:
        band = config.cross_view
        # Faces: CenterFace at a low threshold on the band. Plates and text: their own
        # detector, its frame-relative size limits lifted (the band is a crop), after the
        # template match that comes first for every class.
        spec = band.detector if policy.detection_class == FACE or band.detector == "none" \
            else on_crops(policy.detector)
        search = CrossViewSearch(band, build_detector(spec) if spec != "none" else None)
    return ClassDetector(detector, policy.redaction, policy.temporal_window, search,
                         policy.schedule, coarse, policy.follow_motion)


def build_anonymizer(config: AnonymizationConfig, verifier: RedactionVerifier | None = None,
                     factories: dict[str, DetectorFactory] | None = None
                     ) -> SegmentAnonymizer:
    """A ``SegmentAnonymizer`` with one detector per class the configuration redacts.

    Args:
        factories: detectors to use instead of building them from the specs, by class
            (tests inject faulty detectors this way).

    Raises:
        DetectorError: weights that cannot be loaded.
    """
    factories = factories or {}
    classes = [build_class_detector(policy, config, factories.get(policy.detection_class))
               for policy in config.policies]
    return SegmentAnonymizer(classes, detect_timeout_s=config.detect_timeout_s,
                             verifier=verifier, batch_size=config.detect_batch_size)


class VerifiedAnonymization:
    """The verify-and-retry policy, with the anonymizers it needs (built on first use).

    Args:
        config: the run's anonymization settings.
        factories: detectors by class, instead of the configured ones (tests).
        verifier_factories: by class, the detectors verification runs on redacted frames,
            instead of the configured ones (tests): for ``face`` the independent
            detector, for the other classes their own detector's second instance.
    """

    def __init__(self, config: AnonymizationConfig,
                 factories: dict[str, DetectorFactory] | None = None,
                 verifier_factories: dict[str, DetectorFactory] | None = None) -> None:
        self.config = config
        self._factories = factories
        self._verifier_factories = verifier_factories or {}
        self.verifier: RedactionVerifier | None = None
        self._primary: SegmentAnonymizer | None = None
        # By the set of classes whose checks failed: only those are strengthened.
        self._strong: dict[frozenset[str], SegmentAnonymizer] = {}

    def load(self) -> None:
        """Load the verifier and the primary anonymizer (in ``DoFn.setup``).

        Raises:
            DetectorError: weights that cannot be loaded.
        """
        verification = self.config.verification
        if verification.enabled and self.verifier is None:
            injected = self._verifier_factories
            # Plates and text are checked with their configured detector (never the one
            # that may have been injected for detection), the same in both passes.
            classes = {p.detection_class: injected.get(p.detection_class)
                       or functools.partial(build_detector, p.detector)
                       for p in self.config.other_classes}
            self.verifier = RedactionVerifier(
                verification, injected[FACE]() if FACE in injected else None, classes)
        if self._primary is None:
            self._primary = build_anonymizer(self.config, self.verifier, self._factories)

    @property
    def primary(self) -> SegmentAnonymizer:
        self.load()
        return self._primary

    def strong(self, failed: frozenset[str]) -> SegmentAnonymizer:
        """The second pass's anonymizer, stronger for the ``failed`` classes (all of them
        when the summary named none)."""
        if failed not in self._strong:  # always the configured detectors, never injected
            self._strong[failed] = build_anonymizer(self.config.strong(failed or None),
                                                    self.verifier)
        return self._strong[failed]

    def run(self, work: Callable[[SegmentAnonymizer], A]) -> Verified[A]:
        """Anonymize one unit with ``work``, verified, redone stronger once if needed.

        Args:
            work: anonymizes the unit with the anonymizer it is given and returns the
                attempt; the anonymizer's ``verification`` then holds its checks.

        Raises:
            VerificationFailed: the stronger pass failed verification too (both attempts
                were discarded).
            DetectorError: detection failed (the caller discards and dead-letters).
        """
        primary = self.primary
        attempt = work(primary)
        first = primary.verification
        if first.passed:
            return Verified(attempt, QA_VERIFIED if self.verifier else QA_UNVERIFIED, first)
        attempt.discard()
        strong = self.strong(first.failed_classes())
        attempt = work(strong)
        if not strong.verification.passed:
            attempt.discard()
            raise VerificationFailed(first, strong.verification)
        return Verified(attempt, QA_REREDACTED_VERIFIED, strong.verification,
                        failed_first=first)

    @property
    def broken(self) -> bool:
        """Whether a detector timed out and must be rebuilt before the next unit."""
        return any(a is not None and a.broken
                   for a in (self._primary, *self._strong.values()))

    def close(self) -> None:
        for anonymizer in (self._primary, *self._strong.values()):
            if anonymizer is not None:
                anonymizer.close()
        self._primary = None
        self._strong = {}

    def reset_if_broken(self) -> None:
        """Drop anonymizers whose detector timed out; they are rebuilt on next use."""
        if self.broken:
            self.close()
