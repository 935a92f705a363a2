"""The anonymization flags ``egoveil run`` and ``egoveil redact`` share.

Kept apart from ``pipeline.options`` so that ``egoveil redact`` does not import
Beam. Every default comes from ``privacy.config``'s dataclasses.
"""

from __future__ import annotations

from pipeline.errors import UserError
from privacy.config import (
    DEFAULT_REDACT,
    FACE_COARSE_SCALE,
    AnonymizationConfig,
    class_policy,
    default_policy,
    redact_classes,
)
from privacy.redaction import MIN_MASK_SCALE, MODES, RedactionConfig
from privacy.schedule import MAX_DETECT_EVERY, MAX_DETECT_SECONDS, DetectionSchedule
from privacy.verification import VerificationConfig
from schemas.detections import PLATE, TEXT

_ANON = AnonymizationConfig()
_PLATES = default_policy(PLATE)
_TEXT = default_policy(TEXT)


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
    group.add_argument("--redact", dest="redact", default=",".join(DEFAULT_REDACT),
                       help="classes to redact, a comma list of faces, plates, text (faces "
                            "always; text is opt-in: it also removes signs, labels and "
                            "screens; default %(default)s)")
    group.add_argument("--plate-detector", dest="plate_detector", default=_PLATES.detector,
                       help="plate detector spec, e.g. 'ppocr-plates:model=v5', "
                            "'ppocr-plates+plate-onnx:path=FILE' (default %(default)s)")
    group.add_argument("--text-detector", dest="text_detector", default=_TEXT.detector,
                       help="text detector spec (with --redact ...,text; default %(default)s)")
    group.add_argument("--face-schedule", dest="face_schedule",
                       default=_ANON.face_schedule.text(),
                       help="EVERY[:MOTION[:FULL_EVERY]]: run the face detector on at least "
                            "every EVERY-th frame (at most every 4th; 1 for every frame), and "
                            "out of turn on a frame whose thumbnail changed by more than MOTION "
                            "grey levels; the frames between borrow the boxes of the detected "
                            "frames around them. With FULL_EVERY (above EVERY, at most 8), only "
                            "every FULL_EVERY-th frame, the first and the last are detected at "
                            f"full resolution, the keyframes between at {FACE_COARSE_SCALE:g} of "
                            "it, and small faces are carried from the full-resolution ones "
                            "(default %(default)s)")
    group.add_argument("--plate-schedule", dest="plate_schedule",
                       default=_PLATES.schedule.text(),
                       help="EVERY[:MOTION] for the plate detector, as --face-schedule; "
                            f"EVERY in frames (at most {MAX_DETECT_EVERY}) or in seconds of "
                            f"video (e.g. 0.6s, at most {MAX_DETECT_SECONDS:g}s, and still at "
                            f"least every {MAX_DETECT_EVERY}th frame); the boxes of the "
                            "frames between follow the measured motion (default %(default)s)")
    group.add_argument("--text-schedule", dest="text_schedule",
                       default=_TEXT.schedule.text(),
                       help="EVERY[:MOTION] for the text detector, as --plate-schedule "
                            "(default %(default)s)")
    for flag, policy in (("plate", _PLATES), ("text", _TEXT)):
        group.add_argument(f"--{flag}-mask-scale", dest=f"{flag}_mask_scale", type=float,
                           default=policy.redaction.mask_scale,
                           help=f"{flag} redaction box scale relative to the detection (>= "
                                f"{MIN_MASK_SCALE}; default %(default)s, the scale its coverage "
                                "was measured at)")
        group.add_argument(f"--{flag}-window", dest=f"{flag}_window", type=int,
                           default=policy.temporal_window,
                           help=f"detected frames on each side whose {flag} boxes also cover a "
                                "frame (default %(default)s)")


def _flag(flag: str, parse, *args):
    """``parse(*args)``, its ValueError prefixed with the flag it came from."""
    try:
        return parse(*args)
    except ValueError as exc:
        raise ValueError(f"{flag}: {exc}") from None


def anonymization_config(args) -> AnonymizationConfig:
    """The anonymization settings the shared flags ask for.

    Raises:
        UserError: a setting out of range or a detector spec that does not parse.
    """
    try:
        classes = redact_classes(args.redact)
        others = []
        for name, flag in ((PLATE, "plate"), (TEXT, "text")):
            # Checked whether or not the class is redacted: a typo never waits for the day
            # the class is switched on.
            schedule = _flag(f"--{flag}-schedule", DetectionSchedule.parse,
                             getattr(args, f"{flag}_schedule"))
            spec = getattr(args, f"{flag}_detector")
            # The class's mode follows --redaction; its mask scale and window are its own
            # (defaults: those its coverage was measured at). Built one flag more at a time,
            # so that an error names the flag it came from.
            scale, window = getattr(args, f"{flag}_mask_scale"), getattr(args, f"{flag}_window")
            for option, extra in (("detector", ()), ("mask-scale", (scale,)),
                                  ("window", (scale, window))):
                policy = _flag(f"--{flag}-{option}", class_policy, name, spec, schedule,
                               args.redaction, *extra)
            if name in classes:
                others.append(policy)
        return AnonymizationConfig(
            detector=args.detector,
            redaction=RedactionConfig(mode=args.redaction, mask_scale=args.mask_scale),
            temporal_window=args.temporal_window,
            face_schedule=_flag("--face-schedule", DetectionSchedule.parse,
                                args.face_schedule, FACE_COARSE_SCALE),
            verification=VerificationConfig(verifier=args.verifier),
            other_classes=tuple(others))
    except ValueError as exc:
        raise UserError(str(exc)) from None
