"""`seg-video batch` on real generated clips and a corrupt file: a local process pool and a local Ray instance give
the same outputs as single-file runs, report the corrupt file and go on, skip finished videos when run again, and
resume a run killed midway to the complete, correct set."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from seg_video.batch.inputs import collect_inputs
from seg_video.batch.manifest import MANIFEST, PARTIAL
from seg_video.cli.main import main
from seg_video.core.types import Frame
from seg_video.engines.base import Engine, create_engine
from seg_video.io.sample import SampleScene, write_sample_clip

ROOT = Path(__file__).resolve().parent.parent
CLIPS = {"a.mp4": 1.0, "b.mp4": 1.3, "c.mp4": 0.9, "d.mp4": 1.2, "e.mp4": 1.1, "sub/f.mp4": 1.0}
"""The good clips of the batch folder (name under it → seconds); 160×120, 30 fps, the sample scene."""
BROKEN = "broken.mp4"
EXPORTS = ("--coco", "--masks")


@pytest.fixture(scope="module")
def footage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of clips, one in a subfolder, plus a file that is not a video at all."""
    folder = tmp_path_factory.mktemp("footage")
    for name, seconds in CLIPS.items():
        (folder / name).parent.mkdir(exist_ok=True)
        write_sample_clip(folder / name, seconds=seconds, width=160, height=120)
    (folder / BROKEN).write_bytes(b"this is no video\n" * 64)
    return folder


@pytest.fixture(scope="module")
def reference(footage: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What single-file runs write for each clip, laid out as a batch's --out folder would be."""
    out = tmp_path_factory.mktemp("reference")
    for name in CLIPS:
        target = out / Path(name).with_suffix("")
        target.parent.mkdir(exist_ok=True)
        assert main([str(footage / name), f"{target}.mp4", "--coco", f"{target}.coco.json",
                     "--masks-dir", f"{target}.masks", "-q"]) == 0
    return out


def frames(path: Path) -> list[np.ndarray]:
    """Every decoded frame of a video, BGR."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="bgr24") for frame in container.decode(video=0)]


def coco(path: Path) -> dict[str, Any]:
    """A COCO file without its creation time."""
    data = json.loads(path.read_text())
    del data["info"]["date_created"]
    return data


def psnr(got: np.ndarray, want: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two 8-bit images in dB (inf when equal)."""
    mse = float(np.mean((got.astype(np.float64) - want.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def assert_same_video(out: Path, reference: Path, name: str) -> None:
    """The batch's annotated video of `name` shows what the single-file run's does, frame for frame. Pixels are
    compared to within x264's run-to-run noise: identical frames fed to it in the same order were seen to encode
    differently under CPU contention (35-42 dB apart); one instance drawn differently on these 160×120 frames
    costs far more (about 25 dB). The annotations themselves are compared exactly (`assert_same_outputs`)."""
    got, want = frames(out / name), frames(reference / name)
    assert len(got) == len(want) == round(CLIPS[name] * 30), name
    assert min(psnr(g, w) for g, w in zip(got, want, strict=True)) >= 32, name


def assert_same_outputs(out: Path, reference: Path, names: list[str]) -> None:
    """The batch's outputs of `names` equal the single-file runs': video, COCO file and label maps."""
    for name in names:
        assert_same_video(out, reference, name)
        stem = Path(name).with_suffix("")
        assert coco(out / f"{stem}.coco.json") == coco(reference / f"{stem}.coco.json"), name
        masks = sorted(p.name for p in (reference / f"{stem}.masks").iterdir())
        assert sorted(p.name for p in (out / f"{stem}.masks").iterdir()) == masks
        assert all((out / f"{stem}.masks" / m).read_bytes() == (reference / f"{stem}.masks" / m).read_bytes()
                   for m in masks), name


def manifest(out: Path) -> dict[str, dict[str, Any]]:
    """The last manifest record of each name."""
    records = [json.loads(line) for line in (out / MANIFEST).read_text().splitlines()]
    return {record["name"]: record for record in records}


def leftovers(out: Path) -> list[Path]:
    """Temporary outputs anywhere under `out`."""
    return [p for p in out.rglob("*") if p.name.startswith(PARTIAL)]


def run_batch(footage: Path, out: Path, *more: str) -> int:
    return main(["batch", str(footage), "--out", str(out), *EXPORTS, "-q", *more])


def test_local_batch_matches_single_runs_reports_the_corrupt_file_and_skips_when_rerun(
        footage: Path, reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["batch", str(footage), "--out", str(out), *EXPORTS, "--workers", "2"]) == 1

    assert_same_outputs(out, reference, list(CLIPS))
    records = manifest(out)
    assert {name: r["status"] for name, r in records.items()} == {**dict.fromkeys(CLIPS, "done"), BROKEN: "failed"}
    assert records[BROKEN]["reason"] == f"not a media file: {footage / BROKEN}"
    assert records["b.mp4"]["frames"] == 39 and records["sub/f.mp4"]["outputs"][0] == "sub/f.mp4"
    assert not (out / "broken.mp4").exists() and not leftovers(out)
    report = capsys.readouterr().err
    assert "done           6" in report and f"broken.mp4: not a media file: {footage / BROKEN}" in report

    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.name != MANIFEST}
    assert run_batch(footage, out, "--max-attempts", "1") == 1  # the corrupt file gave up: nothing to do
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.name != MANIFEST} == before
    assert {name: r["status"] for name, r in manifest(out).items()} == {**dict.fromkeys(CLIPS, "skipped"),
                                                                         BROKEN: "failed"}
    assert len((out / MANIFEST).read_text().splitlines()) == 2 * len(CLIPS) + 1  # compacted, then re-recorded

    changed = tmp_path / "changed"
    shutil.copytree(footage, changed)
    shutil.copytree(out, tmp_path / "out2")
    write_sample_clip(changed / "c.mp4", seconds=CLIPS["a.mp4"], width=160, height=120)  # now a's content
    (changed / BROKEN).unlink()
    assert run_batch(changed, tmp_path / "out2") == 0
    records = manifest(tmp_path / "out2")
    assert records["c.mp4"]["status"] == "done" and records["a.mp4"]["status"] == "skipped"
    assert psnr(frames(tmp_path / "out2" / "c.mp4")[-1], frames(reference / "a.mp4")[-1]) >= 32


@pytest.mark.parametrize("name", ["motion", "kmeans"])
def test_a_reset_engine_segments_a_video_as_a_fresh_one_does(name: str) -> None:
    scene = SampleScene(160, 120)
    video = [Frame(index=i, image=scene.render(i)[0]) for i in range(0, 40, 2)]
    other = [Frame(index=i, image=np.ascontiguousarray(frame.image[::-1])) for i, frame in enumerate(video)]

    def segment(engine: Engine, frames: list[Frame]) -> list[tuple[bytes, ...]]:
        results = engine.infer(frames, [engine.prepare(frame) for frame in frames])
        return [(seg.class_ids.tobytes(), seg.boxes.tobytes(), b"" if seg.masks is None else seg.full_masks().tobytes())
                for seg in results]

    fresh = segment(create_engine(name), video)
    used = create_engine(name)
    segment(used, other)
    used.reset()
    assert segment(used, video) == fresh


def test_usage_errors_and_input_collection(footage: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    listed = tmp_path / "list.txt"
    listed.write_text(f"# two clips\n{footage / 'a.mp4'}\n\n{footage}/sub/*.mp4\n")
    (footage / "notes.txt").write_text("not a video")  # a folder search takes videos only
    try:
        found = collect_inputs([str(footage), str(listed), str(footage / "a.mp4")], out)
    finally:
        (footage / "notes.txt").unlink()
    assert [name.as_posix() for _, name in found] == sorted([BROKEN, *CLIPS])  # each input once, in order
    globbed = collect_inputs([f"{footage}/**/*.mp4"], out)
    assert [name.as_posix() for _, name in globbed] == sorted([BROKEN, *CLIPS])

    other = tmp_path / "a.mkv"
    shutil.copy(footage / "a.mp4", other)
    for args, message in [
        ([str(footage), "--out", str(out), "--no-video"], "--no-video needs --coco and/or --masks"),
        ([str(tmp_path / "nothing"), "--out", str(out)], "input not found"),
        ([f"{tmp_path}/*.avi", "--out", str(out)], "no files match"),
        ([str(footage / "a.mp4"), "--out", str(footage)], "would replace an input"),
        ([str(footage), "--out", str(footage)], "no videos found"),  # a folder search leaves --out out
        ([str(footage / "a.mp4"), str(other), "--out", str(out)], "would both write"),
        ([str(footage), "--out", str(out), "--workers", "0"], "--workers must be between 1 and 1024"),
        ([str(footage), "--out", str(out), "--workers", str(10**20)], "--workers must be between 1 and 1024"),
        ([str(footage), "--out", str(out), "--max-attempts", "0"], "--max-attempts must be at least 1"),
        ([str(footage), "--out", str(out), "--set", "output.crf=nan"], "output.crf must be an integer"),
    ]:
        assert main(["batch", *args]) == 2
        assert message in capsys.readouterr().err
    out.mkdir(exist_ok=True)
    (out / "a.mp4").write_bytes(b"someone else's file")
    assert main(["batch", str(footage / "a.mp4"), "--out", str(out)]) == 2
    assert "did not write" in capsys.readouterr().err and (out / "a.mp4").read_bytes() == b"someone else's file"


def kill_mid_video(out: Path, workers: Callable[[], list[int]], killed: list[int]) -> None:
    """Once a video is in progress under `out`, SIGKILL the first of the `workers` (pids); note it in `killed`."""
    deadline = time.monotonic() + 60
    while not killed and time.monotonic() < deadline:
        pids = workers()
        if pids and leftovers(out):
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])
        time.sleep(0.01)


def batch_losing_a_worker(footage: Path, out: Path, workers: Callable[[], list[int]], *more: str) -> int:
    """Run a batch here while a thread kills one of its workers mid-video; the batch's exit code."""
    killed: list[int] = []
    killer = threading.Thread(target=kill_mid_video, args=(out, workers, killed))
    killer.start()
    try:
        return main(["batch", str(footage), "--out", str(out), *EXPORTS, *more])
    finally:
        killer.join()
        assert killed, "no worker was killed"


def local_workers() -> list[int]:
    """This process's worker processes."""
    return [child.pid for child in multiprocessing.active_children() if child.pid is not None]


def test_a_worker_that_dies_is_replaced_and_its_video_done_again(footage: Path, reference: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert batch_losing_a_worker(footage, out, local_workers, "--workers", "2") == 1
    assert "lost: worker process ended (signal SIGKILL)" in capsys.readouterr().err
    assert_same_outputs(out, reference, list(CLIPS))
    assert all(record["status"] == "done" for name, record in manifest(out).items() if name != BROKEN)
    assert not leftovers(out)


def start_batch(footage: Path, out: Path, *more: str) -> subprocess.Popen[str]:
    """A batch in a subprocess (its own process group, as a terminal's job), once it has finished a video."""
    command = [sys.executable, "-m", "seg_video", "batch", str(footage), "--out", str(out), *EXPORTS, "-q", *more]
    process = subprocess.Popen(command, cwd=ROOT, start_new_session=True, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / MANIFEST).exists() or '"done"' not in (out / MANIFEST).read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail(f"the batch ended (or hung) before it finished a video: {process.communicate()[1]}")
        time.sleep(0.02)
    return process


def wait_for_group_exit(process: subprocess.Popen[str]) -> None:
    """Wait until every process of the batch's group (its workers too) has exited; kill them after 30 s."""
    deadline = time.monotonic() + 30
    while True:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail("workers outlived their batch")
        time.sleep(0.1)


def test_ctrl_c_stops_the_workers_and_leaves_only_complete_outputs(footage: Path, reference: Path,
                                                                  tmp_path: Path) -> None:
    out = tmp_path / "out"
    process = start_batch(footage, out, "--workers", "2")
    os.killpg(process.pid, signal.SIGINT)  # as a terminal's Ctrl-C: to the batch and its workers
    _, err = process.communicate(timeout=30)
    wait_for_group_exit(process)
    assert process.returncode == 130 and "interrupted" in err
    assert not leftovers(out)
    for name in CLIPS:
        if (out / name).exists():
            assert_same_video(out, reference, name)


def kill_midway_then_resume(footage: Path, reference: Path, out: Path, *more: str) -> None:
    """Start a batch in a subprocess, SIGKILL it once a video is done, check what it left, then resume it here."""
    process = start_batch(footage, out, *more)
    process.kill()  # the batch alone: its workers notice that it is gone, and exit
    process.communicate()
    wait_for_group_exit(process)
    done_before = {name for name, r in manifest(out).items() if r["status"] == "done"}
    assert done_before and len(done_before) < len(CLIPS)
    videos = [name for name in CLIPS if (out / name).exists()]  # under final names: only complete outputs
    for name in videos:
        assert_same_video(out, reference, name)
    finished = {name for name in videos if all((out / Path(name).with_suffix(suffix)).exists()
                                               for suffix in (".coco.json", ".masks"))}

    assert main(["batch", str(footage), "--out", str(out), *EXPORTS, "-q", *more]) == 1
    assert_same_outputs(out, reference, list(CLIPS))
    records = manifest(out)
    assert {name for name, r in records.items() if r["status"] == "skipped"} == finished
    assert all(records[name]["status"] in ("done", "skipped") for name in CLIPS) and not leftovers(out)


def test_a_killed_local_batch_resumes_to_the_complete_set(footage: Path, reference: Path, tmp_path: Path) -> None:
    kill_midway_then_resume(footage, reference, tmp_path / "out", "--workers", "1")


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """A local Ray instance (2 CPUs, loopback only, no dashboard); yields its address for other processes."""
    with pytest.MonkeyPatch.context() as patch:  # also seen by the batches this module starts in subprocesses
        patch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # read at import: every Ray server binds to 127.0.0.1
        patch.setenv("RAY_USAGE_STATS_ENABLED", "0")
        ray = pytest.importorskip("ray")
        ray.init(num_cpus=2, include_dashboard=False)
        try:
            yield ray.get_runtime_context().gcs_address
        finally:
            ray.shutdown()


def ray_actors() -> list[int]:
    """Processes running a batch video on the Ray instance this process started (children of its raylet)."""
    def parent(pid: int) -> int:
        return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])

    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(b"ray::RayWorker.annotate") \
                    and parent(parent(int(entry.name))) == os.getpid():
                found.append(int(entry.name))
        except (OSError, ValueError):  # ended meanwhile
            continue
    return found


def test_ray_batch_matches_single_runs_survives_a_lost_actor_skips_when_rerun_and_resumes_after_a_kill(
        ray_cluster: str, footage: Path, reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert ray_cluster.startswith("127.0.0.1:")
    out = tmp_path / "out"
    assert batch_losing_a_worker(footage, out, ray_actors, "--ray", "auto") == 1
    assert "lost: The actor died unexpectedly" in capsys.readouterr().err
    assert_same_outputs(out, reference, list(CLIPS))
    records = manifest(out)
    assert records[BROKEN]["reason"] == f"not a media file: {footage / BROKEN}"
    assert all(records[name]["worker"].startswith("ray worker") for name in CLIPS)

    assert run_batch(footage, out, "--ray", "auto", "--max-attempts", "1") == 1
    assert {r["status"] for name, r in manifest(out).items() if name != BROKEN} == {"skipped"}

    kill_midway_then_resume(footage, reference, tmp_path / "resumed", "--ray", ray_cluster, "--workers", "1")
