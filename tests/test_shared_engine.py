"""Many sources, one engine: the shared infer stage batches the sources' frames, keeps their results apart, gives
stateful engines a state per source, serves every source fairly and never lets one slow source stall the rest."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from live_helpers import Recorder, SlowEngine, camera, scene_frames

import seg_video
from seg_video.api import run_config
from seg_video.core.config import RunConfig
from seg_video.core.errors import StageFailed
from seg_video.core.runner import Policy
from seg_video.core.types import Frame, Item, Segmentation
from seg_video.engines.base import Engine, create_engine
from seg_video.io.sample import write_sample_clip
from seg_video.io.streams import LiveInput, open_inputs, paced
from seg_video.live.job import LiveJob, LiveOptions

RATES = (30.0, 25.0, 20.0, 15.0)
"""One clip per rate: the same scene sampled at other times, so each source's pictures differ from the others'."""


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("clips")
    return [write_sample_clip(folder / f"clip{i}.mp4", seconds=1.0, width=160, height=96, fps=fps, audio=False)
            for i, fps in enumerate(RATES)]


class Counted:
    """An engine factory that counts the engines it builds."""

    def __init__(self, name: str, **params: Any) -> None:
        self.name, self.params, self.built = name, params, 0

    def __call__(self) -> Engine:
        self.built += 1
        return create_engine(self.name, self.params)


def run_live(clips: Sequence[Path], config: RunConfig, factory: Callable[[], Engine]) -> tuple[LiveJob, dict]:
    """The files played as live sources (paced, every frame) through one live job; its segmentations by (source,
    frame index)."""
    results: dict[tuple[str, int], Segmentation] = {}
    lock = threading.Lock()

    def keep(item: Item) -> None:
        with lock:
            results[item.frame.source_id or "", item.index] = item.result()

    stop = threading.Event()
    inputs = open_inputs([str(clip) for clip in clips], config.live, policy="auto", stop=stop)
    job = LiveJob(config, inputs, LiveOptions(), stop=stop, engine_factory=factory, on_item=keep)
    job.run()
    return job, results


def alone(clip: Path, name: str, **params: Any) -> list[Segmentation]:
    """The clip's segmentations from a run of its own (the Python API's iterator)."""
    with seg_video.segment(clip, engine=name, **params) as frames:
        return [segmentation for _, segmentation in frames]


def assert_same(shared: Segmentation, own: Segmentation, where: str) -> None:
    assert len(shared) == len(own), where
    np.testing.assert_array_equal(shared.boxes, own.boxes, err_msg=where)
    np.testing.assert_array_equal(shared.class_ids, own.class_ids, err_msg=where)
    if own.track_ids is not None:
        np.testing.assert_array_equal(shared.track_ids, own.track_ids, err_msg=where)
    own_masks, shared_masks = own.full_masks(), shared.full_masks()
    if own_masks is not None:
        np.testing.assert_array_equal(shared_masks, own_masks, err_msg=where)
    if own.label_map is not None:
        np.testing.assert_array_equal(shared.label_map, own.label_map, err_msg=where)


@pytest.mark.parametrize("name", ["threshold", "motion"])
def test_four_files_through_one_engine_match_each_alone(clips: list[Path], name: str) -> None:
    """`threshold` keeps no state: one engine serves all four, in batches of four. `motion` learns a background:
    each source gets its own (a shared one would mix four scenes' backgrounds and differ from the runs alone)."""
    factory = Counted(name)

    job, results = run_live(clips, run_config(name, sections={"pipeline": {"batch": 4}}), factory)

    assert factory.built == 1, "one engine for four sources"
    assert job.shared is not None and job.shared.stats.frames == len(results)
    for clip in clips:
        own = alone(clip, name)
        assert len(own) == sum(1 for source, _ in results if source == str(clip)), "every frame (lossless files)"
        for index, segmentation in enumerate(own):
            assert_same(results[str(clip), index], segmentation, f"{clip.name} frame {index}")
    if name == "threshold":  # same-size frames of four sources in one call, most of the time
        assert job.shared.stats.mean_batch > 1.5


def test_a_batched_network_gives_each_source_its_own_result(clips: list[Path]) -> None:
    """FCN (random weights, small input) on four sources in batches of up to four: each frame's label map is the
    one the same network gives that frame alone."""
    params = {"weights": "none", "device": "cpu", "min_size": 64}
    config = run_config("fcn", settings=params, sections={"pipeline": {"batch": 4}})
    job, results = run_live(clips, config, Counted("fcn", **params))

    assert job.shared is not None and job.shared.stats.mean_batch > 1.5
    for clip in clips:
        for index, segmentation in enumerate(alone(clip, "fcn", **params)):
            shared_map, own_map = results[str(clip), index].label_map, segmentation.label_map
            assert shared_map is not None and own_map is not None
            assert (shared_map == own_map).mean() > 0.999, f"{clip.name} frame {index}"


def test_on_a_cpu_the_shared_engine_takes_one_frame_per_call(clips: list[Path]) -> None:
    """A network on a CPU takes as long per frame in a batch and costs memory per frame: by default the shared
    engine serves the sources one frame at a time, in turn."""
    params = {"weights": "none", "device": "cpu", "min_size": 64}
    job, results = run_live(clips, run_config("fcn", settings=params), Counted("fcn", **params))

    assert job.shared is not None and job.shared.batch == 1 and job.shared.stats.mean_batch == 1
    assert len(results) == sum(len(alone(clip, "threshold")) for clip in clips)


def test_engine_per_source_builds_one_engine_each(clips: list[Path]) -> None:
    factory = Counted("threshold")

    job, results = run_live(clips, run_config("threshold", sections={"live": {"engine_per_source": True}}), factory)

    assert factory.built == len(clips) and job.shared is None
    assert len(results) == sum(len(alone(clip, "threshold")) for clip in clips)


def live_cameras(count: int, seconds: float, **options: Any) -> list[LiveInput]:
    return [camera(f"cam{i}", seconds, Policy.LIVE, **options) for i in range(count)]


def test_sources_at_the_same_rate_get_the_same_share() -> None:
    """Four 30 fps cameras and an engine that can take only half of what they offer (two frames per 33 ms call):
    every camera is served alike, and each keeps its latency bounded by dropping stale frames."""
    published = Recorder()
    config = run_config(sections={"pipeline": {"batch": 2}})
    job = LiveJob(config, live_cameras(4, 4.0), LiveOptions(), stop=threading.Event(),
                  engine_factory=lambda: SlowEngine(1 / 30), on_frame=published)

    summary = job.run()

    counts = [len(published.of(f"cam{i}")) for i in range(4)]
    assert min(counts) >= 0.8 * max(counts), counts
    assert sum(counts) > 0.5 * 4 * 30 * 4 * 0.5, counts  # about half of the 480 offered frames, allowing a slow box
    for feed in summary.feeds:
        assert feed.dropped_total > 0, "stale frames were dropped, not queued"
    late = sorted(item.latency for item in published.items)[int(0.95 * len(published.items))]
    assert late < 0.5, f"p95 latency {late:.3f} s"


def test_a_slow_source_does_not_hold_up_the_others() -> None:
    """One camera gives 2 frames a second, three give 30: the three are not paced by the slow one."""
    published = Recorder()
    sources = live_cameras(3, 3.0)
    slow = LiveInput(name="slow", policy=Policy.LIVE, fps=2.0,
                     frames=paced(scene_frames(6, source_id="slow", fps=2.0)))
    job = LiveJob(run_config(), [*sources, slow], LiveOptions(), stop=threading.Event(),
                  engine_factory=lambda: SlowEngine(0.005), on_frame=published)

    job.run()

    assert len(published.of("slow")) >= 5
    for i in range(3):
        assert len(published.of(f"cam{i}")) > 60, "a fast camera was held up waiting for the slow one"


class Failing(SlowEngine):
    """Fails its third call, like a driver error; with `fails` False, never."""

    def __init__(self, fails: bool = True) -> None:
        super().__init__(0.0)
        self.calls = 0
        self.fails = fails

    def infer(self, frames: Sequence[Frame], prepared: Sequence[Any]) -> list[Segmentation]:
        self.calls += 1
        if self.fails and self.calls == 3:
            raise RuntimeError("driver lost")
        return super().infer(frames, prepared)


def test_a_shared_engine_that_fails_stops_every_source() -> None:
    stop = threading.Event()
    with pytest.raises(StageFailed, match="driver lost"):
        LiveJob(run_config(), live_cameras(3, 5.0), LiveOptions(), stop=stop, engine_factory=Failing).run()
    assert stop.is_set()


def test_a_shared_engine_that_fails_is_replaced_when_restarts_are_allowed() -> None:
    built: list[Failing] = []

    def factory() -> Failing:
        built.append(Failing(fails=not built))
        return built[-1]

    published = Recorder()
    config = run_config(sections={"live": {"engine_restarts": 1}})
    job = LiveJob(config, live_cameras(3, 2.0), LiveOptions(), stop=threading.Event(), engine_factory=factory,
                  on_frame=published)
    job.run()

    assert len(built) == 2, "the failed engine was replaced once"
    assert job.shared is not None and job.shared.stats.dropped >= 1
    for i in range(3):
        assert len(published.of(f"cam{i}")) > 30, "every source went on after the restart"


@pytest.mark.gpu
def test_on_a_gpu_four_sources_share_one_compiled_fp16_network(clips: list[Path]) -> None:
    """The GPU path: one compiled FP16 FCN, owned by the shared thread (compiled graphs are thread-bound), serves
    four sources in batches; each frame's label map agrees with the same engine's on that frame alone."""
    params = {"weights": "none", "device": "cuda", "precision": "fp16", "backend": "torch-compiled", "min_size": 96}
    factory = Counted("fcn", **params)
    job, results = run_live(clips, run_config("fcn", settings=params), factory)

    assert factory.built == 1 and job.shared is not None and job.shared.stats.mean_batch > 1.5
    with seg_video.load_engine("fcn", **params) as engine:  # compiled once for the four runs alone
        for clip in clips:
            with seg_video.segment(clip, engine=engine) as frames:
                for (frame, segmentation) in frames:
                    shared_map, own_map = results[str(clip), frame.index].label_map, segmentation.label_map
                    assert shared_map is not None and own_map is not None
                    assert (shared_map == own_map).mean() > 0.995, f"{clip.name} frame {frame.index}"
