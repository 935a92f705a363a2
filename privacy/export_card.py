"""The privacy facts a dataset card states, read from the source's record and audit log.

An export's card must let a reader check the export against the run it came
from, so every fact in its privacy section comes from the source's record of
processing (``audit/record.json``), its hash-chained log and its manifest, never
from text written by hand. This module picks the facts; ``pipeline.export.card``
lays them out.

Redaction classes: a record that lists its classes under ``classes`` (one
section per class, each with its ``detector`` and settings, as plates and text
will add) gets each listed; older records describe faces alone under
``detector``. Detectors are described generically (name, every ``*threshold*``
setting, every ``*weights_sha256``, ensemble members), so a new detector needs
no change here.
"""

from __future__ import annotations

from collections import Counter


def _scalar(value: object) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def describe_detector(detector: dict | str | None) -> dict:
    """A detector's name, thresholds, weights' sha256 and other settings, generically."""
    if isinstance(detector, str):
        return {"name": detector, "thresholds": {}, "weights_sha256": [], "settings": {},
                "members": []}
    detector = detector or {}
    out = {"name": detector.get("name", "unnamed"), "thresholds": {}, "weights_sha256": [],
           "settings": {}, "members": []}
    for key in sorted(detector):
        value = detector[key]
        if key == "name":
            continue
        if key == "members" and isinstance(value, list):
            out["members"] = [describe_detector(m) for m in value]
        elif key.endswith("weights_sha256"):
            if value:
                out["weights_sha256"].append(value)
        elif "threshold" in key and _scalar(value):
            out["thresholds"][key] = value
        elif _scalar(value) or (isinstance(value, list) and all(map(_scalar, value))):
            out["settings"][key] = value
        elif isinstance(value, dict):
            for sub, inner in sorted(value.items()):
                if sub.endswith("weights_sha256") and inner:
                    out["weights_sha256"].append(inner)
                elif "threshold" in sub and _scalar(inner):
                    out["thresholds"][f"{key}.{sub}"] = inner
    for member in out["members"]:
        out["weights_sha256"].extend(member["weights_sha256"])
    return out


def redaction_classes(record: dict) -> list[dict]:
    """One entry per class the run redacted: its name, detector and class settings."""
    classes = record.get("classes")
    anonymization = record.get("anonymization") or {}
    if isinstance(classes, dict) and classes:
        out = []
        for name in sorted(classes):
            section = classes[name] if isinstance(classes[name], dict) else {}
            detector = section.get("detector", section)
            settings = {}
            for key, value in sorted(section.items()):
                if key == "detector":
                    continue
                if _scalar(value):
                    settings[key] = value
                elif isinstance(value, dict):  # e.g. redaction: mode, mask_scale
                    settings.update({f"{key}.{k}": v for k, v in sorted(value.items())
                                     if _scalar(v)})
            out.append({"class": name, "detector": describe_detector(detector),
                        "settings": settings})
        return out
    settings = {k: anonymization[k] for k in ("detector", "strong_detector", "temporal_window")
                if k in anonymization}
    return [{"class": "face", "detector": describe_detector(record.get("detector")),
             "settings": settings}]


def _vrs_dropped(entries: list[dict], run_id: str | None) -> dict[str, int]:
    kinds: Counter = Counter()
    for entry in entries:
        if entry["kind"] == "vrs_streams" and entry["op_id"] == run_id:
            for kind in (entry["counts"].get("streams_dropped") or {}).values():
                kinds[kind] += 1
    return dict(sorted(kinds.items()))


def erasures(entries: list[dict]) -> list[dict]:
    """The erasures the log records, oldest first (ids, times and counts only)."""
    return [{"erasure_id": e["counts"].get("erasure_id", e["op_id"]), "at": e["at"],
             "rows_removed": e["counts"].get("rows_removed", 0),
             "recordings": e["counts"].get("recordings", 0)}
            for e in entries if e["kind"] == "erasure"]


def privacy_facts(record: dict, entries: list[dict], manifest: dict) -> dict:
    """Everything the card's privacy section states, as plain values.

    Args:
        record: the source's ``audit/record.json``.
        entries: the source's log entries (verified).
        manifest: the source's ``manifest.json``.
    """
    anonymization = record.get("anonymization") or {}
    redaction = anonymization.get("redaction") or {}
    outcomes = record.get("outcomes") or {}
    verification = record.get("verification") or {}
    metadata = record.get("metadata") or {}
    run_id = record.get("run_id")
    checked = (outcomes.get("recordings_admitted", 0) + outcomes.get("recordings_duplicate", 0)
               + outcomes.get("recordings_consent_excluded", 0))
    return {
        "run_id": run_id,
        "published_at": record.get("published_at"),
        "key_id": record.get("key_id"),
        "content_sha256": manifest.get("content_sha256"),
        "classes": redaction_classes(record),
        "redaction": {"mode": redaction.get("mode"), "mask_scale": redaction.get("mask_scale"),
                      "temporal_window": anonymization.get("temporal_window")},
        "streams": metadata.get("streams"),
        "metadata": {k: v for k, v in sorted(metadata.items())
                     if k != "streams" and _scalar(v)},
        "vrs_dropped": _vrs_dropped(entries, run_id),
        "verification": {
            "enabled": verification.get("enabled", False),
            "verifier": describe_detector(verification.get("verifier")),
            "models": [{"role": role, "name": (verification.get(role) or {}).get("name"),
                        "weights_sha256": (verification.get(role) or {}).get("weights_sha256")}
                       for role in ("face_encoder", "face_landmarks") if verification.get(role)],
            "settings": {k: verification[k] for k in ("every_n_frames", "min_face_px",
                                                      "tolerance") if k in verification},
            "segments": dict(sorted((outcomes.get("segments_by_verification") or {}).items())),
            "checks": dict(sorted((outcomes.get("verification_checks") or {}).items())),
            "segments_failed": outcomes.get("segments_failed", 0),
        },
        "consent": {
            "purpose": record.get("purpose"),
            "checked": record.get("consent_checked"),
            "seen": outcomes.get("recordings_seen"),
            "admitted": outcomes.get("recordings_admitted"),
            "excluded": outcomes.get("recordings_consent_excluded", 0),
            "excluded_by_reason": dict(sorted((outcomes.get("consent_excluded_by_reason")
                                               or {}).items())),
            "coverage": (checked - outcomes.get("recordings_consent_excluded", 0)) / checked
            if checked else None,
        },
        "erasures": erasures(entries),
        "deadletters_by_reason": dict(sorted((outcomes.get("deadletters_by_reason")
                                              or {}).items())),
    }
