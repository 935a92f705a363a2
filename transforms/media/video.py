"""Hardened video I/O with PyAV: probe, decode a time window, encode.

Inputs are always opened as Python file objects through Beam's ``FileSystems``
(local files or configured object stores) and the demuxer is forced from the
file's magic bytes, so FFmpeg never resolves a URL, a playlist or a concat list
on its own (PRIVACY.md 19). Size, resolution and duration caps are checked before
any frame is decoded: the frame rate (declared, and measured as frames over duration)
and the frame count too, so that a small file with 100,000 frames a second is refused
up front. A container that declares no duration is measured from its packets'
timestamps (demuxed, not decoded), never guessed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
from av.bitstream import BitStreamFilterContext

from schemas.elements import VideoInfo
from transforms.media.inputs import (
    DecodeCaps,
    DecodeStats,
    MediaError,
    check_size,
    open_binary,
)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi")
ALLOWED_CODECS = ("h264", "hevc", "av1", "vp9", "vp8", "mpeg4", "mjpeg", "prores", "ffv1",
                  "rawvideo", "png")

# x264's speed preset for redacted videos and clips. Measured on arcade_1080p.mp4 at crf 20:
# veryfast 55 ms of CPU a frame, superfast 29 ms (files 1.47x larger), ultrafast 18 ms
# (3.5x larger); encoding was a quarter of `egoveil redact`'s CPU at veryfast.
X264_PRESET = "superfast"

# Drops every H.264 SEI NAL unit (type 6): encoder version strings and user data.
SEI_FILTER = "filter_units=remove_types=6"

# Output container per extension: (FFmpeg muxer, video codec).
OUTPUT_FORMATS = {
    ".mp4": ("mp4", "libx264"),
    ".m4v": ("mp4", "libx264"),
    ".mov": ("mov", "libx264"),
    ".mkv": ("matroska", "libx264"),
    ".webm": ("webm", "libvpx-vp9"),
    ".avi": ("avi", "mpeg4"),
}


def sniff_format(head: bytes) -> str:
    """The FFmpeg demuxer for a file's first bytes, from an allow-list.

    Raises:
        MediaError: ``unreadable`` when the bytes are no supported container.
    """
    if len(head) >= 8 and head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
        return "mov"  # FFmpeg's mov demuxer reads MP4, MOV, M4V and 3GP
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if not head:
        raise MediaError("unreadable", "empty file")
    raise MediaError("unreadable", "not a supported container (MP4/MOV, Matroska/WebM, AVI)")


# Decoding device of this process: None (CPU), or "cuda" for NVDEC through FFmpeg's
# CUDA hwaccel. Set once per worker (``use_decode_device``); every container opened
# for decoding tries it and falls back to the CPU where FFmpeg or the driver cannot
# (no GPU, a codec NVDEC lacks), so a recording is never refused for it.
_DECODE = {"device": None, "hardware": 0, "fallback": 0}


def use_decode_device(device: str | None) -> None:
    """Decode with ``device`` (``cuda``: NVDEC) from now on in this process; None: the CPU."""
    if device not in (None, "cpu", "cuda"):
        raise ValueError(f"decode device must be cpu or cuda, got {device!r}")
    _DECODE["device"] = None if device == "cpu" else device


def decode_device_counts() -> dict[str, int]:
    """Containers opened on the decode device and those that fell back to the CPU."""
    return {"hardware": _DECODE["hardware"], "fallback": _DECODE["fallback"]}


def _open_input(handle, fmt: str, decode: bool):
    options = {"probesize": "50000000"}
    device = _DECODE["device"] if decode else None
    if device is not None:
        from av.codec.hwaccel import HWAccel

        try:
            container = av.open(handle, mode="r", format=fmt, options=options,
                                hwaccel=HWAccel(device, allow_software_fallback=True))
            _DECODE["hardware"] += 1
            return container
        except (av.FFmpegError, OSError):
            # No device or no driver here: the CPU decodes, as it would without the flag.
            _DECODE["fallback"] += 1
            handle.seek(0)
    return av.open(handle, mode="r", format=fmt, options=options)


class _Container:
    """An input container opened safely; use as a context manager.

    Args:
        decode: the container is opened to decode frames (on the decode device, if one
            is set), not just to read its header.
    """

    def __init__(self, uri: str, decode: bool = False) -> None:
        self._handle = open_binary(uri)
        try:
            head = self._handle.read(16)
            fmt = sniff_format(head)
            self._handle.seek(0)
            self.container = _open_input(self._handle, fmt, decode)
        except MediaError:
            self._handle.close()
            raise
        except (av.FFmpegError, OSError, ValueError) as exc:
            self._handle.close()
            raise MediaError("unreadable", f"cannot parse container ({type(exc).__name__})") \
                from None

    def __enter__(self):
        return self.container

    def __exit__(self, *exc) -> None:
        try:
            self.container.close()
        finally:
            self._handle.close()


def _video_stream(container, index: int = 0):
    streams = [s for s in container.streams if s.type == "video"
               and not (s.disposition & av.stream.Disposition.attached_pic)]
    if not streams:
        raise MediaError("no_video", "the container has no video stream")
    if index >= len(streams):
        raise MediaError("unsupported", f"the container has {len(streams)} video stream(s), "
                                        f"not the {index + 1} a stereo 'streams' layout needs")
    return streams[index]


def _measure(container, stream, caps: DecodeCaps) -> tuple[float | None, int]:
    """Duration and frame count from the packets' timestamps, for a container that does
    not declare its duration: demuxed only, stopped as soon as a cap is passed."""
    tb = stream.time_base
    first = last = None
    frames = 0
    for packet in container.demux(stream):
        if packet.size == 0 or packet.pts is None:
            continue
        frames += 1
        first = packet.pts if first is None else min(first, packet.pts)
        last = packet.pts if last is None else max(last, packet.pts)
        span = float((last - first) * tb) if tb is not None else 0.0
        if frames > caps.max_frames or span > caps.max_duration_s:
            raise MediaError("too_large", f"more than {caps.max_frames} frames or "
                                          f"{caps.max_duration_s:.0f} s (measured from the "
                                          "packets; the container declares no duration)")
    if not frames or tb is None:
        return None, frames
    rate = stream.average_rate or stream.guessed_rate
    step = 1.0 / float(rate) if rate else 0.0
    return float((last - first) * tb) + step, frames


def _check_rate(fps: float | None, frames: int | None, caps: DecodeCaps) -> None:
    if fps is not None and fps > caps.max_fps:
        raise MediaError("too_large", f"frame rate {fps:.0f} fps is above the cap of "
                                      f"{caps.max_fps:.0f} fps")
    if frames is not None and frames > caps.max_frames:
        raise MediaError("too_large", f"{frames} frames are above the cap of {caps.max_frames}")


def _check_measured(frames: int, duration: float | None, caps: DecodeCaps) -> None:
    """Frames counted from the packets, over the time their timestamps span."""
    if frames > 1 and duration and (frames - 1) / duration > caps.max_fps * 1.01:
        raise MediaError("too_large", f"{frames} frames in {duration:.3f} s are above the cap "
                                      f"of {caps.max_fps:.0f} fps")


def probe(uri: str, caps: DecodeCaps | None = None, stream_index: int = 0) -> VideoInfo:
    """Read a recording's container header and the first frame of a video stream.

    Args:
        stream_index: which video stream (0 is the first; a stereo ``streams`` layout
            reads 0 and 1).

    Raises:
        MediaError: unreadable, no video, unsupported codec, or above a cap (size,
            resolution, duration, frame rate, frame count).
    """
    caps = caps or DecodeCaps()
    check_size(uri, caps.max_bytes)
    with _Container(uri) as container:
        stream = _video_stream(container, stream_index)
        ctx = stream.codec_context
        codec = ctx.name if ctx is not None else "unknown"
        if codec not in ALLOWED_CODECS:
            raise MediaError("unsupported", f"video codec {codec!r} is not on the allow-list")
        width, height = int(ctx.width or 0), int(ctx.height or 0)
        if width <= 0 or height <= 0:
            raise MediaError("unreadable", "video stream has no frame size")
        if width * height > caps.max_pixels:
            raise MediaError("too_large", f"resolution {width}x{height} is above the cap of "
                                          f"{caps.max_pixels} pixels")
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        if duration is not None and duration > caps.max_duration_s:
            raise MediaError("too_large", f"duration {duration:.0f} s is above the cap of "
                                          f"{caps.max_duration_s:.0f} s")
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else None
        # AVI has one index slot per tick of its time base and marks skipped ones empty, so
        # its average rate can be the ticks' (1000 for 10 frames a second at 1/1000):
        # the lower of the declared rates is checked, and recorded when the higher one is
        # above the cap. Frames that come faster than declared stop their segment.
        declared = [float(r) for r in (stream.average_rate, stream.guessed_rate) if r]
        if declared and fps > caps.max_fps >= min(declared):
            fps = min(declared)
        frames = int(stream.frames) if stream.frames else None
        _check_rate(min(declared) if declared else None, frames, caps)
        if duration is None:
            duration, frames = _measure(container, stream, caps)
            _check_measured(frames, duration, caps)
            container.seek(0, stream=stream, backward=True)
        has_audio = any(s.type == "audio" for s in container.streams)
        rotation = 0
        try:
            for frame in container.decode(stream):
                rotation = int(round(frame.rotation or 0)) % 360
                break
            else:
                raise MediaError("unreadable", "no decodable frame")
        except av.FFmpegError as exc:
            raise MediaError("unreadable", f"first frame does not decode ({type(exc).__name__})") \
                from None
        if rotation % 90:
            raise MediaError("unsupported", f"rotation of {rotation} degrees is not a right angle")
        if rotation in (90, 270):
            width, height = height, width
    return VideoInfo(width=width, height=height, fps=fps, duration_s=duration,
                     frame_count=frames, rotation=rotation, codec=codec, has_audio=has_audio)


@dataclass(slots=True)
class DecodedFrame:
    """A decoded frame: time from the recording's start, and a lazy RGB conversion."""

    time_s: float
    frame: av.VideoFrame
    corrupt: bool = False

    def to_rgb(self) -> np.ndarray:
        image = self.frame.to_ndarray(format="rgb24")
        rotation = int(round(self.frame.rotation or 0)) % 360
        if rotation:
            image = np.ascontiguousarray(np.rot90(image, k=rotation // 90))
        return image


def iter_window(uri: str, start_s: float = 0.0, end_s: float | None = None,
                context: int = 0, stats: DecodeStats | None = None, stream_index: int = 0
                ) -> Iterator[tuple[DecodedFrame, bool]]:
    """Decode the frames of [start_s, end_s) plus ``context`` frames on each side.

    Yields ``(frame, inside)`` in presentation order; ``inside`` is False for the
    context frames. Times are relative to the stream's first timestamp, taken from
    each frame (variable frame rates keep their timing). Corrupt packets are
    skipped and counted in ``stats``.

    Raises:
        MediaError: the container cannot be read.
    """
    stats = stats if stats is not None else DecodeStats()
    with _Container(uri, decode=True) as container:
        stream = _video_stream(container, stream_index)
        # Report bitstream errors instead of concealing them: a concealed frame is smeared
        # guesswork, so it is dropped and counted like any corrupt one (PRIVACY.md, bad
        # inputs). Measured: no frame of ../shared/media/videos is dropped by it.
        stream.codec_context.options = {"err_detect": "explode"}
        stream.thread_type = "AUTO"
        tb = stream.time_base
        origin = stream.start_time if stream.start_time is not None else 0
        if start_s > 0:
            # Seek to the keyframe before the window (with room for the context frames).
            target = max(0.0, start_s - 2.0)
            container.seek(origin + int(target / tb), stream=stream, backward=True)
        before: deque[DecodedFrame] = deque(maxlen=max(context, 0))
        after = 0
        last_time = None
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.InvalidDataError:
                stats.corrupt += 1
                continue
            for frame in frames:
                if frame.pts is None:
                    step = 1.0 / float(stream.average_rate or 30)
                    time_s = (last_time + step) if last_time is not None else 0.0
                else:
                    time_s = float((frame.pts - origin) * tb)
                if last_time is not None and time_s <= last_time:
                    continue  # duplicate or out-of-order timestamps after a seek
                last_time = time_s
                item = DecodedFrame(time_s, frame, corrupt=bool(frame.is_corrupt))
                if item.corrupt:
                    stats.corrupt += 1
                    continue
                stats.decoded += 1
                if time_s < start_s - 1e-6:
                    if context:
                        before.append(item)
                    continue
                if end_s is not None and time_s >= end_s - 1e-6:
                    if after >= context:
                        return
                    after += 1
                    yield item, False
                    continue
                while before:
                    yield before.popleft(), False
                yield item, True
        # A window that began after the last frame still hands over its context.
        while before:
            yield before.popleft(), False


class VideoWriter:
    """Encodes RGB frames with their timestamps into one video stream, nothing else.

    No audio, no data or subtitle tracks, no chapters, no container or stream
    metadata; the muxer and encoder run bit-exact, so they write no version tags.
    x264 still writes its version and full option string (thread count included)
    as SEI user data into the first frame; every SEI NAL unit is removed with
    FFmpeg's ``filter_units`` bitstream filter, so the stream holds only parameter
    sets and slices (PRIVACY.md 7: pixels and nothing else).

    Args:
        target: a path or a writable binary file object.
        extension: picks the container and codec (see ``OUTPUT_FORMATS``).
        fps: nominal frame rate (timestamps come from ``write``).
    """

    def __init__(self, target, extension: str, width: int, height: int, fps: float,
                 crf: int = 20, preset: str = X264_PRESET) -> None:
        if extension not in OUTPUT_FORMATS:
            raise MediaError("unsupported", f"cannot write {extension!r}; use one of "
                                            f"{', '.join(OUTPUT_FORMATS)}")
        fmt, codec = OUTPUT_FORMATS[extension]
        self._even = (width - width % 2, height - height % 2)
        self._container = av.open(target, mode="w", format=fmt,
                                  options={"fflags": "+bitexact"})
        self._container.metadata.clear()
        rate = Fraction(fps).limit_denominator(1001) if fps and fps > 0 else Fraction(30)
        self._stream = self._container.add_stream(codec, rate=rate)
        self._stream.width, self._stream.height = self._even
        self._stream.pix_fmt = "yuv420p"
        # AVI stores one frame per time-base tick and MPEG-4 Part 2 caps the time
        # base at 1/65535, so AVI gets the nominal frame rate's; the others 1/90000.
        self._tb = 1 / rate if fmt == "avi" else Fraction(1, 90000)
        self._stream.codec_context.time_base = self._tb
        self._stream.time_base = self._tb
        self._stream.codec_context.flags |= av.codec.context.Flags.bitexact
        if codec == "libx264":
            self._stream.codec_context.options = {"crf": str(crf), "preset": preset}
        self._stream.metadata.clear()
        self._strip_sei = (BitStreamFilterContext(SEI_FILTER, "h264")
                           if codec == "libx264" else None)
        self._last_pts = -1
        self.frames = 0

    def _mux(self, packets) -> None:
        for packet in packets:
            if self._strip_sei is None:
                self._container.mux(packet)
                continue
            for kept in self._strip_sei.filter(packet):
                kept.stream = self._stream
                self._container.mux(kept)

    def write(self, image: np.ndarray, time_s: float) -> None:
        w, h = self._even
        if image.shape[1] != w or image.shape[0] != h:
            image = image[:h, :w]
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        pts = max(int(round(time_s / self._tb)), self._last_pts + 1)
        frame.pts = pts
        frame.time_base = self._tb
        self._last_pts = pts
        self._mux(self._stream.encode(frame))
        self.frames += 1

    def close(self) -> None:
        self._mux(self._stream.encode())
        if self._strip_sei is not None:
            self._mux_flushed(self._strip_sei.filter(None))
        self._container.close()

    def _mux_flushed(self, packets) -> None:
        for packet in packets:
            packet.stream = self._stream
            self._container.mux(packet)


class BackgroundWriter:
    """A ``VideoWriter`` fed through a bounded queue from a thread of its own.

    Encoding a 1080p frame costs about as much CPU as decoding two; on its own thread
    it runs while the caller detects the next frames. Frames are written in order;
    an encoder error is raised by the next ``write`` or by ``close``.

    Args:
        writer: the writer to feed (closed by ``close``).
        depth: frames queued at most (memory: ``depth`` frames).
    """

    def __init__(self, writer: VideoWriter, depth: int = 8) -> None:
        import queue
        import threading

        self._writer = writer
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name="egoveil-encode", daemon=True)
        self._thread.start()

    @property
    def frames(self) -> int:
        return self._writer.frames

    def _drain(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is None:
                try:
                    self._writer.write(*item)
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    self._error = exc

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def write(self, image: np.ndarray, time_s: float) -> None:
        self._raise()
        self._queue.put((image, time_s))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._raise()
        self._writer.close()
