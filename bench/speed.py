"""Frames per second of `egoveil redact` against deface on the same video, in one run.

Runs each command as a fresh process, alternating the contenders, several times, and
reports medians of the wall time and of the CPU time (user + system, all threads and
child processes, from /usr/bin/time) and their ratios to deface at its faster backend
(OpenCV DNN or onnxruntime, whichever has the lower median wall time in this run). On
a shared machine the ratios measured in one alternating run are what to compare.

Contenders: egoveil's defaults with faces only (``--redact faces``: deface redacts faces
only; bench/classes.py measures plates and text); egoveil with every face keyframe at full
resolution (``--face-schedule 4:8``: no coarse keyframes); egoveil
with the face detector on every frame (the detection schedule off, same runtime);
egoveil as it was before issue 16 (OpenCV DNN, every frame, x264 veryfast; measured
from a checkout of that commit with ``--before DIR``); deface 1.5.0 on onnxruntime and
on OpenCV DNN. The single-image start-up cost is timed the same way on
../shared/media/images/two_faces.jpg. Coverage figures (WIDER dev, bench/wider.py;
leaks and per-frame recall, bench/videos.py) are copied beside the speed from their
committed results, so one file says what each speed costs in privacy.

Usage: python bench/speed.py [VIDEO] [--repeat 3] [--before DIR].
Results: bench/results/speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MEDIA = os.path.join(ROOT, "..", "shared", "media")
DEFAULT_VIDEO = os.path.join(MEDIA, "videos", "arcade_1080p.mp4")
IMAGE = os.path.join(MEDIA, "images", "two_faces.jpg")
DEFACE_ORT = "deface 1.5.0, onnxruntime (--backend onnxrt)"
DEFACE_CV = "deface 1.5.0, OpenCV DNN (--backend opencv)"


def timed(cmd: list[str], cwd: str = ROOT) -> dict:
    started = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%U %S %M", *cmd], capture_output=True,
                          text=True, cwd=cwd)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    user, system, rss = re.findall(r"^([\d.]+) ([\d.]+) (\d+)$", proc.stderr, re.M)[-1]
    return {"wall": wall, "cpu": float(user) + float(system), "rss_mb": int(rss) / 1024}


def frame_count(video: str) -> int:
    import av

    with av.open(video) as container:
        return sum(1 for _ in container.decode(video=0))


def summary(items: list[dict], frames: int) -> dict:
    wall = statistics.median(r["wall"] for r in items)
    cpu = statistics.median(r["cpu"] for r in items)
    return {"walls_s": [round(r["wall"], 1) for r in items],
            "cpus_s": [round(r["cpu"], 1) for r in items],
            "median_wall_s": round(wall, 2), "median_cpu_s": round(cpu, 2),
            "frames_per_s_wall": round(frames / wall, 2),
            "frames_per_cpu_s": round(frames / cpu, 3),
            "peak_rss_mb": round(max(r["rss_mb"] for r in items))}


def privacy_figures() -> dict:
    """WIDER coverage and video leaks/recall from the committed results, for the record."""
    out: dict = {}
    results = os.path.join(HERE, "results")
    try:
        with open(os.path.join(results, "wider.json")) as handle:
            wider = json.load(handle)["results"]
        out["wider_dev"] = {name: {k: entry[k] for k in ("spec", "coverage_20px_plus",
                                                           "coverage_10_20px")}
                            for name, entry in wider.items()
                            if name.startswith(("egoveil", "deface"))}
    except (OSError, KeyError, ValueError):
        pass
    try:
        with open(os.path.join(results, "videos.json")) as handle:
            videos = json.load(handle)["results"]
        out["videos"] = {
            name: {"leaked_reference_faces": {t: r["tools"][t]["leaked_reference_faces"]
                                              for t in r["tools"]},
                   "per_frame_recall": {label: {ref: v["per_frame_recall"]
                                                for ref, v in by_ref.items()
                                                if isinstance(v, dict)}
                                        for label, by_ref in r["temporal"].items()}}
            for name, r in videos.items()}
    except (OSError, KeyError, ValueError):
        pass
    return out


STARTUP = r"""
import json, sys, time
t0 = time.perf_counter()
import pipeline.cli, pipeline.redact, privacy.anonymization  # noqa: E401
t1 = time.perf_counter()
import cv2
from privacy.config import AnonymizationConfig
from privacy.detectors import build_detector
from privacy.verification import RedactionVerifier
config = AnonymizationConfig()
detector = build_detector(config.detector)
t2 = time.perf_counter()
image = cv2.imread(sys.argv[1])[:, :, ::-1].copy()
detector.detect(image)
t3 = time.perf_counter()
detector.detect(image)
t4 = time.perf_counter()
verifier = RedactionVerifier(config.verification)
verifier.wait()
t5 = time.perf_counter()
print(json.dumps({"imports_s": t1 - t0, "detector_build_s": t2 - t1,
                  "first_detection_s (includes compiling for the shape)": t3 - t2,
                  "second_detection_s": t4 - t3, "verifier_models_load_s": t5 - t4}))
"""


def startup_breakdown(repeat: int) -> dict:
    """Where a single image's start-up goes, one fresh process per repeat, medians."""
    runs = []
    for _ in range(repeat):
        proc = subprocess.run([sys.executable, "-c", STARTUP, IMAGE], capture_output=True,
                              text=True, cwd=ROOT, check=True)
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {k: round(statistics.median(r[k] for r in runs), 2) for k in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("video", nargs="?", default=DEFAULT_VIDEO)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--before", default=None,
                        help="a checkout of the commit before issue 16, timed as a contender")
    args = parser.parse_args()
    video = os.path.abspath(args.video)
    frames = frame_count(video)
    work = tempfile.mkdtemp(prefix="egoveil-speed-")
    deface = os.path.join(os.path.dirname(sys.executable), "deface")
    egoveil = [sys.executable, "-m", "pipeline.cli", "redact"]
    faces = [*egoveil, "--redact", "faces"]  # what deface does
    tools: dict[str, tuple[list[str], str]] = {
        "egoveil redact (defaults)": (faces, ROOT),
        "egoveil redact --face-schedule 4:8 (every keyframe at full resolution)":
            ([*faces, "--face-schedule", "4:8"], ROOT),
        "egoveil redact --face-schedule 1 (face detector on every frame)":
            ([*faces, "--face-schedule", "1"], ROOT),
        DEFACE_ORT: ([deface, "--backend", "onnxrt"], ROOT),
        DEFACE_CV: ([deface, "--backend", "opencv"], ROOT),
    }
    if args.before:
        tools["egoveil redact before issue 16 (OpenCV DNN, every frame)"] = (
            egoveil, os.path.abspath(args.before))
    inputs = {"video": (video, ".mp4", frames), "image": (IMAGE, ".jpg", 1)}
    runs: dict = {kind: {name: [] for name in tools} for kind in inputs}
    for i in range(args.repeat):
        for kind, (src, ext, _) in inputs.items():
            for n, (name, (cmd, cwd)) in enumerate(tools.items()):
                out = f"{work}/{kind}-{n}-{i}{ext}"
                tail = ["-o", out] if cmd[0] == deface else [out]
                runs[kind][name].append(timed([*cmd, src, *tail], cwd))
                print(kind, name, runs[kind][name][-1], flush=True)
    results: dict = {}
    for kind, (_, _, count) in inputs.items():
        results[kind] = {name: summary(items, count) for name, items in runs[kind].items()}
        peer = min((DEFACE_ORT, DEFACE_CV), key=lambda n: results[kind][n]["median_wall_s"])
        base = results[kind][peer]
        for r in results[kind].values():
            r["speed_vs_deface_wall"] = round(base["median_wall_s"] / r["median_wall_s"], 2)
            r["speed_vs_deface_cpu"] = round(base["median_cpu_s"] / r["median_cpu_s"], 2)
        results[kind]["deface_faster_backend"] = peer
    results["image_startup_breakdown"] = startup_breakdown(args.repeat)
    record = {"command": "flock /work/tools/bench.lock python bench/speed.py"
                         + (" --before DIR" if args.before else ""),
              "date": time.strftime("%Y-%m-%d"),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, shared",
              "video": os.path.relpath(video, ROOT), "frames": frames,
              "image": os.path.relpath(IMAGE, ROOT), "repeat": args.repeat,
              "load_average_at_end": os.getloadavg(), "results": results,
              "privacy": privacy_figures()}
    with open(os.path.join(HERE, "results", "speed.json"), "w") as handle:
        json.dump(record, handle, indent=2)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
