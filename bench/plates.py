"""Licence plates and text: coverage, area altered and speed of each candidate detector.

Data (see bench/plates_gt/ and bench/plates_data.py):
- the readable plates of ``../shared/media/videos/aria_parking_plates.mp4``, labelled by
  hand in every frame (24 frames, 2560x1920 fisheye);
- synthetic plates in five national styles, 20-200 px wide, and synthetic text lines
  (badges, screens, paper), 8-60 px high, pasted in perspective on the real photos and
  frames of ``../shared/media``; even-numbered images tune, odd-numbered ones are held out.

For every candidate the redaction mask is the union of its boxes scaled by the mask
scale: the class's own for plates and text (``privacy.config.CLASS_MASK_SCALE``, 1.3),
egoveil's faces' 1.4 for the faces-only reference, deface's own 1.3 for deface. A ground-truth box is covered
when 80% of its pixels are under the mask (``privacy.coverage``). The area altered
outside the truth is the masked share of the image outside every ground-truth box
scaled 1.5 (the margin a redaction needs is not counted), averaged over images; real
plates and text in the backgrounds are not labelled, so it is an upper bound.
Seconds per 1080p frame are medians over frames of ``arcade_1080p.mp4``.

Raw network outputs are cached under bench/.cache/plates, so filters and thresholds are
cheap to compare. Usage (timings under the machine's benchmark lock):

    python bench/plates.py [--plate-model FILE] --no-timing --out bench/results/plates.json
    flock /work/tools/bench.lock python bench/plates.py [--plate-model FILE] --timing-only \
        --out bench/results/plates.json
    python bench/plates.py --markdown bench/results/plates.json   # results/plates.md's tables
    python bench/plates.py --tune v4                              # the plate-filter grid
    python bench/plates.py --tune-pair    # each model's growth in the v4 + v5 pair

``--plate-model`` is a YOLO-family plate ONNX (``plate-onnx:path=FILE``); without it the
plate-specific candidates are left out.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import statistics
import sys
import time
from dataclasses import asdict

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from plates_data import MEDIA, make_samples  # noqa: E402

from privacy.config import default_policy  # noqa: E402
from privacy.coverage import covered_shares, mask_from_boxes, outside_share  # noqa: E402
from privacy.detectors import build_detector  # noqa: E402
from privacy.detectors.base import Detections, Detector, nms, validate_detections  # noqa: E402
from privacy.detectors.ppocr import (  # noqa: E402
    PLATE_SHAPES,
    PlateShape,
    PPOCRTextDetector,
    plate_shape,
    rect_bounds,
)
from schemas.detections import PLATE, TEXT  # noqa: E402

# EGOVEIL_PLATES_CACHE moves the cache (e.g. to /tmp, shared by worktrees).
CACHE = os.environ.get("EGOVEIL_PLATES_CACHE", os.path.join(HERE, ".cache", "plates"))
GT_FILE = os.path.join(HERE, "plates_gt", "aria_parking_plates.json")
# Faces' mask scale (egoveil's default, the faces-only reference); plates and text are
# measured at their own class's (privacy.config.CLASS_MASK_SCALE).
MASK_SCALE = 1.4
PLATE_MASK_SCALE = default_policy(PLATE).redaction.mask_scale
TEXT_MASK_SCALE = default_policy(TEXT).redaction.mask_scale
COVERED = 0.8
MACHINE = f"{platform.machine()}, {os.cpu_count()} cores, shared, no GPU"

# The network settings the candidates share; the cache key is made from them.
NET_DEFAULTS = {"model": "v4", "scale": 1.0, "threshold": 0.3, "box_threshold": 0.5,
                "unclip": 1.6, "min_size": 3.0}


def net_key(net: dict) -> str:
    full = {**NET_DEFAULTS, **net}
    return ";".join(f"{k}={full[k]}" for k in sorted(full))


class Runner:
    """Detections per candidate and image, with raw outputs cached on disk."""

    def __init__(self) -> None:
        self.nets: dict[str, PPOCRTextDetector] = {}
        self.detectors: dict = {}

    def _cached(self, kind: str, config: str, key: str, compute):
        digest = hashlib.sha256(f"{kind}|{config}|{key}".encode()).hexdigest()[:24]
        path = os.path.join(CACHE, f"{digest}.npy")
        if os.path.exists(path):
            return np.load(path)
        value = np.asarray(compute(), np.float32)
        os.makedirs(CACHE, exist_ok=True)
        np.save(path, value)
        return value

    def regions(self, net: dict, key: str, image: np.ndarray) -> np.ndarray:
        config = net_key(net)

        def compute():
            if config not in self.nets:
                self.nets[config] = PPOCRTextDetector(**{**NET_DEFAULTS, **net})
            return self.nets[config].regions([image])[0]

        return self._cached("ppocr", config, key, compute).reshape(-1, 6)

    def spec_boxes(self, spec: str, key: str, image: np.ndarray) -> np.ndarray:
        def compute():
            if spec not in self.detectors:
                self.detectors[spec] = build_detector(spec)
            dets = self.detectors[spec].detect(image)
            return np.concatenate([dets.boxes, dets.scores[:, None]], axis=1)

        return self._cached("spec", spec, key, compute).reshape(-1, 5)

    def boxes(self, entry: dict, key: str, image: np.ndarray) -> np.ndarray:
        """The candidate's validated boxes on one image."""
        height, width = image.shape[:2]
        if "union" in entry:
            parts = [self.boxes(member, key, image) for member in entry["union"]]
            return np.concatenate(parts) if parts else np.zeros((0, 4), np.float32)
        if "net" in entry:
            regions = self.regions(entry["net"], key, image)
            if entry.get("plate_shape") is not None:
                dets = PlateShape(**entry["plate_shape"]).select(regions, height, width)
            else:
                dets = Detections(rect_bounds(regions), np.clip(regions[:, 5], 0, 1))
        else:
            rows = self.spec_boxes(entry["spec"], key, image)
            dets = Detections(rows[:, :4].copy(), np.clip(rows[:, 4], 0, 1))
        dets = validate_detections(dets, height, width)
        return dets.boxes[dets.scores >= entry.get("min_score", 0.0)]


def mask_for(entry: dict, boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    return mask_from_boxes(boxes, entry.get("mask_scale", MASK_SCALE), height, width)


def aria_frames() -> list[np.ndarray]:
    import av

    with av.open(os.path.join(MEDIA, "videos", "aria_parking_plates.mp4")) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def evaluate_aria(runner: Runner, entry: dict, frames: list[np.ndarray], truth: dict) -> dict:
    readable, visible, per_frame, outside = [], [], [], []
    for index, frame in enumerate(frames):
        labels = truth["labels"].get(str(index), [])
        height, width = frame.shape[:2]
        mask = mask_for(entry, runner.boxes(entry, f"aria-{index}", frame), height, width)
        gt = np.asarray([lab["box"] for lab in labels], np.float32).reshape(-1, 4)
        covered = covered_shares(gt, mask) >= COVERED
        flags = np.asarray([lab["readable"] for lab in labels], bool)
        readable += list(covered[flags])
        visible += list(covered[~flags])
        if flags.any():
            per_frame.append(float(covered[flags].mean()))
        outside.append(outside_share(gt, mask))
    return {
        "readable_plates_covered": round(float(np.mean(readable)), 4),
        "readable_plate_frames": len(readable),
        "frames_with_every_readable_plate_covered": f"{sum(p == 1.0 for p in per_frame)}"
                                                     f"/{len(per_frame)}",
        "worst_frame_readable_share": round(min(per_frame), 4),
        "unreadable_plates_covered": round(float(np.mean(visible)), 4) if visible else None,
        "outside_truth_share_mean": round(float(np.mean(outside)), 4),
    }


SIZE_BINS = {"plates": ((20, 30), (30, 60), (60, 120), (120, 201)),
             "text": ((6, 12), (12, 20), (20, 35), (35, 61))}


def evaluate_synthetic(runner: Runner, entry: dict, samples, kind: str) -> dict:
    out = {}
    for split in ("tune", "held-out"):
        covered, sizes, outside = [], [], []
        for sample in samples:
            if sample.split != split:
                continue
            gt = sample.plates if kind == "plates" else sample.lines
            size = sample.plate_widths if kind == "plates" else sample.line_heights
            height, width = sample.image.shape[:2]
            mask = mask_for(entry, runner.boxes(entry, sample.key, sample.image), height, width)
            covered += list(covered_shares(gt, mask) >= COVERED)
            sizes += list(size)
            outside.append(outside_share(gt, mask))
        covered, sizes = np.asarray(covered), np.asarray(sizes)
        floor = 30 if kind == "plates" else 12
        row = {f"covered_{floor}px_plus": round(float(covered[sizes >= floor].mean()), 4),
               f"n_{floor}px_plus": int((sizes >= floor).sum())}
        for lo, hi in SIZE_BINS[kind]:
            sel = (sizes >= lo) & (sizes < hi)
            share = round(float(covered[sel].mean()), 4) if sel.any() else None
            row[f"covered_{lo}_{hi}px"] = share
        row["outside_truth_share_mean"] = round(float(np.mean(outside)), 4)
        out[split] = row
    return out


def arcade_frames(count: int = 9) -> list[np.ndarray]:
    import av

    with av.open(os.path.join(MEDIA, "videos", "arcade_1080p.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return frames[::max(1, len(frames) // count)][:count]


TIMED = ("centerface:threshold=0.1",
         "ppocr-plates:model=v4", "ppocr-plates:model=v4;scale=0.75",
         "ppocr-plates:model=v4;scale=0.5", "ppocr-plates:model=v4;backend=opencv",
         "ppocr-plates:model=v5", "ppocr-plates:model=v5;scale=0.75",
         "ppocr-plates:model=v5;scale=0.5", "ppocr-plates:model=v4;backend=openvino",
         "ppocr-plates:model=v5;backend=openvino")


def timings(plate_model: str | None) -> dict:
    """Median seconds per 1080p frame of each detector spec, detection only.

    The specs take turns frame by frame, so a change in the machine's load during the
    run falls on all of them alike.
    """
    frames = arcade_frames()
    specs = list(TIMED)
    if plate_model:
        specs += [f"plate-onnx:path={plate_model};size=640",
                  f"plate-onnx:path={plate_model};size=1280"]
    detectors = {spec: build_detector(spec) for spec in specs}
    for detector in detectors.values():
        detector.detect(frames[0])  # warm-up: first-run allocations
    seconds: dict[str, list[float]] = {spec: [] for spec in specs}
    for frame in frames:
        for spec, detector in detectors.items():
            started = time.perf_counter()
            detector.detect(frame)
            seconds[spec].append(time.perf_counter() - started)
    out = {}
    for spec in specs:
        name = spec.replace(plate_model, "FILE") if plate_model else spec
        out[name] = round(statistics.median(seconds[spec]), 3)
    print(json.dumps(out), flush=True)
    return out


# The configurations chosen by this benchmark (see results/plates.md).
CHOSEN_PLATES = "ppocr-plates v4 + v5"
CHOSEN_TEXT = "ppocr-text v4"


def candidates(plate_model: str | None) -> tuple[dict, dict]:
    """(plate candidates, text candidates), each name -> entry."""
    plates: dict = {}
    for model in ("v4", "v5"):  # each model's tuned filter, at the class's mask scale
        plates[f"ppocr-plates {model}"] = {"net": {"model": model},
                                           "plate_shape": asdict(PLATE_SHAPES[model]),
                                           "mask_scale": PLATE_MASK_SCALE}
    plates["ppocr-plates v4 + v5"] = {
        "union": [plates["ppocr-plates v4"], plates["ppocr-plates v5"]],
        "mask_scale": PLATE_MASK_SCALE}
    # The settings before issue 14's area tuning: both models' lines grown 1.15 x 1.5,
    # masks at faces' 1.4.
    before = asdict(PlateShape(grow_w=1.15, grow_h=1.5))
    plates["before: ppocr-plates v4 + v5, lines grown 1.15 x 1.5, mask 1.4"] = {
        "union": [{"net": {"model": model}, "plate_shape": before} for model in ("v4", "v5")],
        "mask_scale": 1.4}
    # The same networks on OpenVINO (bfloat16 where the CPU computes it natively).
    plates["ppocr-plates v4 + v5, openvino"] = {"union": [
        {"net": {"model": model, "backend": "openvino"}, "plate_shape": asdict(PLATE_SHAPES[model])}
        for model in ("v4", "v5")], "mask_scale": PLATE_MASK_SCALE}
    if plate_model:
        for size in (640, 1280):
            plates[f"plate-onnx size {size}"] = {
                "spec": f"plate-onnx:path={plate_model};size={size}"}
        for model in ("v4", "v5"):
            plates[f"both: ppocr-plates {model} + plate-onnx 1280"] = {
                "union": [plates[f"ppocr-plates {model}"], plates["plate-onnx size 1280"]]}
    refs = {
        "reference: deface 1.5.0 (CenterFace 0.2, box x1.3), faces only": {
            "spec": "centerface:threshold=0.2", "mask_scale": 1.3},
        "reference: egoveil faces only (CenterFace 0.1, x1.4)": {
            "spec": "centerface:threshold=0.1"},
    }
    text: dict = {}
    for model in ("v4", "v5"):
        text[f"ppocr-text {model}"] = {"net": {"model": model}, "mask_scale": TEXT_MASK_SCALE}
    text["before: ppocr-text v4, mask 1.4"] = {"net": {"model": "v4"}, "mask_scale": 1.4}
    text["ppocr-text v4, openvino"] = {"net": {"model": "v4", "backend": "openvino"},
                                       "mask_scale": TEXT_MASK_SCALE}
    return {**plates, **refs}, {**text, **refs}


def with_scale(entry: dict, scale: float) -> dict:
    if "union" in entry:
        return {**entry, "union": [with_scale(m, scale) for m in entry["union"]]}
    if "net" in entry:
        return {**entry, "net": {**entry["net"], "scale": scale}}
    return entry


def aria_with_stride(runner: Runner, entry: dict, frames, truth: dict, every: int) -> float:
    """Readable Aria plates covered when only every ``every``-th frame is detected and its
    boxes are held, unmoved, over the frames in between (a floor for motion propagation)."""
    covered = []
    for index, frame in enumerate(frames):
        source = index - index % every
        boxes = runner.boxes(entry, f"aria-{source}", frames[source])
        gt = np.asarray([lab["box"] for lab in truth["labels"][str(index)] if lab["readable"]],
                        np.float32).reshape(-1, 4)
        mask = mask_for(entry, boxes, *frame.shape[:2])
        covered += list(covered_shares(gt, mask) >= COVERED)
    return round(float(np.mean(covered)), 4)


def speed_options(runner: Runner, entry: dict, frames, truth: dict, samples,
                  kind: str) -> dict:
    """What cheaper settings cost in coverage: input scale, and detection stride on Aria."""
    out: dict = {}
    for scale in (1.0, 0.75, 0.5):
        scaled = with_scale(entry, scale)
        synthetic = evaluate_synthetic(runner, scaled, samples, kind)["held-out"]
        row = {"synthetic_held_out": synthetic}
        if kind == "plates":
            row["aria_readable"] = evaluate_aria(runner, scaled, frames, truth)[
                "readable_plates_covered"]
            row["aria_readable_every_k_frames_held"] = {
                str(k): aria_with_stride(runner, scaled, frames, truth, k) for k in (2, 4, 8)}
        out[f"scale {scale}"] = row
        print(json.dumps({f"{kind} scale {scale}": row}), flush=True)
    return out


def tune(runner: Runner, frames, truth: dict, samples, model: str) -> list[dict]:
    """Grid over the plate filter on cached regions: Aria and the tuning split only."""
    import itertools

    net = {"model": model, "scale": 1.0}
    aria = [(f"aria-{i}", f, np.asarray([lab["box"] for lab in truth["labels"][str(i)]
                                          if lab["readable"]], np.float32).reshape(-1, 4),
             np.asarray([lab["box"] for lab in truth["labels"][str(i)]], np.float32).reshape(-1, 4))
            for i, f in enumerate(frames)]
    synth = [(s.key, s.image, s.plates[s.plate_widths >= 30], s.plates)
             for s in samples if s.split == "tune"]
    cached = {key: (runner.regions(net, key, image), image.shape[:2])
              for key, image, _, _ in aria + synth}
    grid = {"min_aspect": (1.0, 1.3), "max_aspect": (5.0, 8.0), "min_height": (4.0, 8.0),
            "max_height": (0.05, 0.08, 0.15), "grow_w": (1.0, 1.15), "grow_h": (1.2, 1.5, 1.8),
            "max_tilt": (30.0, 90.0), "min_score": (0.5, 0.7)}
    rows = []
    for values in itertools.product(*grid.values()):
        params = dict(zip(grid, values))
        min_score = params.pop("min_score")
        shape = PlateShape(**params)
        scores = {}
        for name, items in (("aria", aria), ("synthetic", synth)):
            covered, outside = [], []
            for key, _, gt, all_gt in items:
                regions, (height, width) = cached[key]
                dets = shape.select(regions[regions[:, 5] >= min_score], height, width)
                mask = mask_from_boxes(dets.boxes, PLATE_MASK_SCALE, height, width)
                covered += list(covered_shares(gt, mask) >= COVERED)
                outside.append(outside_share(all_gt, mask))
            scores[name] = (float(np.mean(covered)), float(np.mean(outside)))
        rows.append({**params, "min_score": min_score,
                     "aria": round(scores["aria"][0], 3), "aria_out": round(scores["aria"][1], 4),
                     "synth": round(scores["synthetic"][0], 3),
                     "synth_out": round(scores["synthetic"][1], 4)})
    return rows


class _Replayed(Detector):
    """The v4 + v5 plate boxes of a pair of filters, from cached regions, found by frame
    content (``tune_pair`` replays the Aria clip through the anonymizer with them)."""

    name = "ppocr-plates (replayed)"
    detection_class = PLATE

    def __init__(self, boxes_by_frame: dict[bytes, np.ndarray]) -> None:
        self.boxes_by_frame = boxes_by_frame

    @staticmethod
    def key(frame: np.ndarray) -> bytes:
        return hashlib.sha256(frame[::7, ::7].tobytes()).digest()

    def _detect(self, frame: np.ndarray) -> Detections:
        boxes = self.boxes_by_frame[self.key(frame)]
        return Detections(boxes, np.ones(len(boxes), np.float32))


def pair_boxes(regions: dict, shapes: dict, height: int, width: int) -> np.ndarray:
    """The boxes ``ppocr-plates:model=v4+ppocr-plates:model=v5`` gives with ``shapes``
    (model -> PlateShape): each model's filter, then the ensemble's NMS at IoU 0.5."""
    dets = Detections.concat([validate_detections(shapes[m].select(regions[m], height, width),
                                                  height, width) for m in ("v4", "v5")])
    if len(dets) == 0:
        return dets.boxes
    return dets.boxes[nms(dets.boxes, dets.scores, 0.5)]


ARIA_FPS = 10


def aria_gap(schedule) -> int:
    """Frames between keyframes ``schedule`` gives on the 10 fps Aria clip: the places its
    keyframes can fall (the phases the coverage is measured over)."""
    return max(1, round(schedule.seconds * ARIA_FPS)) if schedule.seconds else schedule.every


def through_anonymizer(frames, truth: dict, boxes: list[np.ndarray]) -> tuple[float, float]:
    """Readable Aria plates covered through ``SegmentAnonymizer`` at the default plate
    policy (schedule, window, mask scale, motion following), mean and worst over the
    keyframe phases, as ``bench/classes.py --coverage`` measures it, with the detections
    replayed."""
    from privacy.anonymizer import ClassDetector, FrameIn, SegmentAnonymizer

    policy = default_policy(PLATE)
    detector = _Replayed({_Replayed.key(f): b for f, b in zip(frames, boxes)})
    phases = []
    for phase in range(aria_gap(policy.schedule)):
        anonymizer = SegmentAnonymizer([ClassDetector(
            detector, policy.redaction, policy.temporal_window, None, policy.schedule,
            follow_motion=policy.follow_motion)], detect_timeout_s=None)
        clip = [(i, f) for i, f in enumerate(frames) if i >= phase]
        covered = []
        for (index, frame), out in zip(clip, anonymizer.process(
                FrameIn(i / ARIA_FPS, f.copy()) for i, f in clip)):
            gt = np.asarray([lab["box"] for lab in truth["labels"].get(str(index), [])
                             if lab["readable"]], np.float32).reshape(-1, 4)
            mask = mask_from_boxes(out.boxes[PLATE], policy.redaction.mask_scale,
                                   *frame.shape[:2])
            covered += list(covered_shares(gt, mask) >= COVERED)
        anonymizer.close()
        phases.append(float(np.mean(covered)))
    return float(np.mean(phases)), min(phases)


def tune_pair(runner: Runner, frames, truth: dict, samples) -> list[dict]:
    """Grid over each model's plate-line growth in the v4 + v5 pair, on cached regions, at
    the class's mask scale: Aria (detection alone, and through the anonymizer) and the
    synthetic tuning split. Every other filter setting stays the model's default; a grid
    over those and over per-model minimum scores (bench history, issue 14) covered fewer
    Aria plates for each point of area saved."""
    import itertools

    aria = [(f"aria-{i}", f, np.asarray([lab["box"] for lab in truth["labels"][str(i)]],
                                        np.float32).reshape(-1, 4),
             np.asarray([lab["readable"] for lab in truth["labels"][str(i)]], bool))
            for i, f in enumerate(frames)]
    synth = [(s.key, s.image, s.plates, s.plate_widths >= 30) for s in samples
             if s.split == "tune"]
    cached = {key: {m: runner.regions({"model": m}, key, image) for m in ("v4", "v5")}
              for key, image, _, _ in aria + synth}
    growths = {"v4": ((1.0, 1.0), (1.1, 1.0), (1.0, 1.25), (1.15, 1.5)),
               "v5": ((1.0, 1.0), (1.1, 1.1), (1.0, 1.25), (1.15, 1.25), (1.15, 1.5))}
    rows = []
    for g4, g5 in itertools.product(growths["v4"], growths["v5"]):
        shapes = {m: plate_shape(m, grow_w=g[0], grow_h=g[1]) for m, g in (("v4", g4),
                                                                           ("v5", g5))}
        row: dict = {"v4_grow": g4, "v5_grow": g5}
        aria_boxes = []
        for name, items in (("aria", aria), ("synthetic", synth)):
            covered, outside = [], []
            for key, image, gt, counted in items:
                boxes = pair_boxes(cached[key], shapes, *image.shape[:2])
                if name == "aria":
                    aria_boxes.append(boxes)
                mask = mask_from_boxes(boxes, PLATE_MASK_SCALE, *image.shape[:2])
                covered += list((covered_shares(gt, mask) >= COVERED)[counted])
                outside.append(outside_share(gt, mask))
            row[name] = round(float(np.mean(covered)), 4)
            row[f"{name}_out"] = round(float(np.mean(outside)), 4)
        mean, worst = through_anonymizer(frames, truth, aria_boxes)
        row["aria_anonymizer_mean"], row["aria_anonymizer_worst"] = round(mean, 4), round(worst, 4)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


V4_SCALES = (1.0, 0.875, 0.8, 0.75, 0.7, 0.625, 0.5)


def pair_scales(runner: Runner, frames, truth: dict, samples) -> list[dict]:
    """PP-OCRv4's input scale in the v4 + v5 pair, PP-OCRv5 kept at native resolution (v4
    at 0.75 costs about half its native time): Aria (detection alone, through the
    anonymizer at the default plate policy, area outside the truth) and the synthetic
    plates, each member with its tuned filter. The replay through the anonymizer takes the
    union of both members' boxes (the ensemble's NMS left out: it only drops boxes inside
    others)."""
    rows = []
    for scale in V4_SCALES:
        entry = {"union": [{"net": {"model": "v4", "scale": scale},
                            "plate_shape": asdict(PLATE_SHAPES["v4"])},
                           {"net": {"model": "v5"}, "plate_shape": asdict(PLATE_SHAPES["v5"])}],
                 "mask_scale": PLATE_MASK_SCALE}
        aria = evaluate_aria(runner, entry, frames, truth)
        synthetic = evaluate_synthetic(runner, entry, samples, "plates")
        mean, worst = through_anonymizer(frames, truth, [
            runner.boxes(entry, f"aria-{i}", frame) for i, frame in enumerate(frames)])
        row = {"v4_scale": scale, "aria": aria["readable_plates_covered"],
               "aria_frames_all_covered": aria["frames_with_every_readable_plate_covered"],
               "aria_out": aria["outside_truth_share_mean"],
               "aria_anonymizer_mean": round(mean, 4), "aria_anonymizer_worst": round(worst, 4),
               "synthetic_30px_tune": synthetic["tune"]["covered_30px_plus"],
               "synthetic_30px_held_out": synthetic["held-out"]["covered_30px_plus"],
               "synthetic_20_30px_held_out": synthetic["held-out"]["covered_20_30px"],
               "synthetic_out_tune": synthetic["tune"]["outside_truth_share_mean"],
               "synthetic_out_held_out": synthetic["held-out"]["outside_truth_share_mean"]}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def markdown_tables(payload: dict) -> str:
    """The results JSON as the Markdown tables of results/plates.md."""
    lines = ["### Plates", "",
             "| candidate | Aria readable covered | Aria frames all covered | Aria unreadable "
             "covered | Aria outside truth | synthetic >=30 px tune / held-out | 20-30 px "
             "held-out | outside truth tune / held-out |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, row in payload["results"]["plates"].items():
        aria, tune_, held = row["aria"], row["synthetic"]["tune"], row["synthetic"]["held-out"]
        lines.append(
            f"| {name} | {pct(aria['readable_plates_covered'])} "
            f"({aria['readable_plate_frames']} plate-frames) | "
            f"{aria['frames_with_every_readable_plate_covered']} | "
            f"{pct(aria['unreadable_plates_covered'])} | "
            f"{pct(aria['outside_truth_share_mean'])} | "
            f"{pct(tune_['covered_30px_plus'])} / {pct(held['covered_30px_plus'])} | "
            f"{pct(held['covered_20_30px'])} | {pct(tune_['outside_truth_share_mean'])} / "
            f"{pct(held['outside_truth_share_mean'])} |")
    lines += ["", "### Text", "",
              "| candidate | lines >=12 px tune / held-out | 6-12 px held-out | 12-20 px held-out "
              "| outside truth tune / held-out |", "| --- | --- | --- | --- | --- |"]
    for name, row in payload["results"]["text"].items():
        tune_, held = row["synthetic"]["tune"], row["synthetic"]["held-out"]
        lines.append(
            f"| {name} | {pct(tune_['covered_12px_plus'])} / "
            f"{pct(held['covered_12px_plus'])} | "
            f"{pct(held['covered_6_12px'])} | {pct(held['covered_12_20px'])} | "
            f"{pct(tune_['outside_truth_share_mean'])} / "
            f"{pct(held['outside_truth_share_mean'])} |")
    timing = payload["results"].get("seconds_per_1080p_frame")
    if timing:
        base = timing["centerface:threshold=0.1"]
        lines += ["", "### Seconds per 1080p frame (detection only, median)", "",
                  "| detector | s/frame | x CenterFace | every 2nd frame | every 4th | every 8th |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for spec, sec in timing.items():
            lines.append(f"| `{spec}` | {sec:.3f} | {sec / base:.2f} | {sec / 2 / base:.2f} | "
                         f"{sec / 4 / base:.2f} | {sec / 8 / base:.2f} |")
    options = payload["results"].get("speed_options", {})
    for name, rows in options.items():
        lines += ["", f"### Cheaper settings: {name}", ""]
        if name.startswith("plates"):
            lines += ["| input scale | synthetic >=30 px held-out | Aria readable | Aria, every "
                      "2nd frame held | every 4th | every 8th |",
                      "| --- | --- | --- | --- | --- | --- |"]
            for scale, row in rows.items():
                held = row["aria_readable_every_k_frames_held"]
                lines.append(f"| {scale} | {pct(row['synthetic_held_out']['covered_30px_plus'])} "
                             f"| {pct(row['aria_readable'])} | {pct(held['2'])} "
                             f"| {pct(held['4'])} | {pct(held['8'])} |")
        else:
            lines += ["| input scale | lines >=12 px held-out | 6-12 px held-out |",
                      "| --- | --- | --- |"]
            for scale, row in rows.items():
                lines.append(f"| {scale} | {pct(row['synthetic_held_out']['covered_12px_plus'])} | "
                             f"{pct(row['synthetic_held_out']['covered_6_12px'])} |")
    return "\n".join(lines) + "\n"


def write_results(path: str, **figures) -> None:
    """``figures`` as JSON at ``path``, with the machine, this run's command and the date."""
    payload = {"machine": MACHINE,
               "command": shlex.join(["python", "bench/plates.py", *sys.argv[1:]]),
               "date": time.strftime("%Y-%m-%d"), **figures}
    with open(path, "w") as handle:
        json.dump(payload, handle, indent=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plate-model", default=None,
                        help="a YOLO-family plate ONNX for the plate-specific candidates")
    parser.add_argument("--only", default=None, help="candidates whose name contains this")
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument("--out", default=None, help="write results JSON here")
    parser.add_argument("--tune", default=None, metavar="MODEL",
                        help="grid over the plate filter for PP-OCR MODEL (v4, v5) and stop")
    parser.add_argument("--tune-pair", action="store_true",
                        help="grid over each model's line growth in the v4 + v5 pair and stop")
    parser.add_argument("--pair-scales", action="store_true",
                        help="PP-OCRv4's input scale in the pair (v5 native) and stop")
    parser.add_argument("--markdown", default=None, metavar="JSON",
                        help="print a results JSON as Markdown tables and stop")
    parser.add_argument("--timing-only", action="store_true",
                        help="only the timings, merged into the --out JSON")
    args = parser.parse_args()
    if args.timing_only:
        payload = json.load(open(args.out))
        payload["results"]["seconds_per_1080p_frame"] = timings(args.plate_model)
        payload["timing_command"] = " ".join(["python bench/plates.py"] + sys.argv[1:])
        with open(args.out, "w") as handle:
            json.dump(payload, handle, indent=1)
        return
    if args.markdown:
        print(markdown_tables(json.load(open(args.markdown))))
        return
    if args.pair_scales:
        rows = pair_scales(Runner(), aria_frames(), json.load(open(GT_FILE)),
                           make_samples("plates"))
        if args.out:
            write_results(args.out, rows=rows)
        return
    if args.tune_pair:
        rows = tune_pair(Runner(), aria_frames(), json.load(open(GT_FILE)),
                         make_samples("plates"))
        if args.out:
            with open(args.out, "w") as handle:
                json.dump(rows, handle, indent=1)
        return
    if args.tune:
        rows = tune(Runner(), aria_frames(), json.load(open(GT_FILE)), make_samples("plates"),
                    args.tune)
        rows.sort(key=lambda r: (-min(r["aria"], r["synth"]), r["aria_out"] + r["synth_out"]))
        for row in rows[:40]:
            print(json.dumps(row))
        if args.out:
            with open(args.out, "w") as handle:
                json.dump(rows, handle)
        return

    truth = json.load(open(GT_FILE))
    runner = Runner()
    frames = aria_frames()
    plate_samples = make_samples("plates")
    text_samples = make_samples("text")
    plate_entries, text_entries = candidates(args.plate_model)
    results: dict = {"plates": {}, "text": {}}
    for name, entry in plate_entries.items():
        if args.only and args.only not in name:
            continue
        row = {"aria": evaluate_aria(runner, entry, frames, truth),
               "synthetic": evaluate_synthetic(runner, entry, plate_samples, "plates")}
        results["plates"][name] = row
        print(json.dumps({name: row}), flush=True)
    for name, entry in text_entries.items():
        if args.only and args.only not in name:
            continue
        row = {"synthetic": evaluate_synthetic(runner, entry, text_samples, "text")}
        results["text"][name] = row
        print(json.dumps({name: row}), flush=True)
    if not args.only:
        results["speed_options"] = {
            "plates: " + CHOSEN_PLATES: speed_options(runner, plate_entries[CHOSEN_PLATES],
                                                      frames, truth, plate_samples, "plates"),
            "text: " + CHOSEN_TEXT: speed_options(runner, text_entries[CHOSEN_TEXT], frames,
                                                  truth, text_samples, "text")}
    if not args.no_timing:
        results["seconds_per_1080p_frame"] = timings(args.plate_model)
    if args.out:
        write_results(args.out, results=results)


if __name__ == "__main__":
    main()
