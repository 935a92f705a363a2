"""What the record of processing says about models, without paths (PRIVACY.md 13, 20).

Settings can carry local paths (``yunet:path=/home/someone/models/yunet.onnx``);
the record keeps the file's name only, and the models' hashes identify them.
"""

from __future__ import annotations

import hashlib
import re

from privacy.verification import CLASS_CHECK, VerificationConfig

# A path inside a setting: after '=' or ':' or at the start, up to ';', ',', '+' or the end.
_PATH_VALUE = re.compile(r"(?P<lead>^|[=:])(?P<path>(?:[A-Za-z]:\\|~/|/|\.{1,2}/)[^;,+]*)"
                         r"|(?P<key>path=)(?P<named>[^;,+]*)")


def _basename(path: str) -> str:
    return re.split(r"[\\/]", path.rstrip("/\\"))[-1] or "<path>"


def _shorten(match: re.Match) -> str:
    if match.group("key"):
        return match.group("key") + _basename(match.group("named"))
    return match.group("lead") + _basename(match.group("path"))


def scrub_paths(value: object) -> object:
    """``value`` with every path inside a string reduced to its last part, recursively."""
    if isinstance(value, str):
        return _PATH_VALUE.sub(_shorten, value)
    if isinstance(value, dict):
        return {k: scrub_paths(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub_paths(v) for v in value]
    return value


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe_verification(config: VerificationConfig, classes: tuple[str, ...] = ()) -> dict:
    """The verification pass as the record names it: its independent detector and the
    face-recognition models of the unlinkability check, each with its weights' sha256,
    and how each class besides faces in ``classes`` is checked (its own detector, named
    under the record's ``classes``).

    Raises:
        Exception: the verifier cannot be loaded (the caller turns it into a user error).
    """
    if not config.enabled:
        return {"enabled": False}
    from privacy.detectors.base import import_face_recognition_models
    from privacy.verification import RedactionVerifier

    models = import_face_recognition_models()

    described = {"enabled": True, **RedactionVerifier(config).describe()}
    if classes:
        described["classes"] = {name: CLASS_CHECK for name in classes}
    described["face_encoder"] = {
        "name": "dlib_face_recognition_resnet_model_v1",
        "weights_sha256": _file_sha256(models.face_recognition_model_location())}
    described["face_landmarks"] = {
        "name": "shape_predictor_5_face_landmarks",
        "weights_sha256": _file_sha256(models.pose_predictor_five_point_model_location())}
    return scrub_paths(described)
