"""tools/soak.py: a live run's memory, threads, files and queues stay flat; its flatness check catches growth."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import av
import pytest
from tool_modules import load_tool

ROOT = Path(__file__).resolve().parent.parent


soak = load_tool("soak")


CAPACITY, PEAKS = {"0:infer": 1}, {"0:infer": 1}


def series(rss: list[float], threads: int = 12, fds: int = 9) -> list[object]:
    """Samples with the given RSS values and steady threads, fds and a queue of one item."""
    return [soak.Sample(seconds=i / 2, rss_mb=value, threads=threads, fds=fds, queues={"0:infer": 1}, frames=i,
                        dropped=0, latency_p50_ms=5.0) for i, value in enumerate(rss)]


def test_the_flatness_check_passes_noise_and_catches_leaks() -> None:
    warm_up = [80.0, 100.0, 118.0, 120.0]
    noisy = warm_up + [120.0 + (i % 5) for i in range(36)]  # start-up growth, then ±4 MB of noise
    assert soak.growth_problems(series(noisy), CAPACITY, PEAKS) == []

    leaking = warm_up + [120.0 + 0.5 * i for i in range(36)]  # +18 MB over the run: over the 8 MB allowance
    assert any(p.startswith("rss_mb grew") for p in soak.growth_problems(series(leaking), CAPACITY, PEAKS))
    assert soak.rss_trend(series(leaking)) == pytest.approx(3600)  # 0.5 MB every half second, in MB/h
    assert abs(soak.rss_trend(series(noisy))) < 100

    grown = series(noisy)
    for late in grown[-10:]:
        late.threads += 2  # a thread (or two) more per run left behind
        late.fds += 1  # one more file: within the margin
    problems = soak.growth_problems(grown, CAPACITY, PEAKS)
    assert [p.split(" grew")[0] for p in problems] == ["threads"]

    assert soak.growth_problems(series(noisy), CAPACITY, {"0:infer": 2}) == ["queue 0:infer held 2 > 1"]
    with pytest.raises(ValueError, match="at least 8 samples"):
        soak.growth_problems(series(noisy[:7]), CAPACITY, PEAKS)


def test_samples_stay_evenly_spread_in_bounded_memory() -> None:
    record = soak.SampleRecord(limit=8)
    for sample in series([100.0] * 100):
        record.add(sample)
    kept = [s.seconds * 2 for s in record.samples]  # the samples' numbers, 0..99
    assert record.taken == 100 and len(kept) < 8
    assert kept == [16 * i for i in range(len(kept))] and kept[-1] >= 100 - 16  # every 16th, to the end


def test_a_short_soak_of_the_live_pipeline_stays_flat(tmp_path: Path) -> None:
    """~25 s of a 30 fps camera → motion engine → browser view (a client coming and going) and a recording."""
    result_path, samples_path, recording = tmp_path / "soak.json", tmp_path / "soak.csv", tmp_path / "rec.mp4"
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "soak.py"), "--minutes", "0.4", "--size", "320x240",
                          "--record", str(recording), "--json", str(result_path), "--csv", str(samples_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "verdict  flat" in run.stdout

    result = json.loads(result_path.read_text())
    samples = result["samples"]
    assert result["flat"] and result["problems"] == []
    assert len(samples) >= 40
    assert samples[-1]["frames"] >= 10 * result["seconds"], "the pipeline kept rendering (≥ 10 of 30 fps)"
    for name, capacity in result["queue_capacity"].items():
        assert capacity == 1 and result["queue_peak"][name] <= 1, name  # the live policy's bound
    assert result["viewer"]["visits"] >= 5 and result["viewer"]["parts"] > 50 and not result["viewer"]["failures"]
    assert result["threads_left"] == [], "every thread of the run ended"
    assert result["after_stop"]["threads"] <= result["before"]["threads"] + 2, "native ones too (a pool may stay)"
    assert result["after_stop"]["fds"] <= result["before"]["fds"] + 1, "the run's files and sockets were closed"
    with samples_path.open() as stream:
        assert len(list(csv.DictReader(stream))) == result["samples_taken"] == len(samples)  # < 2000: all kept
    with av.open(str(recording)) as container:
        recorded = sum(1 for _ in container.decode(video=0))
    assert recorded >= samples[-1]["frames"] - 5  # the recording was finalized with what was rendered
