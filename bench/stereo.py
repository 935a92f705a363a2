"""How many faces missed in one eye of a stereo pair the other eye recovers.

Each trial pastes one to three real faces into both views of scikit-image's
rectified Middlebury motorcycle pair (the right copy shifted left by a disparity
of 10-80 px, as a point at that depth would be) and degrades one face in one eye
only (defocus, haze, low light, noise: ``pipeline.samples.degrade_face``). Faces
are WIDER FACE validation faces of 40 px and more from ``../shared/media/wider_dev``
(scikit-image's two portraits where that folder is absent).

For every face, the run's detector (CenterFace, threshold 0.1) runs on each full
view; a face counts as found in a view when a box covers it (IoU >= 0.3). Of the
faces found in one view and missed in the other, the cross-view search
(``privacy.stereo``) is measured three ways: the default (template matching, then
the band detector where the template finds nothing), template matching only, and
the band detector only. A recovered box that overlaps no pasted face is a false
addition (more redaction, not a leak: mostly the other eye's copy of texture the
run's detector already took for a face in the first eye).

    .venv/bin/python -m bench.stereo [--trials 200] [--json bench/results/stereo.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from pipeline.samples import StereoFace, portrait, stereo_pair
from privacy.detectors import build_detector
from privacy.stereo import CrossViewConfig, CrossViewCounts, CrossViewSearch

HERE = os.path.dirname(os.path.abspath(__file__))
WIDER = os.path.join(HERE, "..", "..", "shared", "media", "wider_dev")


def wider_faces(min_px: int = 40, limit: int = 400) -> list[np.ndarray]:
    """Face crops (with a margin) from the WIDER FACE dev images' ground truth."""
    from PIL import Image

    gt = os.path.join(WIDER, "gt.txt")
    if not os.path.exists(gt):
        return []
    faces = []
    lines = open(gt).read().split("\n")
    i = 0
    while i < len(lines) and len(faces) < limit:
        name = lines[i].strip()
        if not name:
            i += 1
            continue
        count = int(lines[i + 1])
        rows = lines[i + 2:i + 2 + max(count, 1)]
        i += 2 + max(count, 1)
        path = os.path.join(WIDER, "images", os.path.basename(name))
        if not os.path.exists(path):
            continue
        image = None
        for row in rows:
            v = [int(x) for x in row.split()[:10]]
            x, y, w, h, invalid, occlusion = v[0], v[1], v[2], v[3], v[7], v[8]
            if invalid or occlusion or min(w, h) < min_px:
                continue
            if image is None:
                image = np.asarray(Image.open(path).convert("RGB"))
            mx, my = int(w * 0.15), int(h * 0.15)
            crop = image[max(0, y - my):y + h + my, max(0, x - mx):x + w + mx]
            if crop.shape[0] >= min_px and crop.shape[1] >= min_px:
                faces.append(np.ascontiguousarray(crop))
    return faces


def _iou(a, b) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x2 - x1) * max(0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _covered(box, boxes, threshold: float = 0.3) -> bool:
    return any(_iou(box, b) >= threshold for b in boxes)


def trial_faces(rng: np.random.Generator, pool: list[np.ndarray]) -> list[StereoFace]:
    """One to three faces at separate places; exactly one of them hard in one eye."""
    count = int(rng.integers(1, 4))
    slots = rng.permutation([(150, 150), (370, 170), (600, 160), (200, 360), (450, 370),
                             (640, 360)])[:count]
    hard = int(rng.integers(count))
    eye = "right" if rng.random() < 0.5 else "left"
    faces = []
    for k, (x, y) in enumerate(slots):
        face = pool[int(rng.integers(len(pool)))]
        faces.append(StereoFace(face, (float(x + rng.integers(-30, 30)),
                                       float(y + rng.integers(-30, 30))),
                                int(rng.integers(50, 110)), float(rng.integers(10, 80)),
                                hard_in=eye if k == hard else None))
    return faces


def run(trials: int, seed: int = 0) -> dict:
    pool = wider_faces() or [portrait("astronaut"), portrait("camera")]
    detector = build_detector("centerface:threshold=0.1")
    band = build_detector(CrossViewConfig().detector)
    modes = {"detector+template": CrossViewSearch(CrossViewConfig(), band),
             "detector_only": CrossViewSearch(CrossViewConfig(template_ncc=1.01), band),
             "template_only": CrossViewSearch(CrossViewConfig(), None)}
    rng = np.random.default_rng(seed)
    totals = {"faces": 0, "hard_faces": 0, "found_per_view": 0, "views": 0,
              "missed_in_one_view_found_in_other": 0, "missed_in_both": 0,
              "hard_missed": 0}
    per_mode = {m: {"recovered": 0, "false_additions": 0, "searched": 0, "seconds": 0.0}
                for m in modes}
    started = time.perf_counter()
    for _ in range(trials):
        faces = trial_faces(rng, pool)
        left, right, lboxes, rboxes = stereo_pair(faces)
        dets = dict(zip(("left", "right"), detector.detect_batch([left, right])))
        truth = {"left": lboxes, "right": rboxes}
        images = {"left": left, "right": right}
        missing_in = {"left": [], "right": []}
        for k, face in enumerate(faces):
            found = {v: truth[v][k] is not None and _covered(truth[v][k], dets[v].boxes)
                     for v in ("left", "right")}
            totals["faces"] += 1
            totals["views"] += 2
            totals["found_per_view"] += sum(found.values())
            totals["hard_faces"] += face.hard_in is not None
            if face.hard_in is not None and not found[face.hard_in]:
                totals["hard_missed"] += 1
            if found["left"] != found["right"]:
                totals["missed_in_one_view_found_in_other"] += 1
                missing_in["right" if found["left"] else "left"].append(k)
            elif not found["left"]:
                totals["missed_in_both"] += 1
        for mode, search in modes.items():
            counts = CrossViewCounts()
            t0 = time.perf_counter()
            for src, dst in (("left", "right"), ("right", "left")):
                got = search.recover(images[src], dets[src], images[dst], dets[dst], counts)
                for k in missing_in[dst]:
                    if _covered(truth[dst][k], got.boxes):
                        per_mode[mode]["recovered"] += 1
                per_mode[mode]["false_additions"] += sum(
                    not _covered(b, [t for t in truth[dst] if t is not None]) for b in got.boxes)
            per_mode[mode]["seconds"] += time.perf_counter() - t0
            per_mode[mode]["searched"] += counts.searched
    misses = totals["missed_in_one_view_found_in_other"]
    for figures in per_mode.values():
        figures["recovered_share"] = round(figures["recovered"] / misses, 3) if misses else None
        figures["ms_per_pair"] = round(1000 * figures.pop("seconds") / trials, 1)
    return {
        "trials": trials, "seed": seed,
        "faces_from": "wider_dev" if len(pool) > 2 else "scikit-image portraits",
        "face_pool": len(pool),
        "detector": detector.describe(),
        "band_detector": CrossViewConfig().detector,
        "totals": totals,
        "per_view_recall": round(totals["found_per_view"] / totals["views"], 3),
        "cross_view": per_mode,
        "wall_s": round(time.perf_counter() - started, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    result = run(args.trials, args.seed)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
