"""A licence-plate detector from a YOLO-family ONNX file the user supplies.

No plate-specific network ships inside a registry wheel under a licence egoveil can
depend on, so this backend is never a default: it takes a path
(``plate-onnx:path=/models/plates.onnx``), like ``yunet:path=FILE``. It reads the two
output layouts plate models are published in:

- raw YOLOv8/v11 heads, ``(B, 4 + classes, anchors)`` with centre-size boxes
  (Ultralytics exports, e.g. ``fastanpr``'s plate model exported with
  ``yolo export format=onnx``; that model and Ultralytics are AGPL-3.0, so such a file
  stays the user's to make and to license);
- end-to-end exports with NMS inside, ``(N, 7)`` rows of batch, x1, y1, x2, y2, class,
  score (open-image-models' ``yolo-v9-*-license-plate-end2end``).

Inputs are letterboxed RGB in [0, 1], as those models were trained.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from privacy.detectors.base import Detections, Detector, DetectorError, nms
from privacy.detectors.centerface import file_sha256
from privacy.detectors.onnx_session import onnx_session
from schemas.detections import PLATE

_PAD_VALUE = 114


class PlateOnnxDetector(Detector):
    """Licence plates from a YOLO-family ONNX model.

    Args:
        model_path: the ONNX file.
        threshold: class score above which a box is a plate, in (0, 1).
        size: input side for models with a dynamic input (multiple of 32); models with
            a fixed input use theirs.
        nms_iou: overlap above which raw boxes are merged.
    """

    name = "plate-onnx"
    detection_class = PLATE

    def __init__(self, model_path: str, threshold: float = 0.25, size: int = 640,
                 nms_iou: float = 0.5) -> None:
        if not model_path or not os.path.isfile(model_path):
            raise DetectorError(f"plate model file not found: {model_path!r}; give an ONNX "
                                "file with plate-onnx:path=FILE")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        if not isinstance(size, int) or size % 32 or not 32 <= size <= 4096:
            raise ValueError(f"size must be a multiple of 32 in [32, 4096], got {size!r}")
        if not 0.0 < nms_iou <= 1.0:
            raise ValueError(f"nms_iou must be in (0, 1], got {nms_iou}")
        self.model_path = model_path
        self.threshold = float(threshold)
        self.nms_iou = float(nms_iou)
        self._session = onnx_session(model_path, "the plate model")
        inputs = self._session.get_inputs()
        shape = inputs[0].shape if len(inputs) == 1 else None
        if shape is None or len(shape) != 4:
            raise DetectorError("the plate model must take one (B, 3, H, W) image input")
        self._input_name = inputs[0].name
        fixed = [d for d in shape[2:] if isinstance(d, int)]
        self.input_hw = (shape[2], shape[3]) if len(fixed) == 2 else (size, size)
        self.size = max(self.input_hw)
        self._weights_sha256 = file_sha256(model_path)

    def describe(self) -> dict:
        return {"name": self.name, "class": self.detection_class,
                "weights_sha256": self._weights_sha256, "threshold": self.threshold,
                "input": list(self.input_hw), "nms_iou": self.nms_iou}

    def _detect(self, frame: np.ndarray) -> Detections:
        in_h, in_w = self.input_hw
        height, width = frame.shape[:2]
        ratio = min(in_w / width, in_h / height)
        new_w, new_h = max(1, round(width * ratio)), max(1, round(height * ratio))
        pad_x, pad_y = (in_w - new_w) // 2, (in_h - new_h) // 2
        image = np.full((in_h, in_w, 3), _PAD_VALUE, np.uint8)
        image[pad_y:pad_y + new_h, pad_x:pad_x + new_w] = cv2.resize(
            frame, (new_w, new_h), interpolation=cv2.INTER_AREA if ratio < 1 else cv2.INTER_LINEAR)
        blob = (image.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
        output = np.asarray(self._session.run(None, {self._input_name: blob})[0])
        boxes, scores = self._decode(output)
        if boxes.shape[0]:
            boxes[:, 0::2] = (boxes[:, 0::2] - pad_x) / ratio
            boxes[:, 1::2] = (boxes[:, 1::2] - pad_y) / ratio
            np.clip(boxes[:, 0::2], 0, width, out=boxes[:, 0::2])
            np.clip(boxes[:, 1::2], 0, height, out=boxes[:, 1::2])
        return Detections(boxes, scores)

    def _decode(self, output: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Boxes (x1, y1, x2, y2 in input pixels) and scores from either output layout."""
        if output.ndim == 2 and output.shape[1] == 7:  # end-to-end, NMS already applied
            rows = output[output[:, 6] >= self.threshold]
            return rows[:, 1:5].astype(np.float32), rows[:, 6].astype(np.float32)
        if output.ndim == 3 and output.shape[0] == 1 and 5 <= output.shape[1] < output.shape[2]:
            pred = output[0].T  # (anchors, 4 + classes)
            scores = pred[:, 4:].max(axis=1)
            pred, scores = pred[scores >= self.threshold], scores[scores >= self.threshold]
            cx, cy, w, h = pred[:, 0], pred[:, 1], pred[:, 2], pred[:, 3]
            boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
            boxes, scores = boxes.astype(np.float32), scores.astype(np.float32)
            keep = nms(boxes, scores, self.nms_iou)
            return boxes[keep], scores[keep]
        raise DetectorError(f"unrecognised plate model output of shape {output.shape}; "
                            "expected (1, 4 + classes, anchors) or (N, 7)")
