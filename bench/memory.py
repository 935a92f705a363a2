"""Peak memory of `egoveil run` against recording duration: 1 minute vs 10 minutes of 1080p.

Makes a 1-minute 1920x1080 30 fps recording with faces (pipeline.samples), and a
10-minute one by remuxing it ten times end to end (same bitstream, timestamps
shifted; no re-encode). Runs `egoveil run` on each as a fresh process under
/usr/bin/time and compares the peak RSS. Every 15th frame goes to detection and
the encoder (``--frame-stride 15``, 2 frames/s) so that the 10-minute run fits in
minutes on a 2-core machine; all 18,000 frames are still decoded. Usage:

    python bench/memory.py [--frame-stride 15] [--minutes 10]

Results: bench/results/memory.json and bench/results/memory.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

import av

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from spine import timed  # noqa: E402 - bench/ is this script's own folder

from pipeline.samples import make_recording  # noqa: E402


def repeat_remux(src: str, dst: str, times: int) -> None:
    """``src``'s video stream ``times`` times in a row, packets copied, timestamps shifted."""
    with av.open(src) as probe:
        stream = probe.streams.video[0]
        packets = [(p.pts, p.dts, p.duration) for p in probe.demux(stream) if p.dts is not None]
    span = max(pts + (dur or 1) for pts, _, dur in packets) - min(p[0] for p in packets)
    with av.open(dst, "w") as out:
        out_stream = None
        for k in range(times):
            with av.open(src) as inp:
                in_stream = inp.streams.video[0]
                if out_stream is None:
                    out_stream = out.add_stream_from_template(in_stream)
                for packet in inp.demux(in_stream):
                    if packet.dts is None:
                        continue
                    packet.pts += k * span
                    packet.dts += k * span
                    packet.stream = out_stream
                    out.mux(packet)


def timed_run(cmd: list[str]) -> dict:
    run = timed(cmd)
    frames = int(re.search(r"segments anonymized, (\d+) frames", run["stderr"]).group(1))
    segments = int(re.search(r"(\d+) segments anonymized", run["stderr"]).group(1))
    return {"wall_s": round(run["wall_s"], 1), "peak_rss_mb": round(run["peak_rss_mb"], 1),
            "frames_redacted": frames, "segments": segments}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frame-stride", type=int, default=15)
    parser.add_argument("--minutes", type=int, default=10)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="egoveil-memory-")
    one = os.path.join(work, "one_minute.mp4")
    long = os.path.join(work, f"{args.minutes}_minutes.mp4")
    started = time.perf_counter()
    make_recording(one, width=1920, height=1080, fps=30, seconds=60.0, audio=False)
    repeat_remux(one, long, args.minutes)
    print(f"recordings made in {time.perf_counter() - started:.0f} s", flush=True)

    egoveil = [sys.executable, "-m", "pipeline.cli"]
    subprocess.run([*egoveil, "make-encoder", f"{work}/enc", "--preset", "vjepa2-tiny"],
                   check=True, capture_output=True, cwd=ROOT)
    subprocess.run([*egoveil, "keygen", f"{work}/key"], check=True, capture_output=True,
                   cwd=ROOT)
    results = {}
    for name, video in (("1 minute", one), (f"{args.minutes} minutes", long)):
        with av.open(video) as container:
            stream = container.streams.video[0]
            duration = float(stream.duration * stream.time_base)
            frames = stream.frames
        load = os.getloadavg()[0]
        run = timed_run([*egoveil, "run", "--input", video, "--output", f"{work}/out-{len(results)}",
                     "--encoder", f"{work}/enc", "--key-file", f"{work}/key", "--frame-stride",
                     str(args.frame_stride), "--no-cache", "--no-progress"])
        results[name] = {"duration_s": round(duration, 1), "frames_in_file": frames,
                         "size_mb": round(os.path.getsize(video) / 1024**2, 1),
                         "load_average_at_start": round(load, 2), **run}
        print(name, results[name], flush=True)
    names = list(results)
    ratio = results[names[1]]["peak_rss_mb"] / results[names[0]]["peak_rss_mb"]
    record = {"machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
                         "no GPU",
              "command": f"python bench/memory.py --frame-stride {args.frame_stride} "
                         f"--minutes {args.minutes}",
              "input": "pipeline.samples.make_recording 1920x1080 30 fps, two faces, moving "
                       "camera; the long one is the 1-minute bitstream repeated",
              "encoder": "random V-JEPA 2 tiny (egoveil make-encoder)",
              "detector": "centerface (default), HOG verifier (default)",
              "results": results, "peak_rss_ratio_long_over_short": round(ratio, 3),
              "within_20_percent": abs(ratio - 1) <= 0.2, "date": time.strftime("%Y-%m-%d")}
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "memory.json"), "w") as handle:
        json.dump(record, handle, indent=2)
    lines = ["# Peak memory against duration (`egoveil run`, 1080p)", "",
             f"Machine: {record['machine']}. Command: `{record['command']}`. "
             f"Date: {record['date']}.", "",
             "| recording | frames | redacted frames | segments | wall s | peak RSS MB | load |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['frames_in_file']} | {r['frames_redacted']} | "
                     f"{r['segments']} | {r['wall_s']} | {r['peak_rss_mb']} | "
                     f"{r['load_average_at_start']} |")
    lines += ["", f"Peak RSS ratio ({names[1]} / {names[0]}): **{ratio:.3f}** "
              f"({'within' if record['within_20_percent'] else 'outside'} 20%)."]
    with open(os.path.join(HERE, "results", "memory.md"), "w") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
