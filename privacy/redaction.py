"""Irreversible redaction of face regions.

The default is a solid fill: blurred and pixelated faces are re-identified by
networks (PRIVACY.md 1), so recoverable methods exist only as explicit options.
``pixelate`` keeps a handful of blocks per face and adds noise to each block, so
the few remaining values do not encode the face either. Masks are the detected
box scaled by ``mask_scale`` (at least 1.3).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

MODES = ("solid", "pixelate", "blur")
MIN_MASK_SCALE = 1.3
SOLID_VALUE = 128


@dataclass(slots=True, frozen=True)
class RedactionConfig:
    """How to redact.

    Args:
        mode: ``solid`` (default, irreversible), ``pixelate`` (coarse blocks with noise)
            or ``blur`` (explicit opt-in: not irreversible).
        mask_scale: factor applied to each box's width and height, at least 1.3.
        pixel_blocks: blocks across a face for ``pixelate``.
    """

    mode: str = "solid"
    mask_scale: float = 1.4
    pixel_blocks: int = 4

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"redaction mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not MIN_MASK_SCALE <= self.mask_scale <= 4.0:
            raise ValueError(f"mask_scale must be in [{MIN_MASK_SCALE}, 4], got {self.mask_scale}")
        if not 2 <= self.pixel_blocks <= 16:
            raise ValueError(f"pixel_blocks must be in [2, 16], got {self.pixel_blocks}")


def scale_boxes(boxes: np.ndarray, factor: float, width: int, height: int) -> np.ndarray:
    """Boxes grown about their centres by ``factor``, as integer pixel bounds inside the frame."""
    if boxes.shape[0] == 0:
        return np.zeros((0, 4), np.int32)
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    half_w = (boxes[:, 2] - boxes[:, 0]) * factor / 2
    half_h = (boxes[:, 3] - boxes[:, 1]) * factor / 2
    out = np.stack([np.floor(cx - half_w), np.floor(cy - half_h),
                    np.ceil(cx + half_w), np.ceil(cy + half_h)], axis=1)
    out[:, 0::2] = np.clip(out[:, 0::2], 0, width)
    out[:, 1::2] = np.clip(out[:, 1::2], 0, height)
    return out.astype(np.int32)


def redact(frame: np.ndarray, boxes: np.ndarray, config: RedactionConfig,
           rng: np.random.Generator | None = None) -> np.ndarray:
    """Redact ``boxes`` (x1, y1, x2, y2 before scaling) in ``frame`` in place; returns it."""
    height, width = frame.shape[:2]
    regions = scale_boxes(np.asarray(boxes, np.float32).reshape(-1, 4), config.mask_scale,
                          width, height)
    if regions.shape[0] == 0:
        return frame
    if config.mode == "solid":
        for x1, y1, x2, y2 in regions:
            frame[y1:y2, x1:x2] = SOLID_VALUE
        return frame
    rng = rng or np.random.default_rng()
    for x1, y1, x2, y2 in regions:
        w, h = x2 - x1, y2 - y1
        if w <= 0 or h <= 0:
            continue
        roi = frame[y1:y2, x1:x2]
        if config.mode == "pixelate":
            bw = max(1, min(config.pixel_blocks, w))
            bh = max(1, min(config.pixel_blocks, h))
            small = cv2.resize(roi, (bw, bh), interpolation=cv2.INTER_AREA).astype(np.int16)
            small += rng.integers(-48, 49, size=small.shape, dtype=np.int16)
            small = np.clip(small, 0, 255).astype(np.uint8)
            roi[:] = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
        else:  # blur: explicit, recoverable option
            k = max(3, (max(w, h) // 3) | 1)
            roi[:] = cv2.GaussianBlur(roi, (k, k), 0)
    return frame
