"""Cross-view search: a face (or plate, or text line) found in one eye is looked for in
the other.

The two views of a stereo pair see the same faces from a few centimetres apart,
so a face lies on about the same rows in both, shifted sideways by its
disparity. For every face found in one view that has no match in the other, the
other view's band of rows around it, within a bounded disparity, is searched
again: first by a detector at a lower threshold on the band alone (upscaled so
that the face is at least ``min_search_px`` tall), then, where that finds
nothing, by normalised cross-correlation with the face's own pixels from the
first view. A hit is redacted in the second view like any detection, so a miss
in one eye (blur, glare, a smudged lens, a darker sensor) is caught by the other.

Plates and text are searched the same way, template first (a plate is rigid and flat,
so its pixels match well across the eyes), then with the class's own detector on the
band, its limits relative to the frame lifted (``privacy.detectors.factory.on_crops``).

Recovered boxes only ever add redaction. A band detector that fails raises
``DetectorError``, which fails the frame like the main detector does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np

from privacy.detectors.base import Detections, Detector

# The band detector's default: CenterFace below the run's 0.1, on a small crop where
# a low threshold costs few false boxes (see bench/stereo.py).
DEFAULT_BAND_DETECTOR = "centerface:threshold=0.03"
_TEMPLATE_SCALES = (0.85, 1.0, 1.15)
_MIN_TEMPLATE_STD = 6.0  # a flat patch correlates with anything
_MAX_BAND_PIXELS = 2048 * 1024


@dataclass(slots=True, frozen=True)
class CrossViewConfig:
    """How far and how hard the other view is searched.

    Args:
        enabled: search at all (off only for measuring what the search adds).
        detector: detector spec run on the band for faces (plates and text use their own
            detector); ``none`` for template matching only, for every class.
        max_disparity: largest horizontal shift searched, as a share of the view's width.
        row_slack: rows searched above and below the face, in face heights (rectified
            pairs need little; unrectified ones, such as Aria's front SLAM cameras, more).
        template_ncc: normalised cross-correlation a template match needs (``>= 1`` turns
            template matching off).
        min_search_px: the band is upscaled until the face is at least this tall.
        min_source_score: only faces found with at least this confidence are searched
            for (the run's low threshold also finds texture that is no face; searching
            for it would redact more texture in the other view).
        max_size_ratio: a hit may differ from the face's size by at most this factor (a
            rectified pair sees a face at one depth, so at about one size).
    """

    enabled: bool = True
    detector: str = DEFAULT_BAND_DETECTOR
    max_disparity: float = 0.15
    row_slack: float = 0.5
    template_ncc: float = 0.6
    min_search_px: int = 64
    min_source_score: float = 0.3
    max_size_ratio: float = 1.5

    def __post_init__(self) -> None:
        if not 0 < self.max_disparity <= 1:
            raise ValueError(f"max_disparity must be in (0, 1], got {self.max_disparity}")
        if not 0 <= self.row_slack <= 4:
            raise ValueError(f"row_slack must be in [0, 4], got {self.row_slack}")
        if not 0 < self.template_ncc <= 1.01:
            raise ValueError(f"template_ncc must be in (0, 1], got {self.template_ncc}")
        if not 16 <= self.min_search_px <= 512:
            raise ValueError(f"min_search_px must be in [16, 512], got {self.min_search_px}")
        if not 0 <= self.min_source_score < 1:
            raise ValueError(f"min_source_score must be in [0, 1), got {self.min_source_score}")
        if not 1 < self.max_size_ratio <= 4:
            raise ValueError(f"max_size_ratio must be in (1, 4], got {self.max_size_ratio}")


@dataclass(slots=True)
class CrossViewCounts:
    """Faces the other view recovered, by how."""

    searched: int = 0
    by_detector: int = 0
    by_template: int = 0

    @property
    def recovered(self) -> int:
        return self.by_detector + self.by_template

    def to_dict(self) -> dict:
        return {"searched": self.searched, "by_detector": self.by_detector,
                "by_template": self.by_template}


def _sizes(boxes: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum(boxes[:, 2] - boxes[:, 0], 1) * np.maximum(boxes[:, 3] - boxes[:, 1], 1))


def _grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


class CrossViewSearch:
    """Finds in one view the faces that were found only in the other.

    Args:
        config: search bounds and thresholds.
        detector: the band detector (built from ``config.detector`` by the caller), or
            None for template matching only.
    """

    def __init__(self, config: CrossViewConfig, detector: Detector | None) -> None:
        self.config = config
        self.detector = detector

    def unmatched(self, src: np.ndarray, dst: np.ndarray, width: int) -> np.ndarray:
        """Indices of ``src`` boxes with no box of about the same size on the same rows in ``dst``."""
        if src.shape[0] == 0:
            return np.zeros((0,), np.int64)
        if dst.shape[0] == 0:
            return np.arange(src.shape[0])
        s_size, d_size = _sizes(src), _sizes(dst)
        top = np.maximum(src[:, None, 1], dst[None, :, 1])
        bottom = np.minimum(src[:, None, 3], dst[None, :, 3])
        span = np.maximum(src[:, None, 3], dst[None, :, 3]) - np.minimum(src[:, None, 1],
                                                                           dst[None, :, 1])
        rows = np.maximum(bottom - top, 0) / np.maximum(span, 1)
        shift = np.abs((src[:, None, 0] + src[:, None, 2]) - (dst[None, :, 0] + dst[None, :, 2])) / 2
        ratio = np.maximum(s_size[:, None], d_size[None, :]) / np.minimum(s_size[:, None],
                                                                          d_size[None, :])
        matched = (rows >= 0.4) & (shift <= self.config.max_disparity * width + s_size[:, None]) \
            & (ratio <= 2.0)
        return np.nonzero(~matched.any(axis=1))[0]

    def _band(self, box: np.ndarray, height: int, width: int) -> tuple[int, int, int, int]:
        x1, y1, x2, y2 = box
        h = max(y2 - y1, 1.0)
        slack = self.config.row_slack * h + 2
        reach = self.config.max_disparity * width + 2
        return (int(max(0, np.floor(x1 - reach))), int(max(0, np.floor(y1 - slack))),
                int(min(width, np.ceil(x2 + reach))), int(min(height, np.ceil(y2 + slack))))

    def _by_detector(self, box: np.ndarray, dst: np.ndarray,
                     band: tuple[int, int, int, int]) -> np.ndarray | None:
        bx1, by1, bx2, by2 = band
        crop = dst[by1:by2, bx1:bx2]
        face_h = max(box[3] - box[1], 1.0)
        scale = float(np.clip(self.config.min_search_px / face_h, 1.0, 4.0))
        scale = min(scale, np.sqrt(_MAX_BAND_PIXELS / max(crop.shape[0] * crop.shape[1], 1)))
        if scale > 1.0:
            crop = cv2.resize(crop, (max(1, round(crop.shape[1] * scale)),
                                     max(1, round(crop.shape[0] * scale))),
                              interpolation=cv2.INTER_LINEAR)
        found = self.detector.detect(np.ascontiguousarray(crop))
        if len(found) == 0:
            return None
        boxes = found.boxes / scale + np.array([bx1, by1, bx1, by1], np.float32)
        size = float(_sizes(box[None])[0])
        ratio = _sizes(boxes) / size
        centre_y = (boxes[:, 1] + boxes[:, 3]) / 2
        near = np.abs(centre_y - (box[1] + box[3]) / 2) <= (self.config.row_slack + 0.5) * face_h
        limit = self.config.max_size_ratio
        keep = np.nonzero((ratio >= 1 / limit) & (ratio <= limit) & near)[0]
        if keep.size == 0:
            return None
        best = keep[np.argmax(found.scores[keep])]
        return boxes[best]

    def _by_template(self, box: np.ndarray, src: np.ndarray, dst_grey: np.ndarray,
                     band: tuple[int, int, int, int]) -> np.ndarray | None:
        if self.config.template_ncc > 1.0:
            return None
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        patch = _grey(src[max(0, y1):y2, max(0, x1):x2])
        if patch.shape[0] < 8 or patch.shape[1] < 8 or float(patch.std()) < _MIN_TEMPLATE_STD:
            return None
        bx1, by1, bx2, by2 = band
        region = dst_grey[by1:by2, bx1:bx2]
        best, best_box = self.config.template_ncc, None
        for scale in _TEMPLATE_SCALES:
            tw, th = round(patch.shape[1] * scale), round(patch.shape[0] * scale)
            if th > region.shape[0] or tw > region.shape[1] or th < 8 or tw < 8:
                continue
            templ = cv2.resize(patch, (tw, th), interpolation=cv2.INTER_AREA)
            score = cv2.matchTemplate(region, templ, cv2.TM_CCOEFF_NORMED)
            _, peak, _, (px, py) = cv2.minMaxLoc(score)
            if peak >= best:
                best = peak
                best_box = np.array([bx1 + px, by1 + py, bx1 + px + tw, by1 + py + th],
                                    np.float32)
        return best_box

    def recover(self, src_image: np.ndarray, src: Detections, dst_image: np.ndarray,
                dst: Detections, counts: CrossViewCounts | None = None) -> Detections:
        """Boxes for ``dst_image`` of faces found in ``src_image`` and missed in it.

        Args:
            src_image, dst_image: the two views of one instant (RGB uint8).
            src, dst: each view's own detections.
            counts: accumulates what was searched and recovered.

        Raises:
            DetectorError: the band detector failed.
        """
        counts = counts if counts is not None else CrossViewCounts()
        height, width = dst_image.shape[:2]
        missing = self.unmatched(src.boxes, dst.boxes, width)
        missing = missing[src.scores[missing] >= self.config.min_source_score]
        if not self.config.enabled or missing.size == 0:
            return Detections.empty()
        dst_grey = _grey(dst_image)
        boxes, scores = [], []
        for i in missing:
            box = src.boxes[i]
            band = self._band(box, height, width)
            if band[2] - band[0] < 4 or band[3] - band[1] < 4:
                continue
            counts.searched += 1
            hit = self._by_template(box, src_image, dst_grey, band)
            if hit is not None:
                counts.by_template += 1
            elif self.detector is not None:
                hit = self._by_detector(box, dst_image, band)
                if hit is None:
                    continue
                counts.by_detector += 1
            else:
                continue
            boxes.append(hit)
            scores.append(float(src.scores[i]))
        if not boxes:
            return Detections.empty()
        out = np.asarray(boxes, np.float32).reshape(-1, 4)
        np.clip(out[:, 0::2], 0, width, out=out[:, 0::2])
        np.clip(out[:, 1::2], 0, height, out=out[:, 1::2])
        return Detections(out, np.clip(np.asarray(scores, np.float32), 0, 1))


# Unrectified pairs (Project Aria's front SLAM cameras are angled apart and fisheye):
# a face is not on the same rows in both, so the band is taller and reaches further.
UNRECTIFIED_ROW_SLACK = 1.5
UNRECTIFIED_MAX_DISPARITY = 0.5
UNRECTIFIED_SIZE_RATIO = 2.0


def unrectified(search: CrossViewSearch) -> CrossViewSearch:
    """The same search with the wider band an unrectified pair needs."""
    config = dataclasses.replace(
        search.config, row_slack=max(search.config.row_slack, UNRECTIFIED_ROW_SLACK),
        max_disparity=max(search.config.max_disparity, UNRECTIFIED_MAX_DISPARITY),
        max_size_ratio=max(search.config.max_size_ratio, UNRECTIFIED_SIZE_RATIO))
    return CrossViewSearch(config, search.detector)
