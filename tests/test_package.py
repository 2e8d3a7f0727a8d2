"""What `pip install .` puts into site-packages: exactly one import name, `seg_video`, built from the project's
folders (every module and preset), the console script and the engines' entry points."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"pipeline": "seg_video", "engines": "seg_video/engines", "configs": "seg_video/configs"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project built as a wheel (with this environment's setuptools: no network)."""
    if tuple(int(p) for p in version("setuptools").split(".")[:2]) < (68, 0):
        pytest.skip("needs setuptools >= 68 here to build the wheel without the network")
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                            "--wheel-dir", str(out), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr
    (found,) = out.glob("seg_video-*.whl")
    return found


def test_the_wheel_has_one_top_level_package_with_every_module(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"seg_video", f"seg_video-{version('seg-video')}.dist-info"}
    expected = {f"{FOLDERS[folder]}/{path.relative_to(ROOT / folder).as_posix()}"
                for folder in FOLDERS for path in (ROOT / folder).rglob("*") if path.suffix in (".py", ".toml", ".txt")}
    assert expected <= set(names), sorted(expected - set(names))
    assert "seg_video/__main__.py" in names and "seg_video/configs/live-display.toml" in names


def test_the_wheel_declares_the_command_and_every_built_in_engine(wheel: Path) -> None:
    archive = zipfile.ZipFile(wheel)
    (points,) = [name for name in archive.namelist() if name.endswith(".dist-info/entry_points.txt")]
    parsed = configparser.ConfigParser()
    parsed.read_string(archive.read(points).decode())
    assert parsed["console_scripts"]["seg-video"] == "seg_video.cli.main:main"
    engines = dict(parsed["seg_video.engines"])
    assert set(engines) == {"motion", "threshold", "kmeans", "edges", "region", "maskrcnn", "maskrcnn_v2", "fcn",
                            "fcn101", "lraspp", "deeplabv3_mobilenet", "maskrcnn_tf"}
    assert all(target.startswith("seg_video.engines.") for target in engines.values())


def test_installed_only_seg_video_imports(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target",
                              str(site), str(wheel)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr
    probe = ("import importlib.util, seg_video; print(seg_video.__file__); "
             "print([n for n in ('pipeline', 'engines', 'configs') if importlib.util.find_spec(n)])")
    run = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(site)})
    assert run.returncode == 0, run.stderr
    location, others = run.stdout.splitlines()
    assert Path(location).is_relative_to(site) and others == "[]"
    module = subprocess.run([sys.executable, "-m", "seg_video", "--version"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(site)})
    assert module.returncode == 0 and module.stdout.strip() == f"seg-video {version('seg-video')}"
