"""Frames per second of egoveil redact against deface on the same video, in one run.

Runs each command as a fresh process, alternating the tools, several times, and
reports medians of the wall time and of the CPU time (user + system, all threads
and child processes, from /usr/bin/time). On a shared machine the CPU time is the
steadier measure; the ratio between tools is what to compare.

Usage: python bench/speed.py [VIDEO] [--repeat 3]. Results: bench/results/speed.json.
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
DEFAULT_VIDEO = os.path.join(ROOT, "..", "shared", "media", "videos", "arcade_1080p.mp4")


def timed(cmd: list[str]) -> dict:
    started = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%U %S %M", *cmd], capture_output=True,
                          text=True, cwd=ROOT)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    user, system, rss = re.findall(r"^([\d.]+) ([\d.]+) (\d+)$", proc.stderr, re.M)[-1]
    return {"wall": wall, "cpu": float(user) + float(system), "rss_mb": int(rss) / 1024}


def frame_count(video: str) -> int:
    import av

    with av.open(video) as container:
        return sum(1 for _ in container.decode(video=0))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("video", nargs="?", default=DEFAULT_VIDEO)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    video = os.path.abspath(args.video)
    frames = frame_count(video)
    work = tempfile.mkdtemp(prefix="egoveil-speed-")
    deface = os.path.join(os.path.dirname(sys.executable), "deface")
    tools = {
        "egoveil redact (default: CenterFace 0.1, temporal, verification)":
            [sys.executable, "-m", "pipeline.cli", "redact", video],
        "egoveil redact --verifier none":
            [sys.executable, "-m", "pipeline.cli", "redact", video, "--verifier", "none"],
        "deface 1.5.0 (defaults)": [deface, video, "-o"],
    }
    runs: dict = {name: [] for name in tools}
    for i in range(args.repeat):
        for n, (name, cmd) in enumerate(tools.items()):
            runs[name].append(timed([*cmd, f"{work}/{n}-{i}.mp4"]))
            print(name, runs[name][-1], flush=True)
    results = {}
    for name, items in runs.items():
        wall = statistics.median(r["wall"] for r in items)
        cpu = statistics.median(r["cpu"] for r in items)
        results[name] = {"walls_s": [round(r["wall"], 1) for r in items],
                         "median_wall_s": round(wall, 1), "median_cpu_s": round(cpu, 1),
                         "frames_per_s_wall": round(frames / wall, 2),
                         "frames_per_cpu_s": round(frames / cpu, 2),
                         "peak_rss_mb": round(max(r["rss_mb"] for r in items))}
    base = results["deface 1.5.0 (defaults)"]
    for r in results.values():
        r["speed_vs_deface_wall"] = round(base["median_wall_s"] / r["median_wall_s"], 2)
        r["speed_vs_deface_cpu"] = round(base["median_cpu_s"] / r["median_cpu_s"], 2)
    record = {"command": "python bench/speed.py", "date": time.strftime("%Y-%m-%d"),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, shared",
              "video": os.path.relpath(video, ROOT), "frames": frames, "repeat": args.repeat,
              "load_average_at_end": os.getloadavg(), "results": results}
    with open(os.path.join(HERE, "results", "speed.json"), "w") as handle:
        json.dump(record, handle, indent=2)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
