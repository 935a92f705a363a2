"""Embedding-stage throughput on a GPU: clips per second, model FLOP utilisation, GPU busy share.

Models are the real architectures with random weights (``random:`` presets of
``transforms.models.encoders``): V-JEPA 2 ViT-L/16 (16 frames, 256 px) and DINOv2 ViT-B/14
(224 px, one frame per clip, as image encoders are run by default).

Three measurements per batch size:
- ``model``: the forward pass alone on device-resident bf16 clips (CUDA events), the
  ceiling. MFU = clips/s x FLOPs per clip / the GPU's dense bf16 peak.
- ``stage``: what the pipeline's embedding stage does per batch, through
  ``ClipEncoderHandler.run_inference``: stack uint8 clips from host memory into pinned
  memory, copy, normalize on the GPU, forward, copy the latents back, build rows; with
  ``--threads`` threads sharing one model, as Beam's worker threads do.
- ``busy``: the share of the stage's wall time the GPU needs for the forward passes
  alone (model time of the same clips / stage wall). Above 0.9, loading and
  preprocessing are not the bottleneck.

FLOPs per clip are counted by ``torch.utils.flop_counter`` on the meta device (no
GPU needed, eager attention so that its matmuls are counted) and checked against the
closed form 2 x params x tokens + 4 x layers x tokens^2 x width.

Usage:
    python bench/gpu_embed.py --flops-only                    # FLOPs per clip, any machine
    python bench/gpu_embed.py                                  # both models, on a GPU
    python bench/gpu_embed.py --model vjepa2-vitl --batch-sizes 8,16,32 --threads 2 --compile

Results go to bench/results/gpu_embed.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from schemas.elements import Clip  # noqa: E402
from schemas.latents import LatentLayout  # noqa: E402
from transforms.embed import ClipEncoderHandler  # noqa: E402
from transforms.models.encoders import random_model_config, resolve_encoder  # noqa: E402
from transforms.models.runtime import LoadedEncoder, RuntimeConfig  # noqa: E402

MODELS = {
    "vjepa2-vitl": {"frames": 16, "resolution": 256, "batch_sizes": [4, 8, 16, 32, 64]},
    "dinov2-vitb14": {"frames": 1, "resolution": 224, "batch_sizes": [32, 64, 128, 256, 512]},
    "vjepa2-tiny": {"frames": 8, "resolution": 64, "batch_sizes": [2, 4]},  # smoke test
}

# Dense (no sparsity) bf16 tensor-core peaks, FLOP/s, from the vendors' datasheets.
PEAK_BF16 = {"H100 SXM": 989.4e12, "H100 NVL": 835.5e12, "H100 PCIe": 756.0e12,
             "H100": 989.4e12, "H200": 989.4e12, "GH200": 989.4e12, "B200": 2250e12,
             "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12}


def peak_flops(name: str) -> float | None:
    for key in sorted(PEAK_BF16, key=len, reverse=True):
        if key.replace(" ", "").lower() in name.replace(" ", "").lower():
            return PEAK_BF16[key]
    return None


def count_flops(spec) -> dict:
    """FLOPs of one clip's forward pass, counted on the meta device, and the closed form."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModel

    config = random_model_config(spec)
    config._attn_implementation = "eager"  # sdpa kernels are not all counted
    with torch.device("meta"):
        model = AutoModel.from_config(config).eval()
    h, w = spec.geometry.output_hw
    if spec.kind == "video":
        x = torch.empty((1, spec.frames_per_clip, 3, h, w), device="meta")
        kwargs = {"pixel_values_videos": x, "skip_predictor": True}
        tokens = int(np.prod(spec.token_grid))
    else:
        x = torch.empty((spec.frames_per_clip, 3, h, w), device="meta")
        kwargs = {"pixel_values": x}
        tokens = spec.frames_per_clip * (spec.token_grid[1] * spec.token_grid[2] + 1)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(**kwargs)
    counted = counter.get_total_flops()
    matmul = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.Conv3d)
    params = sum(m.weight.numel() for n, m in model.named_modules()
                 if isinstance(m, matmul) and not n.startswith(("predictor", "pooler")))
    layers, width = config.num_hidden_layers, config.hidden_size
    seq = tokens if spec.kind == "video" else tokens // spec.frames_per_clip
    frames = 1 if spec.kind == "video" else spec.frames_per_clip
    closed = 2 * params * tokens + 4 * layers * seq * seq * width * frames
    return {"flops_per_clip": counted, "closed_form_flops": closed, "tokens_per_clip": tokens,
            "encoder_matmul_params": params}


def _clips(spec, n: int, seed: int = 0) -> list[Clip]:
    rng = np.random.default_rng(seed)
    h, w = spec.geometry.output_hw
    frames = rng.integers(0, 255, (n, spec.frames_per_clip, h, w, 3), dtype=np.uint8)
    return [Clip(clip_id=f"{i:032x}", recording_id="0" * 32, wearer_id=None, view="rgb",
                 segment_index=0, clip_index=i, start_s=0.0, end_s=1.0,
                 frame_count=spec.frames_per_clip, fps=30.0, frames=frames[i],
                 faces_redacted=0, qa_status="redacted_unverified") for i in range(n)]


def model_throughput(spec, encoder, batch: int, iters: int) -> float:
    """Clips per second of the forward pass alone, inputs already on the device."""
    device = encoder.device
    h, w = spec.geometry.output_hw
    x = torch.randint(0, 255, (batch, spec.frames_per_clip, h, w, 3), dtype=torch.uint8,
                      device=device)
    forward = encoder._compiled or encoder._forward
    with torch.inference_mode():
        for _ in range(5):  # CUDA/oneDNN kernel selection and caches
            forward(x)
        times = []
        for _ in range(iters):
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(
                    enable_timing=True)
                start.record()
                forward(x)
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            else:
                t = time.perf_counter()
                forward(x)
                times.append(time.perf_counter() - t)
    return batch / statistics.median(times)


def stage_throughput(handler, encoder, clips: list[Clip], batch: int, batches: int,
                     threads: int) -> float:
    """Clips per second through run_inference, ``threads`` threads sharing the model."""
    groups = [clips[(i * batch) % len(clips):][:batch] for i in range(batches)]
    groups = [g if len(g) == batch else clips[:batch] for g in groups]
    for g in groups[:2]:
        list(handler.run_inference(g, encoder))
    lock, queue = threading.Lock(), list(groups)

    def work():
        while True:
            with lock:
                if not queue:
                    return
                g = queue.pop()
            list(handler.run_inference(g, encoder))

    start = time.perf_counter()
    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if encoder.device.type == "cuda":
        torch.cuda.synchronize()
    return batches * batch / (time.perf_counter() - start)


def bench_model(name: str, args) -> dict:
    preset = MODELS[name]
    spec = resolve_encoder(f"random:{name}", frames_per_clip=preset["frames"],
                           resolution=preset["resolution"])
    result = {"model": name, "frames_per_clip": spec.frames_per_clip,
              "input_size": list(spec.geometry.output_hw),
              "token_grid": list(spec.token_grid), **count_flops(spec)}
    if args.flops_only:
        return result
    device = args.device if args.device != "auto" else (
        "cuda" if torch.cuda.is_available() else "cpu")
    sizes = [int(b) for b in args.batch_sizes.split(",")] if args.batch_sizes \
        else preset["batch_sizes"]
    gpu = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu"
    peak = args.peak_tflops * 1e12 if args.peak_tflops else peak_flops(gpu)
    result.update(device=gpu, peak_bf16_flops=peak, threads=args.threads, compile=args.compile,
                  batches={})

    layout = LatentLayout(embedding_dim=spec.embedding_dim, dtype="bfloat16")
    for batch in sizes:
        try:
            encoder = LoadedEncoder(spec, device, args.precision, args.compile, batch)
            handler = ClipEncoderHandler(spec, batch, layout=layout, runtime=RuntimeConfig(
                device=device, precision=args.precision, compile=args.compile,
                batch_size=batch))
            model_cps = model_throughput(spec, encoder, batch, args.iters)
            clips = _clips(spec, batch * 2)
            stage_cps = stage_throughput(handler, encoder, clips, batch, args.iters,
                                         args.threads)
        except torch.OutOfMemoryError:
            result["batches"][batch] = {"error": "out of memory"}
            torch.cuda.empty_cache()
            continue
        flops = result["flops_per_clip"]
        row = {"model_clips_per_s": round(model_cps, 2),
               "stage_clips_per_s": round(stage_cps, 2),
               "busy": round(stage_cps / model_cps, 3),
               "model_tflops": round(model_cps * flops / 1e12, 1),
               "stage_tflops": round(stage_cps * flops / 1e12, 1)}
        if peak:
            row["model_mfu"] = round(model_cps * flops / peak, 3)
            row["stage_mfu"] = round(stage_cps * flops / peak, 3)
        result["batches"][batch] = row
        print(name, batch, row, flush=True)
        del encoder, handler
        if device == "cuda":
            torch.cuda.empty_cache()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", action="append", choices=list(MODELS),
                        help="repeatable; default: vjepa2-vitl and dinov2-vitb14")
    parser.add_argument("--batch-sizes", default=None, help="comma-separated")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2,
                        help="threads sharing the model in the stage measurement")
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    parser.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"))
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="dense bf16 peak of the GPU, when its name is not in the table")
    parser.add_argument("--flops-only", action="store_true",
                        help="only count FLOPs per clip (no GPU needed)")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "gpu_embed.json"))
    args = parser.parse_args()
    if args.device == "auto" and not torch.cuda.is_available() and not args.flops_only:
        print("no GPU visible: timing on the CPU (pass --flops-only for the FLOP count)",
              file=sys.stderr)
    torch.backends.cuda.matmul.allow_tf32 = True
    models = args.model or ["vjepa2-vitl", "dinov2-vitb14"]
    report = {"command": "python " + " ".join(["bench/gpu_embed.py", *sys.argv[1:]]),
              "torch": torch.__version__, "python": platform.python_version(),
              "cuda": torch.version.cuda, "models": [bench_model(m, args) for m in models]}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(report, handle, indent=2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
