"""Detector runtimes, the GPU paths' CPU fallbacks, and the encoder thread (issue 16)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from privacy.config import GPU_DETECT_BATCH, AnonymizationConfig
from privacy.detectors import DetectorError, DetectorSpec, build_detector
from privacy.detectors.factory import on_device
from tests.cli import egoveil
from tests.conftest import shared_media
from transforms.media import video as video_io

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None


def _astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


@pytest.mark.parametrize("backend", [
    "opencv", "onnxruntime",
    pytest.param("openvino", marks=pytest.mark.skipif(not HAS_OPENVINO, reason="no OpenVINO")),
    pytest.param("openvino;precision=f32",
                 marks=pytest.mark.skipif(not HAS_OPENVINO, reason="no OpenVINO"))])
def test_every_runtime_finds_the_same_face(backend):
    image = _astronaut()
    reference = build_detector("centerface:threshold=0.1;backend=opencv").detect(image)
    detector = build_detector(f"centerface:threshold=0.1;backend={backend}")
    found = detector.detect(image)
    assert len(found) == len(reference) == 1
    assert np.abs(found.boxes - reference.boxes).max() < 3.0  # pixels
    described = detector.describe()
    assert described["backend"] == backend.split(";")[0] and described["device"] == "cpu"


def test_the_cleaned_graph_has_only_the_image_as_input():
    import onnx

    from privacy.detectors.centerface import cleaned_graph, default_weights_path

    raw = onnx.load(default_weights_path())
    model = onnx.load_from_string(cleaned_graph(default_weights_path()))
    assert len(raw.graph.input) > 100  # the file lists its weights as inputs
    assert [i.name for i in model.graph.input] == ["input.1"]


def test_batched_detection_equals_one_frame_at_a_time():
    """The batched path a GPU takes (onnxruntime, 16 frames a call), here on the CPU."""
    image = _astronaut()
    frames = [image, image[:, ::-1].copy(), np.zeros_like(image)] * 6
    detector = build_detector("centerface:threshold=0.1;backend=onnxruntime")
    batched = detector.detect_batch(frames[:GPU_DETECT_BATCH])
    single = [detector.detect(f) for f in frames[:GPU_DETECT_BATCH]]
    assert [len(d) for d in batched] == [len(d) for d in single] == [1, 1, 0] * 5 + [1]
    for b, s in zip(batched, single):
        assert np.allclose(b.boxes, s.boxes, atol=0.5)


def test_on_device_moves_centerface_to_onnxruntime_cuda_and_batches():
    config = AnonymizationConfig().on_device("cuda")
    assert config.device == "cuda" and config.detect_batch_size == GPU_DETECT_BATCH
    assert DetectorSpec.parse(config.detector).backends[0].device == "cuda"
    assert "device=cuda" in config.strong_detector
    assert config.describe()["device"] == "cuda"
    assert "device" not in AnonymizationConfig().describe()
    assert on_device("centerface:backend=opencv+hog", "cuda") == "centerface:backend=opencv+hog"
    with pytest.raises(ValueError, match="for centerface only"):
        DetectorSpec.parse("hog:device=cuda")
    with pytest.raises(ValueError, match="backend=onnxruntime"):
        build_detector("centerface:device=cuda;backend=opencv")


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="no onnxruntime")
def test_cuda_without_a_gpu_is_a_clear_error():
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has onnxruntime's CUDA provider")
    with pytest.raises(DetectorError, match="device=cuda needs onnxruntime-gpu"):
        build_detector(on_device("centerface", "cuda"))


def test_redact_on_cuda_without_a_gpu_says_what_to_install(tmp_path):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has onnxruntime's CUDA provider")
    image = tmp_path / "in.png"
    import cv2

    cv2.imwrite(str(image), _astronaut()[:, :, ::-1])
    proc = egoveil("redact", str(image), str(tmp_path / "out.png"), "--device", "cuda")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "egoveil: error: detector cannot be loaded" in proc.stderr
    assert "onnxruntime-gpu" in proc.stderr
    assert not (tmp_path / "out.png").exists()


def test_nvdec_falls_back_to_the_cpu_and_decodes_the_same_frames(sample_video):
    path, _ = sample_video
    plain = [f.to_rgb() for f, _ in video_io.iter_window(path)]
    before = video_io.decode_device_counts()
    video_io.use_decode_device("cuda")
    try:
        hw = [f.to_rgb() for f, _ in video_io.iter_window(path)]
    finally:
        video_io.use_decode_device(None)
    after = video_io.decode_device_counts()
    assert len(hw) == len(plain) and all(np.array_equal(a, b) for a, b in zip(hw, plain))
    assert after["hardware"] + after["fallback"] == before["hardware"] + before["fallback"] + 1
    with pytest.raises(ValueError):
        video_io.use_decode_device("tpu")


def test_the_encoder_thread_writes_every_frame_in_order_and_reports_errors(tmp_path):
    frames = [np.full((64, 96, 3), 10 * i, np.uint8) for i in range(12)]
    out = str(tmp_path / "o.mp4")
    writer = video_io.BackgroundWriter(video_io.VideoWriter(out, ".mp4", 96, 64, 10.0), depth=2)
    for i, frame in enumerate(frames):
        writer.write(frame, i / 10)
    writer.close()
    decoded = [(f.time_s, f.to_rgb()) for f, _ in video_io.iter_window(out)]
    assert [round(t, 2) for t, _ in decoded] == [i / 10 for i in range(12)]
    assert [int(img.mean()) for _, img in decoded] == pytest.approx(
        [10 * i for i in range(12)], abs=2)

    class _Broken(video_io.VideoWriter):
        def write(self, image, time_s):
            raise RuntimeError("encoder gone")

    broken = video_io.BackgroundWriter(_Broken(str(tmp_path / "b.mp4"), ".mp4", 96, 64, 10.0))
    broken.write(frames[0], 0.0)
    with pytest.raises(RuntimeError, match="encoder gone"):
        for i, frame in enumerate(frames[1:], 1):
            broken.write(frame, i / 10)
        broken.close()


def test_the_gpu_bench_runs_on_the_cpu(tmp_path):
    """bench/gpu_end_to_end.py's whole path with --device cpu: `egoveil run` end to end."""
    shared_media("videos", "arcade_1080p.mp4")
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "bench"))
    try:
        import gpu_end_to_end
    finally:
        sys.path.pop(0)
    out = tmp_path / "gpu.json"
    record = gpu_end_to_end.main(["--device", "cpu", "--seconds", "1", "--encoder",
                                  "random:vjepa2-tiny", "--batch-size", "2", "--out", str(out)])
    assert out.exists() and record["video_s"] == 1.0 and record["latent_rows"] >= 1
    assert record["video_hours_per_gpu_hour"] > 0
    assert 0 < record["decode_wait_share"] < 1
    assert record["decode_containers"]["hardware"] == 0
    assert record["gpu"] is None or isinstance(record["gpu"], str)


_RELEASED_ELSEWHERE = """
import signal, subprocess, sys, threading
import numpy as np
from privacy.detectors import build_detector
signal.signal(signal.SIGCHLD, lambda *_: None)  # as torch's DataLoader does
held = [build_detector("centerface:threshold=0.1;backend=openvino")]
held[0].detect(np.zeros((96, 128, 3), np.uint8))
released = threading.Thread(target=held.clear)
released.start()
released.join()
for _ in range(3):
    subprocess.run(["true"])
print("alive")
"""


@pytest.mark.skipif(not HAS_OPENVINO, reason="no OpenVINO")
def test_a_detector_released_on_another_thread_leaves_signals_deliverable():
    """OpenVINO's CPU plugin swaps the compiling thread's signal stack; released elsewhere it
    left that stack unmapped and the next handled signal killed the process (SIGSEGV)."""
    done = subprocess.run([sys.executable, "-c", _RELEASED_ELSEWHERE], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and "alive" in done.stdout, (done.returncode, done.stderr[-500:])
