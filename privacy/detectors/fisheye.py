"""Faces near the rim of a fisheye frame: detect in perspective views as well.

An equidistant fisheye lens (smart glasses: about 110 degrees) squeezes faces
radially and shears them the nearer they are to the rim, where detectors trained
on perspective photos lose them (bench/fisheye.py). This wrapper runs the inner
detector on the whole frame and on perspective re-projections looking towards the
rim, and maps the boxes found there back into the fisheye frame (the bounding box
of each box's outline, sampled along its edges).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from privacy.detectors.base import Detections, Detector, nms

EDGE_SAMPLES = 16


class FisheyeDetector(Detector):
    """Runs ``inner`` on the frame and on ``views`` perspective views towards the rim.

    Args:
        inner: the detector to run.
        fov_deg: the lens's field of view across the frame's width (equidistant model,
            optical centre at the frame centre).
        views: perspective views spaced evenly in azimuth.
        view_tilt_deg: angle between each view's axis and the optical axis.
        view_fov_deg: field of view of each perspective view.
    """

    def __init__(self, inner: Detector, fov_deg: float = 110.0, views: int = 4,
                 view_tilt_deg: float | None = None, view_fov_deg: float = 70.0) -> None:
        if not 60.0 <= fov_deg <= 220.0:
            raise ValueError(f"fisheye fov must be in [60, 220] degrees, got {fov_deg}")
        if not 1 <= views <= 12:
            raise ValueError(f"fisheye views must be in [1, 12], got {views}")
        self.inner = inner
        self.fov = math.radians(fov_deg)
        self.views = views
        self.tilt = math.radians(view_tilt_deg if view_tilt_deg is not None
                                 else min(fov_deg / 2 - view_fov_deg / 4, fov_deg / 2 * 0.7))
        self.view_fov = math.radians(view_fov_deg)
        self.name = f"{inner.name}+fisheye"
        self._maps: dict = {}

    def describe(self) -> dict:
        return {"name": self.name, "inner": self.inner.describe(),
                "fov_deg": round(math.degrees(self.fov), 1), "views": self.views,
                "view_tilt_deg": round(math.degrees(self.tilt), 1),
                "view_fov_deg": round(math.degrees(self.view_fov), 1)}

    def _rotations(self) -> list[np.ndarray]:
        out = []
        for k in range(self.views):
            azimuth = 2 * math.pi * k / self.views
            axis = np.array([math.cos(azimuth + math.pi / 2), math.sin(azimuth + math.pi / 2), 0.0])
            out.append(cv2.Rodrigues(axis * self.tilt)[0])
        return out

    def _view_maps(self, height: int, width: int):
        key = (height, width)
        if key not in self._maps:
            f_d = (width / 2) / (self.fov / 2)
            size = max(64, int(round(width / 2 / 32)) * 32)
            f_p = (size / 2) / math.tan(self.view_fov / 2)
            ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
            rays = np.stack([xs - size / 2, ys - size / 2, np.full_like(xs, f_p)], axis=-1)
            views = []
            for rotation in self._rotations():
                world = rays @ rotation.T
                map_x, map_y = _to_fisheye(world, f_d, width, height)
                views.append((rotation, map_x.astype(np.float32), map_y.astype(np.float32)))
            self._maps[key] = (size, f_p, f_d, views)
        return self._maps[key]

    def _detect(self, frame: np.ndarray) -> Detections:
        return self._detect_batch([frame])[0]

    def _detect_batch(self, frames: list[np.ndarray]) -> list[Detections]:
        out = []
        whole = self.inner.detect_batch(frames)
        for frame, own in zip(frames, whole):
            height, width = frame.shape[:2]
            size, f_p, f_d, views = self._view_maps(height, width)
            images = [cv2.remap(frame, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
                      for _, mx, my in views]
            parts = [own]
            for (rotation, _, _), dets in zip(views, self.inner.detect_batch(images)):
                if len(dets):
                    boxes = _boxes_to_fisheye(dets.boxes, rotation, size, f_p, f_d, width,
                                              height)
                    parts.append(Detections(boxes, dets.scores))
            out.append(_fuse(Detections.concat(parts)))
        return out


def _fuse(dets: Detections, iou: float = 0.3) -> Detections:
    """One box per face seen in several views: the box enclosing all of its boxes.

    Enclosing rather than suppressing keeps every pixel any view marked (redaction
    stays a superset) while counting the face once.
    """
    if len(dets) < 2:
        return dets
    keep = nms(dets.boxes, dets.scores, iou)
    boxes = dets.boxes[keep].copy()
    scores = dets.scores[keep].copy()
    for i, box in enumerate(dets.boxes):
        x1 = np.maximum(boxes[:, 0], box[0])
        y1 = np.maximum(boxes[:, 1], box[1])
        x2 = np.minimum(boxes[:, 2], box[2])
        y2 = np.minimum(boxes[:, 3], box[3])
        inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
        union = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
                 + (box[2] - box[0]) * (box[3] - box[1]) - inter)
        j = int(np.argmax(inter / np.maximum(union, 1e-9)))
        boxes[j, :2] = np.minimum(boxes[j, :2], box[:2])
        boxes[j, 2:] = np.maximum(boxes[j, 2:], box[2:])
        scores[j] = max(scores[j], dets.scores[i])
    return Detections(boxes, scores)


def _to_fisheye(rays: np.ndarray, f_d: float, width: int, height: int):
    norm = np.linalg.norm(rays, axis=-1)
    theta = np.arccos(np.clip(rays[..., 2] / norm, -1.0, 1.0))
    phi = np.arctan2(rays[..., 1], rays[..., 0])
    r = f_d * theta
    return width / 2 + r * np.cos(phi), height / 2 + r * np.sin(phi)


def _boxes_to_fisheye(boxes: np.ndarray, rotation: np.ndarray, size: int, f_p: float,
                      f_d: float, width: int, height: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, EDGE_SAMPLES)
    out = []
    for x1, y1, x2, y2 in boxes:
        xs = np.concatenate([x1 + (x2 - x1) * t, np.full_like(t, x2), x1 + (x2 - x1) * t,
                             np.full_like(t, x1)])
        ys = np.concatenate([np.full_like(t, y1), y1 + (y2 - y1) * t, np.full_like(t, y2),
                             y1 + (y2 - y1) * t])
        rays = np.stack([xs - size / 2, ys - size / 2, np.full_like(xs, f_p)], axis=-1)
        u, v = _to_fisheye(rays @ rotation.T, f_d, width, height)
        out.append([u.min(), v.min(), u.max(), v.max()])
    boxes_out = np.asarray(out, np.float32).reshape(-1, 4)
    np.clip(boxes_out[:, 0::2], 0, width, out=boxes_out[:, 0::2])
    np.clip(boxes_out[:, 1::2], 0, height, out=boxes_out[:, 1::2])
    return boxes_out
