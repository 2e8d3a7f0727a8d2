"""Mask R-CNN from the TensorFlow Object Detection API, the graph OpenCV's tutorials use, on OpenCV DNN.

The model is `frozen_inference_graph.pb` (from mask_rcnn_inception_v2_coco_2018_01_28.tar.gz) with OpenCV's text
graph for it, `mask_rcnn_inception_v2_coco_2018_01_28.pbtxt` (README, Engines, says where to get both), read by
`cv2.dnn.readNetFromTensorflow`: OpenCV 4.x has that importer, OpenCV 5 dropped it (said in one line if missing).

What this relies on, as OpenCV's sample samples/dnn/mask_rcnn.py does:
- input: the frame as a blob resized to input_width×input_height (800×800 in the sample), RGB (`swapRB`), not
  cropped, pixel values 0..255 (the graph scales them itself);
- `detection_out_final` (1,1,N,7): rows [batch, class, score, x1, y1, x2, y2], corners as fractions of the picture
  (so they map to the frame whatever the input size); `detection_masks` (N,90,15,15): per-class mask probabilities
  (already sigmoid), row i for detection i;
- class: 0-based into the 90 COCO category ids (the sample indexes its 90-line object_detection_classes_coco.txt,
  0 = person, and the mask channels with it), so graph class c is COCO category c + 1. Results carry the COCO id,
  named by torchvision's COCO table (background 0, ids 1..90 with the ten unused ones unnamed): the same ids and
  names as `maskrcnn`, so colours, tracking, COCO exports and `--classes` agree between the two.

Post-processing is the sample's, vectorised over detections: kept where score > score_threshold; corners scaled
to the frame and truncated to whole pixels (`int(width * x1)`), clipped into the frame; the class's 15×15 mask
resized bilinearly (cv2.resize) to the box's size in pixels, corners included, and kept where > mask_threshold.
Boxes are those pixel boxes as xyxy with x2/y2 exclusive (as `boxes_from_masks`), in frame coordinates.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from seg_video.core.errors import EngineError
from seg_video.core.types import ClassTable, Frame, InstanceMasks, Segmentation
from seg_video.engines.base import Engine
from seg_video.engines.models.maskrcnn import MaskRCNNParams
from seg_video.engines.runners.choice import Backend
from seg_video.engines.runners.opencv import DnnTarget, check_opencv_settings, forward, read_net, target_problem

log = logging.getLogger(__name__)

COCO = MaskRCNNParams.table
"""COCO category ids 0..90 (0 background, unused ids unnamed), as torchvision's detection weights name them."""
OUTPUTS = ("detection_out_final", "detection_masks")
GRAPH_FILES = ("--model-file frozen_inference_graph.pb --model-config mask_rcnn_inception_v2_coco_2018_01_28.pbtxt "
               "(the TensorFlow Object Detection API graph and OpenCV's text graph for it; README: Engines)")


@dataclass
class MaskRCNNTFParams:
    """The graph's two files, where OpenCV runs it, the input size and the thresholds of OpenCV's sample."""

    model_file: str = ""
    """The frozen TensorFlow graph (.pb), e.g. frozen_inference_graph.pb."""
    model_config: str = ""
    """OpenCV's text graph (.pbtxt) for it, e.g. mask_rcnn_inception_v2_coco_2018_01_28.pbtxt."""
    backend: Backend = "opencv"
    """opencv (or auto, which picks it): no other backend reads TensorFlow graphs."""
    dnn_target: DnnTarget = "cpu"
    """Where OpenCV DNN runs the graph: cpu, or cuda / cuda-fp16 (an OpenCV 4.x built with CUDA)."""
    score_threshold: float = 0.5
    """Keep detections scored above this."""
    mask_threshold: float = 0.5
    """A pixel belongs to an instance where its resized mask probability is above this."""
    input_width: int = 800
    """Width of the blob the frame is resized to (OpenCV's sample: 800)."""
    input_height: int = 800
    """Height of the blob the frame is resized to (OpenCV's sample: 800)."""
    classes: tuple[str, ...] = ()
    """COCO class names to keep (empty: all)."""

    def validate(self) -> None:
        """Reject values no run could use; a missing pair of files is said when the engine loads."""
        if self.backend not in ("auto", "opencv"):
            raise ValueError(f"runs only on --backend opencv (or auto, which picks it): a TensorFlow graph, which "
                             f"backend {self.backend} cannot read")
        for name in ("model_file", "model_config"):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise ValueError(f"{name} {path!r} is not a file; give {GRAPH_FILES}")
        for name in ("score_threshold", "mask_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1; got {getattr(self, name)}")
        for name in ("input_width", "input_height"):
            if not 32 <= getattr(self, name) <= 4096:
                raise ValueError(f"{name} must be 32..4096 pixels; got {getattr(self, name)}")
        try:
            COCO.ids_of(list(self.classes))
        except KeyError as error:
            raise ValueError(error.args[0]) from None


def tf_reader() -> Callable[[str, str], cv2.dnn.Net] | None:
    """`cv2.dnn.readNetFromTensorflow`, or None in an OpenCV without it (OpenCV 5)."""
    return getattr(cv2.dnn, "readNetFromTensorflow", None)


def read_tf_graph(model_file: str, model_config: str, target: str) -> cv2.dnn.Net:
    """The TensorFlow Mask R-CNN graph read by OpenCV and set to run on `target`; every reason it cannot be is one
    `EngineError` line: a file not given, no TensorFlow importer, a file OpenCV cannot parse, a pair that is not a
    Mask R-CNN graph with its config."""
    if not (model_file and model_config):
        raise EngineError(f"engine maskrcnn_tf needs {GRAPH_FILES}")
    read = tf_reader()
    if read is None:
        raise EngineError(f"engine maskrcnn_tf: OpenCV {cv2.__version__} cannot read TensorFlow graphs (OpenCV 5 "
                          f"dropped that importer); install OpenCV 4.x: pip install 'opencv-contrib-python>=4.8,<5'")
    what = f"the TensorFlow graph {model_file} with config {model_config}"
    net = read_net(lambda: read(model_file, model_config), what, target, f"; give {GRAPH_FILES}")
    absent = [name for name in OUTPUTS if name not in set(net.getLayerNames())]
    if absent:
        raise EngineError(f"{what} is not a Mask R-CNN graph with its OpenCV config: it has no "
                          f"{' or '.join(absent)} layer; give {GRAPH_FILES}")
    return net


def tf_segmentation(boxes: npt.NDArray[np.float32], masks: npt.NDArray[np.float32], height: int, width: int, *,
                    score_threshold: float, mask_threshold: float,
                    keep: npt.NDArray[np.bool_] | None = None) -> Segmentation:
    """The graph's `detection_out_final` (1,1,N,7) and `detection_masks` (N,classes,h,w) for one frame of
    `height`×`width` as a `Segmentation` in that frame's pixels (module docstring: the rules); `keep` (by COCO id)
    drops unwanted classes."""
    if boxes.shape[-1:] != (7,) or masks.ndim != 4 or len(masks) < boxes.size // 7:
        raise EngineError(f"maskrcnn_tf: the graph gave detection_out_final {boxes.shape} and detection_masks "
                          f"{masks.shape}; expected (1, 1, N, 7) and (N, classes, h, w): not a Mask R-CNN graph")
    rows = boxes.reshape(-1, 7)
    graph_ids = rows[:, 1].astype(np.int64)
    chosen = (rows[:, 2] > score_threshold) & (graph_ids >= 0) & (graph_ids < masks.shape[1])
    if keep is not None:
        chosen &= keep[np.clip(graph_ids + 1, 0, len(keep) - 1)]
    limits = np.array([width - 1, height - 1, width - 1, height - 1])
    corners = np.trunc(rows[:, 3:7] * np.array([width, height, width, height], np.float32))
    pixels = np.clip(corners.astype(np.int64), 0, limits)
    chosen &= (pixels[:, 2] >= pixels[:, 0]) & (pixels[:, 3] >= pixels[:, 1])
    index = np.flatnonzero(chosen)
    pixels = pixels[index]
    probabilities = masks[index, graph_ids[index]].astype(np.float32)
    found = (pixels + np.array([0, 0, 1, 1])).astype(np.int64)
    crops = [cv2.resize(probability, (int(x2 - x1), int(y2 - y1))) > mask_threshold
             for (x1, y1, x2, y2), probability in zip(found.tolist(), probabilities, strict=True)]
    return Segmentation(height=height, width=width, classes=COCO, boxes=found, scores=rows[index, 2],
                        class_ids=graph_ids[index] + 1, masks=InstanceMasks.from_crops(height, width, found, crops))


class MaskRCNNTFEngine(Engine):
    """TensorFlow Object Detection API Mask R-CNN (Inception v2, COCO) on OpenCV DNN: 80 COCO classes."""

    name = "maskrcnn_tf"
    summary = ("Mask R-CNN Inception v2 (TensorFlow Object Detection API, OpenCV's tutorial graph) on OpenCV DNN: "
               "80 COCO classes")
    needs = "--model-file frozen_inference_graph.pb --model-config its OpenCV .pbtxt; OpenCV 4.x"
    kind = "instance"
    Params = MaskRCNNTFParams

    def __init__(self, params: MaskRCNNTFParams) -> None:
        self.params = params
        check_opencv_settings(params.dnn_target, "opencv", "fp32")
        self._net: cv2.dnn.Net | None = None
        self._keep: npt.NDArray[np.bool_] | None = None
        if params.classes:
            self._keep = np.zeros(len(COCO.names), bool)
            self._keep[COCO.ids_of(list(params.classes))] = True

    @property
    def classes(self) -> ClassTable:
        """COCO category ids (module docstring: how the graph's 0-based classes map to them)."""
        return COCO

    @classmethod
    def availability(cls) -> str:
        """Whether this OpenCV can read TensorFlow graphs, and where it can run them."""
        if tf_reader() is None:
            return f"not here: OpenCV {cv2.__version__} has no TensorFlow importer (OpenCV 4.x has)"
        cuda = "CUDA: yes" if target_problem("cuda") is None else "CUDA: no (runs on CPU)"
        return f"ready with --model-file and --model-config (OpenCV {cv2.__version__}; {cuda})"

    def load(self) -> None:
        """Read the graph in the infer thread, which then owns the net."""
        if self.params.backend == "auto":
            log.info("%s: backend auto → opencv (the only backend that reads TensorFlow graphs)", self.name)
        self._net = read_tf_graph(self.params.model_file, self.params.model_config, self.params.dnn_target)

    def prepare(self, frame: Frame) -> np.ndarray:
        """The frame as the graph's input blob: RGB, resized to the input size, not cropped, 0..255."""
        size = (self.params.input_width, self.params.input_height)
        return cv2.dnn.blobFromImage(frame.image, 1.0, size, (0, 0, 0), swapRB=True, crop=False)

    def infer(self, frames: Sequence[Frame], prepared: Sequence[np.ndarray]) -> list[Segmentation]:
        """One forward per frame (as OpenCV's sample), post-processed in the frame's coordinates."""
        if self._net is None:
            raise RuntimeError(f"{self.name}: infer() called before load()")
        results = []
        for frame, blob in zip(frames, prepared, strict=True):
            self._net.setInput(blob)
            boxes, masks = forward(self._net, OUTPUTS, f"the {self.name} graph")
            results.append(tf_segmentation(boxes, masks, *frame.size, score_threshold=self.params.score_threshold,
                                           mask_threshold=self.params.mask_threshold, keep=self._keep))
        return results

    def close(self) -> None:
        """Drop the net."""
        self._net = None
