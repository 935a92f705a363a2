"""Face coverage on ../shared/media/wider_dev: egoveil's detectors against the peers.

For every image and detector, the redaction mask is the union of detected boxes
scaled by the mask scale; a ground-truth face (WIDER ``invalid`` = 1 skipped) is
covered when 80% of its box is under the mask (``privacy.coverage``). Reports
coverage for faces of 20 px and more and of 10-20 px (size = sqrt(w * h)), and
the masked area outside the ground-truth boxes scaled 1.5, as a share of the image.

Raw detections are cached per detector and image under bench/.cache, so
thresholds and combinations are cheap to compare. One entry goes through egoveil's
anonymizer as ``egoveil redact`` does on an image (the default face schedule, one frame
that is first and last at once), to show that an image is detected at full resolution
whatever the schedule of videos. Usage:

    python bench/wider.py                # the committed comparison
    python bench/wider.py --only ours    # one entry
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from privacy.coverage import covered_shares, face_size, mask_from_boxes, outside_share  # noqa: E402
from privacy.detectors import build_detector  # noqa: E402
from privacy.detectors.base import Detections, Detector  # noqa: E402

MEDIA = os.path.join(ROOT, "..", "shared", "media")
WIDER = os.path.join(MEDIA, "wider_dev")
CACHE = os.path.join(HERE, ".cache", "wider")


def load_ground_truth() -> dict[str, np.ndarray]:
    lines = open(os.path.join(WIDER, "gt.txt")).read().split("\n")
    out, i = {}, 0
    while i < len(lines) and lines[i].strip():
        name = lines[i].strip()
        count = int(lines[i + 1])
        rows = lines[i + 2:i + 2 + max(count, 1)]
        boxes = []
        for row in rows[:count]:
            x, y, w, h, *_rest = (int(v) for v in row.split())
            invalid = int(row.split()[7])
            if not invalid and w > 0 and h > 0:
                boxes.append([x, y, x + w, y + h])
        out[os.path.basename(name)] = np.asarray(boxes, np.float32).reshape(-1, 4)
        i += 2 + max(count, 1)
    return out


def read_rgb(name: str) -> np.ndarray:
    import cv2

    image = cv2.imread(os.path.join(WIDER, "images", name))
    return np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


class OneImageAnonymizer(Detector):
    """The boxes egoveil's anonymizer masks on an image: the default faces-only
    configuration, its face schedule included, on a stream of one frame."""

    name = "anonymizer"

    def __init__(self) -> None:
        from privacy.anonymization import build_anonymizer
        from privacy.config import AnonymizationConfig

        self.anonymizer = build_anonymizer(AnonymizationConfig(other_classes=()))

    def _detect(self, frame):
        from privacy.anonymizer import FrameIn

        (out,) = self.anonymizer.process([FrameIn(0.0, frame.copy())])
        assert out.ran == {"face"} and not out.coarse  # detected, at full resolution
        boxes = out.boxes["face"]
        return Detections(boxes, np.ones(boxes.shape[0], np.float32))


ANONYMIZER = "anonymizer"


def cached_detections(spec: str, name: str, image_fn, detector_cache: dict) -> tuple:
    key = hashlib.sha256(f"{spec}|{name}".encode()).hexdigest()[:24]
    path = os.path.join(CACHE, f"{key}.npz")
    if os.path.exists(path):
        data = np.load(path)
        return Detections(data["boxes"], data["scores"]), float(data["seconds"])
    if spec not in detector_cache:
        detector_cache[spec] = OneImageAnonymizer() if spec.startswith(ANONYMIZER) \
            else build_detector(spec)
    image = image_fn()
    started = time.perf_counter()
    dets = detector_cache[spec].detect(image)
    seconds = time.perf_counter() - started
    os.makedirs(CACHE, exist_ok=True)
    np.savez(path, boxes=dets.boxes, scores=dets.scores, seconds=seconds)
    return dets, seconds


def ellipse_mask(boxes: np.ndarray, scale: float, height: int, width: int) -> np.ndarray:
    """deface's default mask: the ellipse inscribed in each box scaled by ``scale``."""
    import cv2

    from privacy.redaction import scale_boxes

    mask = np.zeros((height, width), np.uint8)
    for x1, y1, x2, y2 in scale_boxes(np.asarray(boxes, np.float32).reshape(-1, 4), scale,
                                      width, height):
        cv2.ellipse(mask, ((x1 + x2) // 2, (y1 + y2) // 2), ((x2 - x1) // 2, (y2 - y1) // 2),
                    0, 0, 360, 1, -1)
    return mask.astype(bool)


def evaluate(entry: dict, truth: dict[str, np.ndarray], shapes: dict) -> dict:
    """Coverage for one entry: {'spec': detector spec, 'threshold': post-filter, 'mask_scale'}."""
    detector_cache: dict = {}
    covered = {"20+": [], "10-20": []}
    outside, seconds = [], []
    for name, gt in truth.items():
        dets, secs = cached_detections(entry["spec"], name, lambda n=name: read_rgb(n),
                                       detector_cache)
        seconds.append(secs)
        boxes = dets.boxes[dets.scores >= entry.get("threshold", 0.0)]
        h, w = shapes[name]
        make_mask = ellipse_mask if entry.get("mask_shape") == "ellipse" else mask_from_boxes
        mask = make_mask(boxes, entry["mask_scale"], h, w)
        shares = covered_shares(gt, mask)
        sizes = face_size(gt)
        covered["20+"] += list(shares[sizes >= 20] >= 0.8)
        covered["10-20"] += list(shares[(sizes >= 10) & (sizes < 20)] >= 0.8)
        outside.append(outside_share(gt, mask))
    return {
        "coverage_20px_plus": round(float(np.mean(covered["20+"])), 4),
        "faces_20px_plus": len(covered["20+"]),
        "coverage_10_20px": round(float(np.mean(covered["10-20"])), 4),
        "faces_10_20px": len(covered["10-20"]),
        "outside_gt_share_mean": round(float(np.mean(outside)), 4),
        "outside_gt_share_max": round(float(np.max(outside)), 4),
        "seconds_per_image_median": round(statistics.median(seconds), 3),
    }


def image_shapes(names) -> dict:
    from PIL import Image

    out = {}
    for name in names:
        with Image.open(os.path.join(WIDER, "images", name)) as img:
            out[name] = (img.height, img.width)
    return out


YUNET = os.path.join(MEDIA, "models", "yunet_2023mar.onnx")

ENTRIES = {
    # deface's own defaults: CenterFace at native resolution, threshold 0.2, an ellipse
    # inscribed in the box scaled 1.3 (and blur inside it).
    "deface 1.5.0 defaults (CenterFace 0.2, ellipse x1.3)": {
        "spec": "centerface:threshold=0.2", "mask_scale": 1.3, "mask_shape": "ellipse"},
    "deface --boxes (CenterFace 0.2, box x1.3)": {
        "spec": "centerface:threshold=0.2", "mask_scale": 1.3},
    "face-recognition HOG (upsample 1)": {"spec": "hog", "mask_scale": 1.3},
    "YuNet 0.3 (reference, user-supplied weights)": {
        "spec": f"yunet:path={os.path.relpath(YUNET, ROOT)};threshold=0.3", "mask_scale": 1.3},
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default=None)
    parser.add_argument("--extra", nargs="*", default=[],
                        help="extra entries as SPEC@MASK_SCALE[@THRESHOLD]")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "wider.json"))
    parser.add_argument("--update", action="store_true",
                        help="merge the entries computed into the results file instead of "
                             "rewriting it (with --only)")
    args = parser.parse_args()
    truth = load_ground_truth()
    shapes = image_shapes(truth)
    entries = dict(ENTRIES)
    from privacy.config import AnonymizationConfig

    default = AnonymizationConfig()
    runtime = build_detector(default.detector).describe()
    entries[f"egoveil default ({runtime.get('backend', '')} "
            f"{runtime.get('precision', 'f32')})"] = {
        "spec": default.detector, "mask_scale": default.redaction.mask_scale}
    entries[f"egoveil default, one image through the anonymizer (face schedule "
            f"{default.face_schedule.text()})"] = {
        "spec": f"{ANONYMIZER}:{default.detector}:{default.face_schedule.describe()}",
        "mask_scale": default.redaction.mask_scale}
    entries["egoveil default detector in float32 (OpenCV DNN)"] = {
        "spec": f"{default.detector};backend=opencv", "mask_scale": default.redaction.mask_scale}
    entries["egoveil before issue 16 (CenterFace 0.1, OpenCV DNN)"] = {
        "spec": "centerface:threshold=0.1;backend=opencv", "mask_scale": 1.4}
    for text in args.extra:
        spec, scale, *thr = text.split("@")
        entries[text] = {"spec": spec, "mask_scale": float(scale),
                         "threshold": float(thr[0]) if thr else 0.0}
    results = {}
    for name, entry in entries.items():
        if args.only and args.only not in name:
            continue
        results[name] = {**entry, **evaluate(entry, truth, shapes)}
        print(json.dumps({name: results[name]}), flush=True)
    if args.update and not args.extra:
        with open(args.out) as handle:
            record = json.load(handle)
        record["results"] = {name: entry for name, entry in record["results"].items()
                             if not name.startswith("egoveil default")}
        record["results"].update(results)
        record.setdefault("updated", {})[time.strftime("%Y-%m-%d")] = sorted(results)
        with open(args.out, "w") as handle:
            json.dump(record, handle, indent=2)
    elif not args.only and not args.extra:
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as handle:
            json.dump({"machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU",
                       "command": "python bench/wider.py", "images": len(truth),
                       "date": time.strftime("%Y-%m-%d"), "results": results}, handle, indent=2)


if __name__ == "__main__":
    main()
