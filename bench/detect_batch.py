"""Face detection throughput by batch size and backend (ready for the GPU machine).

Measures CenterFace (the default detector) on 1080p frames from
../shared/media/videos/arcade_1080p.mp4 at batch sizes 1, 4, 8 and 16, with the
OpenCV backend (CPU) and, where onnxruntime with a CUDA provider is installed
(`pip install 'egoveil[gpu]'`), with `backend=onnxruntime` on the GPU. Reports
median frames per second over repeated batches.

Usage: python bench/detect_batch.py [--repeat 5]. Results: bench/results/detect_batch.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from privacy.detectors import build_detector  # noqa: E402
from transforms.media.video import iter_window  # noqa: E402

VIDEO = os.path.join(ROOT, "..", "shared", "media", "videos", "arcade_1080p.mp4")


def backends() -> dict[str, str]:
    out = {"opencv (CPU)": "centerface:threshold=0.1"}
    try:
        import onnxruntime

        providers = onnxruntime.get_available_providers()
        if "CUDAExecutionProvider" in providers:
            out["onnxruntime (CUDA)"] = "centerface:threshold=0.1;backend=onnxruntime"
        else:
            out["onnxruntime (CPU)"] = "centerface:threshold=0.1;backend=onnxruntime"
    except ImportError:
        pass
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--batches", default="1,4,8,16")
    args = parser.parse_args()
    frames = [f.to_rgb() for f, _ in iter_window(VIDEO, 0.0, 0.7)]
    results = {}
    for label, spec in backends().items():
        detector = build_detector(spec)
        detector.detect_batch(frames[:1])  # warm-up: graph setup, kernels
        for size in (int(b) for b in args.batches.split(",")):
            batch = (frames * (size // len(frames) + 1))[:size]
            times = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                detector.detect_batch(batch)
                times.append(time.perf_counter() - started)
            fps = size / statistics.median(times)
            results[f"{label}, batch {size}"] = round(fps, 2)
            print(label, size, round(fps, 2), flush=True)
    with open(os.path.join(HERE, "results", "detect_batch.json"), "w") as handle:
        json.dump({"command": "python bench/detect_batch.py", "date": time.strftime("%Y-%m-%d"),
                   "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                   "frames": "1920x1080 (input 1920x1088)", "frames_per_second": results},
                  handle, indent=2)


if __name__ == "__main__":
    main()
