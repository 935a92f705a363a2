"""The anonymization flags ``egoveil run`` and ``egoveil redact`` share.

Kept apart from ``pipeline.options`` so that ``egoveil redact`` does not import
Beam. Every default comes from ``privacy.config``'s dataclasses.
"""

from __future__ import annotations

from pipeline.errors import UserError
from privacy.config import AnonymizationConfig
from privacy.redaction import MIN_MASK_SCALE, MODES, RedactionConfig
from privacy.schedule import DetectionSchedule
from privacy.verification import VerificationConfig

_ANON = AnonymizationConfig()


def add_anonymization_args(group) -> None:
    """The detector, verifier and redaction flags that ``run`` and ``redact`` share."""
    group.add_argument("--detector", dest="detector", default=_ANON.detector,
                       help="face detector spec, e.g. 'centerface', "
                            "'centerface:threshold=0.15;scales=1,2', "
                            "'centerface+yunet:path=yunet.onnx' (default %(default)s)")
    group.add_argument("--verifier", dest="verifier", default=_ANON.verification.verifier,
                       help="independent detector that checks redacted frames "
                            "('hog', 'yunet:path=FILE', or 'none' to skip verification; "
                            "default %(default)s)")
    group.add_argument("--redaction", dest="redaction", default=_ANON.redaction.mode,
                       choices=MODES,
                       help="solid (default) and pixelate are irreversible; blur is not")
    group.add_argument("--mask-scale", dest="mask_scale", type=float,
                       default=_ANON.redaction.mask_scale,
                       help=f"redaction box scale relative to the detection (>= {MIN_MASK_SCALE}; "
                            "default %(default)s)")
    group.add_argument("--temporal-window", dest="temporal_window", type=int,
                       default=_ANON.temporal_window,
                       help="detected frames on each side whose detections also cover a "
                            "frame (default %(default)s)")
    schedule = _ANON.face_schedule
    group.add_argument("--face-schedule", dest="face_schedule",
                       default=f"{schedule.every}:{schedule.motion:g}",
                       help="EVERY[:MOTION]: run the face detector on at least every EVERY-th "
                            "frame (at most every 4th; 1 for every frame), and out of turn on "
                            "a frame whose thumbnail changed by more than MOTION grey levels; "
                            "the frames between borrow the boxes of the detected frames around "
                            "them (default %(default)s)")


def anonymization_config(args) -> AnonymizationConfig:
    """The anonymization settings the shared flags ask for.

    Raises:
        UserError: a setting out of range or a detector spec that does not parse.
    """
    try:
        return AnonymizationConfig(
            detector=args.detector,
            redaction=RedactionConfig(mode=args.redaction, mask_scale=args.mask_scale),
            temporal_window=args.temporal_window,
            face_schedule=DetectionSchedule.parse(args.face_schedule),
            verification=VerificationConfig(verifier=args.verifier))
    except ValueError as exc:
        raise UserError(str(exc)) from None
