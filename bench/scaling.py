"""Frames per second of ``egoveil run`` with 1 and 2 DirectRunner worker processes.

Same input, same config, DirectRunner in multi-processing mode with
``--direct_num_workers`` 1 then 2, alternating, each run a fresh ``egoveil run``
process into a fresh output. Several recordings go in, so that the segments (the
unit of parallel work) give two workers something to share.

Frames per second = redacted frames (the run's ``segment_anonymized`` events, read
back with ``pipeline.runner.summarize``) / wall time. Two walls are kept: the run's
own (from building the graph to the published manifest, what ``egoveil run``
prints) and the whole command's (interpreter start and imports included). CPU time
(user + system of the command and the worker processes it waited for) comes from
/usr/bin/time. Medians over the repeats.

Usage: python bench/scaling.py [--repeat 3] [--workers 1 2] [VIDEO ...]
Results: bench/results/scaling.json and bench/results/scaling.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
MEDIA = os.path.join(ROOT, "..", "shared", "media", "videos")
# Three real recordings, 6 segments of the default 4 s: 1080p people walking (2
# segments), a 2560x1920 Project Aria fisheye frame (1) and 360p of a stage (3).
DEFAULT_VIDEOS = ("arcade_1080p.mp4", "aria_parking_plates.mp4", "stage_360p.mp4")


def run_once(videos: list[str], workers: int, work: str, key: str, encoder: str) -> dict:
    from pipeline.runner import summarize

    out = tempfile.mkdtemp(prefix=f"w{workers}-", dir=work)
    cmd = [sys.executable, "-m", "pipeline.cli", "run", "--input", *videos, "--output", out,
           "--key-file", key, "--encoder", encoder, "--no-progress",
           "--direct_running_mode", "multi_processing", "--direct_num_workers", str(workers)]
    load = os.getloadavg()[0]
    started = time.perf_counter()
    # faulthandler: if the process dies on a signal, its Python threads' stacks are printed.
    proc = subprocess.run(["/usr/bin/time", "-f", "%U %S %M", *cmd], capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    command_wall = time.perf_counter() - started
    # An abort after the run published (seen here: "terminate called without an active
    # exception" at interpreter exit) leaves valid figures; it is counted and reported,
    # its stderr kept. Any other failure stops the benchmark.
    published = os.path.exists(os.path.join(out, "_SUCCESS")) and "egoveil: wall" in proc.stderr
    aborted_at_exit = proc.returncode != 0 and published
    if aborted_at_exit:
        with open(os.path.join(HERE, "results", f"scaling-abort-{time.time():.0f}.log"),
                  "w") as handle:
            handle.write(proc.stderr)
    elif proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    user, system, _ = re.findall(r"^([\d.]+) ([\d.]+) (\d+)$", proc.stderr, re.M)[-1]
    run_wall = float(re.search(r"egoveil: wall ([\d.]+) s", proc.stderr).group(1))
    summary = summarize(out, run_wall)
    shutil.rmtree(out)
    return {"workers": workers, "frames": summary.frames, "segments": summary.segments,
            "run_wall_s": run_wall, "command_wall_s": round(command_wall, 1),
            "cpu_s": round(float(user) + float(system), 1), "load_1min_at_start": load,
            "exit_status": proc.returncode, "aborted_after_publishing": aborted_at_exit}


def median_of(items: list[dict], key: str) -> float:
    return statistics.median(item[key] for item in items)


def summarize_runs(runs: list[dict]) -> dict:
    frames = runs[0]["frames"]
    assert all(r["frames"] == frames for r in runs), "runs redacted different frame counts"
    run_wall, command_wall = median_of(runs, "run_wall_s"), median_of(runs, "command_wall_s")
    return {"runs": len(runs), "frames": frames, "segments": runs[0]["segments"],
            "run_walls_s": [r["run_wall_s"] for r in runs],
            "median_run_wall_s": run_wall, "median_command_wall_s": command_wall,
            "median_cpu_s": median_of(runs, "cpu_s"),
            "aborted_after_publishing": sum(r["aborted_after_publishing"] for r in runs),
            "frames_per_s_run_wall": round(frames / run_wall, 2),
            "frames_per_s_command_wall": round(frames / command_wall, 2)}


def write_markdown(record: dict, path: str) -> None:
    res = record["results"]
    lines = [
        "# Scaling: `egoveil run` with 1 and 2 DirectRunner worker processes",
        "",
        f"Machine: {record['machine']}. Date: {record['date']}. Command: `{record['command']}` "
        f"({record['repeat']} runs per setting, alternating, fresh process and output per run, "
        "medians).",
        "",
        f"Input: {', '.join(record['videos'])}"
        f"{' from `../shared/media/videos` (see its SOURCES.md)' if record['default_input'] else ''} "
        f"({res['1']['segments']} segments of the default 4 s; every 2nd frame redacted and "
        "embedded, the default). Encoder: random-weight V-JEPA 2 tiny (`egoveil make-encoder`). "
        "Runner: `--direct_running_mode multi_processing --direct_num_workers N`.",
        "",
        f"Load average (1 min) at the start: {record['load_average_at_start'][0]:.2f}; at the "
        f"start of each run: {', '.join(f'{x:.2f}' for x in record['load_per_run'])}; at the "
        f"end: {record['load_average_at_end'][0]:.2f}. The machine is shared.",
        "",
        "| workers | frames redacted | run walls (s) | median run wall | frames/s (run wall) "
        "| median command wall | frames/s (command wall) | median CPU s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for workers, r in res.items():
        lines.append(f"| {workers} | {r['frames']} | {', '.join(map(str, r['run_walls_s']))} | "
                     f"{r['median_run_wall_s']} s | {r['frames_per_s_run_wall']} | "
                     f"{r['median_command_wall_s']} s | {r['frames_per_s_command_wall']} | "
                     f"{r['median_cpu_s']} |")
    lines += ["", f"Speed-up of 2 workers over 1: **{record['speedup_run_wall']}x** on the run "
              f"wall, {record['speedup_command_wall']}x on the command wall.", ""]
    # CPU seconds per wall second: how many cores one setting kept busy on average.
    busy = {w: r["median_cpu_s"] / r["median_command_wall_s"] for w, r in res.items()}
    lines += ["Cores busy on average (median CPU s / median command wall): "
              + ", ".join(f"{w} worker{'s' if w != '1' else ''}: {b:.2f}"
                          for w, b in busy.items())
              + f" of {os.cpu_count()}. The 1-minute load average at the start of a run "
              "includes the tail of the previous run's own load.", ""]
    aborts = sum(r["aborted_after_publishing"] for r in res.values())
    if aborts:
        lines += [f"{aborts} of {sum(r['runs'] for r in res.values())} runs published their "
                  "output, printed their figures, then died at interpreter exit with "
                  "`terminate called without an active exception` (SIGABRT); their figures are "
                  "kept, their stderr is in `bench/results/scaling-abort-*.log`.", ""]
    lines += record.get("notes", [])
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("videos", nargs="*")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--media", default=MEDIA,
                        help="folder of the default videos (../shared/media/videos)")
    parser.add_argument("--markdown-only", action="store_true",
                        help="rewrite scaling.md from scaling.json (e.g. after editing notes)")
    args = parser.parse_args()
    if args.markdown_only:
        with open(os.path.join(HERE, "results", "scaling.json")) as handle:
            write_markdown(json.load(handle), os.path.join(HERE, "results", "scaling.md"))
        return
    videos = [os.path.abspath(v) for v in args.videos] or \
        [os.path.abspath(os.path.join(args.media, v)) for v in DEFAULT_VIDEOS]
    missing = [v for v in videos if not os.path.exists(v)]
    if missing:
        raise SystemExit(f"missing input: {missing}")

    from privacy.pseudonyms import PseudonymKey
    from transforms.models.encoders import save_random_encoder

    work = tempfile.mkdtemp(prefix="egoveil-scaling-")
    key = os.path.join(work, "key")
    PseudonymKey.create_file(key)
    encoder = save_random_encoder(os.path.join(work, "encoder"), "vjepa2-tiny")
    load_start = os.getloadavg()
    runs: dict = {str(w): [] for w in args.workers}
    order = []
    for i in range(args.repeat):
        # Alternate the order too, so a slow spell on the shared machine hits both.
        for workers in (args.workers if i % 2 == 0 else list(reversed(args.workers))):
            result = run_once(videos, workers, work, key, encoder)
            runs[str(workers)].append(result)
            order.append(result)
            print(json.dumps(result), flush=True)
    shutil.rmtree(work)
    results = {w: summarize_runs(items) for w, items in runs.items()}
    first, last = results[str(args.workers[0])], results[str(args.workers[-1])]
    record = {
        "command": " ".join(["python bench/scaling.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                   f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 1024**3:.0f} "
                   "GiB, no GPU, shared with another engineer's tests",
        "python": platform.python_version(),
        "videos": [os.path.basename(v) for v in videos], "default_input": not args.videos,
        "repeat": args.repeat,
        "load_average_at_start": load_start, "load_average_at_end": os.getloadavg(),
        "load_per_run": [r["load_1min_at_start"] for r in order],
        "runs_in_order": order, "results": results,
        "speedup_run_wall": round(first["median_run_wall_s"] / last["median_run_wall_s"], 2),
        "speedup_command_wall": round(first["median_command_wall_s"]
                                      / last["median_command_wall_s"], 2),
    }
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "scaling.json"), "w") as handle:
        json.dump(record, handle, indent=2)
    write_markdown(record, os.path.join(HERE, "results", "scaling.md"))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
