"""`egoveil run` on a GPU end to end: video-hours per GPU-hour, GPU busy share, decode waits.

Runs the real `egoveil run` (``pipeline.runner.run``, the function the command calls,
in this process so that its DirectRunner's stage clocks can be read) on a 1080p30 input
made here (arcade_1080p.mp4's frames forwards and backwards, never committed) with
``--device cuda``: CenterFace batched through onnxruntime's CUDA or TensorRT provider,
decoding on NVDEC where FFmpeg offers it (falling back to the CPU per container),
verification on the CPU beside it, and the encoder (V-JEPA 2 ViT-L architecture, random
weights: the same compute as the released model, no download) in bf16. Reports:

- ``video_hours_per_gpu_hour``: seconds of video / wall seconds of the run (one GPU);
  the peer figure is NVIDIA's video curation pipeline, about 60 video-hours per
  GPU-hour on Hopper without any privacy stage;
- ``gpu_busy_share``: mean utilisation sampled from ``nvidia-smi`` every 0.2 s;
- ``decode_wait_share``: the share of the anonymize stage's wall time spent waiting on
  the decoder (``RunSummary.stage_seconds``), and how many containers decoded on NVDEC
  or fell back to the CPU.

``--device cpu`` runs the same path on the CPU (a smoke test of the script; the tests
run it): nothing is written to bench/results then unless ``--out`` says where.

Usage: python bench/gpu_end_to_end.py [--seconds 60] [--encoder random:vjepa2-vitl]
Results: bench/results/gpu_end_to_end.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

PEER_VIDEO_HOURS_PER_GPU_HOUR = 60.0  # NVIDIA's curation pipeline on Hopper, no privacy stage


class GpuSampler:
    """Samples the GPU's utilisation with nvidia-smi while the run goes on."""

    def __init__(self, interval_s: float = 0.2) -> None:
        self.samples: list[float] = []
        self.name = ""
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.available = shutil.which("nvidia-smi") is not None

    def _query(self, field: str) -> str:
        return subprocess.run(["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader,"
                               "nounits", "-i", "0"], capture_output=True, text=True,
                              timeout=10).stdout.strip()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.samples.append(float(self._query("utilization.gpu")))
            except (ValueError, OSError, subprocess.SubprocessError):
                continue

    def __enter__(self) -> GpuSampler:
        if self.available:
            self.name = self._query("name")
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.available:
            self._thread.join(timeout=2)

    @property
    def busy_share(self) -> float | None:
        return round(sum(self.samples) / len(self.samples) / 100, 3) if self.samples else None


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--encoder", default="random:vjepa2-vitl")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1,
                        help="DirectRunner workers (threads sharing the GPU)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    from spine import FPS, make_input

    from pipeline.runner import run
    from transforms.media.video import decode_device_counts

    work = tempfile.mkdtemp(prefix="egoveil-gpu-e2e-")
    video = os.path.join(work, "walk_1080p30.mp4")
    frames = make_input(video, args.seconds)
    seconds = frames / FPS
    key = os.path.join(work, "key")
    subprocess.run([sys.executable, "-m", "pipeline.cli", "keygen", key], check=True,
                   capture_output=True, cwd=ROOT)
    argv_run = ["--input", video, "--output", os.path.join(work, "out"), "--key-file", key,
                "--encoder", args.encoder, "--device", args.device,
                "--batch-size", str(args.batch_size), "--no-progress", "--no-cache",
                "--direct_num_workers", str(args.workers)]
    if args.device == "cuda":
        argv_run += ["--precision", "bf16"]
    with GpuSampler() as gpu:
        started = time.perf_counter()
        summary = run(argv_run, show_progress=False)
        wall = time.perf_counter() - started
    stage = summary.stage_seconds
    record = {
        "command": "python bench/gpu_end_to_end.py " + " ".join(argv or sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores",
        "gpu": gpu.name or None, "device": args.device, "encoder": args.encoder,
        "input": f"1920x1080 at {FPS} fps, {seconds:.0f} s, made by the bench",
        "wall_s": round(wall, 2), "video_s": round(seconds, 2),
        "video_hours_per_gpu_hour": round(seconds / wall, 2),
        "peer_video_hours_per_gpu_hour": PEER_VIDEO_HOURS_PER_GPU_HOUR,
        "gpu_busy_share": gpu.busy_share,
        "decode_wait_share": round(stage["decode_s"] / stage["busy_s"], 3)
        if stage.get("busy_s") else None,
        "stage_seconds": stage, "decode_containers": decode_device_counts(),
        "frames_anonymized": summary.frames, "segments": summary.segments,
        "latent_rows": summary.totals.get("latent_rows")}
    out = args.out or (os.path.join(HERE, "results", "gpu_end_to_end.json")
                       if args.device == "cuda" else None)
    if out:
        with open(out, "w") as handle:
            json.dump(record, handle, indent=2)
    print(json.dumps(record, indent=1))
    return record


if __name__ == "__main__":
    main()
