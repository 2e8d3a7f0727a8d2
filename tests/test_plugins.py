"""Third-party engines: found through the `seg_video.engines` entry points of installed distributions, run by the CLI,
the API and batch, listed with their origin; a broken plugin breaks only itself."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import av
import pytest

import seg_video
from seg_video.engines.base import engines

PLUGIN = '''
from dataclasses import dataclass

import numpy as np

import seg_video


@dataclass
class HalvesParams:
    fraction: float = 0.5

    def validate(self):
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1]; got {self.fraction}")


class HalvesEngine(seg_video.Engine):
    """The left part of every frame, as one instance (a test plugin)."""

    kind = "instance"
    Params = HalvesParams
    needs = "nothing but numpy"

    def __init__(self, params):
        self.params = params

    @property
    def classes(self):
        return seg_video.ClassTable(("left",))

    def infer(self, frames, prepared):
        found = []
        for frame in frames:
            height, width = frame.size
            right = round(width * self.params.fraction)
            masks = np.zeros((1, height, width), bool)
            masks[0, :, :right] = True
            found.append(seg_video.Segmentation(height, width, self.classes, boxes=[[0, 0, right, height]],
                                                scores=[0.9], class_ids=[0], masks=masks))
        return found
'''
ENTRY_POINTS = "[seg_video.engines]\nhalves = seg_video_halves:HalvesEngine\nbroken = seg_video_broken:Engine\n"


def place_plugin(site: Path) -> Path:
    """A distribution `seg-video-halves` 1.0 unpacked into `site` as an installer leaves it: the module and its
    `.dist-info` metadata with entry points (one of which names a module that does not exist)."""
    site.mkdir()
    (site / "seg_video_halves.py").write_text(PLUGIN)
    info = site / "seg_video_halves-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: seg-video-halves\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    return site


def seg_video_run(*args: str | Path, site: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`seg-video ARGS` (as `python -m seg_video`) with `site` on the import path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "seg_video", *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def frame_count(path: Path) -> int:
    with av.open(str(path)) as video:
        return sum(1 for _ in video.decode(video=0))


def test_an_installed_plugin_runs_through_the_api(tmp_path: Path, sample_clip: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(place_plugin(tmp_path / "site")))
    found = engines()
    assert found["halves"].origin == "plugin seg-video-halves 1.0"
    assert found["motion"].origin == "built in"
    widths = [float(seg.boxes[0, 2]) for _, seg in seg_video.segment(sample_clip, engine="halves", fraction=0.25)]
    assert widths == [80.0] * 60  # a quarter of 320
    with pytest.raises(seg_video.ConfigError, match=r"engine\.halves: fraction must be"):
        seg_video.segment(sample_clip, engine="halves", fraction=2.0)
    with pytest.raises(seg_video.EngineError, match=r"engine .broken. .*cannot be imported: ModuleNotFoundError"):
        seg_video.load_engine("broken")
    assert seg_video.load_engine("threshold").kind == "instance"  # the others are untouched


def test_the_cli_runs_lists_and_refuses_plugins(tmp_path: Path, sample_clip: Path) -> None:
    site = place_plugin(tmp_path / "site")
    out = tmp_path / "out.mp4"
    run = seg_video_run(sample_clip, out, "--engine", "halves", "--param", "fraction=0.75", site=site, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert frame_count(out) == 60

    listed = seg_video_run("--list-engines", site=site, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    blocks = {block.split()[0]: block for block in listed.stdout.split("\n") if block and not block[0].isspace()}
    assert re.search(r"^halves +instance  The left part of every frame, as one instance \(a test plugin\)\.$",
                     listed.stdout, re.MULTILINE)
    assert "from:  plugin seg-video-halves 1.0" in listed.stdout and "needs: nothing but numpy" in listed.stdout
    assert re.match(r"broken +unusable  \(plugin seg-video-halves 1\.0\) engine 'broken'", blocks["broken"])
    assert "ModuleNotFoundError" in blocks["broken"] and "\n" not in blocks["broken"]
    assert {"motion", "fcn", "maskrcnn", "threshold"} <= set(blocks)

    broken = seg_video_run(sample_clip, tmp_path / "broken.mp4", "--engine", "broken", site=site, cwd=tmp_path)
    assert broken.returncode == 2
    assert broken.stderr.startswith("seg-video: error: engine 'broken'") and broken.stderr.count("\n") == 1
    assert not (tmp_path / "broken.mp4").exists()


def test_a_plugin_installed_with_pip_from_outside_the_repo_runs_in_batch(tmp_path: Path, sample_clip: Path) -> None:
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("needs setuptools in this environment to build the plugin without the network")
    project = tmp_path / "seg-video-halves"
    project.mkdir()
    (project / "seg_video_halves.py").write_text(PLUGIN)
    (project / "pyproject.toml").write_text(textwrap.dedent("""\
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "seg-video-halves"
        version = "2.0"

        [tool.setuptools]
        py-modules = ["seg_video_halves"]

        [project.entry-points."seg_video.engines"]
        halves = "seg_video_halves:HalvesEngine"
        """))
    site = tmp_path / "installed"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                              "--no-build-isolation", "--target", str(site), str(project)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    footage = tmp_path / "footage"
    footage.mkdir()
    os.symlink(sample_clip, footage / "a.mp4")
    batch = seg_video_run("batch", footage, "--out", tmp_path / "out", "--engine", "halves", "--coco",
                          "--workers", "1", "-q", site=site, cwd=tmp_path)
    assert batch.returncode == 0, batch.stderr
    assert frame_count(tmp_path / "out" / "a.mp4") == 60
    listed = seg_video_run("--list-engines", site=site, cwd=tmp_path)
    assert "from:  plugin seg-video-halves 2.0" in listed.stdout
