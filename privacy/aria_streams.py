"""Which streams of a Project Aria VRS recording may be read (PRIVACY.md 10).

An allow-list, never a deny-list: the RGB camera (214-1) and the SLAM cameras
(1201-*) are read; every other stream, whatever it is, is dropped without its
data records being asked for. Among what is dropped: the eye-tracking cameras
(images of the wearer's eyes, biometric), eye gaze, the microphones (voices),
GPS, Wi-Fi and Bluetooth scans (location), PPG (heart rate, health data), hand
tracking, and the IMU, magnetometer, barometer and the rest, which no world-model
clip needs. File tags (device serial, session id, capture time, calibration
JSON) are never read either.

Stream ids are ``<recordable type id>-<instance>``; a stream is allowed by its
type id and must also be an image stream.
"""

from __future__ import annotations

from dataclasses import dataclass

RGB_TYPE = "214"
SLAM_TYPE = "1201"

# View names of the allowed cameras. The front SLAM pair (Gen 2's 1201-1 and 1201-2,
# Gen 1's left and right SLAM cameras) is a stereo pair: ``left`` and ``right``.
ALLOWED_VIEWS = {
    "214-1": "rgb",
    "1201-1": "left",
    "1201-2": "right",
    "1201-3": "side-left",
    "1201-4": "side-right",
}
VRS_VIEWS = tuple(dict.fromkeys(ALLOWED_VIEWS.values()))

# What each dropped type holds, for the closing note and the audit log (type ids from
# projectaria-tools' RecordableTypeId).
DROPPED_KINDS = {
    "211": "eye-tracking camera",
    "231": "microphone",
    "240": "time sync",
    "246": "temperature",
    "247": "barometer",
    "248": "PPG (heart rate)",
    "281": "GPS",
    "282": "Wi-Fi scan",
    "283": "Bluetooth scan",
    "285": "time sync",
    "371": "hand tracking, VIO",
    "373": "eye gaze",
    "500": "ambient light",
    "1202": "IMU",
    "1203": "magnetometer",
}


@dataclass(slots=True, frozen=True)
class StreamGroup:
    """Allowed streams that share a clock and go through anonymization together.

    Attributes:
        name: ``rgb`` or ``slam``.
        streams: stream ids, in view order.
        views: the view name of each stream.
    """

    name: str
    streams: tuple[str, ...]
    views: tuple[str, ...]


@dataclass(slots=True, frozen=True)
class StreamSelection:
    """The allow-list applied to the streams a file lists."""

    groups: tuple[StreamGroup, ...]
    dropped: tuple[tuple[str, str], ...]  # (stream id, what it holds)

    @property
    def read(self) -> tuple[str, ...]:
        return tuple(s for g in self.groups for s in g.streams)

    def describe(self) -> dict:
        """Stream ids and kinds only (no labels from the file, no tags), for audit events."""
        return {"streams_listed": len(self.read) + len(self.dropped),
                "streams_read": {s: ALLOWED_VIEWS[s] for s in self.read},
                "streams_dropped": dict(self.dropped)}


def dropped_kind(stream_id: str) -> str:
    return DROPPED_KINDS.get(stream_id.split("-", 1)[0], "other")


def select_streams(streams: list[tuple[str, bool]]) -> StreamSelection:
    """Apply the allow-list.

    Args:
        streams: (stream id, is an image stream) for every stream the file lists.

    Returns:
        The RGB camera as one group and the SLAM cameras as another (they share a
        clock; RGB runs at its own rate), and everything else as dropped.
    """
    allowed = {sid for sid, is_image in streams if sid in ALLOWED_VIEWS and is_image}
    dropped = tuple(sorted(((sid, dropped_kind(sid) if sid not in ALLOWED_VIEWS else "other")
                            for sid, _ in streams if sid not in allowed),
                           key=lambda item: stream_order(item[0])))
    groups = []
    for name, type_id in (("rgb", RGB_TYPE), ("slam", SLAM_TYPE)):
        ids = tuple(sorted((s for s in allowed if s.split("-")[0] == type_id), key=stream_order))
        if ids:
            groups.append(StreamGroup(name, ids, tuple(ALLOWED_VIEWS[s] for s in ids)))
    return StreamSelection(tuple(groups), dropped)


def stream_order(stream_id: str) -> tuple[int, int]:
    type_id, _, instance = stream_id.partition("-")
    try:
        return int(type_id), int(instance or 0)
    except ValueError:
        return (1 << 30, 0)
