"""Every kind of path an output can be, for every writer: nothing seg-video writes ever replaces an input, an output
must be a regular file (a FIFO would block for good), every container written is one seg-video can fill, and each
refusal is one line with exit 2 before anything loads (docs/RELIABILITY.md, "Outputs")."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar, Literal

import av
import cv2
import numpy as np
import pytest

from seg_video import ClassTable, Engine, Frame, Segmentation
from seg_video.batch.manifest import MANIFEST
from seg_video.cli.main import main
from seg_video.core.config import EncoderSettings
from seg_video.engines.base import register
from seg_video.io.video import VideoSink


class Watched(Engine):
    """Finds nothing; counts its loads (class-wide), to show a refusal came before any engine loaded."""

    kind: ClassVar[Literal["instance", "semantic"]] = "instance"
    loads: ClassVar[int] = 0

    @property
    def classes(self) -> ClassTable:
        return ClassTable(("thing",))

    def load(self) -> None:
        Watched.loads += 1

    def infer(self, frames: Sequence[Frame], prepared: Sequence[Any]) -> list[Segmentation]:
        return [Segmentation.empty(f.size[0], f.size[1], self.classes) for f in frames]


register("watched", Watched)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def refused(capsys: pytest.CaptureFixture[str], *args: str | Path, says: str) -> None:
    """The CLI exits 2 with one `seg-video: error:` line containing `says`, no engine having loaded."""
    loads = Watched.loads
    assert main([str(a) for a in args] + ["--engine", "watched"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("seg-video: error: ") and says in lines[0], lines
    assert Watched.loads == loads


@pytest.fixture
def work(sample_clip: Path, tmp_path: Path) -> Iterator[Path]:
    """A folder holding a copy of the sample clip as `in.mp4` (the input every case must leave intact)."""
    (tmp_path / "in.mp4").write_bytes(sample_clip.read_bytes())
    before = digest(tmp_path / "in.mp4")
    yield tmp_path
    assert digest(tmp_path / "in.mp4") == before


def make(kind: str, path: Path, work: Path) -> None:
    """Make `path` the kind of thing the case names."""
    source = work / "in.mp4"
    if kind == "symlink to the input":
        path.symlink_to(source)
    elif kind == "hard link to the input":
        os.link(source, path)
    elif kind == "FIFO":
        os.mkfifo(path)
    elif kind == "socket":
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
        server.close()
    elif kind == "symlink to a device":
        path.symlink_to("/dev/full")
    elif kind == "folder":
        path.mkdir()


KINDS = {
    "symlink to the input": "is the input file",
    "hard link to the input": "is the input file",
    "FIFO": "it is a FIFO (named pipe), not a regular file",
    "socket": "it is a socket, not a regular file",
    "symlink to a device": "it is a character device, not a regular file",
    "folder": "is a folder",
}


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("writer", ["video", "coco", "recording"])
def test_no_writer_writes_into_an_input_or_a_special_file(work: Path, writer: str, kind: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    source = work / "in.mp4"
    target = work / ("out-0.mp4" if writer == "recording" else "out.json" if writer == "coco" else "out.mp4")
    make(kind, target, work)
    args = {"video": [source, target], "coco": [source, "--no-video", "--coco", target],
            "recording": [source, source, source, "--output", work / "out.mp4"]}[writer]
    refused(capsys, *args, "--overwrite", says="is a folder" if kind == "folder" and writer == "coco" else KINDS[kind])


def test_an_input_reached_through_dot_dot_is_the_input(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (work / "sub").mkdir()
    refused(capsys, work / "in.mp4", work / "sub" / ".." / "in.mp4", "--overwrite", says="is the input file")
    refused(capsys, work / "in.mp4", "--no-video", "--coco", work / "sub" / ".." / "in.mp4", "--overwrite",
            says="is the input file")


def test_a_name_too_long_for_the_file_system_is_one_line(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    long = work / ("x" * 300 + ".mp4")
    refused(capsys, work / "in.mp4", long, says="the name is too long for its file system")
    refused(capsys, work / "in.mp4", "--no-video", "--coco", long.with_suffix(".json"),
            says="the name is too long for its file system")
    refused(capsys, work / "in.mp4", "--no-video", "--masks-dir", work / ("m" * 300), says="File name too long")


def test_a_symlink_to_a_regular_file_is_written_through_and_kept(work: Path) -> None:
    target, link = work / "real.mp4", work / "link.mp4"
    target.write_bytes(b"old")
    link.symlink_to(target)
    assert main([str(work / "in.mp4"), str(link), "--overwrite", "--max-frames", "5", "-q"]) == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    with av.open(str(target)) as video:
        assert sum(1 for _ in video.decode(video=0)) == 5


def test_a_failed_run_never_deletes_a_symlinked_output(work: Path) -> None:
    target, link = work / "real.mp4", work / "link.mp4"
    target.write_bytes(b"")
    link.symlink_to(target)

    def small_files() -> None:  # writes past 2 KB fail (File too large): nothing playable, the salvage path runs
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))

    run = subprocess.run([sys.executable, "-m", "seg_video", str(work / "in.mp4"), str(link), "--overwrite", "-q"],
                         capture_output=True, text=True, timeout=120, preexec_fn=small_files)
    assert run.returncode == 1 and "File too large; no output written" in run.stderr, run.stderr
    assert link.is_symlink() and os.readlink(link) == str(target)  # the user's link stays; only data went


def image_input(folder: Path, frames: int = 3) -> list[Path]:
    """`frames` PNG pictures named as label maps are (`000000.png`, …): an image (sequence) as the input."""
    folder.mkdir()
    paths = []
    for index in range(frames):
        path = folder / f"{index:06d}.png"
        cv2.imwrite(str(path), np.full((48, 64, 3), 40 * index, np.uint8))
        paths.append(path)
    return paths


def test_label_maps_never_replace_the_input_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pictures = image_input(tmp_path / "frames")
    before = [digest(path) for path in pictures]
    refused(capsys, pictures[0], "--no-video", "--masks-dir", tmp_path / "frames", "--overwrite",
            says=f"--masks-dir {tmp_path / 'frames'} holds the input")
    refused(capsys, pictures[0], "--no-video", "--masks-dir", tmp_path / "frames" / ".." / "frames",
            "--overwrite", says="holds the input")
    refused(capsys, pictures[0], "--no-video", "--masks-dir", tmp_path / "nowhere" / ".." / "maps",
            says="--masks-dir's parent folder does not exist")
    assert [digest(path) for path in pictures] == before
    assert main([str(pictures[0]), "--no-video", "--masks-dir", str(tmp_path / "maps"), "-q"]) == 0
    assert (tmp_path / "maps" / "000000.png").is_file() and [digest(path) for path in pictures] == before


CONTAINERS = {".mp4": ("h264", "aac"), ".m4v": ("h264", "aac"), ".mov": ("h264", "aac"), ".mkv": ("h264", "aac"),
              ".avi": ("h264", "aac"), ".ts": ("h264", "aac"), ".webm": ("vp9", "opus"), ".gif": ("gif", None)}


@pytest.mark.parametrize("suffix", sorted(CONTAINERS))
def test_every_container_in_the_table_is_written_with_its_codecs(suffix: str, sample_clip: Path,
                                                                 tmp_path: Path) -> None:
    out = tmp_path / f"out{suffix}"
    assert main([str(sample_clip), str(out), "--max-frames", "12", "-q"]) == 0
    video, audio = CONTAINERS[suffix]
    with av.open(str(out)) as written:
        assert written.streams.video[0].codec_context.name == video
        assert (written.streams.audio[0].codec_context.name if written.streams.audio else None) == audio
        assert sum(1 for _ in written.decode(video=0)) == 12


@pytest.mark.parametrize("name", ["out.y4m", "out.png", "out.mp3", "out.wav", "out", "out.jpg"])
def test_outputs_no_container_can_take_are_refused_before_anything_loads(name: str, sample_clip: Path,
                                                                         tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    refused(capsys, sample_clip, tmp_path / name, says="cannot write video into")
    assert not (tmp_path / name).exists()


def test_a_codec_the_container_cannot_hold_is_refused(sample_clip: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    refused(capsys, sample_clip, tmp_path / "out.webm", "--set", "output.codec=libx264",
            says=".webm files cannot hold libx264 video")
    refused(capsys, sample_clip, tmp_path / "out.mp4", "--set", "output.pix_fmt=pal8",
            says="output.pix_fmt 'pal8' is not one libx264 takes")


def test_an_odd_size_is_said_and_kept_with_4_4_4(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    odd = tmp_path / "odd.mkv"
    with VideoSink(odd, width=321, height=241, time_base=Fraction(1, 10), fps=10.0,
                   settings=EncoderSettings(pix_fmt="yuv444p")) as sink:
        for index in range(4):
            sink.write(Frame(index=index, image=np.full((241, 321, 3), 50 * index, np.uint8), pts=index))
    capsys.readouterr()
    assert main([str(odd), str(tmp_path / "even.mp4")]) == 0
    assert "321x241 is written as 322x242" in capsys.readouterr().err
    assert main([str(odd), str(tmp_path / "kept.mkv"), "--set", "output.pix_fmt=yuv444p", "-q"]) == 0
    for name, size in (("even.mp4", (322, 242)), ("kept.mkv", (321, 241))):
        with av.open(str(tmp_path / name)) as written:
            stream = written.streams.video[0]
            assert (stream.width, stream.height) == size


def test_config_flags_and_help(tmp_path: Path, sample_clip: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refused(capsys, sample_clip, tmp_path / "out.mp4", "--config", "", says="--config needs a TOML file or a preset")
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "seg-video batch" in capsys.readouterr().out


def torn_manifest(out: Path, names: Sequence[str]) -> None:
    """A manifest with every kind of damage: a torn last line ending inside a multi-byte character, records with a
    field missing or of the wrong type, a failure without its reason."""
    good = {"input": "x", "size": 1, "mtime_ns": 1, "sha256": None, "config": "c", "status": "done", "reason": None,
            "outputs": [], "frames": 1, "seconds": 1.0, "attempts": 1, "worker": "w", "finished": "now"}
    lines = [json.dumps({**good, "name": names[0], "status": None}),
             json.dumps({**good, "name": names[1], "attempts": "x"}),
             json.dumps({**good, "name": names[2], "status": "failed"}),
             json.dumps([1, 2]), "{not json",
             json.dumps({**good, "name": "caf\u00e9.mp4"}, ensure_ascii=False)[:-8]]
    (out / MANIFEST).write_bytes(("\n".join(lines[:-1]) + "\n").encode() + lines[-1].encode()[:-1])


def test_a_damaged_manifest_never_stops_the_batch(sample_clip: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    footage, out = tmp_path / "footage", tmp_path / "out"
    footage.mkdir()
    out.mkdir()
    names = ["a.mp4", "b.mp4", "c.mp4"]
    for name in names:
        (footage / name).write_bytes(sample_clip.read_bytes())  # copies: a batch takes each file once
    torn_manifest(out, names)
    assert main(["batch", str(footage), "--out", str(out), "--workers", "1"]) == 0
    err = capsys.readouterr().err
    assert "6 unreadable line(s) ignored" in err
    records = [json.loads(line) for line in (out / MANIFEST).read_text().splitlines()]
    assert sorted(r["name"] for r in records) == names and {r["status"] for r in records} == {"done"}
    assert all((out / name).is_file() for name in names)


def test_batch_refusals_name_what_is_wrong(sample_clip: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    listed = tmp_path / "list.txt"
    listed.write_bytes(b"clip.mp4\n\xff\xfe broken\n")
    assert main(["batch", str(listed), "--out", str(tmp_path / "out")]) == 2
    assert f"the list {listed} is not UTF-8 text" in capsys.readouterr().err
    (tmp_path / "fifo-out").mkdir()
    os.mkfifo(tmp_path / "fifo-out" / MANIFEST)
    assert main(["batch", str(sample_clip), "--out", str(tmp_path / "fifo-out")]) == 2
    assert "cannot keep the manifest" in capsys.readouterr().err
    assert main(["batch", str(sample_clip), "--out", str(tmp_path / "w"), "--engine", "fcn", "--weights", "none",
                 "--device", "cpu", "--min-size", "32", "--no-video", "--coco", "-q"]) == 0
    assert (tmp_path / "w" / Path(sample_clip).with_suffix(".coco.json").name).is_file()


def test_a_fifo_that_appears_after_the_checks_cannot_block_the_writer(tmp_path: Path) -> None:
    """The video writer's own open never waits: FFmpeg's would hold the interpreter's lock, and then no signal
    could end the process (run in a child, so that a regression fails by timeout instead of hanging the suite)."""
    fifo = tmp_path / "late.mp4"
    os.mkfifo(fifo)
    probe = ("import sys; from fractions import Fraction; from pathlib import Path\n"
             "from seg_video.core.config import EncoderSettings\nfrom seg_video.core.errors import WriteError\n"
             "from seg_video.io.video import VideoSink\n"
             "try:\n    VideoSink(Path(sys.argv[1]), width=64, height=48, time_base=Fraction(1, 30), fps=30.0,"
             " settings=EncoderSettings())\nexcept WriteError as error:\n    print(error)\n")
    run = subprocess.run([sys.executable, "-c", probe, str(fifo)], capture_output=True, text=True, timeout=60)
    assert run.stdout.strip() == f"cannot write {fifo}: it is a FIFO (named pipe), not a regular file", run.stderr
    assert fifo.exists()  # the user's FIFO is left alone
