"""Faces near the rim of a fisheye frame, as smart glasses see them (synthetic, measured).

Real portraits (scikit-image's, as in ``pipeline.samples``) are placed upright on a
wide perspective scene at known places; the scene is then re-projected through an
equidistant fisheye lens with a 110 degree field of view (Project Aria's RGB camera
has about 110 degrees), which squeezes faces radially and shears them the nearer
they are to the rim. Each face's box in the fisheye frame is the bounding box of
its projected outline. Coverage (80% of the box under the mask) is reported by
distance from the centre, for egoveil's default and for deface's defaults.

Usage: python bench/fisheye.py. Results: bench/results/fisheye.json.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

import cv2
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from pipeline.samples import _paste, portrait, scene  # noqa: E402
from privacy.config import AnonymizationConfig  # noqa: E402
from privacy.coverage import covered_shares, mask_from_boxes  # noqa: E402
from privacy.detectors import build_detector  # noqa: E402

SIZE = 1408          # fisheye frame (Aria RGB resolution)
FOV_DEG = 110.0
PERSPECTIVE = 2400   # width and height of the perspective scene


def fisheye_maps() -> tuple[np.ndarray, np.ndarray]:
    """Pixel maps from the fisheye frame back into the perspective scene."""
    half_fov = math.radians(FOV_DEG / 2)
    f_d = (SIZE / 2) / half_fov                     # equidistant: r = f * theta
    f_u = (PERSPECTIVE / 2) / math.tan(half_fov)    # perspective: r = f * tan(theta)
    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    dx, dy = xs - SIZE / 2, ys - SIZE / 2
    r_d = np.sqrt(dx ** 2 + dy ** 2)
    theta = r_d / f_d
    r_u = f_u * np.tan(np.minimum(theta, half_fov * 0.999))
    scale = np.where(r_d > 0, r_u / np.maximum(r_d, 1e-6), f_u / f_d)
    return (PERSPECTIVE / 2 + dx * scale).astype(np.float32), \
        (PERSPECTIVE / 2 + dy * scale).astype(np.float32)


def project_box(box, map_x: np.ndarray, map_y: np.ndarray) -> tuple | None:
    """Bounding box in the fisheye frame of the pixels that come from ``box``."""
    x1, y1, x2, y2 = box
    inside = (map_x >= x1) & (map_x < x2) & (map_y >= y1) & (map_y < y2)
    ys, xs = np.nonzero(inside)
    if xs.size == 0:
        return None
    return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def make_frames(map_x, map_y, count: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    # The frontal portrait only: what changes between faces is where the lens puts them.
    faces = [portrait("astronaut")]
    background = scene(PERSPECTIVE, PERSPECTIVE)
    frames = []
    for _ in range(count):
        canvas = background.copy()
        boxes = []
        for ring in (0.0, 0.35, 0.6, 0.8, 0.92):
            for k in range(8 if ring else 1):
                angle = 2 * math.pi * k / 8 + rng.uniform(-0.2, 0.2)
                # Place by fisheye radius, then find the perspective point that lands there.
                half_fov = math.radians(FOV_DEG / 2)
                theta = ring * half_fov
                r_u = (PERSPECTIVE / 2) / math.tan(half_fov) * math.tan(theta)
                cx = PERSPECTIVE / 2 + r_u * math.cos(angle)
                cy = PERSPECTIVE / 2 + r_u * math.sin(angle)
                height = int(rng.uniform(70, 140) * (1 + 2.2 * ring ** 2))
                box = _paste(canvas, faces[0], cx, cy, height)
                if box is not None:
                    boxes.append((ring, box))
        fisheye = cv2.remap(canvas, map_x, map_y, cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT)
        projected = [(ring, project_box(b, map_x, map_y)) for ring, b in boxes]
        frames.append((fisheye, [(r, b) for r, b in projected if b is not None]))
    return frames


def main() -> None:
    map_x, map_y = fisheye_maps()
    frames = make_frames(map_x, map_y)
    default = AnonymizationConfig()
    tools = {
        "egoveil default": (default.detector, default.redaction.mask_scale),
        "deface defaults (CenterFace 0.2, box x1.3)": ("centerface:threshold=0.2", 1.3),
        "egoveil with an upscaled pass (scales=1,2)": ("centerface:threshold=0.1;scales=1,2",
                                                       default.redaction.mask_scale),
        "egoveil with fisheye views (fisheye=110)": ("centerface:threshold=0.1;fisheye=110",
                                                     default.redaction.mask_scale),
    }
    results = {}
    for tool, (spec, mask_scale) in tools.items():
        detector = build_detector(spec)
        by_ring: dict = {}
        started = time.perf_counter()
        for image, faces in frames:
            boxes = detector.detect(image).boxes
            mask = mask_from_boxes(boxes, mask_scale, SIZE, SIZE)
            gt = np.array([b for _, b in faces], np.float32)
            shares = covered_shares(gt, mask)
            for (ring, _), share in zip(faces, shares, strict=True):
                by_ring.setdefault(ring, []).append(bool(share >= 0.8))
        seconds = (time.perf_counter() - started) / len(frames)
        results[tool] = {"seconds_per_frame": round(seconds, 2)} | {f"radius {ring:.2f} of the half field of view": {
            "faces": len(v), "coverage": round(float(np.mean(v)), 3)}
            for ring, v in sorted(by_ring.items())}
        print(tool, json.dumps(results[tool]), flush=True)
    cv2.imwrite(os.path.join(HERE, ".cache", "fisheye_example.jpg"),
                cv2.cvtColor(frames[0][0], cv2.COLOR_RGB2BGR))
    with open(os.path.join(HERE, "results", "fisheye.json"), "w") as handle:
        json.dump({"command": "python bench/fisheye.py", "date": time.strftime("%Y-%m-%d"),
                   "frames": len(frames), "fov_deg": FOV_DEG, "size": SIZE,
                   "results": results}, handle, indent=2)


if __name__ == "__main__":
    main()
