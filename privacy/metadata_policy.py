"""What sidecar metadata may become once admitted (PRIVACY.md 8).

Only what this module returns reaches an output: keyed pseudonyms (decided in
``privacy.pseudonyms``), offsets from the recording start (the pipeline's own
clip times), and, when a run asks for it, a coarse location cell. The exact
location and the absolute capture time are used for nothing but the consent
decision and are never carried past admission.
"""

from __future__ import annotations

from dataclasses import dataclass

# Geohash cells at precision 5 are about 4.9 x 4.9 km; anything finer names a street
# or a building, and with a wearer pseudonym beside it, a home. Refused.
MAX_GEOHASH_PRECISION = 5
_BASE32 = "0123456789bcdefghjkmnpqrstuvwxyz"


# What an anonymized clip keeps of its source, stated in every record of processing
# (``record.metadata.streams``) so that dataset cards can quote it. The clip writer
# (``transforms.media.video.VideoWriter``) and the VRS allow-list
# (``privacy.aria_streams``) enforce it.
OUTPUT_STREAMS = {
    "kept": "one video stream, re-encoded from the redacted frames",
    "dropped": ["audio", "subtitle, data and telemetry tracks (GoPro gpmd: GPS, serial)",
                "timecode tracks", "chapters",
                "container and stream metadata (creation time, location, make, model, "
                "serial, XMP)", "encoder SEI user data"],
    "vrs": "allow-listed camera streams only; eye tracking, eye gaze, microphones, GPS, "
           "Wi-Fi and Bluetooth scans, PPG, IMU and file tags are never read",
}

def geohash(lat: float, lon: float, precision: int) -> str:
    """The geohash cell of (lat, lon) with ``precision`` characters."""
    lat_range, lon_range = [-90.0, 90.0], [-180.0, 180.0]
    chars, bits, value, even = [], 0, 0, True
    while len(chars) < precision:
        span, coord = (lon_range, lon) if even else (lat_range, lat)
        mid = (span[0] + span[1]) / 2
        value <<= 1
        if coord >= mid:
            value |= 1
            span[0] = mid
        else:
            span[1] = mid
        even = not even
        bits += 1
        if bits == 5:
            chars.append(_BASE32[value])
            bits = value = 0
    return "".join(chars)


@dataclass(slots=True, frozen=True)
class LocationPolicy:
    """How a recording's location is coarsened, if at all.

    Args:
        geohash_precision: None drops the location (the default); 1 to
            ``MAX_GEOHASH_PRECISION`` keeps the geohash cell of that precision
            (precision 4 is about 39 x 20 km, 5 about 4.9 x 4.9 km).

    Raises:
        ValueError: a precision outside that range.
    """

    geohash_precision: int | None = None

    def __post_init__(self) -> None:
        p = self.geohash_precision
        if p is not None and not 1 <= p <= MAX_GEOHASH_PRECISION:
            raise ValueError(f"--location-geohash must be between 1 and "
                             f"{MAX_GEOHASH_PRECISION} (a cell of about 5 km or coarser)")

    def coarsen(self, location: tuple[float, float] | None) -> str | None:
        """The cell that may be written for ``location``, or None."""
        if location is None or self.geohash_precision is None:
            return None
        return geohash(location[0], location[1], self.geohash_precision)

    def describe(self) -> dict:
        return {"location": "dropped" if self.geohash_precision is None
                else f"geohash:{self.geohash_precision}"}
