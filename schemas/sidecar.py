"""The recording manifest (JSON Lines): its allow-list of fields and their types.

One line per recording; ``uri`` is required. Fields outside the allow-list are
dropped on parsing, never carried along (PRIVACY.md 8).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone

STEREO_LAYOUTS = ("none", "sbs", "tb", "streams")
ALLOWED_FIELDS = ("uri", "wearer_id", "device_serial", "capture_start", "location",
                  "stereo", "pair_uri")


class SidecarError(ValueError):
    """A manifest line that cannot be used; the message names the field, not its value."""


@dataclass(slots=True, frozen=True)
class RecordingRequest:
    """A recording to process, as discovery found it (raw: identifiers not yet keyed).

    Attributes:
        uri: where to read it; never written to any output.
        wearer_id, device_serial: raw identifiers, turned into keyed pseudonyms at admission.
        capture_start: absolute capture time (UTC); only offsets from it reach outputs.
        location: (lat, lon); dropped unless a coarsening is configured.
        stereo: how the views are packed in ``uri``: ``none`` (one view), ``sbs`` (left
            half, right half), ``tb`` (top left, bottom right), ``streams`` (the first two
            video streams are left and right).
        pair_uri: the right eye's file when the two eyes are two files (``uri`` is the
            left); ``stereo`` is ``none`` then.
    """

    uri: str
    wearer_id: str | None = None
    device_serial: str | None = None
    capture_start: datetime | None = None
    location: tuple[float, float] | None = None
    stereo: str = "none"
    pair_uri: str | None = None


def _optional_str(obj: dict, name: str) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise SidecarError(f"field '{name}' must be a non-empty string")
    return value


def parse_manifest_line(line: str) -> RecordingRequest:
    """Parse one JSON Lines manifest entry, keeping only allow-listed fields.

    Raises:
        SidecarError: the line is not a JSON object, lacks ``uri`` or has a field of
            the wrong type. The message never contains the line's values.
    """
    try:
        obj = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SidecarError(f"not valid JSON (column {getattr(exc, 'colno', '?')})") from None
    if not isinstance(obj, dict):
        raise SidecarError("a manifest line must be a JSON object")
    uri = _optional_str(obj, "uri")
    if uri is None:
        raise SidecarError("field 'uri' is required")

    capture_start = None
    if obj.get("capture_start") is not None:
        raw = obj["capture_start"]
        if not isinstance(raw, str):
            raise SidecarError("field 'capture_start' must be an ISO 8601 string")
        try:
            capture_start = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise SidecarError("field 'capture_start' is not ISO 8601") from None
        if capture_start.tzinfo is None:
            capture_start = capture_start.replace(tzinfo=timezone.utc)

    location = None
    if obj.get("location") is not None:
        loc = obj["location"]
        if not isinstance(loc, dict):
            raise SidecarError("field 'location' must be an object with lat and lon")
        try:
            lat, lon = float(loc["lat"]), float(loc["lon"])
        except (KeyError, TypeError, ValueError):
            raise SidecarError("field 'location' needs numeric lat and lon") from None
        if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90
                and -180 <= lon <= 180):
            raise SidecarError("field 'location' is out of range")
        location = (lat, lon)

    stereo = obj.get("stereo", "none") or "none"
    if stereo not in STEREO_LAYOUTS:
        raise SidecarError(f"field 'stereo' must be one of {', '.join(STEREO_LAYOUTS)}")

    pair_uri = _optional_str(obj, "pair_uri")
    if pair_uri is not None and stereo != "none":
        raise SidecarError("field 'pair_uri' names the right eye's file, so 'stereo' must be "
                           "none (each file holds one view)")

    return RecordingRequest(
        uri=uri,
        wearer_id=_optional_str(obj, "wearer_id"),
        device_serial=_optional_str(obj, "device_serial"),
        capture_start=capture_start,
        location=location,
        stereo=stereo,
        pair_uri=pair_uri,
    )
