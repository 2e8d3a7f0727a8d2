"""Faults injected for real, mostly end to end through `seg-video` in a subprocess (under a timeout and a memory
cap): hostile media, output failures, signals at seeded random moments, failing and hanging engines.

docs/RELIABILITY.md lists each fault with the behaviour promised and the test here that proves it. Engine faults
come from `FaultyEngine`, registered by a `python -c` wrapper (`WRAPPER`) that then runs `seg_video.cli.main.main`:
the product ships no test hooks.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest

from seg_video.core.errors import StageFailed, StageTimeout
from seg_video.core.runner import Runner
from seg_video.core.stage import Stage
from seg_video.core.types import Frame
from seg_video.io.sample import write_sample_clip

ROOT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT, FPS = 160, 120, 30.0
MEMORY_CAP = 2 << 30
"""Address space allowed to each run (RLIMIT_AS): a normal run of these small clips needs about 1.5 GiB."""
RUN_TIMEOUT = 60.0
"""Seconds any run may take; more is a hang."""

WRAPPER = '''
import os, signal, sys, time
from dataclasses import dataclass
from pathlib import Path
from seg_video.engines.base import Engine
from seg_video.engines.base import register
from seg_video.core.types import ClassTable, Segmentation

@dataclass
class FaultParams:
    seconds: float = 0.0        # asleep per frame, to pace a run
    fail_at: int = -1           # raise at this frame
    fail_from: int = -1         # raise at this frame and every later one
    hang_at: int = -1           # never return at this frame
    load_seconds: float = 0.0   # asleep in load(), after creating the file `loading` if named
    loading: str = ""
    close_seconds: float = 0.0  # asleep in close()
    mark_at: int = -1           # create the file `mark` on reaching this frame
    mark: str = ""
    signal_when_freed: str = ""  # send the process this signal (SIGINT, SIGTERM) as the engine is freed

class FaultyEngine(Engine):
    name = "faulty"
    kind = "instance"
    Params = FaultParams

    def __init__(self, params):
        self.params = params

    @property
    def classes(self):
        return ClassTable(("thing",))

    def load(self):
        if self.params.loading:
            Path(self.params.loading).touch()
        time.sleep(self.params.load_seconds)

    def infer(self, frames, prepared):
        p = self.params
        for frame in frames:
            if frame.index == p.mark_at:
                Path(p.mark).touch()
            if frame.index == p.hang_at:
                time.sleep(3600)
            if frame.index == p.fail_at or 0 <= p.fail_from <= frame.index:
                raise RuntimeError(f"injected fault at frame {frame.index}")
        time.sleep(p.seconds * len(frames))
        return [Segmentation.empty(f.size[0], f.size[1], self.classes) for f in frames]

    def close(self):
        time.sleep(self.params.close_seconds)

    def __del__(self):
        if self.params.signal_when_freed:
            os.kill(os.getpid(), getattr(signal, self.params.signal_when_freed))

register("faulty", FaultyEngine)
from seg_video.cli.main import main
sys.exit(main(sys.argv[1:]))
'''


@dataclass
class Run:
    """A finished `seg-video` subprocess: exit code, stderr lines, seconds it took."""

    code: int
    lines: list[str]
    seconds: float

    @property
    def error(self) -> str:
        """The one `seg-video: error:` line (asserting there is exactly one, and no traceback)."""
        errors = [line for line in self.lines if line.startswith("seg-video: error: ")]
        assert len(errors) == 1, self.lines
        assert not any("Traceback" in line for line in self.lines), self.lines
        return errors[0]

    def written(self) -> int:
        """The frame count the error line reports (`N frames written to …`; 0 for `no output written`)."""
        found = re.search(r"; (\d+) frames written to ", self.error)
        if found is None:
            assert "no output written" in self.error, self.error
            return 0
        return int(found.group(1))


def command(*args: str | Path, wrapper: bool = True) -> list[str]:
    """The argv of a `seg-video` run: through `WRAPPER` (engine `faulty` available) or the real entry point."""
    head = [sys.executable, "-c", WRAPPER] if wrapper else [sys.executable, "-m", "seg_video"]
    return head + [str(a) for a in args]


def limits(file_size: int | None = None) -> Callable[[], None]:
    """A preexec_fn capping the child's address space (and, if given, the size of any file it writes)."""
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))
        if file_size is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
    return apply


def start(argv: list[str], file_size: int | None = None) -> subprocess.Popen[str]:
    """Start a run in its own process group (to find leftovers), memory-capped."""
    return subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, preexec_fn=limits(file_size))


def finish(process: subprocess.Popen[str], started: float) -> Run:
    """Wait for the run (failing the test after `RUN_TIMEOUT`) and check it left no process behind."""
    try:
        _, err = process.communicate(timeout=max(1.0, RUN_TIMEOUT - (time.monotonic() - started)))
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail("the run hung")
    seconds = time.monotonic() - started
    with pytest.raises(ProcessLookupError):  # nothing of its process group is left
        os.killpg(process.pid, 0)
    return Run(process.returncode, err.strip().splitlines(), seconds)


def run(*args: str | Path, wrapper: bool = True, file_size: int | None = None) -> Run:
    """Run `seg-video` with `args` to its end."""
    started = time.monotonic()
    return finish(start(command(*args, wrapper=wrapper), file_size), started)


def frames_in(path: Path) -> int:
    """Frames decoded from `path`: it plays (raises if it does not)."""
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def digest(path: Path) -> str:
    """The file's SHA-256: an input must come out of every run byte for byte as it went in."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wait_for(process: subprocess.Popen[str], condition: Callable[[], bool], what: str) -> None:
    """Poll until `condition` holds while `process` runs; fail (the process killed) if it ends or 30 s pass first."""
    deadline = time.monotonic() + 30.0
    while not condition():
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            _, err = process.communicate()
            pytest.fail(f"gave up waiting for {what} (the run: exit {process.returncode}, {err.strip()!r})")
        time.sleep(0.01)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s (60 frames) of the sample scene at 160x120 with AAC audio."""
    return write_sample_clip(tmp_path_factory.mktemp("faults") / "in.mp4", seconds=2.0, width=WIDTH, height=HEIGHT,
                             fps=FPS)


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 s (300 frames) of the sample scene at 160x120 with AAC audio, for runs that must last a while."""
    return write_sample_clip(tmp_path_factory.mktemp("faults") / "long.mp4", seconds=10.0, width=WIDTH,
                             height=HEIGHT, fps=FPS)


@pytest.fixture(autouse=True)
def inputs_untouched(clip: Path, long_clip: Path) -> Iterator[None]:
    """Whatever a test does to a run, the shared input clips come out of it byte for byte as they went in."""
    before = {path: digest(path) for path in (clip, long_clip)}
    yield
    assert {path: digest(path) for path in before} == before


# --- corrupt and hostile media ---------------------------------------------------------------------------------------

def png_bomb(width: int, height: int) -> bytes:
    """A valid grey PNG of `width`x`height` zeros: a few hundred KB that decode to width*height bytes and more."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte + pixels
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def y4m_header(width: int, height: int) -> bytes:
    """A raw YUV4MPEG2 file claiming `width`x`height` pictures, with one truncated frame."""
    return f"YUV4MPEG2 W{width} H{height} F30:1 Ip A1:1 C420jpeg\nFRAME\n".encode() + bytes(4096)


def truncated_mp4(clip: Path, path: Path) -> None:
    """The clip cut at 60 %: its index (the `moov` box, written last) is lost."""
    data = clip.read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10])


def seeded_noise(clip: Path, path: Path) -> None:
    """64 KB of seeded random bytes named .mp4."""
    path.write_bytes(random.Random(7).randbytes(65536))


def program_file(clip: Path, path: Path) -> None:
    """The Python interpreter's first 256 KB (an ELF program) named .mp4."""
    path.write_bytes(Path(sys.executable).resolve().read_bytes()[:262144])


@pytest.mark.parametrize(("make", "message"), [
    (truncated_mp4, "not a media file: "),
    (seeded_noise, "not a media file: "),
    (program_file, "not a media file: "),
    (lambda clip, path: path.write_bytes(y4m_header(100_000, 100_000)), "cannot read "),
    (lambda clip, path: path.write_bytes(y4m_header(16_000, 16_000)), "picture size 16000x16000 in "),
    (lambda clip, path: path.write_bytes(png_bomb(16_000, 16_000)), "(pictures over 35,651,584 pixels are refused)"),
], ids=["truncated-mp4", "noise", "program", "y4m-100000x100000", "y4m-16000x16000", "png-bomb-16000x16000"])
def test_hostile_files_are_refused_in_one_line_within_bounded_memory(
        clip: Path, tmp_path: Path, make: Callable[[Path, Path], object], message: str) -> None:
    hostile = tmp_path / "hostile.mp4"
    make(clip, hostile)
    before = digest(hostile)
    out = tmp_path / "out.mp4"

    result = run(hostile, out, "--quiet", wrapper=False)

    assert result.code == 2, result.lines
    assert message in result.error and str(hostile) in result.error
    assert not out.exists()
    assert digest(hostile) == before


def test_garbage_in_the_middle_of_a_stream_is_skipped(tmp_path: Path) -> None:
    """MPEG-TS resynchronizes after damage: the bad packets are skipped (or concealed) and the run goes on."""
    clean = write_sample_clip(tmp_path / "clean.ts", seconds=2.0, width=WIDTH, height=HEIGHT, fps=FPS, audio=False)
    data = bytearray(clean.read_bytes())
    middle = len(data) // 2
    data[middle: middle + 2000] = random.Random(3).randbytes(2000)  # about 5 % of the file
    damaged = tmp_path / "damaged.ts"
    damaged.write_bytes(bytes(data))
    out = tmp_path / "out.mp4"

    result = run(damaged, out, "--quiet", wrapper=False)

    assert result.code == 0, result.lines
    assert 50 <= frames_in(out) <= 60


def test_a_file_cut_short_finalizes_what_was_decoded(clip: Path, tmp_path: Path) -> None:
    whole = tmp_path / "whole.mkv"
    with av.open(str(clip)) as source, av.open(str(whole), "w") as target:  # Matroska states its duration
        stream = target.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(video=0):
            if packet.size:
                packet.stream = stream
                target.mux(packet)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    out = tmp_path / "out.mp4"

    result = run(cut, out, "--quiet", wrapper=False)

    assert result.code == 1, result.lines
    assert "decode error at frame" in result.error and "cut short" in result.error
    assert 0 < result.written() == frames_in(out) < 60


def test_a_change_of_resolution_mid_stream_is_scaled_to_the_first_size(tmp_path: Path) -> None:
    """Two MPEG-TS segments of different sizes, back to back (as a stream switching quality sends them)."""
    small = write_sample_clip(tmp_path / "a.ts", seconds=1.0, width=WIDTH, height=HEIGHT, fps=FPS, audio=False)
    large = write_sample_clip(tmp_path / "b.ts", seconds=1.0, width=2 * WIDTH, height=2 * HEIGHT, fps=FPS,
                              audio=False)
    joined = tmp_path / "joined.ts"
    joined.write_bytes(small.read_bytes() + large.read_bytes())
    out = tmp_path / "out.mp4"

    result = run(joined, out, wrapper=False)

    assert result.code == 0, result.lines
    changes = [line for line in result.lines if "picture size changes" in line]
    assert changes == [f"seg-video: {joined}: the picture size changes to 320x240 at frame 30; scaled to 160x120, "
                       "the first"]
    with av.open(str(out)) as container:
        sizes = {(frame.width, frame.height) for frame in container.decode(video=0)}
    assert sizes == {(WIDTH, HEIGHT)}
    assert frames_in(out) == 60


# --- output faults ---------------------------------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs: a disk that fills up mid-run (skipped where mounting is not allowed)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def test_a_full_disk_keeps_the_frames_that_reached_it(long_clip: Path, small_disk: Path) -> None:
    out = small_disk / "out.mkv"

    result = run(long_clip, out, "--crf", "0", "--quiet")

    assert result.code == 1, result.lines
    # Matroska buffers a cluster (up to 5 s) before it reaches the disk: the write that fails may be the last one
    assert re.search(f"cannot (write|finish) {re.escape(str(out))}: No space left on device", result.error)
    assert 0 < result.written() == frames_in(out) < 300  # Matroska plays without its closing index


def test_a_file_size_limit_removes_an_mp4_that_cannot_be_finished(long_clip: Path, tmp_path: Path) -> None:
    """RLIMIT_FSIZE: writes past 200 KB fail (File too large); an MP4 without its index cannot play, so it goes."""
    out = tmp_path / "out.mp4"

    result = run(long_clip, out, "--crf", "0", "--quiet", file_size=200_000)

    assert result.code == 1, result.lines
    assert f"cannot write {out}: File too large; no output written" in result.error
    assert not out.exists()


def test_removing_the_output_folder_mid_run_fails_the_run_at_once(long_clip: Path, tmp_path: Path) -> None:
    folder = tmp_path / "outputs"
    folder.mkdir()
    out = folder / "out.mp4"
    started = time.monotonic()
    process = start(command(long_clip, out, "--engine", "faulty", "--param", "seconds=0.02", "--quiet"))
    wait_for(process, out.exists, "the output to open")
    shutil.rmtree(folder)
    removed = time.monotonic()

    result = finish(process, started)

    assert result.code == 1, result.lines
    assert f"cannot write {out}: the file was deleted or moved, or its folder removed" in result.error
    assert result.written() == 0
    assert started + result.seconds - removed < 3.0, "it stopped at once, not after 6 s of frames for a lost file"
    assert not folder.exists()


@pytest.fixture
def immutable() -> Iterator[Callable[[Path], None]]:
    """`chattr +i` on a path (even root cannot write it then), undone after the test; skipped where unsupported."""
    locked: list[Path] = []

    def lock(path: Path) -> None:
        done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"chattr +i does not work here: {done.stderr.strip()}")
        locked.append(path)

    if shutil.which("chattr") is None:
        pytest.skip("no chattr here")
    yield lock
    for path in locked:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_write_permission_lost_mid_run_keeps_what_was_written(long_clip: Path, tmp_path: Path,
                                                              immutable: Callable[[Path], None]) -> None:
    out = tmp_path / "out.mkv"
    started = time.monotonic()
    process = start(command(long_clip, out, "--engine", "faulty", "--param", "seconds=0.01", "--crf", "0",
                            "--quiet"))
    wait_for(process, lambda: out.exists() and out.stat().st_size > 0, "the first cluster (5 s) to reach the disk")
    immutable(out)

    result = finish(process, started)

    assert result.code == 1, result.lines
    assert f"cannot write {out}: Operation not permitted" in result.error
    assert 0 < result.written() == frames_in(out) < 300


def test_write_permission_lost_before_the_output_opens(clip: Path, tmp_path: Path,
                                                       immutable: Callable[[Path], None]) -> None:
    folder = tmp_path / "outputs"
    folder.mkdir()
    out = folder / "out.mp4"
    loading = tmp_path / "loading"
    started = time.monotonic()
    process = start(command(clip, out, "--engine", "faulty", "--param", "load_seconds=1.0", "--param",
                            f"loading={loading}", "--quiet"))
    wait_for(process, loading.exists, "the engine to load")  # the checks passed; the output is not open yet
    immutable(folder)

    result = finish(process, started)

    assert result.code == 1, result.lines
    assert f"cannot write {out}: Operation not permitted; no output written" in result.error
    assert not out.exists()


# --- signals ---------------------------------------------------------------------------------------------------------

SEED = 20261127
"""Seeds the "random" moments signals arrive at, so a failure can be replayed."""
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
WORDS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("moment", ["start-up", "engine-load", "mid-run", "flush"])
def test_a_signal_at_any_moment_ends_the_run_with_a_playable_output(long_clip: Path, tmp_path: Path, moment: str,
                                                                    signum: signal.Signals) -> None:
    """Start-up: before seg-video's handlers exist, the signal ends the process as it does by default (the exit
    status a shell shows is 128+N all the same) and nothing is written. Engine load: before the output opens, so
    none is written. Mid-run and during the final flush: the output plays and holds every frame reported."""
    rng = random.Random(f"{SEED}-{moment}-{signum}")
    out = tmp_path / "out.mp4"
    loading, last = tmp_path / "loading", tmp_path / "last-frame"
    engine = ["--engine", "faulty", "--param", "seconds=0.005", "--param", f"mark={last}", "--param", "mark_at=299",
              "--param", f"loading={loading}", "--param", f"load_seconds={1.5 if moment == 'engine-load' else 0}"]
    started = time.monotonic()
    if moment == "start-up":  # the real entry point, as a user starts it
        process = start(command(long_clip, out, "--quiet", wrapper=False))
    else:
        process = start(command(long_clip, out, "--quiet", *engine))
    if moment == "start-up":
        time.sleep(rng.uniform(0.0, 0.1))
    elif moment == "engine-load":
        wait_for(process, loading.exists, "the engine to load")
        time.sleep(rng.uniform(0.0, 0.5))
    elif moment == "mid-run":
        wait_for(process, out.exists, "the output to open")
        time.sleep(rng.uniform(0.1, 0.8))
    else:
        wait_for(process, last.exists, "the engine to reach the last frame")
    process.send_signal(signum)

    result = finish(process, started)

    if moment == "start-up":
        assert result.code in (EXIT_CODES[signum], -signum), result.lines
        assert not out.exists() or frames_in(out) > 0
        return
    if moment == "flush" and result.code in (0, -signum):  # the run had ended before the signal came
        assert frames_in(out) == 300
        return
    assert result.code == EXIT_CODES[signum], result.lines
    assert result.error.startswith(f"seg-video: error: {WORDS[signum]}; ")
    if moment == "engine-load":
        assert result.written() == 0 and not out.exists()
    else:
        assert 0 < result.written() == frames_in(out) <= 300


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_once_the_outputs_are_final_leaves_the_run_done(clip: Path, tmp_path: Path,
                                                                 signum: signal.Signals) -> None:
    """The signal comes as the finished run's objects are freed (the engine sends it on its way out): the run has
    finalized its output and said so, so it exits 0 and says nothing more."""
    out = tmp_path / "out.mp4"
    started = time.monotonic()
    process = start(command(clip, out, "--engine", "faulty", "--param", f"signal_when_freed={signum.name}"))

    result = finish(process, started)

    assert result.code == 0, result.lines
    assert result.lines[-1].startswith("seg-video: 60 frames in "), result.lines
    assert frames_in(out) == 60


def test_a_second_ctrl_c_while_finishing_exits_at_once(clip: Path, tmp_path: Path) -> None:
    """The engine takes 30 s to close: the first Ctrl-C waits for that, the second one leaves at once."""
    out = tmp_path / "out.mp4"
    started = time.monotonic()
    process = start(command(clip, out, "--engine", "faulty", "--param", "seconds=0.02", "--param",
                            "close_seconds=30", "--quiet"))
    wait_for(process, out.exists, "the output to open")
    process.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert process.poll() is None, "still finishing after the first Ctrl-C"
    again = time.monotonic()
    process.send_signal(signal.SIGINT)

    result = finish(process, started)

    assert result.code == 130, result.lines
    assert time.monotonic() - again < 3.0
    assert result.error == ("seg-video: error: interrupted again while finishing: exiting at once; the outputs may "
                            "not be finalized")


# --- engine faults ---------------------------------------------------------------------------------------------------

def test_an_engine_that_raises_ends_the_run_naming_the_frame(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"

    result = run(clip, out, "--engine", "faulty", "--param", "fail_at=20", "--quiet")

    assert result.code == 1, result.lines
    assert result.error.startswith("seg-video: error: infer stage failed at frame 20: injected fault at frame 20; ")
    assert 0 < result.written() == frames_in(out) <= 20


def test_a_hung_engine_is_stopped_by_the_watchdog(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"

    result = run(clip, out, "--engine", "faulty", "--param", "hang_at=20", "--infer-timeout", "1", "--quiet")

    assert result.code == 1, result.lines
    assert result.error.startswith("seg-video: error: infer stage failed at frame 20: no result within 1 s "
                                   "(stopped by the watchdog); ")
    assert 0 < result.written() == frames_in(out) <= 20
    assert result.seconds < 15, "the hung thread was not waited for"


def test_an_engine_load_that_hangs_is_stopped_by_the_watchdog(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"

    result = run(clip, out, "--engine", "faulty", "--param", "load_seconds=3600", "--set", "pipeline.load_timeout=1",
                 "--quiet")

    assert result.code == 1, result.lines
    assert result.error == ("seg-video: error: infer stage failed: setup not done within 1 s (stopped by the "
                            "watchdog); no output written")
    assert not out.exists()


def test_a_live_run_restarts_a_failed_engine_and_goes_on(clip: Path, tmp_path: Path) -> None:
    """The file plays as a live source (paced, lossless): the frame the failed engine held is dropped."""
    recording = tmp_path / "rec.mp4"

    result = run(clip, "--serve", "0", "--output", recording, "--engine", "faulty", "--param", "fail_at=20",
                 "--restart-engine", "2")

    assert result.code == 0, result.lines
    restarts = [line for line in result.lines if "restarted" in line]
    assert restarts == [f"seg-video: {clip}: the engine failed at frame 20 (injected fault at frame 20); restarted "
                        "it (1 of 2)"]
    assert frames_in(recording) == 59


def test_a_live_run_gives_up_after_its_engine_restarts(clip: Path, tmp_path: Path) -> None:
    recording = tmp_path / "rec.mp4"

    result = run(clip, "--serve", "0", "--output", recording, "--engine", "faulty", "--param", "fail_from=20",
                 "--restart-engine", "2", "--quiet")

    assert result.code == 1, result.lines
    assert result.error.startswith("seg-video: error: infer stage failed at frame 22: injected fault at frame 22 "
                                   "(after 2 engine restarts); ")
    assert 0 < result.written() == frames_in(recording) <= 20


@pytest.mark.parametrize(("flag", "complaint"), [
    (["--infer-timeout", "-1"], "infer_timeout and load_timeout must be 0 (no limit) or positive seconds"),
    (["--set", "pipeline.load_timeout=-5"], "infer_timeout and load_timeout must be 0 (no limit) or positive"),
    (["--restart-engine", "-1"], "engine_restarts must be 0 or more; got -1"),
])
def test_watchdog_and_restart_settings_are_checked(clip: Path, tmp_path: Path, flag: list[str], complaint: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from seg_video.cli.main import main

    assert main([str(clip), str(tmp_path / "out.mp4"), *flag]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("seg-video: error: ") and complaint in err and "\n" not in err
    assert not (tmp_path / "out.mp4").exists()


def test_the_runner_abandons_a_hung_stage_but_waits_for_a_slow_teardown() -> None:
    """The watchdog fails the hung stage at once; the sink's teardown, slower than `join_timeout`, still runs."""
    stuck = threading.Event()
    finalized = threading.Event()

    def hang_at_5(frames: list[Frame]) -> list[Frame]:
        if frames[0].index == 5:
            stuck.wait()
        return frames

    def finalize() -> None:
        time.sleep(1.0)
        finalized.set()

    source = (Frame(index=i, image=np.zeros((1, 1, 3), np.uint8)) for i in range(100))
    stages = [Stage("infer", hang_at_5, timeout=0.3), Stage("write", lambda frames: [], teardown=finalize)]
    started = time.monotonic()
    try:
        with pytest.raises(StageFailed) as failed:
            Runner(source, stages, join_timeout=0.2).run()
    finally:
        stuck.set()

    assert (failed.value.stage, failed.value.frame) == ("infer", 5)
    assert isinstance(failed.value.error, StageTimeout)
    assert finalized.is_set()
    assert time.monotonic() - started < 3.0
