"""How well a redaction mask covers faces: the measure every anonymization claim rests on.

A face counts as covered when at least ``COVERED_SHARE`` of its ground-truth box
lies under the redaction mask. Over-redaction is the masked area outside the
ground-truth boxes (each scaled by ``CONTEXT_SCALE``), as a share of the image.
Face size is the geometric mean of the box's width and height.
"""

from __future__ import annotations

import numpy as np

from privacy.redaction import scale_boxes

COVERED_SHARE = 0.8
CONTEXT_SCALE = 1.5


def face_size(boxes: np.ndarray) -> np.ndarray:
    """sqrt(width * height) of (N, 4) x1, y1, x2, y2 boxes."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return np.sqrt(np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0))


def mask_from_boxes(boxes: np.ndarray, scale: float, height: int, width: int) -> np.ndarray:
    """Boolean mask of the regions a redaction with ``scale`` would paint."""
    mask = np.zeros((height, width), bool)
    for x1, y1, x2, y2 in scale_boxes(np.asarray(boxes, np.float32).reshape(-1, 4), scale,
                                      width, height):
        mask[y1:y2, x1:x2] = True
    return mask


def covered_shares(gt_boxes: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """For each ground-truth box, the share of its pixels under the mask."""
    height, width = mask.shape
    shares = []
    for x1, y1, x2, y2 in np.asarray(gt_boxes, np.float32).reshape(-1, 4):
        a, b = int(np.floor(max(0, x1))), int(np.ceil(min(width, x2)))
        c, d = int(np.floor(max(0, y1))), int(np.ceil(min(height, y2)))
        shares.append(float(mask[c:d, a:b].mean()) if b > a and d > c else 0.0)
    return np.asarray(shares, np.float32)


def outside_share(gt_boxes: np.ndarray, mask: np.ndarray) -> float:
    """Share of the image that is masked but outside every GT box scaled by CONTEXT_SCALE."""
    height, width = mask.shape
    allowed = mask_from_boxes(gt_boxes, CONTEXT_SCALE, height, width)
    return float((mask & ~allowed).sum()) / float(height * width)
