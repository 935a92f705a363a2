"""Which identifier becomes which pseudonym, and the ids derived from them (PRIVACY.md 9, 10).

Every raw identifier a recording arrives with is turned into a keyed pseudonym
here, each in a namespace of its own so that equal raw values in two roles give
unlinkable pseudonyms: the input's location (``input``, for dead letters), the
wearer, the device serial, the recording's content hash (``recording``) and a bad
manifest line. Clip, pair and cache ids are plain hashes of pseudonyms and
positions, so they carry nothing the pseudonyms do not. Which of two copies of
the same content is kept is decided here too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from privacy.pseudonyms import PseudonymKey
from schemas.elements import Recording
from schemas.sidecar import RecordingRequest


@dataclass(slots=True, frozen=True)
class RequestIds:
    """The pseudonyms of a recording request's raw identifiers.

    Attributes:
        input_id: of the input's location; dead letters name inputs by it.
        wearer_id: of the wearer id, or None when the manifest has none.
        device_id: of the device serial, or None.
    """

    input_id: str
    wearer_id: str | None
    device_id: str | None


def request_ids(key: PseudonymKey, request: RecordingRequest) -> RequestIds:
    """Pseudonyms for what a request names (its location, wearer and device)."""
    return RequestIds(
        input_id=input_id(key, request.uri),
        wearer_id=wearer_id(key, request.wearer_id) if request.wearer_id else None,
        device_id=key.pseudonym("device", request.device_serial)
        if request.device_serial else None)


def input_id(key: PseudonymKey, uri: str) -> str:
    return key.pseudonym("input", uri)


def wearer_id(key: PseudonymKey, raw_wearer_id: str) -> str:
    return key.pseudonym("wearer", raw_wearer_id)


def recording_id(key: PseudonymKey, content_sha256: str) -> str:
    """A recording is known by its content: the same bytes twice are one recording."""
    return key.pseudonym("recording", content_sha256)


def manifest_line_id(key: PseudonymKey, line: str) -> str:
    """A manifest line that names no usable input is known by its text."""
    return key.pseudonym("manifest_line", line)


def clip_id(recording_id: str, view: str, segment_index: int, clip_index: int,
            config_fingerprint: str) -> str:
    """A clip's id: its place in the recording under one configuration."""
    blob = f"{recording_id}|{view}|{segment_index}|{clip_index}|{config_fingerprint}"
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def pair_id(recording_id: str, segment_index: int, clip_index: int,
            config_fingerprint: str) -> str:
    """Shared by the two views of a stereo pair over the same frames."""
    blob = f"{recording_id}|pair|{segment_index}|{clip_index}|{config_fingerprint}"
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def segment_key(recording_id: str, segment_index: int) -> str:
    """A segment's id in the segment cache."""
    return hashlib.sha256(f"{recording_id}|{segment_index}".encode()).hexdigest()[:32]


def content_key(recording: Recording) -> tuple:
    """What makes two recordings the same: content, and which views of it are taken."""
    return (recording.content_sha256, recording.layout, recording.pair_sha256,
            recording.streams)


def choose_duplicate(recordings: Iterable[Recording]) -> tuple[Recording, list[Recording]]:
    """The copy of one content that is processed, and the others (counted as duplicates).

    A copy with a wearer wins over one without (consent was checked for it); among
    equals the order is fixed by pseudonyms, never by input paths' meaning.
    """
    ordered = sorted(recordings, key=lambda r: (r.wearer_id is None, r.recording_id, r.uri))
    return ordered[0], ordered[1:]
