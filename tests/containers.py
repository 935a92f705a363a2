"""What PyAV, ffprobe and exiftool see in a video egoveil wrote: helpers for the tests.

ffprobe and exiftool come from Debian's packages (``ffmpeg``,
``libimage-exiftool-perl``; ``.ci/run`` installs them); a check that needs one
skips where it is absent. Each helper returns the findings that break "pixels
and nothing else", so a failing test names them.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import av
import pytest

# Tags FFmpeg's muxers write by themselves, with the only values allowed.
MUXER_FORMAT_TAGS = {"major_brand": None, "minor_version": None, "compatible_brands": None,
                     "encoder": {"Lavf"}}  # Matroska's mandatory MuxingApp, version-free
MUXER_STREAM_TAGS = {"language": {"und"}, "handler_name": {"VideoHandler"},
                     "vendor_id": {"[0][0][0][0]", "FFMP"}, "DURATION": None}

# exiftool groups and tag names that only metadata (never the muxer) produces.
EXIFTOOL_FORBIDDEN = ("GPS", "Location", "Make", "Model", "Serial", "Title", "Comment",
                      "Author", "Artist", "Copyright", "Software", "Description", "Keywords",
                      "Chapter", "Subtitle", "Timecode", "Text", "Camera", "Lens", "Owner",
                      "XMP", "Encoder", "Audio", "Content", "Date/Time Original")
EXIFTOOL_MUXER_TAGS = {"HandlerDescription": {"VideoHandler", "DataHandler"},
                       "MuxingApp": {"Lavf"}, "WritingApp": {"Lavf"},
                       "TimecodeScale": {"1 ms"}}
EXIFTOOL_ZERO_DATES = ("CreateDate", "ModifyDate", "TrackCreateDate", "TrackModifyDate",
                       "MediaCreateDate", "MediaModifyDate")


def _unexpected_tags(tags: dict, allowed: dict) -> list[str]:
    bad = []
    for name, value in (tags or {}).items():
        if name not in allowed or (allowed[name] is not None and value not in allowed[name]):
            bad.append(f"{name}={value}")
    return bad


def pyav_findings(path: str) -> list[str]:
    """Streams other than one video stream, chapters and non-muxer metadata, per PyAV."""
    found = []
    with av.open(path) as container:
        types = [s.type for s in container.streams]
        if types != ["video"]:
            found.append(f"streams {types}")
        if container.chapters():
            found.append(f"{len(container.chapters())} chapters")
        found += _unexpected_tags(dict(container.metadata), MUXER_FORMAT_TAGS)
        for stream in container.streams:
            found += _unexpected_tags(dict(stream.metadata), MUXER_STREAM_TAGS)
    return found


def ffprobe_findings(path: str) -> list[str]:
    if shutil.which("ffprobe") is None:
        pytest.skip("ffprobe not installed (Debian package ffmpeg)")
    result = subprocess.run(["ffprobe", "-v", "error", "-show_format", "-show_streams",
                             "-show_chapters", "-show_programs", "-of", "json", path],
                            capture_output=True, text=True, check=True)
    report = json.loads(result.stdout)
    found = []
    streams = report.get("streams", [])
    if [s.get("codec_type") for s in streams] != ["video"]:
        found.append(f"streams {[s.get('codec_type') for s in streams]}")
    if report.get("chapters"):
        found.append(f"{len(report['chapters'])} chapters")
    if report.get("programs"):
        found.append("programs")
    found += _unexpected_tags(report.get("format", {}).get("tags", {}), MUXER_FORMAT_TAGS)
    for stream in streams:
        found += _unexpected_tags(stream.get("tags", {}), MUXER_STREAM_TAGS)
        for side in stream.get("side_data_list", []):
            found.append(f"side data {side.get('side_data_type')}")
    return found


def exiftool_findings(path: str) -> list[str]:
    if shutil.which("exiftool") is None:
        pytest.skip("exiftool not installed (Debian package libimage-exiftool-perl)")
    result = subprocess.run(["exiftool", "-j", "-a", "-G1", "-u", "-ee", path],
                            capture_output=True, text=True, check=True)
    (tags,) = json.loads(result.stdout)
    found = []
    for name, value in tags.items():
        group, _, tag = name.rpartition(":")
        if group in ("System", "ExifTool", "File") or tag == "SourceFile" or \
                value in EXIFTOOL_MUXER_TAGS.get(tag, ()):
            continue
        if any(word.lower() in name.lower() for word in EXIFTOOL_FORBIDDEN):
            found.append(f"{name}={value}")
        if tag in EXIFTOOL_ZERO_DATES and str(value) != "0000:00:00 00:00:00":
            found.append(f"{name}={value}")
        if group in ("Keys", "UserData", "ItemList", "XMP", "Track2", "Track3", "Track4"):
            found.append(f"{name}={value}")
    return found


def encodings(raw: bytes) -> list[bytes]:
    """A raw UTF-8 string as containers may store it: UTF-8, UTF-16 LE and BE."""
    text = raw.decode("utf-8")
    return [raw, text.encode("utf-16-le"), text.encode("utf-16-be")]


def raw_strings_in(data: bytes, raws: list[bytes]) -> list[bytes]:
    """Which of ``raws`` occur in ``data`` in any of their encodings."""
    return [raw for raw in raws if any(form in data for form in encodings(raw))]


def write_audio_only(path) -> None:
    """A container with one AAC audio stream and no video (a voice memo)."""
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        stream.layout = "mono"
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                               layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
