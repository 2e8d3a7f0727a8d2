"""One command for a lent GPU machine: measure, once and within a time budget, what seg-video's GPU path has never had
measured, and write it as a report (report.json and report.md under --out, rewritten after every item).

    python tools/gpu_check.py --out gpu-check                  # every item, 420 s in all
    python tools/gpu_check.py --out gpu-check --items fcn_speed,gpu_tests --budget 200
    python tools/gpu_check.py --dry-run --out /tmp/gpu-check   # the same code on the CPU at tiny sizes (~1 min)

Items, most important first (or in the order --items names them): environment, agreement (FP16 against FP32),
fcn_speed (FCN-ResNet50 engine-only at 520x520, batch 1 and 8), compiled_ratio, maskrcnn_e2e (Mask R-CNN 1280x720
end to end), peak_memory, shared_engine (two sources on one compiled engine), gpu_tests (pytest -m gpu). Each runs
in a process of its own with a timeout taken from the budget, so a hang or a CUDA fault costs only that item; what
cannot run here says "not available here: why", and what the budget leaves out says "not run: time budget".
Weights are random-initialised and seeded (the machines are offline); a line per item is printed as it ends.
Items share inductor's compile cache and seg-video's export cache in a temporary folder under --out, removed at the
end; each item's output goes to log.txt there. seg_video itself imports PyAV and pycocotools: where they are missing,
the engine items say so (carry their wheels); environment still reports.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _gpu_env import environment
from _gpu_pytest import ROOT, run_gpu_tests
from _gpu_report import write_json, write_report

Result = dict[str, Any]
"""An item's outcome: status (ok, failed: …, not available here: …, not run: …), summary, seconds, data."""


@dataclass(frozen=True)
class Item:
    """A line of the check: its name, what it measures, and the most seconds it may take of the default budget
    (scaled with --budget; derived items are computed from earlier items' data, in no time)."""

    name: str
    what: str
    cap: float = 0.0
    derive: Callable[[dict[str, Result]], Result] | None = None


def measured_rows(result: Result | None) -> dict[str, dict[str, Any]]:
    """An item's recorded configurations that were measured (those with numbers, not reasons)."""
    return {key: row for key, row in (result or {}).get("data", {}).items() if isinstance(row, dict) and "fps" in row}


def compiled_ratio(results: dict[str, Result]) -> Result:
    """torch-compiled FP16 (and trt FP16) against eager torch FP32, per batch, from fcn_speed's measurements."""
    rows = measured_rows(results.get("fcn_speed"))
    ratios = {}
    for key, row in rows.items():
        reference = rows.get(f"torch fp32 batch {row['batch']}")
        if row["precision"] == "fp16" and row["backend"] != "torch" and reference is not None:
            ratios[key] = {"vs": "torch fp32", "ratio": round(row["fps"] / reference["fps"], 2), "target": 3.0}
    if not ratios:
        return {"status": "not available here: fcn_speed measured no compiled FP16 with its eager FP32", "data": {}}
    best = max(ratio["ratio"] for ratio in ratios.values())
    return {"status": "ok", "summary": f"best {best:.2f}x eager FP32 (target ≥ 3x)", "data": ratios}


def peak_memory(results: dict[str, Result]) -> Result:
    """Peak GPU memory (MiB) of every measured configuration of fcn_speed and maskrcnn_e2e."""
    peaks = {f"{name} {key}": row["peak_memory_mib"] for name in ("fcn_speed", "maskrcnn_e2e")
             for key, row in measured_rows(results.get(name)).items() if row.get("peak_memory_mib") is not None}
    if not peaks:
        return {"status": "not available here: no configuration measured on a GPU", "data": {}}
    return {"status": "ok", "summary": f"highest {max(peaks.values()):.0f} MiB", "data": peaks}


BUDGET = 420.0
"""Seconds for all items together by default: an 8-minute lease less the installs before."""
ITEMS = (
    Item("environment", "GPU, driver, library versions, CPU", cap=20),
    Item("agreement", "FP16 (torch autocast, compiled, onnx CUDA, trt) against eager FP32: FCN, Mask R-CNN", cap=100),
    Item("fcn_speed", "FCN-ResNet50 engine-only fps at 520x520, batch 1 and 8 (target ≥ 300)", cap=90),
    Item("compiled_ratio", "compiled FP16 against eager FP32 speed (target ≥ 3x)", derive=compiled_ratio),
    Item("maskrcnn_e2e", "Mask R-CNN 1280x720 end-to-end fps through the pipeline (target ≥ 60)", cap=100),
    Item("peak_memory", "peak GPU memory per measured configuration", derive=peak_memory),
    Item("shared_engine", "two sources in two threads on one compiled engine: no error, same results", cap=40),
    Item("gpu_tests", "pytest -m gpu: each test's outcome", cap=BUDGET),
)
MIN_SECONDS = 10
"""An item is not started with less of the budget left."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the items (or, with the hidden --item, one item in this process) and write the report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for report.json, report.md, log.txt")
    parser.add_argument("--budget", type=float, default=BUDGET, help="seconds for all items together (default 420)")
    parser.add_argument("--items", help="comma-separated names, run in this order (default: all, as listed above)")
    parser.add_argument("--dry-run", action="store_true", help="on the CPU at tiny sizes, quickly")
    parser.add_argument("--clip", type=Path, help="a real clip to use instead of the generated sample scene")
    parser.add_argument("--item", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.item:
        return run_one(args.item, args)
    known = {item.name: item for item in ITEMS}
    names = args.items.split(",") if args.items else list(known)
    unknown = [name for name in names if name not in known]
    if unknown:
        parser.error(f"unknown items {', '.join(unknown)}; choose from {', '.join(known)}")
    return run_all([known[name] for name in names], args)


def run_all(items: list[Item], args: argparse.Namespace) -> int:
    """Each item in turn within the budget, the report rewritten after each; 0 when none failed."""
    out: Path = args.out
    temp = out / "tmp"
    temp.mkdir(parents=True, exist_ok=True)
    os.environ |= {"TORCHINDUCTOR_CACHE_DIR": str(temp / "inductor"), "TORCHINDUCTOR_FX_GRAPH_CACHE": "1",
                   "SEG_VIDEO_CACHE": str(temp / "cache"), "PYTHONUNBUFFERED": "1"}
    if args.dry_run:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # CPU only, on a GPU machine too (its gpu tests skip)
    started = time.time()
    deadline = started + args.budget
    results: dict[str, Result] = {}
    meta = {"started": datetime.now(UTC).isoformat(timespec="seconds"), "budget_s": args.budget,
            "dry_run": args.dry_run, "clip": str(args.clip) if args.clip else "the sample scene, generated",
            "weights": "random-initialised, seeded: the GPU machines are offline (speeds hold for trained weights, "
                       "except Mask R-CNN's per-detection work; agreement compares FP16 and FP32 of one model)"}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # killed from outside: stop the item, keep the report
    try:
        for item in items:
            begun = time.time()
            if item.derive is not None:
                result = item.derive(results)
            elif deadline - begun < MIN_SECONDS:
                result = {"status": "not run: time budget", "data": {}}
            else:
                seconds = min(item.cap * args.budget / BUDGET, deadline - begun)
                result = run_child(item, seconds, args, temp, out / "log.txt")
            results[item.name] = result | {"seconds": round(time.time() - begun, 1)}
            write_report(out, meta, [{"name": i.name, "what": i.what, **results.get(i.name, {"status": "pending"})}
                                     for i in items])
            print(f"[{time.time() - started:6.1f} s] {item.name}: {result['status']}"
                  + (f" — {result['summary']}" if result.get("summary") else ""), flush=True)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    print(f"report: {out / 'report.md'}", flush=True)
    return int(any(result["status"].startswith("failed") for result in results.values()))


def run_child(item: Item, seconds: float, args: argparse.Namespace, temp: Path, log: Path) -> Result:
    """Run one item in its own process group for at most `seconds`; its result, or how it ended."""
    results = temp / f"{item.name}.json"
    command = [sys.executable, __file__, "--item", item.name, "--out", str(args.out),
               "--deadline", str(time.time() + seconds), *(["--dry-run"] if args.dry_run else []),
               *(["--clip", str(args.clip)] if args.clip else [])]
    with log.open("a", encoding="utf-8") as output:
        output.write(f"\n===== {item.name} ({datetime.now(UTC).isoformat(timespec='seconds')}) =====\n")
        output.flush()
        child = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        code: int | None = None
        try:
            code = child.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            pass
        finally:  # also when this process is stopped: the item's whole group (compile workers, pytest) ends with it
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    result: Result = json.loads(results.read_text(encoding="utf-8")) if results.exists() else {"data": {}}
    if "status" not in result:
        ended = f"timed out after {seconds:.0f} s" if code is None else f"exit code {code}"
        result["status"] = f"failed: {ended} (see log.txt; results recorded before it are kept)"
    return result


def run_one(name: str, args: argparse.Namespace) -> int:
    """The child's side: run item `name`, write its result to the shared temporary folder (always, whatever
    happened, unless the process itself dies)."""
    temp = args.out / "tmp"
    results = temp / f"{name}.json"
    status, summary, data = "ok", "", {}
    try:
        sabotage(name)
        if name == "environment":
            data = environment() | {"seg_video": seg_video_version(), "commit": commit()}
            summary = f"{data.get('gpu')}, driver {data.get('driver', '-')}, torch {data['torch']}"
        elif name == "gpu_tests":
            summary, data = run_gpu_tests(max(1.0, args.deadline - time.time() - 5), temp / "gpu-tests.xml")
            failed = [test for test, outcome in data.items() if outcome.startswith(("failed", "error"))]
            status = f"failed: {len(failed)} tests failed or errored" if failed else status
        else:
            import _gpu_items as items

            context = items.Context(items.DRY_RUN if args.dry_run else items.GPU, args.deadline, temp, args.clip,
                                    results)
            data = context.data  # filled as the item goes: kept whatever ends it
            try:
                summary = items.ITEMS[name](context)
            except items.NotAvailable as reason:
                status = f"not available here: {reason}"
            except items.CheckFailed as fault:
                status = f"failed: {fault}"
    except ModuleNotFoundError as error:
        status = f"not available here: no module {error.name!r} ({error})"
    except Exception as error:  # noqa: BLE001 - whatever breaks an item is its result
        traceback.print_exc()
        status = f"failed: {type(error).__name__}: {' '.join(str(error).split())[:300]}"
    write_json(results, {"status": status, "summary": summary, "data": data})
    return 0


def sabotage(name: str) -> None:
    """Test hook: GPU_CHECK_SABOTAGE=item=fail|crash|hang,… makes that item raise, abort or hang."""
    for entry in filter(None, os.environ.get("GPU_CHECK_SABOTAGE", "").split(",")):
        item, _, how = entry.partition("=")
        if item == name:
            if how == "crash":
                os.abort()
            if how == "hang":
                time.sleep(3600)
            raise AssertionError(f"{name} fails on purpose (GPU_CHECK_SABOTAGE)")


def seg_video_version() -> str:
    """seg-video's version, or why the package cannot be imported here (PyAV missing, say)."""
    try:
        from seg_video.core.version import __version__
    except Exception as error:  # noqa: BLE001 - the reason is the record
        return f"cannot be imported: {type(error).__name__}: {error}"
    return __version__


def commit() -> str:
    """The repository's commit (with `+changes` when the tree differs from it), or `unknown`."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + (" +changes" if dirty else "")


if __name__ == "__main__":
    sys.exit(main())
