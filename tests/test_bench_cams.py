"""tools/bench_cams.py on a short sweep: motion with one and two live sources, shared engine and an engine per
source, each configuration in a worker process of its own, and the report it writes."""

from __future__ import annotations

import json
from pathlib import Path

from tool_modules import load_tool

SECONDS = 3.0


def test_a_short_sweep_reports_every_configuration(tmp_path: Path) -> None:
    bench = load_tool("bench_cams")
    report, page = tmp_path / "report.json", tmp_path / "report.md"

    status = bench.main(["--engines", "motion", "--sources", "1,2", "--seconds", str(SECONDS), "--warmup", "1",
                         "--sample", "--size", "160x96", "--json", str(report), "--markdown", str(page)])

    assert status == 0, "no target is judged for motion"
    result = json.loads(report.read_text(encoding="utf-8"))
    runs = {(run["mode"], run["sources"]): run for run in result["runs"]}
    assert set(runs) == {("shared", 1), ("shared", 2), ("per-source", 1), ("per-source", 2)}
    for (mode, sources), run in runs.items():
        where = f"{mode} N={sources}: {run}"
        assert run["engines"] == (sources if mode == "per-source" else 1), where
        assert run["frames"] > 0 and len(run["source_fps"]) == sources and min(run["source_fps"]) > 0, where
        assert run["total_fps"] <= 1.1 * 30 * sources, f"no more frames than the sources offer: {where}"
        assert SECONDS <= run["seconds"] < SECONDS + 5, where
        assert run["p95_ms"] > 0 and run["peak_rss_mb"] > 50, where  # a Python with NumPy, OpenCV and PyAV
        assert (run["mean_batch"] is None) == (mode == "per-source") and run["others_cores"] >= 0, where
    assert result["machine"] and "| motion | per-source | 2 |" in page.read_text(encoding="utf-8")
