"""OpenCV DNN: `--backend opencv` for our FCN and Mask R-CNN exports against the torch engine, `dnn_target`
checks, and the TensorFlow Mask R-CNN engine (`maskrcnn_tf`): its post-processing on crafted graph outputs, its
COCO ids, its loading errors, and a CLI run with a stand-in net (the real graph cannot be downloaded here).

The export tests share test_onnx_backend's fixtures (random weights saved once) and conftest's `module_cache` (a
cache folder of the module's own).
The graph-reading tests run on whichever OpenCV is installed: OpenCV 5 has no TensorFlow importer (its error is
checked), OpenCV 4.x reads the crafted files (its parse and mismatch errors are checked).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import test_onnx_backend as onnx_tests
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_torch_engines import MAX_SIZE
from tool_modules import load_tool

from seg_video.cli.main import main
from seg_video.core.errors import ConfigError, EngineError
from seg_video.core.types import Frame
from seg_video.engines.base import create_engine
from seg_video.engines.models import maskrcnn_tf
from seg_video.engines.models.maskrcnn_tf import COCO, read_tf_graph, tf_segmentation
from seg_video.engines.models.torch_common import TorchEngine
from seg_video.engines.runners.choice import resolve_backend
from seg_video.engines.runners.graphs import Part, export_part
from seg_video.engines.runners.opencv import (
    OPENCV_MAJOR,
    DnnRunner,
    check_part,
    opencv_reason,
    read_net,
    target_problem,
)

engines, frames = onnx_tests.engines, onnx_tests.frames  # its fixtures, used here by name (module_cache: conftest)
TF_IMPORTER = hasattr(cv2.dnn, "readNetFromTensorflow")
needs_opencv_5 = pytest.mark.skipif(OPENCV_MAJOR < 5, reason="OpenCV 4.x refuses our FCN and Mask R-CNN exports "
                                                             "(test_opencv_4_refuses_our_exports_in_one_line)")
OPENCV_COCO_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "street sign", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep",
    "cow", "elephant", "bear", "zebra", "giraffe", "hat", "backpack", "umbrella", "shoe", "eye glasses", "handbag",
    "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
    "skateboard", "surfboard", "tennis racket", "bottle", "plate", "wine glass", "cup", "fork", "knife", "spoon",
    "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake",
    "chair", "couch", "potted plant", "bed", "mirror", "dining table", "window", "desk", "toilet", "door", "tv",
    "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator",
    "blender", "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)
"""OpenCV's samples/data/dnn/object_detection_classes_coco.txt: the 90 names the graph's 0-based classes index."""


# --- our exports on OpenCV DNN -------------------------------------------------------------------------------------


@needs_opencv_5
def test_fcn_on_opencv_dnn_matches_torch(engines: Callable[..., TorchEngine], frames: list[Frame]) -> None:
    onnx_tests.assert_fcn_matches_torch(engines, frames, "opencv")


@needs_opencv_5
def test_maskrcnn_hybrid_on_opencv_dnn_matches_torch(engines: Callable[..., TorchEngine],
                                                     frames: list[Frame]) -> None:
    onnx_tests.assert_maskrcnn_matches_torch(engines, frames, "opencv", atol=5e-3)  # OpenCV rounds differently


@pytest.mark.skipif(OPENCV_MAJOR >= 5, reason="OpenCV 5 reads them")
def test_opencv_4_refuses_our_exports_in_one_line(engines: Callable[..., TorchEngine]) -> None:
    with pytest.raises(EngineError, match=r"cannot load part fcn \(fcn.onnx\): .*Shape.*; run this model with "
                                          "--backend onnx or torch instead"):
        engines("fcn", "opencv")
    with pytest.raises(EngineError, match="runs part backbone wrongly: its outputs differ from PyTorch's"):
        engines("maskrcnn", "opencv", max_size=MAX_SIZE)


class Convolution(torch.nn.Module):
    """A one-part model: a 3×3 convolution, times `gain`."""

    def __init__(self, gain: float = 1.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.gain = gain

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.conv(images) * self.gain,)


def test_each_part_is_checked_against_its_torch_module(tmp_path: Path) -> None:
    part = Part("conv", Convolution(), ("images",), ("out",), (torch.zeros(2, 3, 16, 24),), spatial=True)
    info = export_part(part, tmp_path, "fp32", torch.device("cpu"))
    runner = DnnRunner(tmp_path / info.file, info, "cpu", torch.device("cpu"))
    check_part(runner, part)
    (out,) = runner(torch.ones(3, 3, 40, 8))
    assert out.shape == (3, 4, 40, 8)
    other = Part("conv", Convolution(gain=1.5), ("images",), ("out",), part.example, spatial=True)
    other.module.load_state_dict(part.module.state_dict())
    with pytest.raises(EngineError, match="runs part conv wrongly: its outputs differ from PyTorch's by"):
        check_part(runner, other)


def test_auto_never_picks_opencv_and_opencv_is_listed() -> None:
    assert resolve_backend("auto", torch.device("cpu"))[0] in ("onnx", "torch")
    assert resolve_backend("opencv", torch.device("cpu")) == ("opencv", "backend opencv")
    assert "backends: torch, torch-compiled, onnx, opencv" in create_engine("fcn").availability()


def test_dnn_targets_are_checked_against_this_opencv() -> None:
    assert target_problem("cpu") is None
    for target in ("cuda", "cuda-fp16"):
        problem = target_problem(target)
        if problem is None:
            pytest.skip("this OpenCV runs DNN on CUDA")
        with pytest.raises(EngineError, match=f"dnn_target {target}: .*use dnn_target cpu"):
            create_engine("fcn", {"weights": "none", "device": "cpu", "backend": "opencv", "dnn_target": target})
        with pytest.raises(EngineError, match=f"dnn_target {target}"):
            create_engine("maskrcnn_tf", {"dnn_target": target})
    with pytest.raises(EngineError, match=r"dnn_target cuda is a setting of --backend opencv; .* backend is onnx"):
        create_engine("fcn", {"weights": "none", "device": "cpu", "backend": "onnx", "dnn_target": "cuda"})
    with pytest.raises(ConfigError, match="dnn_target must be one of cpu, cuda, cuda-fp16"):
        create_engine("fcn", {"backend": "opencv", "dnn_target": "vulkan"})


def test_a_graph_opencv_cannot_read_is_one_clear_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07not a model")
    with pytest.raises(EngineError) as raised:
        read_net(lambda: cv2.dnn.readNetFromONNX(str(broken)), "part fcn (broken.onnx)", "cpu", "; use onnx")
    message = str(raised.value)
    assert message.startswith(f"OpenCV {cv2.__version__} cannot load part fcn (broken.onnx): ")
    assert message.endswith("; use onnx") and "\n" not in message and ".cpp:" not in message


def test_opencv_reason_is_one_line_without_source_locations() -> None:
    error = cv2.error("OpenCV(4.14.0) /io/onnx_importer.cpp:1064: error: (-2:Unspecified error) in function "
                      "'handleNode'\n> Node [Shape@ai.onnx] parse error: OpenCV(4.14.0) /io/x.cpp:2519: error: "
                      "(-215:Assertion failed) !isDynamicShape in function 'parseShape'\n> \n")
    assert opencv_reason(error) == ("in function 'handleNode' Node [Shape@ai.onnx] parse error: !isDynamicShape in "
                                    "function 'parseShape'")


@needs_opencv_5
def test_cli_fcn_on_opencv_end_to_end(sample_clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEG_VIDEO_CACHE", str(tmp_path / "cache"))
    out, masks = tmp_path / "out.mp4", tmp_path / "masks"
    assert main([str(sample_clip), str(out), "--engine", "fcn", "--backend", "opencv", "--weights", "none",
                 "--min-size", "96", "--max-frames", "3", "--masks-dir", str(masks)]) == 0
    err = capsys.readouterr().err
    assert "OpenCV DNN" in err and "dnn_target cpu" in err and "3 frames" in err
    assert out.stat().st_size > 0 and len(list(masks.glob("*.png"))) == 3


@needs_opencv_5
def test_bench_dnn_tool_measures_all_three(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SEG_VIDEO_CACHE", str(tmp_path / "cache"))
    report = tmp_path / "bench.json"
    assert load_tool("bench_dnn").main(["--width", "96", "--height", "64", "--frames", "2", "--warmup", "1",
                                   "--json", str(report)]) == 0
    rows = json.loads(report.read_text())["rows"]
    assert [row["backend"] for row in rows] == ["opencv", "onnx", "torch"]
    assert all(row["ms_per_frame"] > 0 and row["agreement_with_torch"] >= 0.999 for row in rows)
    assert "| opencv |" in capsys.readouterr().out


# --- the TensorFlow Mask R-CNN graph: post-processing --------------------------------------------------------------


def detections(*rows: tuple[float, ...]) -> np.ndarray:
    """`detection_out_final` (1,1,N,7) from rows [batch, class, score, x1, y1, x2, y2]."""
    return np.array(rows, np.float32).reshape(1, 1, -1, 7)


def uniform_masks(classes: list[int], value: float = 1.0, channels: int = 90) -> np.ndarray:
    """`detection_masks` with `value` in each detection's class channel and 0 elsewhere."""
    masks = np.zeros((len(classes), channels, 15, 15), np.float32)
    for i, class_id in enumerate(classes):
        masks[i, class_id] = value
    return masks


def sample_reference(boxes: np.ndarray, masks: np.ndarray, height: int, width: int, score_threshold: float,
                     mask_threshold: float) -> list[tuple[int, float, tuple[int, int, int, int], np.ndarray]]:
    """OpenCV's samples/dnn/mask_rcnn.py post-processing, a detection at a time: (class, score, box, frame mask)."""
    found = []
    for i in range(boxes.shape[2]):
        box = boxes[0, 0, i]
        score = box[2]
        if score > score_threshold:
            class_id = int(box[1])
            left, top = int(width * box[3]), int(height * box[4])
            right, bottom = int(width * box[5]), int(height * box[6])
            left, right = max(0, min(left, width - 1)), max(0, min(right, width - 1))
            top, bottom = max(0, min(top, height - 1)), max(0, min(bottom, height - 1))
            class_mask = cv2.resize(masks[i][class_id], (right - left + 1, bottom - top + 1))
            frame_mask = np.zeros((height, width), bool)
            frame_mask[top:bottom + 1, left:right + 1] = class_mask > mask_threshold
            found.append((class_id, float(score), (left, top, right, bottom), frame_mask))
    return found


def test_tf_postprocessing_places_masks_in_frame_pixels() -> None:
    height, width = 100, 140
    boxes = detections((0, 0, 0.9, 0.1, 0.2, 0.2, 0.34),  # x 14..28, y 20..34: 15×15 pixels, mask as it is
                       (0, 2, 0.8, 0.5, 0.5, 0.75, 0.9),  # x 70..105, y 50..90, a full mask
                       (0, 17, 0.3, 0.0, 0.0, 1.0, 1.0))  # below the score threshold
    masks = uniform_masks([0, 2, 17])
    masks[0, 0] = 0.0
    masks[0, 0, 3:9, 5:12] = 0.9  # rows 3..8, columns 5..11 of the box
    masks[0, 1, :, :] = 1.0  # another class's channel: must not be used
    result = tf_segmentation(boxes, masks, height, width, score_threshold=0.5, mask_threshold=0.5)

    assert result.masks is not None and len(result) == 2
    expected = np.zeros((2, height, width), bool)
    expected[0, 23:29, 19:26] = True
    expected[1, 50:91, 70:106] = True
    np.testing.assert_array_equal(result.full_masks(), expected)
    np.testing.assert_array_equal(result.boxes, [[14, 20, 29, 35], [70, 50, 106, 91]])
    np.testing.assert_allclose(result.scores, [0.9, 0.8])
    assert [result.classes.name(int(i)) for i in result.class_ids] == ["person", "car"]
    assert list(result.class_ids) == [1, 3]


def test_tf_postprocessing_clips_to_the_frame_and_skips_what_is_not_a_detection() -> None:
    boxes = detections((0, 0, 0.9, -0.2, -0.1, 1.3, 0.5),  # spills over the left, top and right edges
                       (0, 95, 0.9, 0.1, 0.1, 0.2, 0.2),  # a class the masks do not have
                       (0, 5, 0.9, 0.6, 0.6, 0.4, 0.4),  # x2 < x1: no box
                       (-1, -1, 0.0, 0, 0, 0, 0))  # OpenCV's empty row
    result = tf_segmentation(boxes, uniform_masks([0, 0, 5, 0]), 40, 60, score_threshold=0.5, mask_threshold=0.5)
    assert len(result) == 1 and result.masks is not None
    np.testing.assert_array_equal(result.boxes, [[0, 0, 60, 21]])
    assert result.full_masks()[0, :21].all() and not result.full_masks()[0, 21:].any()


def test_tf_postprocessing_with_no_detections_and_bad_shapes() -> None:
    empty = tf_segmentation(np.zeros((1, 1, 0, 7), np.float32), np.zeros((0, 90, 15, 15), np.float32), 30, 40,
                            score_threshold=0.5, mask_threshold=0.5)
    assert len(empty) == 0 and empty.masks is not None and empty.full_masks().shape == (0, 30, 40)
    for boxes, masks in ((detections((0, 0, 0.9, 0, 0, 1, 1)), np.zeros((90, 15, 15), np.float32)),
                         (np.zeros((1, 1, 2, 5), np.float32), np.zeros((2, 90, 15, 15), np.float32))):
        with pytest.raises(EngineError, match=r"expected \(1, 1, N, 7\) and \(N, classes, h, w\): not a Mask R-CNN"):
            tf_segmentation(boxes, masks, 30, 40, score_threshold=0.5, mask_threshold=0.5)


def test_tf_class_filter_keeps_the_wanted_coco_classes() -> None:
    keep = np.zeros(len(COCO.names), bool)
    keep[COCO.ids_of(["dog"])] = True
    boxes = detections((0, 0, 0.9, 0, 0, 0.5, 0.5), (0, 17, 0.9, 0.5, 0.5, 1, 1))
    result = tf_segmentation(boxes, uniform_masks([0, 17]), 20, 20, score_threshold=0.5, mask_threshold=0.5,
                             keep=keep)
    assert list(result.class_ids) == [18] and result.classes.name(18) == "dog"


@settings(max_examples=60, deadline=None)
@given(data=st.data(), height=st.integers(8, 90), width=st.integers(8, 90), count=st.integers(0, 6))
def test_tf_postprocessing_equals_opencvs_sample(data: st.DataObject, height: int, width: int, count: int) -> None:
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    corners = np.sort(rng.uniform(-0.2, 1.2, (count, 2, 2)), axis=1)  # x1 <= x2, y1 <= y2
    rows = np.column_stack([np.zeros(count), rng.integers(0, 90, count), rng.uniform(0, 1, count),
                            corners[:, 0, 0], corners[:, 0, 1], corners[:, 1, 0], corners[:, 1, 1]])
    boxes = rows.astype(np.float32).reshape(1, 1, count, 7)
    masks = rng.uniform(0, 1, (count, 90, 15, 15)).astype(np.float32)
    score_threshold, mask_threshold = data.draw(st.floats(0, 1)), data.draw(st.floats(0.05, 0.95))

    ours = tf_segmentation(boxes, masks, height, width, score_threshold=score_threshold,
                           mask_threshold=mask_threshold)
    theirs = sample_reference(boxes, masks, height, width, score_threshold, mask_threshold)

    assert ours.masks is not None and len(ours) == len(theirs)
    for i, (class_id, score, (left, top, right, bottom), mask) in enumerate(theirs):
        assert ours.class_ids[i] == class_id + 1 and ours.scores[i] == np.float32(score)
        assert tuple(ours.boxes[i]) == (left, top, right + 1, bottom + 1)
        np.testing.assert_array_equal(ours.full_masks()[i], mask)


def test_tf_class_ids_name_the_coco_classes_as_opencvs_list_does() -> None:
    names = OPENCV_COCO_NAMES
    assert len(names) == 90 and names[0] == "person" and names[89] == "toothbrush"
    unused = {"street sign", "hat", "shoe", "eye glasses", "plate", "mirror", "window", "desk", "door", "blender"}
    for graph_class, name in enumerate(names):  # graph class c is COCO id c + 1; the unused ten are unnamed
        assert COCO.names[graph_class + 1] == (None if name in unused else name), name
    assert COCO.names[0] is None and len(COCO.names) == 91
    assert COCO.name(1) == "person" and COCO.name(18) == "dog" and COCO.name(90) == "toothbrush"
    assert COCO.name(12) == "class 12"  # street sign: never predicted


# --- the TensorFlow Mask R-CNN graph: loading ----------------------------------------------------------------------


def protobuf_field(number: int, payload: bytes | str) -> bytes:
    """One length-delimited protobuf field."""
    data = payload.encode() if isinstance(payload, str) else payload
    return varint(number << 3 | 2) + varint(len(data)) + data


def varint(value: int) -> bytes:
    """A protobuf varint."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def tiny_tf_graph(folder: Path) -> tuple[Path, Path]:
    """A valid TensorFlow GraphDef (a float Placeholder into a Relu) and its text graph: not a Mask R-CNN."""
    dtype = protobuf_field(5, protobuf_field(1, "dtype") + protobuf_field(2, varint(6 << 3) + varint(1)))
    nodes = [protobuf_field(1, "image_tensor") + protobuf_field(2, "Placeholder") + dtype,
             protobuf_field(1, "relu") + protobuf_field(2, "Relu") + protobuf_field(3, "image_tensor")]
    model, config = folder / "tiny.pb", folder / "tiny.pbtxt"
    model.write_bytes(b"".join(protobuf_field(1, node) for node in nodes))
    config.write_text('node { name: "image_tensor" op: "Placeholder" attr { key: "dtype" value { type: DT_FLOAT } } }\n'
                      'node { name: "relu" op: "Relu" input: "image_tensor" }\n')
    return model, config


def test_tf_graph_needs_both_files_named_with_the_tutorials_names(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match=r"needs --model-file frozen_inference_graph\.pb --model-config "
                                          r"mask_rcnn_inception_v2_coco_2018_01_28\.pbtxt"):
        read_tf_graph("", "", "cpu")
    with pytest.raises(ConfigError, match=r"model_file .*missing\.pb' is not a file; give --model-file"):
        create_engine("maskrcnn_tf", {"model_file": str(tmp_path / "missing.pb")})
    with pytest.raises(ConfigError, match="runs only on --backend opencv"):
        create_engine("maskrcnn_tf", {"backend": "onnx"})


@pytest.mark.skipif(TF_IMPORTER, reason="this OpenCV has the TensorFlow importer")
def test_tf_graph_without_a_tensorflow_importer_says_so(tmp_path: Path) -> None:
    model, config = tiny_tf_graph(tmp_path)
    with pytest.raises(EngineError, match=f"OpenCV {cv2.__version__} cannot read TensorFlow graphs .*<5'"):
        read_tf_graph(str(model), str(config), "cpu")
    assert "no TensorFlow importer" in create_engine("maskrcnn_tf").availability()


@pytest.mark.skipif(not TF_IMPORTER, reason="this OpenCV has no TensorFlow importer (OpenCV 5)")
def test_tf_graph_that_opencv_cannot_parse_or_is_no_mask_rcnn(tmp_path: Path) -> None:
    model, config = tiny_tf_graph(tmp_path)
    garbage = tmp_path / "garbage.pb"
    garbage.write_bytes(b"\xff\xff not a graph")
    with pytest.raises(EngineError, match=r"cannot load the TensorFlow graph .*garbage.pb .*Failed to parse"):
        read_tf_graph(str(garbage), str(config), "cpu")
    with pytest.raises(EngineError, match="is not a Mask R-CNN graph with its OpenCV config: it has no "
                                          "detection_out_final or detection_masks layer; give --model-file"):
        read_tf_graph(str(model), str(config), "cpu")
    assert "ready with --model-file" in create_engine("maskrcnn_tf").availability()


def test_cli_maskrcnn_tf_without_its_files_is_one_line_and_writes_nothing(
        sample_clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.mp4"
    assert main([str(sample_clip), str(out), "--engine", "maskrcnn_tf", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("seg-video: error: engine maskrcnn_tf needs --model-file")
    assert not out.exists()


def test_cli_maskrcnn_tf_on_mismatched_files_is_one_line(sample_clip: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    model, config = tiny_tf_graph(tmp_path)
    out = tmp_path / "out.mp4"
    assert main([str(sample_clip), str(out), "--engine", "maskrcnn_tf", "--model-file", str(model),
                 "--model-config", str(config), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("seg-video: error: ")
    assert ("TensorFlow graphs" if not TF_IMPORTER else "not a Mask R-CNN graph") in err
    assert not out.exists()


class StandInNet:
    """What cv2.dnn.readNetFromTensorflow returns for the real graph, answering with two crafted detections."""

    def __init__(self) -> None:
        self.blobs: list[np.ndarray] = []

    def empty(self) -> bool:
        return False

    def getLayerNames(self) -> tuple[str, ...]:
        return ("image_tensor", *maskrcnn_tf.OUTPUTS)

    def setInput(self, blob: np.ndarray) -> None:
        self.blobs.append(blob)

    def forward(self, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        assert names == list(maskrcnn_tf.OUTPUTS)
        return (detections((0, 0, 0.9, 0.1, 0.1, 0.4, 0.6), (0, 17, 0.8, 0.5, 0.3, 0.9, 0.9)),
                uniform_masks([0, 17]))


def test_cli_maskrcnn_tf_end_to_end_with_a_stand_in_net(sample_clip: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    net = StandInNet()
    read: list[tuple[Any, ...]] = []

    def read_tensorflow(*files: Any) -> StandInNet:
        read.append(files)
        return net

    monkeypatch.setattr(cv2.dnn, "readNetFromTensorflow", read_tensorflow, raising=False)
    model, config = tmp_path / "frozen_inference_graph.pb", tmp_path / "graph.pbtxt"
    model.write_bytes(b"graph")
    config.write_text("config")
    out, coco = tmp_path / "out.mp4", tmp_path / "out.json"
    assert main([str(sample_clip), str(out), "--engine", "maskrcnn_tf", "--model-file", str(model),
                 "--model-config", str(config), "--backend", "auto", "--max-frames", "2", "--coco", str(coco),
                 "--quiet"]) == 0
    assert read == [(str(model), str(config))]
    assert [blob.shape for blob in net.blobs] == [(1, 3, 800, 800)] * 2
    results = json.loads(coco.read_text())
    names = {category["id"]: category["name"] for category in results["categories"]}
    found = [(names[a["category_id"]], a["bbox"]) for a in results["annotations"] if a["image_id"] == 1]
    assert sorted(found) == [("dog", [160.0, 72.0, 129.0, 145.0]), ("person", [32.0, 24.0, 97.0, 121.0])]
