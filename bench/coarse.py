"""Coarse keyframes for faces: full resolution every ``full_every`` frames, a reduced pass between.

For each shared video, each face schedule (``every:motion:full_every`` and the coarse pass's
scale) and each frame stride (1: ``egoveil redact``; 2: the frames ``egoveil run`` anonymizes
at ``--frame-stride 2``), the real ``SegmentAnonymizer`` runs over the frames with the
default face detector at full resolution and the same detector at the coarse scale. Both
detectors' results are computed once per frame and cached (bench/.cache/schedule), so the
settings differ only in which frames ask for which pass. Reports the frames detected at
each resolution, per-frame recall over the reference faces of bench/videos.py (YuNet at
0.5, CenterFace at 0.4 on OpenCV DNN; faces of 20 px and more, 80% of the box under the
mask), the faces missed, and the share of each frame masked; and the CPU seconds of one
detection at each resolution on a 1080p frame. Frames whose shorter side the coarse pass
would take below ``privacy.schedule.COARSE_MIN_SIDE`` (stage_360p, selfie_portrait) are
detected at full resolution on every keyframe; for them the sweep is also run with the
coarse pass forced (``coarse_forced``), to see what it would do to small faces.

Usage: python bench/coarse.py [--videos NAME ...]. Results: bench/results/coarse.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from schedule import Replayed, cached  # noqa: E402
from videos import REFERENCES, VIDEOS, big, frames_of  # noqa: E402

import privacy.schedule  # noqa: E402
from privacy.anonymizer import ClassDetector, SegmentAnonymizer, ViewFrames  # noqa: E402
from privacy.config import AnonymizationConfig  # noqa: E402
from privacy.coverage import covered_shares, mask_from_boxes  # noqa: E402
from privacy.detectors import build_detector  # noqa: E402
from privacy.detectors.factory import at_scale  # noqa: E402
from privacy.schedule import DetectionSchedule  # noqa: E402
from schemas.detections import FACE  # noqa: E402

SCALES = (0.5, 0.75)
# (every, motion, full_every); full_every None: every keyframe at full resolution (today).
SETTINGS = [(4, 8.0, None), (4, 8.0, 6), (4, 8.0, 8), (4, 8.0, 12), (4, 8.0, 16)]
STRIDES = (1, 2)


def detections(name: str, images: list[np.ndarray], spec: str) -> list:
    """The spec's detections on every frame, cached by video, spec and the detector's
    description (weights, runtime, precision)."""
    described = json.dumps(build_detector(spec).describe(), sort_keys=True)

    def compute():
        detector = build_detector(spec)
        return [detector.detect(image) for image in images]

    return cached(f"coarse|{name}|{spec}|{described}", compute)


def evaluate(name: str, scales=SCALES, forced: bool = False) -> dict:
    config = AnonymizationConfig(other_classes=())
    times, images = frames_of(os.path.join(VIDEOS, name))
    full = detections(name, images, config.detector)
    coarse = {scale: detections(name, images, at_scale(config.detector, scale))
              for scale in scales}
    refs = {ref: cached(f"{name}|{spec}", lambda spec=spec: [
        build_detector(spec).detect(image).boxes for image in images])
        for ref, spec in REFERENCES.items()}
    out = {"frames": len(images), "size": list(images[0].shape[:2]), "settings": {}}
    limit = privacy.schedule.COARSE_MIN_SIDE
    if forced:
        privacy.schedule.COARSE_MIN_SIDE = 0
    for stride in STRIDES:
        chosen = list(range(0, len(images), stride))
        for every, motion, full_every in SETTINGS:
            for scale in (scales if full_every else (None,)):
                schedule = DetectionSchedule(every, motion, full_every, scale)
                table_full = {i: full[i] for i in chosen}
                table_coarse = {i: coarse[scale][i] for i in chosen} if scale else {}
                primary, reduced = _ByIndex(table_full), _ByIndex(table_coarse)
                anonymizer = SegmentAnonymizer([ClassDetector(
                    primary, config.redaction, config.temporal_window, None, schedule,
                    coarse=reduced if scale else None)], detect_timeout_s=None)
                outs = list(anonymizer.process_views(
                    (ViewFrames(times[i], {"_": _tagged(images[i], i)}) for i in chosen),
                    step=stride))
                masks = [mask_from_boxes(o["_"].boxes[FACE], config.redaction.mask_scale,
                                         images[i].shape[0], images[i].shape[1])
                         for o, i in zip(outs, chosen)]
                recall = {}
                for ref, per_frame in refs.items():
                    hits = np.concatenate([covered_shares(big(per_frame[i]), m) >= 0.8
                                           for i, m in zip(chosen, masks)])
                    recall[ref] = {"per_frame_recall": round(float(hits.mean()), 4)
                                   if hits.size else 1.0,
                                   "missed": int(hits.size - hits.sum()), "faces": int(hits.size)}
                label = f"stride {stride}, every {every}, motion {motion:g}, " + (
                    f"full every {full_every}, coarse scale {scale:g}" if full_every
                    else "every keyframe full")
                row = {"frames": len(chosen), "full": len(primary.calls),
                       "coarse": len(reduced.calls), "recall": recall,
                       "masked_share_of_frame": round(float(np.mean([m.mean() for m in masks])),
                                                      4)}
                out["settings"][label] = row
                print(name, "forced" if forced else "", label, json.dumps(row), flush=True)
    privacy.schedule.COARSE_MIN_SIDE = limit
    return out


class _ByIndex(Replayed):
    """Cached detections looked up by the frame's index, written into its first pixels."""

    def _detect(self, frame):
        index = int(frame[0, 0, 0]) * 256 + int(frame[0, 0, 1])
        self.calls += [index]
        return self.table[index]

    def __init__(self, table: dict) -> None:
        super().__init__(table)
        self.calls: list[int] = []


def _tagged(image: np.ndarray, index: int) -> np.ndarray:
    # The replayed detectors only look the frame up: its index in the first pixel is
    # enough, and the mask is measured on the reference boxes, never on these pixels.
    tagged = image.copy()
    tagged[0, 0, 0], tagged[0, 0, 1] = divmod(index, 256)
    return tagged


def cost_per_detection(scales=SCALES, rounds: int = 5) -> dict:
    """CPU seconds (process clock, all threads) of one default detection on a 1080p frame
    of arcade_1080p.mp4 at full resolution and at each coarse scale, medians."""
    config = AnonymizationConfig(other_classes=())
    _, images = frames_of(os.path.join(VIDEOS, "arcade_1080p.mp4"))
    specs = {"full": config.detector, **{f"scale {s:g}": at_scale(config.detector, s)
                                         for s in scales}}
    detectors = {label: build_detector(spec) for label, spec in specs.items()}
    for detector in detectors.values():
        detector.detect(images[0])  # compiles for the shape
    times: dict[str, list[float]] = {label: [] for label in specs}
    for r in range(rounds):
        for label, detector in detectors.items():
            started = time.process_time()
            detector.detect(images[1 + r])
            times[label].append(time.process_time() - started)
    return {label: round(float(np.median(t)), 3) for label, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--videos", nargs="*", default=None)
    args = parser.parse_args()
    names = args.videos or sorted(n for n in os.listdir(VIDEOS) if n.endswith(".mp4"))
    results = {}
    for name in names:
        results[name] = evaluate(name)
        if min(results[name]["size"]) * min(SCALES) < privacy.schedule.COARSE_MIN_SIDE:
            results[name]["coarse_forced"] = evaluate(name, forced=True)["settings"]
    record = {"command": "python bench/coarse.py", "date": time.strftime("%Y-%m-%d"),
              "detector": AnonymizationConfig().detector, "references": list(REFERENCES),
              "load_average": [round(v, 2) for v in os.getloadavg()],
              "cpu_s_per_detection_1080p": cost_per_detection(),
              "results": results}
    print(json.dumps(record["cpu_s_per_detection_1080p"]))
    if not args.videos:
        with open(os.path.join(HERE, "results", "coarse.json"), "w") as handle:
            json.dump(record, handle, indent=2)


if __name__ == "__main__":
    main()
