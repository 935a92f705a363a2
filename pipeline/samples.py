"""Sample smart-glasses-like recordings with real faces, and where those faces are.

The faces are public-domain portraits that ship inside scikit-image (Eileen
Collins, ``data.astronaut``; the cameraman, ``data.camera``), so samples are made
offline. The camera pans and shakes like a head-mounted one; the faces move
across the scene. Files carry what real recordings carry and egoveil must strip:
an audio track and container metadata (location, make, model, serial, creation
time) and, on request, the side tracks real cameras write: a subtitle track, a
GoPro-style ``gpmd`` telemetry track (GPS and serial; MP4 only, FFmpeg's MOV muxer
refuses it), a timecode track and chapters. The generator returns the face boxes
drawn in every frame, for tests.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from fractions import Fraction

import av
import cv2
import numpy as np

# Face regions in the scikit-image portraits (x1, y1, x2, y2), found with CenterFace
# and widened to include hair and chin.
_FACES = {"astronaut": (168, 40, 284, 196), "camera": (190, 100, 270, 212)}

SAMPLE_METADATA = {
    "location": "+48.8584+002.2945/",
    "com.apple.quicktime.location.ISO6709": "+48.8584+002.2945+035.000/",
    "make": "EgoGlassesCo",
    "model": "EG-1 Prototype",
    "com.apple.quicktime.make": "EgoGlassesCo",
    "com.apple.quicktime.model": "EG-1 Prototype",
    "serial_number": "EG1-SN-0042-7731",
    "creation_time": "2026-05-01T10:00:00.000000Z",
    "title": "Walk with Alice",
    "comment": "recorded by wearer-alice near the tower",
}


# What the side tracks carry: strings a test can look for in every output byte.
SAMPLE_SUBTITLE = "wearer-alice at 12 Rue de la Paix, serial EG1-SN-0042-7731"
SAMPLE_TELEMETRY = b"GPMD DVNM EG1 Prototype CASN EG1-SN-0042-7731 GPS5 48.85840 2.29450"
SAMPLE_CHAPTERS = ("Leaving Alice home", "Arriving at the tower")
SAMPLE_TIMECODE = "10:00:00:00"
SIDE_TRACK_STRINGS = (SAMPLE_SUBTITLE.encode(), SAMPLE_TELEMETRY, *(c.encode() for c in
                                                                     SAMPLE_CHAPTERS))


def portrait(name: str) -> np.ndarray:
    """A face crop (RGB uint8) from scikit-image's bundled portraits."""
    from skimage import data

    image = getattr(data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    x1, y1, x2, y2 = _FACES[name]
    return np.ascontiguousarray(image[y1:y2, x1:x2])


def scene(width: int, height: int) -> np.ndarray:
    """A wide background to pan over (scikit-image's coffee photo, enlarged)."""
    from skimage import data

    base = data.coffee()
    return cv2.resize(base, (width, height), interpolation=cv2.INTER_CUBIC)


@dataclass(slots=True, frozen=True)
class FaceTrack:
    """A face moving linearly across the frame: centre from ``start`` to ``end``, height ``size``."""

    face: str
    start: tuple[float, float]
    end: tuple[float, float]
    size: int


def _paste(frame: np.ndarray, face: np.ndarray, cx: float, cy: float,
           height: int) -> tuple[int, int, int, int] | None:
    fh, fw = face.shape[:2]
    width = max(8, round(fw * height / fh))
    patch = cv2.resize(face, (width, height), interpolation=cv2.INTER_AREA)
    x1, y1 = round(cx - width / 2), round(cy - height / 2)
    x2, y2 = x1 + width, y1 + height
    H, W = frame.shape[:2]
    cx1, cy1, cx2, cy2 = max(0, x1), max(0, y1), min(W, x2), min(H, y2)
    if cx2 <= cx1 or cy2 <= cy1:
        return None
    mask = np.zeros((height, width), np.float32)
    cv2.ellipse(mask, (width // 2, height // 2), (width // 2, height // 2), 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, height / 30))[..., None]
    sub = patch[cy1 - y1:cy2 - y1, cx1 - x1:cx2 - x1].astype(np.float32)
    m = mask[cy1 - y1:cy2 - y1, cx1 - x1:cx2 - x1]
    region = frame[cy1:cy2, cx1:cx2].astype(np.float32)
    frame[cy1:cy2, cx1:cx2] = (m * sub + (1 - m) * region).astype(np.uint8)
    return (cx1, cy1, cx2, cy2)


@dataclass(slots=True, frozen=True)
class Sticker:
    """A flat patch fixed in the scene (a licence plate, a name badge): it pans with the
    background, so it moves in the frame as the camera does.

    Args:
        detection_class: what it is (``plate``, ``text``), the key of its boxes.
        patch: RGB uint8 (``plate_patch``, ``badge_patch``).
        at: its top-left corner in the panned background, as shares of the frame's
            width and height (``(0.62, 0.69)`` stays in view whatever the pan).
    """

    detection_class: str
    patch: np.ndarray
    at: tuple[float, float] = (0.62, 0.69)


def make_recording(path: str, width: int = 640, height: int = 360, fps: int = 15,
                   seconds: float = 3.0, tracks: tuple[FaceTrack, ...] | None = None,
                   audio: bool = True, metadata: dict | None = None, rotation: int = 0,
                   seed: int = 0, side_tracks: bool = False, metadata_atoms: str = "mdta"
                   ) -> list[list[tuple[int, int, int, int]]]:
    """Write a sample recording and return the face boxes drawn in each frame (see
    ``make_scene_recording``)."""
    return make_scene_recording(path, width, height, fps, seconds, tracks, audio=audio,
                                metadata=metadata, rotation=rotation, seed=seed,
                                side_tracks=side_tracks, metadata_atoms=metadata_atoms)["face"]


def make_scene_recording(path: str, width: int = 640, height: int = 360, fps: int = 15,
                         seconds: float = 3.0, tracks: tuple[FaceTrack, ...] | None = None,
                         stickers: tuple[Sticker, ...] = (), audio: bool = True,
                         metadata: dict | None = None, rotation: int = 0, seed: int = 0,
                         side_tracks: bool = False, metadata_atoms: str = "mdta"
                         ) -> dict[str, list[list[tuple[int, int, int, int]]]]:
    """Write a sample recording and return, by class, the boxes drawn in each frame.

    Args:
        path: output file (.mp4 or .mov).
        rotation: display rotation written into the container (0, 90, 180, 270); the
            returned boxes are in the upright (displayed) frame.
        seed: head-motion jitter.
        side_tracks: also write a subtitle track, a timecode track, chapters and (MP4
            only) a ``gpmd`` telemetry track, each carrying identifying strings.
        metadata_atoms: ``mdta`` writes metadata as QuickTime keys (what phones write:
            ``com.apple.quicktime.*``); ``udta`` as classic user-data atoms (``©xyz``,
            ``©mak``, ``©nam``, ...).

        stickers: plates and badges fixed in the scene.

    Returns:
        ``face`` and each sticker's class: for each frame, the boxes (x1, y1, x2, y2)
        drawn in it, in the displayed orientation (stickers are for upright videos).
    """
    tracks = tracks if tracks is not None else (
        FaceTrack("astronaut", (0.15, 0.45), (0.55, 0.5), int(height * 0.30)),
        FaceTrack("camera", (0.85, 0.4), (0.6, 0.45), int(height * 0.22)),
    )
    rng = np.random.default_rng(seed)
    faces = {t.face: portrait(t.face) for t in tracks}
    background = scene(int(width * 1.6), int(height * 1.4))
    placed = []
    for sticker in stickers:
        x, y = round(sticker.at[0] * width), round(sticker.at[1] * height)
        paste_patch(background, sticker.patch, x, y)
        ph, pw = sticker.patch.shape[:2]
        placed.append((sticker.detection_class, (x, y, x + pw, y + ph)))
    drawn: dict[str, list] = {"face": [], **{s.detection_class: [] for s in stickers}}
    frames_total = max(1, round(seconds * fps))
    container = av.open(path, mode="w", options={"movflags": "use_metadata_tags"}
                        if metadata_atoms == "mdta" else {})
    for key, value in (metadata if metadata is not None else SAMPLE_METADATA).items():
        container.metadata[key] = value
    # Stored frames are the displayed frame rotated back, so that a player (and egoveil)
    # applying the display rotation sees them upright.
    stored_w, stored_h = (height, width) if rotation in (90, 270) else (width, height)
    video = container.add_stream("libx264", rate=fps)
    video.width, video.height, video.pix_fmt = stored_w, stored_h, "yuv420p"
    video.codec_context.options = {"preset": "veryfast", "crf": "18"}
    if rotation:
        video.set_display_rotation(rotation)
    sound = None
    if audio:
        sound = container.add_stream("aac", rate=16000)
        sound.layout = "mono"
    side = _SideTracks(container, video, fps, frames_total) if side_tracks else None
    samples_per_frame = 16000 // fps
    for i in range(frames_total):
        t = i / max(1, frames_total - 1)
        pan_x = (background.shape[1] - width) * (0.5 + 0.4 * math.sin(2 * math.pi * t * 0.7))
        pan_y = (background.shape[0] - height) * (0.5 + 0.3 * math.sin(2 * math.pi * t * 1.3))
        pan_x += rng.normal(0, 3)
        pan_y += rng.normal(0, 3)
        x0 = int(np.clip(pan_x, 0, background.shape[1] - width))
        y0 = int(np.clip(pan_y, 0, background.shape[0] - height))
        frame = background[y0:y0 + height, x0:x0 + width].copy()
        for name in drawn:
            drawn[name].append([])
        for name, (bx1, by1, bx2, by2) in placed:
            box = (max(0, bx1 - x0), max(0, by1 - y0), min(width, bx2 - x0),
                   min(height, by2 - y0))
            if box[2] > box[0] and box[3] > box[1]:
                drawn[name][-1].append(box)
        boxes = drawn["face"][-1]
        for track in tracks:
            cx = (track.start[0] + (track.end[0] - track.start[0]) * t) * width
            cy = (track.start[1] + (track.end[1] - track.start[1]) * t) * height
            box = _paste(frame, faces[track.face], cx, cy, track.size)
            if box is not None:
                boxes.append(box)
        stored = np.ascontiguousarray(np.rot90(frame, k=-(rotation // 90))) if rotation else frame
        vf = av.VideoFrame.from_ndarray(stored, format="rgb24")
        vf.pts = i
        vf.time_base = Fraction(1, fps)
        for packet in video.encode(vf):
            container.mux(packet)
        if side is not None:
            side.write(i)
        if sound is not None:
            tone = (0.2 * np.sin(2 * np.pi * 440 * (np.arange(samples_per_frame)
                                                    + i * samples_per_frame) / 16000))
            af = av.AudioFrame.from_ndarray(tone.astype(np.float32)[None, :], format="fltp",
                                            layout="mono")
            af.sample_rate = 16000
            af.pts = i * samples_per_frame
            for packet in sound.encode(af):
                container.mux(packet)
    for stream in (video, sound):
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    container.close()
    return drawn


class _SideTracks:
    """Subtitle, telemetry and timecode tracks and chapters, muxed as pre-encoded packets."""

    def __init__(self, container, video, fps: int, frames_total: int) -> None:
        self.container = container
        self.ms_per_frame = 1000 // fps
        self.duration_ms = frames_total * self.ms_per_frame
        video.metadata["timecode"] = SAMPLE_TIMECODE  # the MOV muxer adds a tmcd track
        self.subtitle = container.add_mux_stream("mov_text", time_base=Fraction(1, 1000))
        self.telemetry = (container.add_mux_stream("bin_data", time_base=Fraction(1, 1000))
                          if container.format.name == "mp4" else None)
        half = self.duration_ms // 2
        container.set_chapters([
            {"id": n + 1, "start": n * half, "end": (n + 1) * half,
             "time_base": Fraction(1, 1000), "metadata": {"title": title}}
            for n, title in enumerate(SAMPLE_CHAPTERS)])

    def _packet(self, stream, payload: bytes, start_ms: int, duration_ms: int) -> None:
        packet = av.Packet(payload)
        packet.stream = stream
        packet.pts = packet.dts = start_ms
        packet.duration = duration_ms
        packet.time_base = Fraction(1, 1000)
        self.container.mux(packet)

    def write(self, frame_index: int) -> None:
        if frame_index != 0:
            return
        text = SAMPLE_SUBTITLE.encode()
        self._packet(self.subtitle, struct.pack(">H", len(text)) + text, 0, self.duration_ms)
        if self.telemetry is not None:
            self._packet(self.telemetry, SAMPLE_TELEMETRY, 0, self.duration_ms)


@dataclass(slots=True, frozen=True)
class StereoFace:
    """A face pasted into both views of a stereo pair, optionally made hard in one.

    Attributes:
        face: an RGB face crop.
        centre: (x, y) of the face in the left view, in pixels.
        height: face height in pixels.
        disparity: how far left the face sits in the right view, in pixels.
        hard_in: ``left`` or ``right`` to degrade the face in that view only, or None.
    """

    face: np.ndarray
    centre: tuple[float, float]
    height: int
    disparity: float
    hard_in: str | None = None


def plate_patch(text: str = "KA 482 TB", height: int = 40) -> np.ndarray:
    """A white licence plate with a dark border and black characters (RGB uint8), drawn
    with Pillow's bundled font, ``height`` pixels high and as wide as its text needs."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=max(8, round(height * 0.72)))
    probe = ImageDraw.Draw(Image.new("RGB", (8, 8)))
    x1, y1, x2, y2 = probe.textbbox((0, 0), text, font=font)
    pad = max(3, height // 4)
    image = Image.new("RGB", (x2 - x1 + 2 * pad, height), (245, 245, 245))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, image.width - 1, height - 1), outline=(10, 10, 10),
                   width=max(1, height // 20))
    draw.text((pad - x1, (height - (y2 - y1)) / 2 - y1), text, fill=(10, 10, 10), font=font)
    return np.asarray(image)


def badge_patch(name: str = "Maria Kowalski", height: int = 30) -> np.ndarray:
    """A name badge: a dark name on a light card (RGB uint8), one line ``height`` high."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=height)
    probe = ImageDraw.Draw(Image.new("RGB", (8, 8)))
    x1, y1, x2, y2 = probe.textbbox((0, 0), name, font=font)
    pad = height
    image = Image.new("RGB", (x2 - x1 + 2 * pad, y2 - y1 + 2 * pad), (250, 250, 248))
    ImageDraw.Draw(image).text((pad - x1, pad - y1), name, fill=(15, 15, 20), font=font)
    return np.asarray(image)


def paste_patch(frame: np.ndarray, patch: np.ndarray, x: int, y: int
                ) -> tuple[int, int, int, int] | None:
    """``patch`` pasted into ``frame`` in place with its top-left corner at (x, y), cut
    at the frame's edges; its box (x1, y1, x2, y2) there, or None outside the frame."""
    h, w = patch.shape[:2]
    H, W = frame.shape[:2]
    x1, y1, x2, y2 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
    if x2 <= x1 or y2 <= y1:
        return None
    frame[y1:y2, x1:x2] = patch[y1 - y:y2 - y, x1 - x:x2 - x]
    return (x1, y1, x2, y2)


def degrade_face(face: np.ndarray, seed: int = 0) -> np.ndarray:
    """What one eye may see of a face the other sees well: defocus, haze and low light.

    A smudged or misfocused lens and a darker sensor are what make a detector miss a
    face in one view only.
    """
    rng = np.random.default_rng(seed)
    blurred = cv2.GaussianBlur(face, (0, 0), max(1.0, face.shape[0] / 18))
    haze = 0.45 * blurred.astype(np.float32) + 0.55 * 150
    noisy = haze + rng.normal(0, 6, haze.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def stereo_pair(faces: list[StereoFace]) -> tuple[np.ndarray, np.ndarray, list, list]:
    """scikit-image's Middlebury motorcycle stereo pair with faces pasted into both views.

    Returns:
        left, right: RGB uint8 views (500 x 741, rectified: a point keeps its row).
        left_boxes, right_boxes: each face's box (x1, y1, x2, y2) in each view (None
            where it falls outside).
    """
    from skimage import data

    left, right, _ = data.stereo_motorcycle()
    left, right = left.copy(), right.copy()
    left_boxes, right_boxes = [], []
    for i, f in enumerate(faces):
        cx, cy = f.centre
        for view, image, boxes, x in (("left", left, left_boxes, cx),
                                      ("right", right, right_boxes, cx - f.disparity)):
            face = degrade_face(f.face, seed=i) if f.hard_in == view else f.face
            boxes.append(_paste(image, face, x, cy, f.height))
    return left, right, left_boxes, right_boxes
