"""Probing, decoding windows and writing: hardened against bad inputs."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from pipeline.samples import SAMPLE_METADATA, make_recording
from tests.containers import write_audio_only
from transforms.media.video import (
    DecodeCaps,
    MediaError,
    VideoWriter,
    iter_window,
    probe,
    sniff_format,
)


def test_sniff_allows_known_containers_only():
    assert sniff_format(b"\x00\x00\x00\x20ftypisom") == "mov"
    assert sniff_format(b"\x1a\x45\xdf\xa3\x01") == "matroska"
    assert sniff_format(b"RIFF\x00\x00\x00\x00AVI LIST") == "avi"
    for head in (b"#EXTM3U\n#EXT-X-VERSION:3", b"ffconcat version 1.0", b"GIF89a"):
        with pytest.raises(MediaError):
            sniff_format(head)


@pytest.mark.parametrize("content, reason", [
    (b"", "unreadable"), (b"\x00" * 10, "unreadable"),
    (b"#EXTM3U\n#EXTINF:10,\nhttp://example.com/a.ts\n", "unreadable"),
])
def test_probe_rejects_unreadable_inputs(tmp_path, content, reason):
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(MediaError) as exc:
        probe(str(path))
    assert exc.value.reason == reason
    assert str(path) not in exc.value.detail


def test_probe_random_truncated_andwrite_audio_only(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "random.mp4").write_bytes(rng.integers(0, 255, 50000, dtype=np.uint8).tobytes())
    good = tmp_path / "good.mp4"
    make_recording(str(good), seconds=1.0, fps=10)
    data = good.read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 2])
    write_audio_only(str(tmp_path / "voice.m4a"))
    reasons = {}
    for name in ("random.mp4", "truncated.mp4", "voice.m4a"):
        with pytest.raises(MediaError) as exc:
            probe(str(tmp_path / name))
        reasons[name] = exc.value.reason
    assert reasons == {"random.mp4": "unreadable", "truncated.mp4": "unreadable",
                       "voice.m4a": "no_video"}


def test_caps_are_checked_before_decoding(tmp_path):
    path = tmp_path / "v.mp4"
    make_recording(str(path), seconds=1.0, fps=10)
    with pytest.raises(MediaError, match="resolution"):
        probe(str(path), DecodeCaps(max_pixels=320 * 240))
    with pytest.raises(MediaError, match="duration"):
        probe(str(path), DecodeCaps(max_duration_s=0.5))
    with pytest.raises(MediaError) as exc:
        probe(str(path), DecodeCaps(max_bytes=100))
    assert exc.value.reason == "too_large"


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_is_applied_to_frames(tmp_path, rotation):
    upright, rotated = tmp_path / "u.mp4", tmp_path / "r.mp4"
    boxes = make_recording(str(upright), seconds=0.5, fps=10)
    make_recording(str(rotated), seconds=0.5, fps=10, rotation=rotation)
    info = probe(str(rotated))
    assert info.rotation == rotation and (info.width, info.height) == (640, 360)
    a = next(iter_window(str(upright)))[0].to_rgb()
    b = next(iter_window(str(rotated)))[0].to_rgb()
    assert a.shape == b.shape == (360, 640, 3)
    x1, y1, x2, y2 = boxes[0][0]
    assert np.abs(a[y1:y2, x1:x2].astype(int) - b[y1:y2, x1:x2]).mean() < 12


def test_windows_partition_the_frames_with_context(tmp_path):
    path = tmp_path / "v.mp4"
    make_recording(str(path), seconds=2.0, fps=10)
    whole = [round(f.time_s, 3) for f, _ in iter_window(str(path))]
    assert len(whole) == 20
    parts = []
    for start, end in ((0.0, 0.8), (0.8, 1.6), (1.6, None)):
        items = list(iter_window(str(path), start, end, context=2))
        inside = [round(f.time_s, 3) for f, flag in items if flag]
        context = [round(f.time_s, 3) for f, flag in items if not flag]
        assert all(t < start or (end is not None and t >= end) for t in context)
        assert len(context) <= 4
        parts += inside
    assert parts == whole


def test_variable_frame_rate_keeps_timestamps(tmp_path):
    path = tmp_path / "vfr.mkv"
    times = [0.0, 0.05, 0.3, 0.32, 0.9, 1.0]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for t in times:
            frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            frame.pts, frame.time_base = int(t * 1000), Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    decoded = [round(f.time_s, 3) for f, _ in iter_window(str(path))]
    assert decoded == times


def test_writer_keeps_pixels_only(tmp_path):
    src = tmp_path / "src.mp4"
    make_recording(str(src), seconds=1.0, fps=10)
    dest = tmp_path / "out.mp4"
    frames = [(f.time_s, f.to_rgb()) for f, _ in iter_window(str(src))]
    writer = VideoWriter(str(dest), ".mp4", 640, 360, 10.0)
    for t, image in frames:
        writer.write(image, t)
    writer.close()
    with av.open(str(dest)) as container:
        assert [s.type for s in container.streams] == ["video"]
        assert not set(container.metadata) - {"major_brand", "minor_version", "compatible_brands"}
        assert [round(f.time, 3) for f in container.decode(video=0)] == \
            [round(t, 3) for t, _ in frames]
    data = dest.read_bytes()
    for value in SAMPLE_METADATA.values():
        assert value.encode() not in data
    assert b"Lavf" not in data


@pytest.mark.parametrize("extension", [".mp4", ".mov", ".mkv", ".avi"])
def test_writer_leaves_no_encoder_strings_in_the_bitstream(tmp_path, extension):
    """x264 writes its version and options as SEI user data; the writer drops every SEI."""
    dest = tmp_path / f"out{extension}"
    writer = VideoWriter(str(dest), extension, 64, 48, 10.0)
    for i in range(12):
        writer.write(np.full((48, 64, 3), i * 20, np.uint8), i / 10)
    writer.close()
    data = dest.read_bytes()
    for marker in (b"x264", b"Copyleft", b"options:", b"Lavc", b"Lavf5", b"Lavf6"):
        assert marker not in data, marker
    with av.open(str(dest)) as container:
        assert [s.type for s in container.streams] == ["video"]
        assert [round(f.time, 3) for f in container.decode(video=0)] == \
            [round(i / 10, 3) for i in range(12)]
