"""tools/gpu_check.py on the CPU: the dry run end to end (every item reported, a failing item costing only itself),
a crash and a hang stopped at their timeouts, the derived items, and the agreement measures it shares with the engine
tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tool_modules import TOOLS, load_tool

from seg_video.core.types import ClassTable, Segmentation, boxes_from_masks

gpu_check = load_tool("gpu_check")
agreement = load_tool("_agreement")
ITEM_NAMES = [item.name for item in gpu_check.ITEMS]


def check(out: Path, *args: str, sabotage: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """Run the tool as the GPU machine will (its own process, `GPU_CHECK_SABOTAGE` set); its exit and report."""
    finished = subprocess.run([sys.executable, str(TOOLS / "gpu_check.py"), "--out", str(out), *args],
                              capture_output=True, text=True, timeout=600,
                              env={**os.environ, "GPU_CHECK_SABOTAGE": sabotage})
    return finished, json.loads((out / "report.json").read_text())


def statuses(report: dict[str, Any]) -> dict[str, str]:
    return {row["name"]: row["status"] for row in report["items"]}


def test_dry_run_reports_every_item_and_a_failing_one_stops_nothing(tmp_path: Path) -> None:
    finished, report = check(tmp_path / "out", "--dry-run", sabotage="environment=fail")
    status = statuses(report)
    assert finished.returncode == 1, finished.stderr  # one item failed
    assert list(status) == ITEM_NAMES and report["dry_run"] is True
    assert status["environment"] == "failed: AssertionError: environment fails on purpose (GPU_CHECK_SABOTAGE)"
    assert {status[name] for name in ("agreement", "fcn_speed", "maskrcnn_e2e", "shared_engine", "gpu_tests")} == \
        {"ok"}
    assert status["compiled_ratio"].startswith("not available here: ")
    assert status["peak_memory"].startswith("not available here: ")
    rows = {row["name"]: row for row in report["items"]}
    compared = rows["agreement"]["data"]  # eager FP32 against itself: the comparison runs, and finds no difference
    assert compared["fcn vs torch fp32: torch fp32 batch 1"]["identical_pixels_pct"] == 100.0
    instances = compared["maskrcnn vs torch fp32: torch fp32 batch 1"]
    assert instances["reference_instances"] == instances["matched"] == 3 and instances["worst_frame_mask_iou"] == 1.0
    (speed,) = (row for row in rows["fcn_speed"]["data"].values())
    assert speed["fps"] > 0 and speed["frames_timed"] >= 4 and speed["on"].startswith("CPU dry run")
    assert rows["maskrcnn_e2e"]["data"]["torch fp32 batch 1"]["fps"] > 0
    assert rows["shared_engine"]["data"]["result"]["identical_frames"] == "6/6"
    outcomes = rows["gpu_tests"]["data"]
    assert outcomes and all(outcome == "skipped: needs a CUDA GPU" for outcome in outcomes.values())
    assert "tests.test_gpu_backends::test_onnx_runtime_on_cuda_matches_torch" in outcomes
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert all(f"| {name} | {status[name]} |" in markdown for name in ITEM_NAMES)
    assert "\n| torch fp32 batch 2 | torch | fp32 | 2 | 4 | " in markdown  # a configuration as a table row
    assert [line.split(":")[0].split("] ")[1] for line in finished.stdout.splitlines()[:-1]] == ITEM_NAMES
    assert not (tmp_path / "out" / "tmp").exists()
    assert "===== shared_engine" in (tmp_path / "out" / "log.txt").read_text()


def test_a_crash_and_a_hang_cost_their_items_only(tmp_path: Path) -> None:
    finished, report = check(tmp_path / "out", "--dry-run", "--items", "agreement,gpu_tests,fcn_speed",
                             "--budget", "12", sabotage="agreement=crash,gpu_tests=hang")
    status = statuses(report)
    assert finished.returncode == 1 and list(status) == ["agreement", "gpu_tests", "fcn_speed"]
    assert status["agreement"].startswith(f"failed: exit code -{signal.SIGABRT} ")  # as a CUDA fault can end it
    assert status["gpu_tests"].startswith("failed: timed out after ")
    assert status["fcn_speed"] == "not run: time budget"
    assert sum(row["seconds"] for row in report["items"]) < 14


def test_environment_names_the_libraries_and_the_device() -> None:
    facts = load_tool("_gpu_env").environment()
    assert facts["torch"] == torch.__version__ and facts["numpy"] == np.__version__
    expected = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (torch sees no CUDA device)"
    assert facts["gpu"] == expected
    assert facts["tensorrt"].startswith("not available (") or facts["tensorrt"][0].isdigit()


def row(backend: str, precision: str, batch: int, fps: float, peak: float | None = None) -> dict[str, Any]:
    return {"backend": backend, "precision": precision, "batch": batch, "fps": fps, "peak_memory_mib": peak}


def test_compiled_ratio_and_peak_memory_come_from_the_measurements() -> None:
    speed = {"data": {"torch fp32 batch 1": row("torch", "fp32", 1, 100.0, 900.0),
                      "torch-compiled fp16 batch 1": row("torch-compiled", "fp16", 1, 350.0, 700.0),
                      "torch fp16 batch 1": row("torch", "fp16", 1, 180.0, 500.0),
                      "torch-compiled fp16 batch 8": row("torch-compiled", "fp16", 8, 500.0, 2000.0),
                      "trt fp16 batch 1": "not available here: needs onnx and tensorrt"}}
    end_to_end = {"data": {"torch fp16 batch 1": row("torch", "fp16", 1, 40.0, 3000.0)}}
    results = {"fcn_speed": speed, "maskrcnn_e2e": end_to_end}
    ratio = gpu_check.compiled_ratio(results)
    assert ratio["data"] == {"torch-compiled fp16 batch 1": {"vs": "torch fp32", "ratio": 3.5, "target": 3.0}}
    assert ratio["summary"] == "best 3.50x eager FP32 (target ≥ 3x)"
    peaks = gpu_check.peak_memory(results)["data"]
    assert peaks["maskrcnn_e2e torch fp16 batch 1"] == 3000.0 and len(peaks) == 5
    assert gpu_check.compiled_ratio({})["status"].startswith("not available here")


def instances(masks: np.ndarray, class_ids: list[int]) -> Segmentation:
    return Segmentation(height=masks.shape[1], width=masks.shape[2], classes=ClassTable(("bg", "a", "b")),
                        boxes=boxes_from_masks(masks), scores=np.ones(len(masks)), class_ids=np.array(class_ids),
                        masks=masks)


def test_agreement_pairs_same_class_instances_and_compares_their_masks() -> None:
    masks = np.zeros((3, 40, 60), bool)
    masks[0, 5:25, 5:25], masks[1, 10:30, 30:55], masks[2, 30:38, 2:10] = True, True, True
    reference = instances(masks, [1, 2, 1])
    grown = masks.copy()
    grown[0, 25:27, 5:25] = True  # 440 pixels against 400, box IoU 0.91
    found = agreement.instance_agreement(instances(grown[:2], [1, 1]), reference)  # the second one's class differs
    assert (found.reference, found.compared, found.matched) == (3, 2, 1)
    assert found.matched_fraction == 1 / 3 and found.mask_iou == 400 / 440
    labels = np.zeros((40, 60), np.int64)
    other = labels.copy()
    other[:4] = 1
    semantic = Segmentation(height=40, width=60, classes=ClassTable(("bg", "a")), label_map=labels)
    assert agreement.label_agreement(Segmentation(height=40, width=60, classes=semantic.classes, label_map=other),
                                     semantic) == 0.9


def test_pytest_outcomes_from_junit_and_from_verbose_lines(tmp_path: Path) -> None:
    (tmp_path / "test_three.py").write_text(
        "import pytest\n\ndef test_passes():\n    pass\n\ndef test_fails():\n    assert False, 'wrong mask'\n\n"
        "def test_skips():\n    pytest.skip('no GPU')\n")
    finished = subprocess.run([sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider",
                               f"--junitxml={tmp_path / 'j.xml'}", "test_three.py"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)
    reader = load_tool("_gpu_pytest")
    assert reader.junit_outcomes(tmp_path / "j.xml") == {
        "test_three::test_passes": "passed", "test_three::test_fails": "failed: AssertionError: wrong mask",
        "test_three::test_skips": "skipped: no GPU"}
    assert reader.verbose_outcomes(finished.stdout) == {
        "test_three::test_passes": "passed", "test_three::test_fails": "failed", "test_three::test_skips": "skipped"}
