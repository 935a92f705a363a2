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
"""

from __future__ import annotations

from dataclasses import dataclass

from privacy.detectors.base import Detections, Detector, nms

BACKENDS = ("centerface", "yunet", "hog", "cnn")

# Chosen by measurement; see bench/ and DESIGN.md. On WIDER dev (bench/results/wider.json)
# threshold 0.1 covered 0.9525 / 0.8813 of faces >= 20 px / 10-20 px in float32 and
# 0.9507 / 0.8838 on OpenVINO's bfloat16; 0.09 covers 0.9549 / 0.8992 in bfloat16.
DEFAULT_DETECTOR = "centerface:threshold=0.09"


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


@dataclass(slots=True, frozen=True)
class DetectorSpec:
    """What to build on each worker; parsed once on the launcher so typos fail early."""

    backends: tuple[BackendSpec, ...]

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


def on_device(text: str, device: str) -> str:
    """The spec with every CenterFace member that names no backend on ``device``.

    ``cuda`` runs them through onnxruntime's CUDA (or TensorRT) provider; ``cpu`` leaves
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
        if name.strip().lower() == "centerface" and not keys & {"backend", "device"}:
            extra = "backend=onnxruntime;device=cuda"
            part = f"{name}:{opts};{extra}" if sep and opts.strip() else f"{name}:{extra}"
        parts.append(part.strip())
    return "+".join(parts)


class EnsembleDetector(Detector):
    """Runs every backend on the frame; a face found by any of them is a face."""

    def __init__(self, members: list[Detector], nms_iou: float = 0.5) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one detector")
        self.members = members
        self.nms_iou = nms_iou
        self.name = "+".join(m.name for m in members)

    def describe(self) -> dict:
        return {"name": self.name, "members": [m.describe() for m in self.members]}

    def _detect(self, frame):
        merged = Detections.concat([m.detect(frame) for m in self.members])
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


def build_detector(spec: DetectorSpec | str) -> Detector:
    """Build the detector a spec describes (loads weights: call in ``DoFn.setup``)."""
    if isinstance(spec, str):
        spec = DetectorSpec.parse(spec)
    members = [_build_one(b) for b in spec.backends]
    return members[0] if len(members) == 1 else EnsembleDetector(members)
