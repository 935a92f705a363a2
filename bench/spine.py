"""Wall time, frames per second and peak memory of `egoveil run` and `egoveil redact`.

Runs each command as a fresh process under /usr/bin/time (peak RSS of the whole
process tree is the maximum over the DirectRunner's single process), several
times, and reports medians. Usage:

    python bench/spine.py [VIDEO] [--repeat 3]

Results go to bench/results/spine.json and are summarized in bench/results/spine.md.
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
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True,
                          cwd=ROOT)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    cpu = sum(float(re.search(rf"{kind} time \(seconds\): ([\d.]+)", proc.stderr).group(1))
              for kind in ("User", "System"))
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": rss_kb / 1024, "stderr": proc.stderr}


def frames_in(video: str) -> int:
    import av

    with av.open(video) as container:
        return sum(1 for _ in container.decode(video=0))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("video", nargs="?", default=DEFAULT_VIDEO)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    video = os.path.abspath(args.video)
    work = tempfile.mkdtemp(prefix="egoveil-bench-")
    egoveil = [sys.executable, "-m", "pipeline.cli"]
    subprocess.run([*egoveil, "make-encoder", f"{work}/enc", "--preset", "vjepa2-tiny"],
                   check=True, capture_output=True, cwd=ROOT)
    subprocess.run([*egoveil, "keygen", f"{work}/key"], check=True, capture_output=True, cwd=ROOT)
    total = frames_in(video)
    cases = {
        "run (frame stride 2, no clips)": [*egoveil, "run", "--input", video, "--encoder",
                                           f"{work}/enc", "--key-file", f"{work}/key",
                                           "--no-progress", "--output"],
        "run --clips (every frame redacted and written)": [
            *egoveil, "run", "--input", video, "--encoder", f"{work}/enc", "--key-file",
            f"{work}/key", "--no-progress", "--clips", "--output"],
        "redact (every frame)": [*egoveil, "redact", video],
    }
    results = {}
    for name, cmd in cases.items():
        runs = []
        for i in range(args.repeat):
            out = f"{work}/out-{len(results)}-{i}" + (".mp4" if "redact" in name else "")
            runs.append(timed([*cmd, out]))
        frames = total
        if "stride 2" in name:
            text = runs[0]["stderr"]
            frames = int(re.search(r"segments anonymized, (\d+) frames", text).group(1))
        wall = statistics.median(r["wall_s"] for r in runs)
        results[name] = {
            "walls_s": [round(r["wall_s"], 2) for r in runs],
            "median_wall_s": round(wall, 2),
            "median_cpu_s": round(statistics.median(r["cpu_s"] for r in runs), 2),
            "frames_redacted": frames,
            "frames_decoded": total,
            "redacted_frames_per_s": round(frames / wall, 2),
            "decoded_frames_per_s": round(total / wall, 2),
            "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs), 1),
        }
        print(name, results[name], flush=True)
    record = {"machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
                         "no GPU",
              "video": os.path.relpath(video, ROOT), "repeat": args.repeat,
              "encoder": "random V-JEPA 2 tiny (egoveil make-encoder)", "detector": "centerface",
              "command": "python bench/spine.py", "results": results,
              "load_average_at_end": os.getloadavg(),
              "date": time.strftime("%Y-%m-%d")}
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "spine.json"), "w") as handle:
        json.dump(record, handle, indent=2)


if __name__ == "__main__":
    main()
