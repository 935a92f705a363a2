"""How the face detection schedule trades detections for recall and masked area.

For each shared video and each schedule (every n-th frame, motion threshold, window),
the real ``SegmentAnonymizer`` runs over every frame with the default face detector;
its detections are computed once per frame and cached (bench/.cache/schedule), so the
schedules differ only in which frames they ask for. Reports the frames detected,
per-frame recall over the reference faces of bench/videos.py (YuNet at 0.5, CenterFace
at 0.4 on OpenCV DNN; faces of 20 px and more, 80% of the box under the mask), and the
share of each frame masked.

Usage: python bench/schedule.py [--videos NAME ...]. Results: bench/results/schedule.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from videos import REFERENCES, VIDEOS, big, frames_of  # noqa: E402

from privacy.anonymizer import ClassDetector, FrameIn, SegmentAnonymizer  # noqa: E402
from privacy.config import AnonymizationConfig  # noqa: E402
from privacy.coverage import covered_shares, mask_from_boxes  # noqa: E402
from privacy.detectors import build_detector  # noqa: E402
from privacy.detectors.base import Detector  # noqa: E402
from privacy.schedule import DetectionSchedule, thumbnail  # noqa: E402

CACHE = os.path.join(HERE, ".cache", "schedule")
SCHEDULES = [(1, 0.0, 2), (2, 12.0, 2), (3, 12.0, 2), (4, 12.0, 2), (4, 10.0, 2),
             (4, 8.0, 2), (4, 6.0, 2), (4, 8.0, 1), (5, 8.0, 2), (6, 8.0, 2)]


def cached(key: str, compute):
    path = os.path.join(CACHE, hashlib.sha256(key.encode()).hexdigest()[:24] + ".pkl")
    if os.path.exists(path):
        with open(path, "rb") as handle:
            return pickle.load(handle)
    value = compute()
    os.makedirs(CACHE, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(value, handle)
    return value


class Replayed(Detector):
    """The default detector's results, looked up by frame content (computed once)."""

    name = "replayed"

    def __init__(self, table: dict) -> None:
        self.table = table
        self.calls = 0

    def _detect(self, frame):
        self.calls += 1
        return self.table[hashlib.sha1(frame.tobytes()).hexdigest()]


def evaluate(name: str) -> dict:
    config = AnonymizationConfig()
    times, images = frames_of(os.path.join(VIDEOS, name))
    keys = [hashlib.sha1(image.tobytes()).hexdigest() for image in images]
    detector_spec = build_detector(config.detector).describe()

    def own():
        detector = build_detector(config.detector)
        return {k: detector.detect(image) for k, image in zip(keys, images)}

    table = cached(f"{name}|{json.dumps(detector_spec, sort_keys=True)}", own)
    refs = {ref: cached(f"{name}|{spec}", lambda spec=spec: [
        build_detector(spec).detect(image).boxes for image in images])
        for ref, spec in REFERENCES.items()}
    thumbs = [thumbnail(image) for image in images]
    motion = [float(np.abs(thumbs[i] - thumbs[i - 1]).mean()) for i in range(1, len(thumbs))]
    out = {"frames": len(images), "motion_between_frames_p50_p90_max": [
        round(float(v), 1) for v in np.percentile(motion, [50, 90, 100])], "schedules": {}}
    for every, threshold, window in SCHEDULES:
        replayed = Replayed(table)
        anonymizer = SegmentAnonymizer([ClassDetector(
            replayed, config.redaction, window, None, DetectionSchedule(every, threshold))],
            detect_timeout_s=None)
        outs = list(anonymizer.process(FrameIn(t, image.copy())
                                       for t, image in zip(times, images)))
        masks = [mask_from_boxes(o.boxes["face"], config.redaction.mask_scale,
                                 image.shape[0], image.shape[1])
                 for o, image in zip(outs, images)]
        recall = {}
        for ref, per_frame in refs.items():
            hits = np.concatenate([covered_shares(big(b), m) >= 0.8
                                   for b, m in zip(per_frame, masks)])
            recall[ref] = {"per_frame_recall": round(float(hits.mean()), 4) if hits.size
                           else 1.0, "missed": int(hits.size - hits.sum())}
        out["schedules"][f"every {every}, motion {threshold:g}, window {window}"] = {
            "frames_detected": replayed.calls, "recall": recall,
            "masked_share_of_frame": round(float(np.mean([m.mean() for m in masks])), 4)}
        print(name, every, threshold, window, out["schedules"][
            f"every {every}, motion {threshold:g}, window {window}"], flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--videos", nargs="*", default=None)
    args = parser.parse_args()
    names = args.videos or sorted(n for n in os.listdir(VIDEOS) if n.endswith(".mp4"))
    results = {name: evaluate(name) for name in names}
    record = {"command": "python bench/schedule.py", "date": time.strftime("%Y-%m-%d"),
              "detector": AnonymizationConfig().detector, "references": list(REFERENCES),
              "results": results}
    if not args.videos:
        with open(os.path.join(HERE, "results", "schedule.json"), "w") as handle:
            json.dump(record, handle, indent=2)


if __name__ == "__main__":
    main()
