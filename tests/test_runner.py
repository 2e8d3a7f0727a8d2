"""The threaded runner: order, bounded queues, failures named and prompt, teardowns always run, OpenCV's threads."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from fractions import Fraction

import cv2
import numpy as np
import pytest

from seg_video.core.errors import StageFailed
from seg_video.core.runner import Policy, Runner
from seg_video.core.stage import Stage
from seg_video.core.threads import opencv_threads
from seg_video.core.types import Frame, Item

TIME_BASE = Fraction(1, 90000)


def frames(count: int, delay: float = 0.0) -> Iterator[Frame]:
    """Tiny frames with irregular pts, produced with an optional capture delay."""
    pts = 0
    for index in range(count):
        if delay:
            time.sleep(delay)
        yield Frame(index=index, image=np.full((4, 4, 3), index % 256, np.uint8), pts=pts, time_base=TIME_BASE)
        pts += 3000 if index % 3 else 4500


def jittery(name: str, max_cost: float, log: list[str] | None = None) -> Stage:
    """A stage that takes a random time per item and passes items through unchanged."""
    rng = random.Random(name)

    def process(items: list[Item]) -> list[Frame]:
        time.sleep(rng.uniform(0, max_cost))
        return items

    def teardown() -> None:
        if log is not None:
            log.append(name)

    return Stage(name, process, teardown=teardown)


class Collector:
    """A sink stage that records what reaches it and whether it was finalized."""

    def __init__(self) -> None:
        self.items: list[Item] = []
        self.finalized = False

    def stage(self, cost: float = 0.0) -> Stage:
        def process(items: list[Item]) -> list[Frame]:
            time.sleep(cost)
            self.items.extend(items)
            return []

        def teardown() -> None:
            self.finalized = True

        return Stage("write", process, teardown=teardown)


def test_order_and_timestamps_survive_jittery_stages() -> None:
    collector = Collector()
    stages = [jittery("preprocess", 0.004), jittery("infer", 0.006), jittery("render", 0.003), collector.stage()]
    expected = [(f.index, f.pts) for f in frames(120)]

    Runner(frames(120), stages, queue_size=3).run()

    assert [(item.index, item.frame.pts) for item in collector.items] == expected
    assert all({"capture", "preprocess", "infer", "render", "write"} == set(item.timings) for item in collector.items)
    assert collector.finalized


def test_queues_never_exceed_their_bound_with_a_slow_consumer() -> None:
    collector = Collector()
    runner = Runner(frames(60), [jittery("infer", 0.0), collector.stage(cost=0.01)], queue_size=2)

    stats = runner.run()

    assert len(collector.items) == 60
    assert all(q.high_water <= 2 for q in stats.queues.values())
    assert stats.queues["write"].high_water == 2  # the bound was reached, so it was really what held frames back
    assert stats.dropped == 0


def test_batches_keep_order_and_take_the_tail() -> None:
    seen_batches: list[int] = []

    def infer(items: list[Item]) -> list[Frame]:
        seen_batches.append(len(items))
        return items

    collector = Collector()
    Runner(frames(10), [Stage("infer", infer, batch_size=4), collector.stage()]).run()

    assert [f.index for f in collector.items] == list(range(10))
    assert seen_batches == [4, 4, 2]


@pytest.mark.parametrize("failing", ["capture", "preprocess", "infer", "render", "write"])
def test_a_failing_stage_ends_the_run_promptly_and_is_named(failing: str) -> None:
    def source() -> Iterator[Frame]:
        for frame in frames(10_000, delay=0.001):
            if failing == "capture" and frame.index == 25:
                raise OSError("camera unplugged")
            yield frame

    def boom_at_25(name: str) -> Stage:
        def process(items: list[Item]) -> list[Frame]:
            if items[0].index == 25:
                raise ValueError(f"bad frame in {name}")
            return [] if name == "write" else items

        return Stage(name, process)

    teardowns: list[str] = []
    stages = []
    for name in ("preprocess", "infer", "render", "write"):
        stage = boom_at_25(name) if name == failing else jittery(name, 0.002)
        stage.teardown = lambda name=name: teardowns.append(name)
        stages.append(stage)

    started = time.monotonic()
    with pytest.raises(StageFailed) as caught:
        Runner(source(), stages, queue_size=4).run()

    assert time.monotonic() - started < 5.0
    assert caught.value.stage == failing
    assert failing in str(caught.value)
    assert sorted(teardowns) == sorted(["preprocess", "infer", "render", "write"])  # the sink was finalized


def test_failure_while_downstream_is_blocked_on_a_full_queue_does_not_hang() -> None:
    release = threading.Event()

    def stuck_writer(items: list[Item]) -> list[Frame]:
        release.wait(0.5)  # a slow sink: upstream fills every queue and blocks on put
        return []

    def failing_infer(items: list[Item]) -> list[Frame]:
        if items[0].index == 8:
            raise RuntimeError("engine crashed")
        return items

    started = time.monotonic()
    with pytest.raises(StageFailed, match="infer stage failed at frame 8: engine crashed"):
        Runner(frames(10_000), [Stage("infer", failing_infer), Stage("write", stuck_writer)], queue_size=1).run()
    assert time.monotonic() - started < 5.0


def test_setup_failure_is_reported_with_its_stage_and_teardown_still_runs() -> None:
    torn_down: list[bool] = []

    def setup() -> None:
        raise FileNotFoundError("weights.pt")

    stage = Stage("infer", lambda items: items, setup=setup, teardown=lambda: torn_down.append(True))
    with pytest.raises(StageFailed) as caught:
        Runner(frames(5), [stage, Collector().stage()]).run()
    assert caught.value.stage == "infer"
    assert isinstance(caught.value.error, FileNotFoundError)
    assert torn_down == [True]


def test_live_policy_drops_stale_frames_and_keeps_the_newest() -> None:
    collector = Collector()
    stats = Runner(frames(200), [collector.stage(cost=0.01)], queue_size=1, policy=Policy.LIVE).run()

    indices = [f.index for f in collector.items]
    assert stats.dropped > 0
    assert len(indices) + stats.dropped == 200
    assert indices == sorted(indices)  # what is kept stays in order
    assert indices[-1] == 199  # the newest frame always gets through


def test_a_source_failure_still_delivers_the_frames_captured_before_it() -> None:
    def source() -> Iterator[Frame]:
        for frame in frames(40):
            if frame.index == 30:
                raise OSError("decode error at frame 30")
            yield frame

    collector = Collector()
    with pytest.raises(StageFailed, match="capture stage failed: decode error at frame 30"):
        Runner(source(), [jittery("infer", 0.003), collector.stage()], queue_size=2).run()
    assert [f.index for f in collector.items] == list(range(30))
    assert collector.finalized


def test_overlapping_runs_share_one_opencv_thread_count_and_the_last_restores_it() -> None:
    before = cv2.getNumThreads()
    with opencv_threads(1):
        assert cv2.getNumThreads() == 1
        with opencv_threads(3):  # a second run in the same process while the first goes on
            assert cv2.getNumThreads() == 1
        assert cv2.getNumThreads() == 1
    assert cv2.getNumThreads() == before
    with pytest.raises(RuntimeError), opencv_threads(1):
        raise RuntimeError("a failed run")
    assert cv2.getNumThreads() == before
