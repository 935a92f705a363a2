"""YuNet through OpenCV's ``FaceDetectorYN``, from an ONNX file the user supplies.

No package on the registries ships YuNet's weights, so this backend is never a
default: it takes a path (``yunet:/path/to/face_detection_yunet_2023mar.onnx``).
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from privacy.detectors.base import Detections, Detector, DetectorError
from privacy.detectors.centerface import file_sha256


class YuNetDetector(Detector):
    """YuNet at one or more input scales.

    Args:
        model_path: the YuNet ONNX file.
        threshold: score threshold in (0, 1).
        scales: input sizes relative to the frame.
    """

    name = "yunet"

    def __init__(self, model_path: str, threshold: float = 0.3,
                 scales: tuple[float, ...] = (1.0,), nms_iou: float = 0.3) -> None:
        if not model_path or not os.path.isfile(model_path):
            raise DetectorError(f"YuNet model file not found: {model_path!r}")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        if not scales or any(not (0.05 <= s <= 4.0) for s in scales):
            raise ValueError(f"scales must be non-empty, each in [0.05, 4], got {scales}")
        self.model_path = model_path
        self.threshold = float(threshold)
        self.scales = tuple(float(s) for s in scales)
        self.nms_iou = float(nms_iou)
        try:
            self._net = cv2.FaceDetectorYN.create(model_path, "", (320, 320), self.threshold,
                                                  self.nms_iou, 5000)
        except cv2.error as exc:
            raise DetectorError(f"cannot load YuNet from the given file: {exc}") from exc
        self._weights_sha256 = file_sha256(model_path)

    def describe(self) -> dict:
        return {"name": self.name, "weights_sha256": self._weights_sha256,
                "threshold": self.threshold, "scales": list(self.scales)}

    def _detect(self, frame: np.ndarray) -> Detections:
        height, width = frame.shape[:2]
        bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        parts = []
        for scale in self.scales:
            in_w, in_h = max(16, round(width * scale)), max(16, round(height * scale))
            image = bgr if (in_w, in_h) == (width, height) else cv2.resize(
                bgr, (in_w, in_h), interpolation=cv2.INTER_LINEAR if scale > 1 else cv2.INTER_AREA)
            self._net.setInputSize((in_w, in_h))
            _, faces = self._net.detect(image)
            if faces is None or len(faces) == 0:
                continue
            faces = np.asarray(faces, np.float32)
            x, y, w, h = faces[:, 0], faces[:, 1], faces[:, 2], faces[:, 3]
            boxes = np.stack([x, y, x + w, y + h], axis=1) / np.float32(scale)
            boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
            boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
            parts.append(Detections(boxes.astype(np.float32),
                                    np.clip(faces[:, -1], 0, 1).astype(np.float32)))
        return Detections.concat(parts)
