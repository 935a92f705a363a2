"""Anonymized videos checked by independent detectors, egoveil against deface, in one run.

For every video in ../shared/media/videos:

- ``egoveil redact`` and ``deface`` (its defaults: blur in an ellipse; and
  ``--replacewith solid --boxes``) anonymize the video; the wall time of each
  command is taken (arcade_1080p.mp4 gives the frames-per-second comparison);
- independent reference detectors, YuNet at 0.5 (../shared/media/models) and
  CenterFace at 0.4, run on every input frame; every face of 20 px or more they
  find is looked for again in the same frame of each output: a reference
  detection in the output overlapping (IoU >= 0.3) one in the input is a leak;
- frame count and timestamps of each output are compared with the input;
- per-frame and per-track recall of egoveil's redaction mask over the reference
  faces (80% of the face box covered): the boxes the anonymizer masked in each frame
  with the default configuration (temporal propagation and detection schedule), on
  every frame (``egoveil redact``) and on every 2nd frame with the schedule's caps
  counted in source frames (what ``egoveil run`` anonymizes at ``--frame-stride 2``),
  and with every frame detected and no propagation; and the share of each frame masked.

Usage: python bench/videos.py [--videos NAME ...]. Results: bench/results/videos.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from privacy.anonymizer import ClassDetector, SegmentAnonymizer, ViewFrames  # noqa: E402
from privacy.config import AnonymizationConfig  # noqa: E402
from privacy.coverage import covered_shares, face_size, mask_from_boxes  # noqa: E402
from privacy.detectors import build_detector  # noqa: E402
from privacy.detectors.factory import at_scale  # noqa: E402
from privacy.schedule import DetectionSchedule  # noqa: E402
from schemas.detections import FACE  # noqa: E402

MEDIA = os.path.join(ROOT, "..", "shared", "media")
VIDEOS = os.path.join(MEDIA, "videos")
YUNET = os.path.join(MEDIA, "models", "yunet_2023mar.onnx")
REFERENCES = {"yunet@0.5": f"yunet:path={YUNET};threshold=0.5",
              # OpenCV DNN in float32, whatever egoveil's own default runtime is.
              "centerface@0.4": "centerface:threshold=0.4;backend=opencv"}
MIN_FACE = 20


def frames_of(path: str) -> tuple[list[float], list[np.ndarray]]:
    from transforms.media.video import iter_window

    times, images = [], []
    for frame, _ in iter_window(path):
        times.append(frame.time_s)
        images.append(frame.to_rgb())
    return times, images


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def big(boxes: np.ndarray) -> np.ndarray:
    return boxes[face_size(boxes) >= MIN_FACE]


def tracks(per_frame: list[np.ndarray]) -> list[list[tuple[int, int]]]:
    """Greedy IoU linking of per-frame boxes into tracks of (frame, box index)."""
    done, active = [], []
    for f, boxes in enumerate(per_frame):
        claimed = set()
        still = []
        for track in active:
            last_f, last_i = track[-1]
            if f - last_f > 2:
                done.append(track)
                continue
            prev = per_frame[last_f][last_i:last_i + 1]
            if boxes.shape[0]:
                overlaps = iou(prev, boxes)[0]
                overlaps[list(claimed)] = 0
                j = int(np.argmax(overlaps))
                if overlaps[j] >= 0.3:
                    track.append((f, j))
                    claimed.add(j)
            still.append(track)
        active = still
        for j in range(boxes.shape[0]):
            if j not in claimed:
                active.append([(f, j)])
    return done + active


def run(cmd: list[str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - started


def evaluate_video(path: str, work: str, detectors: dict, egoveil_only: bool = False) -> dict:
    name = os.path.basename(path)
    stem = os.path.splitext(name)[0]
    outputs = {
        "egoveil": (f"{work}/{stem}.egoveil.mp4",
                    [sys.executable, "-m", "pipeline.cli", "redact", path]),
        "deface (defaults: blur, ellipse)": (f"{work}/{stem}.deface.mp4",
                                             [os.path.join(os.path.dirname(sys.executable),
                                                           "deface"), path, "-o"]),
        "deface --replacewith solid --boxes": (
            f"{work}/{stem}.deface_solid.mp4",
            [os.path.join(os.path.dirname(sys.executable), "deface"), path,
             "--replacewith", "solid", "--boxes", "-o"]),
    }
    if egoveil_only:
        outputs = {"egoveil": outputs["egoveil"]}
    walls = {tool: run([*cmd, out]) for tool, (out, cmd) in outputs.items()}
    times, images = frames_of(path)
    reference = {ref: [det.detect(img).boxes for img in images] for ref, det in detectors.items()}
    result = {"frames": len(images), "tools": {}}
    for tool, (out, _) in outputs.items():
        out_times, out_images = frames_of(out)
        leaks = {}
        for ref, det in detectors.items():
            count = 0
            for f, img in enumerate(out_images[:len(images)]):
                ins = big(reference[ref][f])
                if ins.shape[0] == 0:
                    continue
                found = big(det.detect(img).boxes)
                if found.shape[0]:
                    count += int((iou(found, ins) >= 0.3).any(axis=0).sum())
            leaks[ref] = count
        result["tools"][tool] = {
            "wall_s": round(walls[tool], 2),
            "frames_per_s": round(len(images) / walls[tool], 2),
            "leaked_reference_faces": leaks,
            "frame_count_equal": len(out_times) == len(times),
            # Containers store times in their own timescale: equal within half a millisecond.
            "timestamps_equal": len(out_times) == len(times) and all(
                abs(a - b) <= 5e-4 for a, b in zip(out_times, times)),
        }
    result["reference_faces"] = {ref: int(sum(big(b).shape[0] for b in boxes))
                                 for ref, boxes in reference.items()}
    result["temporal"] = temporal_recall(times, images, reference)
    return result


def temporal_recall(times: list[float], images: list[np.ndarray], reference: dict) -> dict:
    """Recall of egoveil's mask over the reference faces: the anonymizer itself (default
    configuration, its detection schedule included) on every frame and on every 2nd frame
    (``egoveil run --frame-stride 2``), and the same with the temporal propagation off
    (every frame detected, window 0), from the boxes each frame masked."""
    config = AnonymizationConfig()
    scale = config.redaction.mask_scale
    schedule = config.face_schedule
    detector = build_detector(config.detector)
    coarse = build_detector(at_scale(config.detector, schedule.coarse_scale)) \
        if schedule.coarse else None
    described = f"schedule every {schedule.every}, motion {schedule.motion:g}" + (
        f", full resolution every {schedule.full_every}, coarse scale "
        f"{schedule.coarse_scale:g}" if schedule.coarse else "")
    scheduled = ClassDetector(detector, config.redaction, config.temporal_window, None,
                              schedule, coarse)
    variants = {
        "without temporal propagation (every frame detected)": (ClassDetector(
            detector, config.redaction, 0, None, DetectionSchedule()), 1),
        f"with temporal propagation (window {config.temporal_window}, {described})":
            (scheduled, 1),
        f"egoveil run --frame-stride 2: every 2nd frame, with temporal propagation (window "
        f"{config.temporal_window}, {described})": (scheduled, 2),
    }
    out = {}
    for label, (cls, stride) in variants.items():
        chosen = list(range(0, len(images), stride))
        anonymizer = SegmentAnonymizer([cls], detect_timeout_s=None)
        outs = [o["_"] for o in anonymizer.process_views(
            (ViewFrames(times[f], {"_": images[f].copy()}) for f in chosen), step=stride)]
        masked = [o.boxes[FACE] for o in outs]
        area = float(np.mean([mask_from_boxes(b, scale, images[f].shape[0],
                                              images[f].shape[1]).mean()
                              for b, f in zip(masked, chosen)]))
        per_ref = {}
        for ref, boxes_per_frame in reference.items():
            covered_per_frame = []
            for b, f in zip(masked, chosen):
                gt = big(boxes_per_frame[f])
                mask = mask_from_boxes(b, scale, images[f].shape[0], images[f].shape[1])
                covered_per_frame.append(covered_shares(gt, mask) >= 0.8)
            linked = tracks([big(boxes_per_frame[f]) for f in chosen])
            full = sum(all(covered_per_frame[f][i] for f, i in t) for t in linked)
            per_ref[ref] = {"faces": int(sum(len(c) for c in covered_per_frame)),
                            "per_frame_recall": round(float(np.mean(np.concatenate(
                                covered_per_frame))) if any(len(c) for c in covered_per_frame)
                                else 1.0, 4),
                            "tracks": len(linked),
                            "tracks_fully_covered": int(full)}
        out[label] = {**per_ref, "masked_share_of_frame": round(area, 4),
                      "frames_detected": sum(FACE in o.ran for o in outs),
                      "frames_detected_coarse": sum(FACE in o.coarse for o in outs)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--videos", nargs="*", default=None)
    parser.add_argument("--egoveil-only", action="store_true",
                        help="rerun egoveil only and keep the peers' rows of the committed "
                             "results (deface does not change between runs)")
    args = parser.parse_args()
    committed = os.path.join(HERE, "results", "videos.json")
    previous = {}
    if args.egoveil_only:
        with open(committed) as handle:
            previous = json.load(handle)
    names = args.videos or sorted(n for n in os.listdir(VIDEOS) if n.endswith(".mp4"))
    detectors = {ref: build_detector(spec) for ref, spec in REFERENCES.items()}
    work = tempfile.mkdtemp(prefix="egoveil-videos-")
    results = {}
    for name in names:
        results[name] = evaluate_video(os.path.join(VIDEOS, name), work, detectors,
                                       args.egoveil_only)
        if args.egoveil_only:
            kept = previous["results"][name]["tools"]
            results[name]["tools"].update({tool: dict(row, measured=previous["date"])
                                           for tool, row in kept.items() if tool != "egoveil"})
        print(json.dumps({name: results[name]}), flush=True)
    record = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU",
              "command": "python bench/videos.py" + (" --egoveil-only" if args.egoveil_only
                                                     else ""),
              "date": time.strftime("%Y-%m-%d"),
              "egoveil_config": AnonymizationConfig(other_classes=()).describe(),
              "results": results}
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    if not args.videos:
        with open(committed, "w") as handle:
            json.dump(record, handle, indent=2)


if __name__ == "__main__":
    main()
