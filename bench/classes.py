"""What plates and text cost end to end, and what each plate schedule keeps (issue 14).

Three measurements, each its own mode:

- ``--speed``: ``egoveil redact`` on ``arcade_1080p.mp4`` (1920x1080, 25 fps, 105 frames)
  with faces only (``--redact faces``), with the default classes (faces and plates) and
  with other plate settings, each a fresh process, the contenders alternating, medians of
  ``--repeat`` rounds; wall and CPU time (user + system, /usr/bin/time), the ratio to
  faces only measured in the same run, whether verification sent the file through the
  stronger second pass, and the share of the output's area painted (pixels the solid
  fill turned grey, counted on the decoded output against the input). Run it under the
  machine's benchmark lock.
- ``--coverage``: the readable plates of ``aria_parking_plates.mp4`` (10 fps, labelled by
  hand in every frame: bench/plates_gt) covered by the anonymizer itself, for each plate
  setting: the plate class alone through ``SegmentAnonymizer`` with its schedule, its
  temporal window of 2 detected frames and the boxes carried between keyframes
  (``privacy.tracking``), masks at scale 1.4; a plate counts when 80% of its box is
  painted (bench/plates.py's criterion).
- ``--verification``: why plates and text are verified as they are. On every 4th frame of
  arcade_1080p.mp4 redacted with the defaults: the plate detector re-run on the redacted
  frame (what it finds there, keyframes included), and on the original frame (regions of
  20 px and more with less than 80% of their box painted), on keyframes and between them.

    flock /work/tools/bench.lock python bench/classes.py --speed
    python bench/classes.py --coverage
    python bench/classes.py --verification
    python bench/classes.py --markdown          # results/classes.md's tables

Results are merged into bench/results/classes.json (``--results FILE``: into FILE instead).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from plates import ARIA_FPS, GT_FILE, MACHINE, aria_frames, aria_gap  # noqa: E402
from plates_data import MEDIA  # noqa: E402
from speed import frame_count  # noqa: E402

from privacy.config import default_policy  # noqa: E402
from privacy.coverage import covered_shares  # noqa: E402
from privacy.detectors import Detections, Detector, build_detector  # noqa: E402
from privacy.redaction import SOLID_VALUE, scale_boxes  # noqa: E402
from privacy.schedule import DetectionSchedule  # noqa: E402
from schemas.detections import PLATE  # noqa: E402

RESULTS = os.path.join(HERE, "results", "classes.json")
VIDEO = os.path.join(MEDIA, "videos", "arcade_1080p.mp4")
COVERED = 0.8
TARGET = 1.3  # default classes within this factor of faces only (issue 14)

FACES_ONLY = "faces only (--redact faces)"
DEFAULT = "default classes: faces, plates (v4 + v5, keyframes at most 0.6 s apart)"
# name -> the flags after `egoveil redact IN OUT`
CONTENDERS = {
    FACES_ONLY: ["--redact", "faces"],
    DEFAULT: [],
    "plates every 8th frame (the default before 0.6 s)": ["--plate-schedule", "8"],
    "plates every 12th frame": ["--plate-schedule", "12"],
    "plates every 16th frame": ["--plate-schedule", "16"],
    "plates every 4th frame": ["--plate-schedule", "4"],
    "plates on every frame": ["--plate-schedule", "1"],
    "plates v4 at 0.75 scale + v5": ["--plate-detector",
                                     "ppocr-plates:model=v4;scale=0.75+ppocr-plates:model=v5"],
    "plates v4 at 0.875 scale + v5": ["--plate-detector",
                                      "ppocr-plates:model=v4;scale=0.875+ppocr-plates:model=v5"],
    "plates v4 only, every 8th": ["--plate-detector", "ppocr-plates:model=v4"],
    "plates v5 only, every 8th": ["--plate-detector", "ppocr-plates:model=v5"],
    "plates v4 + v5 at scale 0.75, every 8th": [
        "--plate-detector", "ppocr-plates:model=v4;scale=0.75+ppocr-plates:model=v5;scale=0.75"],
    "faces, plates, text (default schedules)": ["--redact", "faces,plates,text"],
    # Every call the default makes, on inputs a tenth of the frame's side: what the plate
    # class costs outside its networks' work (loading, compiling, motion, the window).
    "plates with both networks at 0.1 scale (the class without its networks' work)": [
        "--plate-detector", "ppocr-plates:model=v4;scale=0.1+ppocr-plates:model=v5;scale=0.1"],
}
_V45 = default_policy(PLATE).detector
PLATE_SETTINGS = {  # --coverage: name -> (detector spec, schedule (frames, or "Ns" for a gap
    # in seconds), temporal window, boxes carried along the measured motion)
    "v4 + v5, every frame, window 0 (detection alone)": (_V45, 1, 0, False),
    "v4 + v5, every frame, window 2": (_V45, 1, 2, False),
    "v4 + v5, every 4th, window 2": (_V45, 4, 2, False),
    "v4 + v5, every 8th, window 2": (_V45, 8, 2, False),
    "v4 + v5, every 2nd, window 1": (_V45, 2, 1, False),
    "v4 + v5, every 4th, window 1": (_V45, 4, 1, False),
    "v4 + v5, every 8th, window 1": (_V45, 8, 1, False),
    "v4 + v5, every 4th, window 1, following motion": (_V45, 4, 1, True),
    "v4 + v5, every 8th, window 1, following motion": (_V45, 8, 1, True),
    "v4 + v5, at most 0.5 s apart (every 5th), window 1, following motion":
        (_V45, "0.5s", 1, True),
    "v4 + v5, at most 0.6 s apart (every 6th), window 1, following motion (default)":
        (_V45, "0.6s", 1, True),
    "v4 + v5, at most 0.7 s apart (every 7th), window 1, following motion":
        (_V45, "0.7s", 1, True),
    "v4 + v5, every 12th, window 1, following motion": (_V45, 12, 1, True),
    "v4 + v5, every 16th, window 1, following motion": (_V45, 16, 1, True),
    "v4 only, every 8th, window 1, following motion": ("ppocr-plates:model=v4", 8, 1, True),
    "v5 only, every 8th, window 1, following motion": ("ppocr-plates:model=v5", 8, 1, True),
}


def timed(cmd: list[str], cwd: str = ROOT) -> dict:
    """Wall, CPU (user + system of the process tree) and peak RSS of one command."""
    started = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%U %S %M", *cmd], capture_output=True,
                          text=True, cwd=cwd)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    user, system, rss = re.findall(r"^([\d.]+) ([\d.]+) (\d+)$", proc.stderr, re.M)[-1]
    return {"wall": wall, "cpu": float(user) + float(system), "rss_mb": int(rss) / 1024,
            "stderr": proc.stderr}


def _frames(path: str) -> list[np.ndarray]:
    import av

    with av.open(path) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def painted_share(source: list[np.ndarray], output: list[np.ndarray]) -> float:
    """Mean share of each output frame turned to the solid fill (within 3 levels, every
    channel, after encoding) where the input was not already that grey."""
    shares = []
    for src, out in zip(source, output):
        grey_out = (np.abs(out.astype(np.int16) - SOLID_VALUE) <= 3).all(axis=-1)
        grey_in = (np.abs(src.astype(np.int16) - SOLID_VALUE) <= 3).all(axis=-1)
        shares.append(float((grey_out & ~grey_in).mean()))
    return float(np.mean(shares))


def speed(repeat: int, only: list[str] | None = None, before: str | None = None) -> dict:
    """Each contender (those whose name contains one of ``only``), plus the default
    classes of the checkout ``before``, in alternation."""
    frames = frame_count(VIDEO)
    source = _frames(VIDEO)
    work = tempfile.mkdtemp(prefix="egoveil-classes-")
    egoveil = [sys.executable, "-m", "pipeline.cli", "redact"]
    contenders = {name: (flags, ROOT) for name, flags in CONTENDERS.items()
                  if name == FACES_ONLY or not only or any(o in name for o in only)}
    if before:
        contenders[f"default classes, checkout before ({os.path.basename(before)})"] = \
            ([], os.path.abspath(before))
    runs: dict[str, list[dict]] = {name: [] for name in contenders}
    for i in range(repeat):
        for n, (name, (flags, cwd)) in enumerate(contenders.items()):
            out = f"{work}/{n}-{i}.mp4"
            run = timed([*egoveil, VIDEO, out, *flags], cwd)
            run["reredacted"] = "stronger second pass" in run.pop("stderr", "")
            if i == 0:  # the output is the same every round
                run["painted_share"] = painted_share(source, _frames(out))
            os.unlink(out)
            runs[name].append(run)
            print(name, json.dumps(run), flush=True)
    results = {}
    for name, items in runs.items():
        wall = statistics.median(r["wall"] for r in items)
        cpu = statistics.median(r["cpu"] for r in items)
        flags, cwd = contenders[name]
        results[name] = {"flags": " ".join(flags) or "(defaults)",
                         "median_wall_s": round(wall, 2), "median_cpu_s": round(cpu, 2),
                         "walls_s": [round(r["wall"], 2) for r in items],
                         "peak_rss_mb": round(max(r["rss_mb"] for r in items)),
                         "frames_per_s": round(frames / wall, 2),
                         "reredacted": any(r["reredacted"] for r in items),
                         "painted_share": round(items[0]["painted_share"], 4)}
    base = results[FACES_ONLY]
    for r in results.values():
        r["wall_vs_faces_only"] = round(r["median_wall_s"] / base["median_wall_s"], 2)
        r["cpu_vs_faces_only"] = round(r["median_cpu_s"] / base["median_cpu_s"], 2)
        r["within_target"] = r["wall_vs_faces_only"] <= TARGET
    return {"video": os.path.relpath(VIDEO, ROOT), "frames": frames, "repeat": repeat,
            "load_average_at_end": os.getloadavg(), "results": results}


class _Cached(Detector):
    """A detector whose results are kept by frame content (the schedules share frames)."""

    def __init__(self, inner: Detector) -> None:
        self.inner = inner
        self.detection_class = inner.detection_class
        self.name = inner.name
        self.memo: dict[str, Detections] = {}

    def _detect(self, frame: np.ndarray) -> Detections:
        key = hashlib.sha256(frame.tobytes()).hexdigest()
        if key not in self.memo:
            self.memo[key] = self.inner.detect(frame)
        return self.memo[key]


def coverage() -> dict:
    from privacy.anonymizer import ClassDetector, FrameIn, SegmentAnonymizer

    truth = json.load(open(GT_FILE))
    frames = aria_frames()
    policy = default_policy(PLATE)
    detectors: dict[str, _Cached] = {}
    out = {}
    for name, (spec, every, window, motion) in PLATE_SETTINGS.items():
        detector = detectors.setdefault(spec, _Cached(build_detector(spec)))
        schedule = DetectionSchedule.parse(str(every))
        gap = aria_gap(schedule)
        # Where the keyframes fall decides what a sparse schedule sees: the clip is also
        # started 1 to gap-1 frames later, and the figures are over every such phase.
        phases = []
        for phase in range(gap):
            anonymizer = SegmentAnonymizer([ClassDetector(
                detector, policy.redaction, window, None, schedule, follow_motion=motion)],
                detect_timeout_s=None)
            covered, per_frame, detected, painted = [], [], 0, []
            clip = [(i, f) for i, f in enumerate(frames) if i >= phase]
            for (index, _), frame_out in zip(clip, anonymizer.process(
                    FrameIn(i / ARIA_FPS, f.copy()) for i, f in clip)):
                height, width = frame_out.image.shape[:2]
                detected += PLATE in frame_out.ran
                mask = np.zeros((height, width), bool)
                for x1, y1, x2, y2 in scale_boxes(frame_out.boxes[PLATE],
                                                  policy.redaction.mask_scale, width, height):
                    mask[y1:y2, x1:x2] = True
                painted.append(float(mask.mean()))
                labels = [lab for lab in truth["labels"].get(str(index), []) if lab["readable"]]
                if not labels:
                    continue
                gt = np.asarray([lab["box"] for lab in labels], np.float32).reshape(-1, 4)
                hits = covered_shares(gt, mask) >= COVERED
                covered += list(hits)
                per_frame.append(bool(hits.all()))
            anonymizer.close()
            phases.append({"start": phase, "covered": float(np.mean(covered)),
                           "plate_frames": len(covered), "frames_all_covered": sum(per_frame),
                           "frames": len(per_frame), "detected": detected,
                           "length": len(clip), "painted": float(np.mean(painted))})
        first = phases[0]
        out[name] = {"spec": spec, "every": gap, "schedule": schedule.text(),
                     "temporal_window": window, "follow_motion": motion,
                     "seconds_between_keyframes_at_10fps": gap / ARIA_FPS,
                     "frames_detected": f"{first['detected']}/{first['length']}",
                     "readable_plates_covered": round(first["covered"], 4),
                     "readable_plate_frames": first["plate_frames"],
                     "frames_with_every_readable_plate_covered":
                         f"{first['frames_all_covered']}/{first['frames']}",
                     "painted_share": round(first["painted"], 4),
                     "phases": len(phases),
                     "readable_covered_mean_over_phases": round(float(np.mean(
                         [p["covered"] for p in phases])), 4),
                     "readable_covered_worst_phase": round(min(p["covered"] for p in phases),
                                                           4),
                     # The "in every frame": the frames where a readable plate was
                     # left uncovered, over every phase.
                     "frames_with_a_plate_uncovered_over_phases": sum(
                         p["frames"] - p["frames_all_covered"] for p in phases),
                     "frames_with_plates_over_phases": sum(p["frames"] for p in phases),
                     "painted_share_mean_over_phases": round(float(np.mean(
                         [p["painted"] for p in phases])), 4)}
        print(name, json.dumps(out[name]), flush=True)
    return {"video": "aria_parking_plates.mp4 (2560x1920, 10 fps, 24 frames)", "results": out}


def verification(step: int = 4) -> dict:
    from privacy.anonymization import build_anonymizer
    from privacy.anonymizer import FrameIn
    from privacy.config import AnonymizationConfig
    from privacy.coverage import face_size
    from privacy.verification import COVERED as CHECK_COVERED
    from privacy.verification import MIN_REGION_PX, painted_shares

    config = AnonymizationConfig()
    plate = build_detector(config.other_classes[0].detector)
    raw = _frames(VIDEO)
    anonymizer = build_anonymizer(config)
    rerun = {"frames_checked": 0, "frames_with_a_region": 0, "keyframes_with_a_region": 0,
             "regions": 0}
    check = {"frames_checked": 0, "keyframes_checked": 0, "frames_failing": 0,
             "keyframes_failing": 0, "regions_checked": 0, "regions_uncovered": 0}
    for i, out in enumerate(anonymizer.process(FrameIn(j / 25, f.copy())
                                               for j, f in enumerate(raw))):
        if i % step:
            continue
        key = PLATE in out.ran
        found = plate.detect(out.image).boxes
        rerun["frames_checked"] += 1
        rerun["regions"] += len(found)
        rerun["frames_with_a_region"] += bool(len(found))
        rerun["keyframes_with_a_region"] += bool(len(found)) and key
        height, width = out.image.shape[:2]
        original = plate.detect(raw[i]).boxes
        original = original[face_size(original) >= MIN_REGION_PX]
        painted = scale_boxes(out.boxes[PLATE], config.other_classes[0].redaction.mask_scale,
                              width, height)
        uncovered = int((painted_shares(original, painted, (height, width))
                         < CHECK_COVERED).sum())
        check["frames_checked"] += 1
        check["keyframes_checked"] += key
        check["regions_checked"] += len(original)
        check["regions_uncovered"] += uncovered
        check["frames_failing"] += bool(uncovered)
        check["keyframes_failing"] += bool(uncovered) and key
    anonymizer.close()
    return {"video": os.path.relpath(VIDEO, ROOT), "every_nth_frame": step,
            "rerun_on_redacted": rerun, "check_on_original": check}


def pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def markdown(payload: dict) -> str:
    lines = []
    speed_run = payload.get("speed")
    if speed_run:
        lines += ["| setting | flags | wall (median) | vs faces only | CPU (median) | vs faces "
                  "only | painted area | second pass | peak RSS |", "|" + " --- |" * 9]
        for name, r in speed_run["results"].items():
            lines.append(f"| {name} | `{r['flags']}` | {r['median_wall_s']} s | "
                         f"**{r['wall_vs_faces_only']}x** | {r['median_cpu_s']} s | "
                         f"{r['cpu_vs_faces_only']}x | {pct(r['painted_share'])} | "
                         f"{'yes' if r['reredacted'] else 'no'} | {r['peak_rss_mb']} MB |")
        lines.append("")
    cov = payload.get("coverage")
    if cov:
        lines += ["| plate setting | detected frames | Aria readable covered | frames with "
                  "every readable plate covered | frame painted by plate masks | over every "
                  "keyframe phase: covered, mean / worst | frames with a plate uncovered, "
                  "every phase | painted, mean |",
                  "|" + " --- |" * 8]
        for name, r in cov["results"].items():
            lines.append(f"| {name} ({r['seconds_between_keyframes_at_10fps']:g} s) | "
                         f"{r['frames_detected']} | {pct(r['readable_plates_covered'])} "
                         f"({r['readable_plate_frames']} plate-frames) | "
                         f"{r['frames_with_every_readable_plate_covered']} | "
                         f"{pct(r['painted_share'])} | "
                         f"{pct(r['readable_covered_mean_over_phases'])} / "
                         f"{pct(r['readable_covered_worst_phase'])} ({r['phases']} phases) | "
                         f"{r.get('frames_with_a_plate_uncovered_over_phases', '?')} of "
                         f"{r.get('frames_with_plates_over_phases', '?')} | "
                         f"{pct(r['painted_share_mean_over_phases'])} |")
        lines.append("")
    ver = payload.get("verification")
    if ver:
        a, b = ver["rerun_on_redacted"], ver["check_on_original"]
        lines += ["| check, on every 4th frame of arcade_1080p.mp4 | frames that would fail | "
                  "of them keyframes | regions |", "|" + " --- |" * 4,
                  f"| plate detector re-run on the redacted frame, any region | "
                  f"{a['frames_with_a_region']}/{a['frames_checked']} | "
                  f"{a['keyframes_with_a_region']} | {a['regions']} found |",
                  f"| regions >= 20 px on the original with < 80% painted, every frame | "
                  f"{b['frames_failing']}/{b['frames_checked']} | {b['keyframes_failing']} | "
                  f"{b['regions_uncovered']} of {b['regions_checked']} uncovered |",
                  f"| egoveil's rule: the same, failing on keyframes only | "
                  f"{b['keyframes_failing']}/{b.get('keyframes_checked', '?')} keyframes | "
                  f"{b['keyframes_failing']} | {b['regions_uncovered']} counted between "
                  f"keyframes |", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--speed", action="store_true")
    parser.add_argument("--coverage", action="store_true")
    parser.add_argument("--verification", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", help="--speed: the contenders whose names contain one of "
                        "these comma-separated words (faces only is always run)")
    parser.add_argument("--before", metavar="DIR", help="--speed: also the default classes "
                        "of this checkout (e.g. a git worktree of the commit before a change)")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--results", default=RESULTS, metavar="JSON",
                        help="the results file read and merged into (default: %(default)s)")
    args = parser.parse_args()
    payload = json.load(open(args.results)) if os.path.exists(args.results) else {}
    if args.markdown:
        print(markdown(payload))
        return
    stamp = {"machine": MACHINE,
             "date": time.strftime("%Y-%m-%d")}
    if args.speed:
        payload["speed"] = {**stamp, "command": "flock /work/tools/bench.lock python "
                            f"bench/classes.py --speed --repeat {args.repeat}"
                            + (f" --only {shlex.quote(args.only)}" if args.only else "")
                            + (" --before DIR" if args.before else "")
                            + (f" --results {os.path.relpath(args.results, ROOT)}"
                               if args.results != RESULTS else ""),
                            **speed(args.repeat, args.only.split(",") if args.only else None,
                                    args.before)}
    if args.coverage:
        payload["coverage"] = {**stamp, "command": "python bench/classes.py --coverage",
                               **coverage()}
    if args.verification:
        payload["verification"] = {**stamp, "command": "python bench/classes.py "
                                   "--verification", **verification()}
    with open(args.results, "w") as handle:
        json.dump(payload, handle, indent=1)
    print(markdown(payload))


if __name__ == "__main__":
    main()
