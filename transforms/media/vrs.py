"""Project Aria VRS input through ``projectaria-tools`` (``pip install 'egoveil[aria]'``).

Only the streams ``privacy.aria_streams`` allows are asked for data: for every
other stream no data, configuration or tag accessor is ever called (the library
indexes all streams when it opens a file; nothing of theirs reaches Python). The
image configuration records are not read either, because they carry the device
and sensor serials: sizes come from the frames and rates from the timestamps.

Frames are turned upright with the device calibration: each camera's roll
relative to the wearer's head (the central pupil frame's up axis) is rounded to
quarter turns, so Gen 1's sideways-mounted RGB and SLAM cameras come out upright
and Gen 2's, mounted upright, are left alone. Greyscale SLAM frames become
three-channel for the detector and the encoder.

The native library logs the file path when it opens a file, so its output is
silenced while it runs (no input path in a log).
"""

from __future__ import annotations

import bisect
import contextlib
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from privacy.aria_streams import StreamSelection, select_streams
from schemas.elements import VideoInfo
from transforms.media.inputs import DecodeCaps, DecodeStats, MediaError

VRS_EXTENSIONS = (".vrs",)
VRS_MAGIC = b"VisionRe"  # the file header's magic ("VisionRecordFile")
INSTALL_HINT = ("Project Aria VRS needs projectaria-tools: pip install 'egoveil[aria]' (leaner: "
                "pip install --no-deps projectaria-tools==2.3.0)")
# Frames of one group further apart than this are not the same instant.
SYNC_TOLERANCE_S = 0.005


def is_vrs(head: bytes) -> bool:
    return head[:8] == VRS_MAGIC


def aria_available() -> bool:
    try:
        _provider_module()
    except MediaError:
        return False
    return True


def _provider_module():
    try:
        from projectaria_tools.core import data_provider
    except ImportError:
        raise MediaError("unsupported", INSTALL_HINT) from None
    return data_provider


@contextlib.contextmanager
def _native_quiet():
    """Silence the native library's stdout and stderr (it prints the file's path)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def upright_turns(r_device_camera: np.ndarray, up_device: np.ndarray) -> int:
    """Quarter turns counter-clockwise (``np.rot90``'s ``k``) that make a camera's image upright.

    Args:
        r_device_camera: rotation from the camera's frame to the device frame (x right,
            y down in the image, z forward).
        up_device: the wearer's up direction in the device frame.
    """
    up = np.asarray(r_device_camera, np.float64).T @ np.asarray(up_device, np.float64)
    if math.hypot(up[0], up[1]) < 1e-6:
        return 0  # camera looking straight up or down: no roll to undo
    angle = math.atan2(up[0], -up[1])  # 0 when up points to the image's top
    return int(round(angle / (math.pi / 2))) % 4


def _to_rgb(array: np.ndarray) -> np.ndarray:
    if array.dtype != np.uint8:
        raise MediaError("unsupported", f"VRS pixel type {array.dtype} is not 8-bit")
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim == 3 and array.shape[2] == 3:
        return array
    if array.ndim == 3 and array.shape[2] == 4:
        return np.ascontiguousarray(array[:, :, :3])
    if array.ndim == 3 and array.shape[2] == 1:
        return np.repeat(array, 3, axis=2)
    raise MediaError("unsupported", f"VRS image of shape {array.shape} is not grey or RGB")


@dataclass(slots=True, frozen=True)
class VrsGroupInfo:
    """What probing one stream group found (sizes after turning upright)."""

    info: VideoInfo
    turns: tuple[int, ...]


class VrsFile:
    """An opened VRS file, read only through its allow-listed streams; use as a context manager.

    Raises:
        MediaError: projectaria-tools missing (``unsupported``, with the install hint), a
            remote URI, or a file the library cannot open.
    """

    def __init__(self, uri: str) -> None:
        data_provider = _provider_module()
        if "://" in uri:
            raise MediaError("unsupported", "VRS recordings are read from local files only")
        if not os.path.isfile(uri):
            raise MediaError("unreadable", "VRS file does not exist")
        from projectaria_tools.core.sensor_data import SensorDataType, TimeDomain
        from projectaria_tools.core.stream_id import StreamId

        self._stream_id = StreamId
        self._device_time = TimeDomain.DEVICE_TIME
        try:
            with _native_quiet():
                self._provider = data_provider.create_vrs_data_provider(uri)
        except Exception as exc:  # noqa: BLE001 - the binding raises plain RuntimeErrors
            raise MediaError("unreadable", f"not a readable VRS file ({type(exc).__name__})") \
                from None
        if self._provider is None:
            raise MediaError("unreadable", "not a readable VRS file")
        listed = [(str(s), self._provider.get_sensor_data_type(s) == SensorDataType.IMAGE)
                  for s in self._provider.get_all_streams()]
        self.selection: StreamSelection = select_streams(listed)
        self._timestamps: dict[str, list[int]] = {}
        self._turns: dict[str, int] = {}

    def __enter__(self) -> VrsFile:
        return self

    def __exit__(self, *exc) -> None:
        self._provider = None

    def _allowed(self, stream: str):
        if stream not in self.selection.read:
            raise ValueError(f"stream {stream} is not on the allow-list")
        return self._stream_id(stream)

    def timestamps_ns(self, stream: str) -> list[int]:
        if stream not in self._timestamps:
            with _native_quiet():
                self._timestamps[stream] = list(self._provider.get_timestamps_ns(
                    self._allowed(stream), self._device_time))
        return self._timestamps[stream]

    def turns(self, stream: str) -> int:
        """Quarter turns that make this camera upright, from the device calibration.

        Raises:
            MediaError: no calibration for the camera (which way is up is unknown, and
                detection on sideways frames would miss faces).
        """
        if stream not in self._turns:
            sid = self._allowed(stream)
            with _native_quiet():
                calib = self._provider.get_device_calibration()
                label = self._provider.get_label_from_stream_id(sid)
                camera = calib.get_camera_calib(label) if calib is not None else None
            if camera is None:
                raise MediaError("unsupported", f"stream {stream} has no camera calibration, so "
                                                "its orientation is unknown")
            r_camera = camera.get_transform_device_camera().rotation().to_matrix()
            r_cpf = calib.get_transform_device_cpf().rotation().to_matrix()
            self._turns[stream] = upright_turns(r_camera, r_cpf @ np.array([0.0, 1.0, 0.0]))
        return self._turns[stream]

    def frame(self, stream: str, index: int) -> np.ndarray:
        """One allow-listed frame, upright and RGB."""
        sid = self._allowed(stream)
        with _native_quiet():
            image, _ = self._provider.get_image_data_by_index(sid, int(index))
        if not image.is_valid():
            raise MediaError("decode_error", f"frame {index} of stream {stream} is not valid")
        rgb = _to_rgb(image.to_numpy_array())
        turns = self.turns(stream)
        return np.ascontiguousarray(np.rot90(rgb, k=turns)) if turns else rgb

    def origin_ns(self, streams: tuple[str, ...]) -> int:
        return min(self.timestamps_ns(s)[0] for s in streams if self.timestamps_ns(s))

    def probe(self, streams: tuple[str, ...], caps: DecodeCaps) -> VrsGroupInfo:
        """Size, rate and length of a group of synchronised streams.

        Raises:
            MediaError: an empty stream, streams of different sizes, or above a cap.
        """
        counts = [len(self.timestamps_ns(s)) for s in streams]
        if min(counts) == 0:
            raise MediaError("no_video", "an allowed camera stream holds no frame")
        shapes = {self.frame(s, 0).shape[:2] for s in streams}
        if len(shapes) != 1:
            raise MediaError("unsupported", "cameras of one group differ in size")
        height, width = shapes.pop()
        if width * height > caps.max_pixels:
            raise MediaError("too_large", f"resolution {width}x{height} is above the cap of "
                                          f"{caps.max_pixels} pixels")
        times = self.timestamps_ns(streams[0])
        frames = min(counts)
        span = (times[frames - 1] - times[0]) / 1e9
        fps = (frames - 1) / span if frames > 1 and span > 0 else None
        duration = span + (1.0 / fps if fps else 0.0)
        if duration > caps.max_duration_s:
            raise MediaError("too_large", f"duration {duration:.0f} s is above the cap of "
                                          f"{caps.max_duration_s:.0f} s")
        turns = tuple(self.turns(s) for s in streams)
        return VrsGroupInfo(VideoInfo(width=width, height=height, fps=fps, duration_s=duration,
                                      frame_count=frames, rotation=90 * turns[0], codec="vrs",
                                      has_audio=False), turns)


def iter_vrs_window(uri: str, streams: tuple[str, ...], views: tuple[str, ...],
                    start_s: float = 0.0, end_s: float | None = None, context: int = 0,
                    stats: DecodeStats | None = None
                    ) -> Iterator[tuple[float, dict[str, np.ndarray], bool]]:
    """The instants of [start_s, end_s) of a group of allowed streams, plus ``context`` each side.

    Yields ``(time_s, {view: RGB frame}, inside)``; times are seconds from the group's
    first frame. Streams are matched frame by frame; instants whose timestamps differ by
    more than ``SYNC_TOLERANCE_S`` are counted as corrupt and skipped.

    Raises:
        MediaError: the file cannot be read.
    """
    stats = stats if stats is not None else DecodeStats()
    with VrsFile(uri) as vrs:
        stamps = [vrs.timestamps_ns(s) for s in streams]
        count = min(len(t) for t in stamps)
        origin = vrs.origin_ns(streams)
        times = [(stamps[0][i] - origin) / 1e9 for i in range(count)]
        first = bisect.bisect_left(times, start_s - 1e-6)
        last = count if end_s is None else bisect.bisect_left(times, end_s - 1e-6)
        for i in range(max(0, first - context), min(count, last + context)):
            if any(abs(t[i] - stamps[0][i]) > SYNC_TOLERANCE_S * 1e9 for t in stamps[1:]):
                stats.corrupt += 1
                continue
            images = {view: vrs.frame(stream, i) for stream, view in zip(streams, views)}
            stats.decoded += 1
            yield times[i], images, first <= i < last
