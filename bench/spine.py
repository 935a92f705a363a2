"""CPU-seconds per minute of 1080p30 video for `egoveil run` and `egoveil redact`, by stage.

Two measurements on the same input:

1. whole processes, alternating, medians of ``--repeat`` runs under /usr/bin/time:
   `egoveil run --redact faces` (every 2nd frame to the encoder, no clips; faces only, like
   for like with the code before issue 16, which redacted faces alone), `egoveil run` with
   the default classes (faces and plates), `egoveil run --redact faces --clips` (unless
   ``--no-clips``), `egoveil redact --redact faces`, and with ``--before DIR`` `egoveil run` from a checkout of the code
   before issue 16 (same Python, same machine, same run), and with ``--compare LABEL=DIR``
   from any other checkout (e.g. main before a change); CPU is user + system of the
   whole process tree, per minute of video = CPU * 60 / video seconds;
2. the stages of `egoveil run` replayed in one process on the same frames, each timed by
   the process's CPU clock (all its threads): decode (and RGB conversion of the frames
   the run anonymizes), detect (the detector's calls, on the frames its schedule picks),
   track (temporal propagation), redact (masks), schedule and window (the motion
   thumbnails, the window's bookkeeping and copies),
   verify (the checks a run makes: the first and every 50th anonymized frame of each 4 s
   segment), encode (clips, `--clips` only), embed (the encoder on the clips) and write
   (the latents into Parquet). What the whole process spends beyond their sum is fixed
   cost: imports, Beam's DirectRunner, audit, data contract. Detections are counted at
   full resolution and at the coarse scale (faces' coarse keyframes).

The input is made here, never committed: the frames of arcade_1080p.mp4 played forwards
and backwards (no cut) at 30 fps for ``--seconds`` seconds, 1920x1080 H.264.
Encoder: a randomly initialised V-JEPA 2 "tiny" (`egoveil make-encoder`), so the figures
are the anonymization spine, not a large encoder on a CPU.

Usage: flock /work/tools/bench.lock python bench/spine.py [--seconds 20] [--repeat 3]
[--before DIR] [--compare LABEL=DIR ...] [--no-clips]. Results: bench/results/spine.json (summarised in spine.md).
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
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
SOURCE = os.path.join(ROOT, "..", "shared", "media", "videos", "arcade_1080p.mp4")
FPS = 30
STRIDE = 2  # `egoveil run`'s default --frame-stride
SEGMENT_S = 4.0  # its default --segment-seconds
VERIFY_EVERY = 50  # VerificationConfig.every_n_frames


def make_input(path: str, seconds: float) -> int:
    """arcade_1080p's frames forwards then backwards at 30 fps; returns the frame count."""
    import av

    from transforms.media.video import VideoWriter

    with av.open(SOURCE) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    cycle = frames + frames[-2:0:-1]
    total = int(round(seconds * FPS))
    writer = VideoWriter(path, ".mp4", 1920, 1080, FPS, crf=18, preset="veryfast")
    for i in range(total):
        writer.write(cycle[i % len(cycle)], i / FPS)
    writer.close()
    return total


def timed(cmd: list[str], cwd: str) -> dict:
    started = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True,
                          cwd=cwd)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    cpu = sum(float(re.search(rf"{kind} time \(seconds\): ([\d.]+)", proc.stderr).group(1))
              for kind in ("User", "System"))
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": rss_kb / 1024}


def replay_stages(video: str, encoder_dir: str) -> dict:
    """CPU seconds of each stage of `egoveil run` on ``video``, replayed in this process.

    Runs against whichever checkout is first on ``sys.path`` (this one, or the code
    before issue 16 when started from there).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    import privacy.anonymizer as anonymizer_module
    from privacy.anonymization import build_anonymizer
    from privacy.config import AnonymizationConfig
    from privacy.verification import RedactionVerifier
    from transforms.media.video import VideoWriter, iter_window
    from transforms.models.encoders import resolve_encoder
    from transforms.models.runtime import LoadedEncoder

    clock = time.process_time
    cpu: dict[str, float] = {}

    def add(stage: str, seconds: float) -> None:
        cpu[stage] = cpu.get(stage, 0.0) + seconds

    started = clock()
    decoded, sampled = 0, []
    for frame, _ in iter_window(video):
        if decoded % STRIDE == 0:
            sampled.append((frame.time_s, frame.to_rgb()))
        decoded += 1
    add("decode", clock() - started)

    config = AnonymizationConfig(other_classes=())  # faces: bench/classes.py has the others
    anonymizer = build_anonymizer(config)  # no verifier: checks are timed apart below
    (cls,) = anonymizer.classes
    calls: dict[str, list[int]] = {"full": [], "coarse": []}

    def timed_detector(detector, level: str) -> None:
        inner = detector.detect_batch

        def detect_batch(frames):
            begun = clock()
            try:
                return inner(frames)
            finally:
                add("detect", clock() - begun)
                calls[level].append(len(frames))

        detector.detect_batch = detect_batch

    timed_detector(cls.detector, "full")
    if getattr(cls, "coarse", None) is not None:  # faces' coarse keyframes
        timed_detector(cls.coarse, "coarse")
    for name, stage in (("propagated_boxes", "track"), ("redact", "redact")):
        original = getattr(anonymizer_module, name)

        def timed_call(*args, _original=original, _stage=stage, **kwargs):
            begun = clock()
            try:
                return _original(*args, **kwargs)
            finally:
                add(_stage, clock() - begun)

        setattr(anonymizer_module, name, timed_call)
    kwargs = {"step": STRIDE} if "step" in inspect.signature(
        anonymizer.process_views).parameters else {}
    begun = clock()
    views = (anonymizer_module.ViewFrames(t, {"_": img}) for t, img in sampled)
    outs = [o["_"] for o in anonymizer.process_views(views, **kwargs)]
    add("schedule and window", clock() - begun - sum(cpu.get(s, 0.0) for s in (
        "detect", "track", "redact")))
    anonymizer.close()

    verifier = RedactionVerifier(config.verification)
    if hasattr(verifier, "wait"):
        verifier.wait()
    # The first and every 50th anonymized frame of each segment is checked.
    per_segment = int(SEGMENT_S * FPS)
    checks = sum(math.ceil(math.ceil(min(per_segment, decoded - start) / STRIDE) / VERIFY_EVERY)
                 for start in range(0, decoded, per_segment))
    # A check's cost depends on the faces it compares: three frames with faces.
    samples = [i for i, o in enumerate(outs) if o.detected.get("face", 0)][:3] or [0]
    finder = build_anonymizer(config).classes[0].detector
    faces = [finder.detect(sampled[i][1]).boxes for i in samples]
    begun = clock()
    for i, boxes in zip(samples, faces):
        verifier.check(sampled[i][1], outs[i].image, boxes)
    add("verify", (clock() - begun) / len(samples) * checks)

    path = os.path.join(tempfile.mkdtemp(prefix="egoveil-spine-enc-"), "clip.mp4")
    begun = clock()
    writer = VideoWriter(path, ".mp4", 1920, 1080, FPS / STRIDE)
    for o in outs:
        writer.write(o.image, o.time_s)
    writer.close()
    # Every frame is redacted and encoded with --clips: scale from the anonymized ones.
    add("encode (--clips)", (clock() - begun) * decoded / len(outs))

    spec = resolve_encoder(encoder_dir)
    begun = clock()
    encoder = LoadedEncoder(spec, device="cpu")
    add("embed (model load)", clock() - begun)
    begun = clock()
    small = np.stack([spec.geometry.apply(o.image) for o in outs])
    n = spec.frames_per_clip
    clips = [small[i:i + n] for i in range(0, len(small) - n + 1, n)] or [small[:n]]
    embeddings = np.concatenate([encoder.embed(np.stack(clips[i:i + 8]))
                                 for i in range(0, len(clips), 8)])
    add("embed", clock() - begun)
    begun = clock()
    table = pa.table({"embedding": pa.array(
        [e.astype("<f2").tobytes() for e in embeddings], pa.binary(embeddings.shape[1] * 2))})
    pq.write_table(table, os.path.join(os.path.dirname(path), "part.parquet"))
    add("write", clock() - begun)
    return {"frames_decoded": decoded, "frames_anonymized": len(outs),
            "detector_calls": sum(len(c) for c in calls.values()),
            "frames_detected": sum(sum(c) for c in calls.values()),
            "frames_detected_full": sum(calls["full"]),
            "frames_detected_coarse": sum(calls["coarse"]),
            "verification_checks": checks, "clips": len(clips),
            "cpu_s": {k: round(v, 3) for k, v in cpu.items()}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--before", default=None,
                        help="a checkout of the code before issue 16, timed alongside")
    parser.add_argument("--compare", action="append", default=[], metavar="LABEL=DIR",
                        help="another checkout timed alongside (`egoveil run` only)")
    parser.add_argument("--no-clips", action="store_true",
                        help="leave out `egoveil run --clips`")
    parser.add_argument("--runs-only", action="store_true",
                        help="time whole `egoveil run` processes only (faces like for like, "
                             "and the default classes), without the stage replay; results go "
                             "to results/spine_runs_<seconds>s.json: for long inputs, where "
                             "a job's fixed cost is spread as in production")
    parser.add_argument("--replay", nargs=2, metavar=("VIDEO", "ENCODER"),
                        help=argparse.SUPPRESS)  # one stage replay, printed as JSON
    args = parser.parse_args()
    if args.replay:  # the checkout to replay is on PYTHONPATH
        print(json.dumps(replay_stages(*args.replay)))
        return
    sys.path.insert(0, ROOT)
    work = tempfile.mkdtemp(prefix="egoveil-spine-")
    video = os.path.join(work, "walk_1080p30.mp4")
    total = make_input(video, args.seconds)
    seconds = total / FPS
    egoveil = [sys.executable, "-m", "pipeline.cli"]
    subprocess.run([*egoveil, "make-encoder", f"{work}/enc", "--preset", "vjepa2-tiny"],
                   check=True, capture_output=True, cwd=ROOT)
    subprocess.run([*egoveil, "keygen", f"{work}/key"], check=True, capture_output=True,
                   cwd=ROOT)
    run = [*egoveil, "run", "--input", video, "--encoder", f"{work}/enc", "--key-file",
           f"{work}/key", "--no-progress", "--no-cache"]
    faces = ["--redact", "faces"]
    commands = {"run (frame stride 2, no clips)": [*run, *faces, "--output"],
                "run, default classes (faces and plates)": [*run, "--output"],
                "run --clips (every frame redacted and written)": [*run, *faces, "--clips",
                                                                   "--output"],
                "redact (every frame)": [*egoveil, "redact", *faces, video]}
    if args.no_clips or args.runs_only:
        del commands["run --clips (every frame redacted and written)"]
    if args.runs_only:
        del commands["redact (every frame)"]
    checkouts = {"now": ROOT}
    for item in args.compare:
        label, _, path = item.partition("=")
        checkouts[label] = os.path.abspath(path)
    if args.before:
        checkouts["before issue 16"] = os.path.abspath(args.before)
    runs: dict = {}
    count = 0
    for _ in range(args.repeat):
        for name, cmd in commands.items():
            for label, cwd in checkouts.items():
                if label != "now" and not name.startswith("run (frame stride"):
                    continue  # the code before: `egoveil run` only (its redact is in speed)
                count += 1  # a fresh output for every run
                out = f"{work}/out-{count}" + (".mp4" if "redact" in name else "")
                if label == "before issue 16":  # faces were its only class: no --redact
                    cmd = [c for c in cmd if c not in faces]
                runs.setdefault((label, name), []).append(timed([*cmd, out], cwd))
                print(label, name, runs[(label, name)][-1], flush=True)
    results: dict = {label: {} for label in checkouts}
    for (label, name), items in runs.items():
        cpu = statistics.median(r["cpu_s"] for r in items)
        wall = statistics.median(r["wall_s"] for r in items)
        results[label][name] = {
            "walls_s": [round(r["wall_s"], 1) for r in items],
            "cpus_s": [round(r["cpu_s"], 1) for r in items],
            "median_wall_s": round(wall, 2), "median_cpu_s": round(cpu, 2),
            "cpu_s_per_video_minute": round(cpu * 60 / seconds, 1),
            "peak_rss_mb": round(max(r["peak_rss_mb"] for r in items))}
    for label in checkouts:
        if label == "now":
            continue
        suffix = "before" if label == "before issue 16" else label
        for name in results[label]:
            now, before = results["now"][name], results[label][name]
            now[f"cpu_cut_vs_{suffix}"] = round(before["median_cpu_s"] / now["median_cpu_s"], 2)
            now[f"wall_cut_vs_{suffix}"] = round(before["median_wall_s"] / now["median_wall_s"],
                                                 2)
    stages = {}
    for label, cwd in ({} if args.runs_only else checkouts).items():
        proc = subprocess.run([sys.executable, os.path.join(HERE, "spine.py"), "--replay",
                               video, f"{work}/enc"], capture_output=True, text=True,
                              cwd=cwd, env={**os.environ, "PYTHONPATH": cwd})
        if proc.returncode != 0:
            raise SystemExit(f"stage replay failed in {cwd}:\n{proc.stderr[-2000:]}")
        replay = json.loads(proc.stdout.strip().splitlines()[-1])
        per_minute = {k: round(v * 60 / seconds, 1) for k, v in replay["cpu_s"].items()}
        run_cpu = results[label]["run (frame stride 2, no clips)"]["cpu_s_per_video_minute"]
        summed = sum(v for k, v in per_minute.items() if "--clips" not in k)
        stages[label] = {**replay, "cpu_s_per_video_minute": per_minute,
                         "fixed_and_other_per_video_minute": round(run_cpu - summed, 1)}
        print(label, json.dumps(stages[label]), flush=True)
    record = {"machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
                         "no GPU, shared with other jobs",
              "input": f"arcade_1080p.mp4 frames forwards and backwards, 1920x1080 at {FPS} "
                       f"fps, {seconds:.0f} s ({total} frames), made by the bench",
              "repeat": args.repeat, "encoder": "random V-JEPA 2 tiny (egoveil make-encoder)",
              "command": "flock /work/tools/bench.lock python bench/spine.py"
                         + f" --seconds {args.seconds:g}"
                         + (" --before DIR" if args.before else "")
                         + "".join(f" --compare {c.partition('=')[0]}=DIR" for c in args.compare)
                         + (" --no-clips" if args.no_clips else "")
                         + (" --runs-only" if args.runs_only else ""),
              "results": results, "stages": stages,
              "load_average_at_end": os.getloadavg(), "date": time.strftime("%Y-%m-%d")}
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    name = f"spine_runs_{args.seconds:g}s.json" if args.runs_only else "spine.json"
    with open(os.path.join(HERE, "results", name), "w") as handle:
        json.dump(record, handle, indent=2)


if __name__ == "__main__":
    main()
