"""tools/eval.py on tiny ground truths whose answers are known by construction, and on a real export."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from tool_modules import load_tool

from seg_video.cli.main import main as seg_video
from seg_video.core.colors import voc_palette
from seg_video.io.sample import SampleScene

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools decode


@pytest.fixture(scope="module")
def tool() -> ModuleType:
    """tools/eval.py as a module."""
    return load_tool("eval")


def save_maps(folder: Path, maps: dict[str, np.ndarray]) -> Path:
    """Palette PNG label maps, as VOC's SegmentationClass has them."""
    folder.mkdir()
    for name, labels in maps.items():
        picture = Image.fromarray(labels.astype(np.uint8))
        picture.putpalette(voc_palette(256)[:, ::-1].tobytes())
        picture.save(folder / f"{name}.png")
    return folder


def square(top: int, left: int, size: int = 10, shape: tuple[int, int] = (20, 20)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[top:top + size, left:left + size] = True
    return mask


def coco_file(path: Path, masks: list[tuple[str, np.ndarray, int]], scores: bool) -> Path:
    """A COCO file of one instance per (image name, mask, category id); categories 1 cat, 2 dog."""
    names = sorted({name for name, _, _ in masks})
    images = [{"id": i + 1, "file_name": f"{name}.png", "height": 20, "width": 20} for i, name in enumerate(names)]
    annotations = []
    for k, (name, mask, category) in enumerate(masks):
        rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
        annotation: dict[str, Any] = {
            "id": k + 1, "image_id": names.index(name) + 1, "category_id": category, "iscrowd": 0,
            "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
            "area": int(mask.sum()), "bbox": [float(v) for v in mask_utils.toBbox(rle)]}
        if scores:
            annotation["score"] = 0.9
        annotations.append(annotation)
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}))
    return path


def test_semantic_perfect_and_half_shifted(tool: ModuleType, tmp_path: Path) -> None:
    truth = np.zeros((20, 20), np.uint8)
    truth[square(0, 0)] = 1
    truth[19, :] = 255  # void: never scored
    gt = save_maps(tmp_path / "gt", {"a": truth})
    perfect = save_maps(tmp_path / "perfect", {"a": np.where(truth == 255, 0, truth)})
    shifted = np.zeros((20, 20), np.uint8)
    shifted[square(0, 5)] = 1  # half of the square moved off it

    report = tool.evaluate(perfect, gt)
    assert (report["mIoU"], report["pixel_accuracy"]) == (1.0, 1.0)

    report = tool.evaluate(save_maps(tmp_path / "shifted", {"a": shifted}), gt)
    # Scored pixels: 380. Class 1: 50 hit, 50 missed, 50 extra → 1/3. Background: 230 hit of 280 true and 280
    # predicted → 230/330. Pixel accuracy: (230 + 50) / 380.
    ious = {c["id"]: c["iou"] for c in report["classes"]}
    assert ious == pytest.approx({0: 230 / 330, 1: 1 / 3})
    assert report["mIoU"] == pytest.approx((230 / 330 + 1 / 3) / 2)
    assert report["pixel_accuracy"] == pytest.approx(280 / 380)


def test_instance_perfect_and_shifted(tool: ModuleType, tmp_path: Path) -> None:
    gt = coco_file(tmp_path / "gt.json", [("a", square(0, 0), 1), ("b", square(5, 5), 2)], scores=False)
    perfect = coco_file(tmp_path / "perfect.json", [("a", square(0, 0), 1), ("b", square(5, 5), 2)], scores=True)
    # Moved 2 px right: IoU 80 / 120 = 2/3, a match at IoU thresholds 0.50, 0.55, 0.60, 0.65 of the ten.
    moved = coco_file(tmp_path / "moved.json", [("a", square(0, 2), 1), ("b", square(5, 7), 2)], scores=True)

    report = tool.evaluate(perfect, gt)
    for kind in ("mask", "box"):
        assert (report[kind]["AP"], report[kind]["AP50"], report[kind]["AP75"]) == pytest.approx((1.0, 1.0, 1.0))
        assert report[kind]["per_class"] == pytest.approx({"cat": 1.0, "dog": 1.0})

    report = tool.evaluate(moved, gt)
    for kind in ("mask", "box"):
        assert report[kind]["AP"] == pytest.approx(0.4)
        assert (report[kind]["AP50"], report[kind]["AP75"]) == pytest.approx((1.0, 0.0))
        assert report[kind]["per_class"] == pytest.approx({"cat": 0.4, "dog": 0.4})


def test_a_results_list_and_renamed_categories(tool: ModuleType, tmp_path: Path) -> None:
    gt = coco_file(tmp_path / "gt.json", [("a", square(0, 0), 1), ("b", square(5, 5), 2)], scores=False)
    dataset = json.loads(coco_file(tmp_path / "p.json", [("b", square(5, 5), 2)], scores=True).read_text())
    listed = tmp_path / "results.json"
    listed.write_text(json.dumps([{**a, "image_id": 2} for a in dataset["annotations"]]))  # the truth's id of b
    assert tool.evaluate(listed, gt)["mask"]["per_class"] == pytest.approx({"cat": 0.0, "dog": 1.0})  # cat missed
    dataset["categories"] = [{"id": 7, "name": "dog"}]  # another numbering: matched by name
    for annotation in dataset["annotations"]:
        annotation["category_id"] = 7
    renumbered = tmp_path / "renumbered.json"
    renumbered.write_text(json.dumps(dataset))
    assert tool.evaluate(renumbered, gt)["box"]["per_class"] == pytest.approx({"cat": 0.0, "dog": 1.0})
    dataset["categories"] = [{"id": 7, "name": "Dog"}]  # no predicted class is a ground-truth class: refused
    renumbered.write_text(json.dumps(dataset))
    with pytest.raises(tool.EvalError, match=r"no predicted class is a ground-truth class .* predicted Dog; ground "
                                             r"truth cat, dog"):
        tool.evaluate(renumbered, gt)


def test_coco_predictions_against_label_maps(tool: ModuleType, tmp_path: Path) -> None:
    truth = np.zeros((20, 20), np.uint8)
    truth[square(0, 0)], truth[square(10, 10)] = 1, 2
    gt = save_maps(tmp_path / "gt", {"a": truth})
    pred = coco_file(tmp_path / "p.json", [("a", square(0, 0), 1), ("a", square(10, 10), 2)], scores=True)
    report = tool.evaluate(pred, gt)
    assert report["mIoU"] == 1.0
    assert [c["name"] for c in report["classes"]] == ["background", "cat", "dog"]


def test_the_command_prints_a_table_writes_json_and_refuses_instance_maps(
        tool: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gt = save_maps(tmp_path / "gt", {"a": np.ones((4, 4), np.uint8)})
    out = tmp_path / "report.json"
    assert tool.main([str(gt), str(gt), "--json", str(out)]) == 0
    assert "mIoU 1.0000" in capsys.readouterr().out
    assert json.loads(out.read_text())["mIoU"] == 1.0
    (tmp_path / "tracks").mkdir()
    (tmp_path / "tracks" / "legend.json").write_text('{"kind": "instance"}')
    assert tool.main([str(tmp_path / "tracks"), str(gt)]) == 2
    assert "instance (track) ids" in capsys.readouterr().err
    assert tool.main([str(tmp_path / "missing.json"), str(gt)]) == 2


def test_a_real_export_scores_against_the_sample_scene(tool: ModuleType, sample_clip: Path, tmp_path: Path) -> None:
    """End to end: the motion engine's COCO export of the sample clip against the scene's exact masks."""
    pred = tmp_path / "pred.json"
    assert seg_video([str(sample_clip), "--no-video", "--coco", str(pred), "--quiet"]) == 0
    scene = SampleScene(320, 240, 30.0)
    truth = [(f"{i:06d}", mask, 1) for i in range(60) for mask in scene.render(i)[1] if mask.any()]
    gt = coco_file_sized(tmp_path / "gt.json", truth, (240, 320))
    report = tool.evaluate(pred, gt)
    assert report["images"] == 45  # the frames with objects (the scene starts empty)
    assert report["mask"]["AP50"] > 0.7
    assert report["mask"]["per_class"].keys() == {"moving"}


def coco_file_sized(path: Path, masks: list[tuple[str, np.ndarray, int]], shape: tuple[int, int]) -> Path:
    """Like `coco_file`, for `shape`-sized images, with one category: moving."""
    coco_file(path, masks, scores=False)
    data = json.loads(path.read_text())
    for image in data["images"]:
        image["height"], image["width"] = shape
    data["categories"] = [{"id": 1, "name": "moving"}]
    path.write_text(json.dumps(data))
    return path
