"""Evaluate segmentations against ground truth: mIoU and pixel accuracy, or mask and box AP (pycocotools).

    python tools/eval.py PRED GT [--json report.json] [--ignore-index 255]

PRED and GT are each a COCO JSON file (seg-video's `--coco` export, a COCO dataset, or for PRED a plain COCO
results list) or a folder of PNG label maps (`--masks-dir` of a semantic engine, VOC `SegmentationClass`; one
class id per pixel, palette or greyscale). Images pair up by file name without its extension (`000012.png` in a
COCO file and `000012.png` in a folder); ground-truth images without a prediction count as predicting nothing.

- Two COCO files: instance metrics. Mask AP and box AP (COCO's AP over IoU 0.50:0.95, and AP50, AP75) overall and
  per class; prediction categories match ground-truth categories by name.
- A folder on either side: semantic metrics. Per-class IoU and accuracy, mIoU (over the classes present in ground
  truth or prediction), pixel accuracy; pixels of `--ignore-index` in ground truth (VOC's void 255) do not count.
  A COCO side is drawn into label maps of category ids (higher-scored instances on top); its category ids must be
  the folder's class ids.

Prints a table; `--json FILE` writes the same numbers as JSON. Exit 0, or 2 with a one-line error.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from seg_video.io.exports import LEGEND_FILE

LabelMaps = dict[str, npt.NDArray[np.int64]]
"""Label maps by image name (file name without extension)."""


class EvalError(Exception):
    """Inputs that cannot be evaluated; printed as one line."""


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry; returns the exit code."""
    parser = argparse.ArgumentParser(prog="eval", description="mIoU / pixel accuracy or mask / box AP of "
                                                             "predictions against ground truth")
    parser.add_argument("pred", type=Path, help="predictions: COCO JSON file or folder of PNG label maps")
    parser.add_argument("gt", type=Path, help="ground truth: COCO JSON file or folder of PNG label maps")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the report as JSON")
    parser.add_argument("--ignore-index", type=int, default=255, help="ground-truth id that is not scored (255)")
    args = parser.parse_args(argv)
    try:
        report = evaluate(args.pred, args.gt, ignore_index=args.ignore_index)
    except (EvalError, OSError, ValueError) as error:
        print(f"eval: error: {error}", file=sys.stderr)
        return 2
    print(table(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


def evaluate(pred: Path, gt: Path, *, ignore_index: int = 255) -> dict[str, Any]:
    """The report for `pred` against `gt` (see the module docstring for which metrics)."""
    for path in (pred, gt):
        if not path.exists():
            raise EvalError(f"not found: {path}")
    if pred.is_file() and gt.is_file():
        return instance_report(pred, gt)
    names = _class_names(pred) | _class_names(gt)
    return semantic_report(_label_maps(pred), _label_maps(gt), names, ignore_index)


def semantic_report(pred: LabelMaps, gt: LabelMaps, names: dict[int, str], ignore_index: int) -> dict[str, Any]:
    """Per-class IoU and accuracy, mIoU and pixel accuracy of `pred` against `gt`, over `gt`'s images."""
    if not gt:
        raise EvalError("the ground truth has no images")
    top = max(int(m.max(initial=0)) for m in (*gt.values(), *pred.values()))
    size = max(top, ignore_index) + 1
    confusion = np.zeros((size, size), np.int64)
    for name, truth in gt.items():
        guess = pred.get(name, np.zeros_like(truth))
        if guess.shape != truth.shape:
            raise EvalError(f"{name}: prediction is {guess.shape[1]}x{guess.shape[0]}, ground truth "
                            f"{truth.shape[1]}x{truth.shape[0]}")
        scored = truth != ignore_index
        pairs = truth[scored] * size + guess[scored]
        confusion += np.bincount(pairs, minlength=size * size).reshape(size, size)
    hits = np.diag(confusion)
    truths, guesses = confusion.sum(axis=1), confusion.sum(axis=0)
    classes = [{"id": int(c), "name": names.get(int(c), "background" if c == 0 else f"class {c}"),
                "iou": float(hits[c] / (truths[c] + guesses[c] - hits[c])),
                "accuracy": float(hits[c] / truths[c]) if truths[c] else None, "pixels": int(truths[c])}
               for c in np.flatnonzero(truths + guesses)]
    return {"kind": "semantic", "images": len(gt), "missing_predictions": len(set(gt) - set(pred)),
            "mIoU": float(np.mean([c["iou"] for c in classes])) if classes else 0.0,
            "pixel_accuracy": float(hits.sum() / max(1, confusion.sum())), "classes": classes}


def instance_report(pred: Path, gt: Path) -> dict[str, Any]:
    """Mask and box AP (overall, AP50, AP75, per class) of the COCO results in `pred` against the COCO `gt`."""
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools narrates each step on stdout
        truth = COCO(str(gt))
    results = _results_for(json.loads(pred.read_text(encoding="utf-8")), truth)
    report: dict[str, Any] = {"kind": "instance", "images": len(truth.getImgIds()), "detections": len(results)}
    for kind, key in (("mask", "segm"), ("box", "bbox")):
        if key == "segm" and any("segmentation" not in r for r in results):
            continue
        report[kind] = _average_precision(truth, results, key)
    return report


def _average_precision(truth: COCO, results: list[dict[str, Any]], iou_type: str) -> dict[str, Any]:
    """COCO AP, AP50, AP75 and per-class AP of `results` for one IoU type (segm or bbox)."""
    categories = truth.loadCats(truth.getCatIds())
    if not results:
        return {"AP": 0.0, "AP50": 0.0, "AP75": 0.0, "per_class": {c["name"]: 0.0 for c in categories}}
    with contextlib.redirect_stdout(io.StringIO()):
        found = truth.loadRes(results)
        run = COCOeval(truth, found, iou_type)
        run.evaluate()
        run.accumulate()
        run.summarize()
    precision = run.eval["precision"][:, :, :, 0, -1]  # IoU threshold, recall, class; all areas, 100 detections
    per_class = {}
    for k, category in enumerate(categories):
        scored = precision[:, :, k][precision[:, :, k] > -1]
        if scored.size:  # classes without ground truth have no AP
            per_class[category["name"]] = float(scored.mean())
    return {"AP": max(0.0, float(run.stats[0])), "AP50": max(0.0, float(run.stats[1])),
            "AP75": max(0.0, float(run.stats[2])), "per_class": per_class}


def _results_for(data: Any, truth: COCO) -> list[dict[str, Any]]:
    """COCO results on the ground truth's images: a results list as it is, or a dataset's annotations (such as
    seg-video's export) with image and category ids mapped to the ground truth's by file name and category name."""
    if isinstance(data, list):
        known = set(truth.getImgIds())
        return [result for result in data if result.get("image_id") in known]
    if not isinstance(data, dict) or "annotations" not in data:
        raise EvalError("predictions must be a COCO results list or a COCO file with annotations")
    image_ids = {Path(image["file_name"]).stem: image["id"] for image in truth.dataset["images"]}
    category_ids = {category["name"]: category["id"] for category in truth.dataset["categories"]}
    images = {image["id"]: image_ids.get(Path(image["file_name"]).stem) for image in data.get("images", [])}
    categories = {c["id"]: category_ids.get(c["name"]) for c in data.get("categories", [])}
    names = {c["id"]: c["name"] for c in data.get("categories", [])}
    used = {names.get(annotation["category_id"], f"id {annotation['category_id']}")
            for annotation in data["annotations"]}
    if used and not used & set(category_ids):
        raise EvalError(f"no predicted class is a ground-truth class (categories match by name): predicted "
                        f"{', '.join(sorted(used)[:8])}; ground truth {', '.join(sorted(category_ids)[:8])}")
    results = []
    for annotation in data["annotations"]:
        image, category = images.get(annotation["image_id"]), categories.get(annotation["category_id"])
        if image is not None and category is not None:
            results.append({**annotation, "image_id": image, "category_id": category})
    return results


def _label_maps(path: Path) -> LabelMaps:
    """Label maps by image name: a folder's PNGs, or a COCO file's annotations drawn (category id per pixel)."""
    if path.is_file():
        return _drawn(path)
    legend = path / LEGEND_FILE
    if legend.is_file() and json.loads(legend.read_text(encoding="utf-8")).get("kind") == "instance":
        raise EvalError(f"{path} holds instance (track) ids, not classes; evaluate the run's --coco file instead")
    maps = {}
    for png in sorted(path.glob("*.png")):
        with Image.open(png) as picture:
            if picture.mode not in ("P", "L", "I", "I;16"):
                raise EvalError(f"{png} is a {picture.mode} image, not a label map (one class id per pixel)")
            maps[png.stem] = np.asarray(picture).astype(np.int64)
    if not maps:
        raise EvalError(f"no PNG label maps in {path}")
    return maps


def _drawn(path: Path) -> LabelMaps:
    """Each image of a COCO file as a label map: its annotations' category ids, higher scores drawn last."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(path))
    maps = {}
    for image in coco.dataset["images"]:
        labels = np.zeros((image["height"], image["width"]), np.int64)
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
        for annotation in sorted(annotations, key=lambda a: a.get("score", 0.0)):
            labels[coco.annToMask(annotation).astype(bool)] = annotation["category_id"]
        maps[Path(image["file_name"]).stem] = labels
    return maps


def _class_names(path: Path) -> dict[int, str]:
    """Class names a COCO file's categories or a label-map folder's legend give, by id."""
    source = path if path.is_file() else path / LEGEND_FILE
    if not source.is_file():
        return {}
    data = json.loads(source.read_text(encoding="utf-8"))
    entries = (data.get("categories") or data.get("classes") or []) if isinstance(data, dict) else []
    return {int(entry["id"]): str(entry["name"]) for entry in entries}


def table(report: dict[str, Any]) -> str:
    """The report as a plain-text table."""
    if report["kind"] == "semantic":
        rows = [f"{'class':<24}{'IoU':>8}{'acc':>8}{'pixels':>12}"]
        for c in report["classes"]:
            accuracy = "-" if c["accuracy"] is None else f"{c['accuracy']:.4f}"
            rows.append(f"{c['name'][:23]:<24}{c['iou']:>8.4f}{accuracy:>8}{c['pixels']:>12}")
        rows.append(f"mIoU {report['mIoU']:.4f}   pixel accuracy {report['pixel_accuracy']:.4f}   "
                    f"({report['images']} images, {report['missing_predictions']} without prediction)")
        return "\n".join(rows)
    kinds = [kind for kind in ("mask", "box") if kind in report]
    names = sorted({name for kind in kinds for name in report[kind]["per_class"]})
    rows = [f"{'class':<24}" + "".join(f"{kind + ' AP':>10}" for kind in kinds)]
    for name in names:
        cells = [report[kind]["per_class"].get(name) for kind in kinds]
        rows.append(f"{name[:23]:<24}" + "".join(f"{'-' if v is None else f'{v:.4f}':>10}" for v in cells))
    for kind in kinds:
        result = report[kind]
        rows.append(f"{kind} AP {result['AP']:.4f}   AP50 {result['AP50']:.4f}   AP75 {result['AP75']:.4f}")
    rows.append(f"({report['images']} images, {report['detections']} detections)")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
