"""Property-based tests of configuration input: TOML config files and command-line values.

Every invalid one must be a single line `seg-video: error: …` with exit code 2, never a traceback; every valid
one must be accepted. The input is a file that is not media: a configuration that passes every check reaches
the input and fails there ("not a media file"), so nothing heavy ever runs and "accepted" is visible.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import math
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seg_video.cli.main import main
from seg_video.core.config import X264_PRESETS

ROOT = Path(__file__).resolve().parent.parent
ACCEPTED = "not a media file:"
"""The error of a run whose settings all passed: the (deliberately) non-media input is all that is wrong."""
FUZZ = settings(deadline=None, max_examples=int(os.environ.get("SEG_VIDEO_FUZZ_EXAMPLES", "120")), database=None,
                suppress_health_check=[HealthCheck.too_slow])
"""Bounded for CI; SEG_VIDEO_FUZZ_EXAMPLES=5000 searches harder. No example database: nothing is left on disk."""
CLASSICAL = ("motion", "threshold", "kmeans", "edges", "region")
KNOWN_KEYS = {
    "engine": ["name", *CLASSICAL, "maskrcnn", "fcn"],
    "pipeline": ["queue_size", "policy", "batch"],
    "render": ["alpha", "contours", "boxes", "labels", "semantic", "legend", "fps_overlay"],
    "output": ["codec", "crf", "preset", "pix_fmt", "audio"],
    "live": ["open_timeout", "read_timeout", "reconnect_min", "reconnect_max", "rtsp_transport", "camera_width",
             "camera_height", "camera_fps"],
    "track": ["enabled", "iou", "high_score", "low_score", "match_iou", "max_age", "lost_seconds", "confirm"],
    "motion": ["method", "history", "history_seconds", "var_threshold", "scale", "kernel", "warmup", "light_cell",
               "relearn", "texture", "merge", "min_fraction", "min_area", "max_instances"],
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding `in.mp4`, a file that is not media (and no `out.mp4`)."""
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "in.mp4").write_bytes(b"not a video at all\n")
    return folder


def run_cli(workdir: Path, args: Sequence[str]) -> tuple[int, str]:
    """`seg-video in.mp4 out.mp4 ARGS…` in-process: its exit code and what it wrote to stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main([str(workdir / "in.mp4"), str(workdir / "out.mp4"), *args])
    return code, err.getvalue()


def assert_one_line_error(code: int, err: str) -> None:
    """Exit 2 with exactly one line, `seg-video: error: …`."""
    assert code == 2, err
    assert err.startswith("seg-video: error: ") and err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err and "SEG_VIDEO_DEBUG" not in err, err  # not the catch-all of unexpected errors


# --- TOML config files ---------------------------------------------------------------------------------------------


def toml(value: Any) -> str:
    """`value` as a TOML value (tables inline); strings through JSON escapes, which TOML shares but for lone
    surrogates, which make the document invalid (also worth fuzzing)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml(item) for item in value) + "]"
    return "{" + ", ".join(f"{json.dumps(key)} = {toml(item)}" for key, item in value.items()) + "}"


def document(tables: dict[str, Any]) -> str:
    """A config file: one `name = value` line per top-level entry."""
    return "".join(f"{json.dumps(name)} = {toml(value)}\n" for name, value in tables.items())


scalars = st.one_of(
    st.integers(-(2**70), 2**70), st.integers(-3, 300), st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-2.0, 2.0), st.booleans(), st.text(max_size=12),
    st.sampled_from(["mog2", "knn", "otsu", "overlay", "live", "tcp", "libx264", "ultrafast", "yuv420p", "",
                     "\x00", "../../etc/passwd", "motion", "maskrcnn"]),
    st.dates(), st.datetimes(), st.times())
keys = st.one_of(st.sampled_from(sorted({key for names in KNOWN_KEYS.values() for key in names})),
                 st.text(min_size=1, max_size=8))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(keys, inner, max_size=4)), max_leaves=12)
tables = st.dictionaries(st.one_of(st.sampled_from(list(KNOWN_KEYS)[:6]), st.text(min_size=1, max_size=6)),
                         st.one_of(st.dictionaries(keys, values, max_size=5), values), max_size=4)


@FUZZ
@given(config=tables)
def test_any_config_file_is_accepted_or_one_line(workdir: Path, config: dict[str, Any]) -> None:
    path = workdir / "fuzz.toml"
    path.write_text(document(config), encoding="utf-8")
    assert_one_line_error(*run_cli(workdir, ["--config", str(path)]))


@FUZZ
@given(content=st.one_of(st.text(max_size=200).map(lambda text: text.encode("utf-8", "surrogatepass")),
                         st.binary(max_size=200),
                         st.sampled_from([b"[pipeline", b"a = ", b"[[engine]]\nname = 1", b"x = [" * 5000,
                                          b"a.b.c.d.e = 1\n" * 3, b'[engine]\nname = "motion"\nname = "edges"',
                                          "\ufeff[pipeline]\nbatch = 0".encode()])))
def test_any_bytes_as_a_config_file_are_accepted_or_one_line(workdir: Path, content: bytes) -> None:
    path = workdir / "fuzz.toml"
    path.write_bytes(content)
    assert_one_line_error(*run_cli(workdir, ["--config", str(path)]))


def valid_tables() -> st.SearchStrategy[dict[str, Any]]:
    """Config files every key and value of which is allowed (the live timings ordered as they must be)."""
    unit = st.floats(0.0, 1.0)
    low_high = st.tuples(unit, unit).map(sorted)
    reconnect = st.tuples(st.floats(0.01, 60.0), st.floats(0.01, 60.0)).map(sorted)

    def subset(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
        return st.fixed_dictionaries({}, optional=fields)

    return st.fixed_dictionaries({}, optional={
        "engine": st.one_of(
            st.fixed_dictionaries({"name": st.sampled_from(CLASSICAL)}),
            st.fixed_dictionaries({"name": st.just("motion"), "motion": subset({
                "method": st.sampled_from(["mog2", "knn"]), "history": st.integers(1, 5000),
                "scale": st.floats(0.01, 1.0), "kernel": st.integers(1, 15), "min_area": st.integers(1, 10_000),
                "max_instances": st.integers(1, 200)})}),
            st.fixed_dictionaries({"name": st.just("kmeans"), "kmeans": subset({"k": st.integers(2, 32)})})),
        "pipeline": subset({"queue_size": st.integers(1, 1024), "batch": st.integers(1, 256),
                            "policy": st.sampled_from(["auto", "lossless", "live"])}),
        "render": subset({"alpha": unit, "boxes": st.booleans(), "labels": st.booleans(), "legend": st.booleans(),
                          "semantic": st.sampled_from(["overlay", "labels"]), "fps_overlay": st.booleans()}),
        "output": subset({"crf": st.integers(0, 51), "preset": st.sampled_from(X264_PRESETS),
                          "audio": st.booleans()}),
        "live": st.tuples(reconnect, st.floats(0.1, 60.0), st.integers(0, 7680)).map(
            lambda t: {"reconnect_min": t[0][0], "reconnect_max": t[0][1], "read_timeout": t[1],
                       "camera_width": t[2]}),
        "track": st.tuples(low_high, st.floats(0.01, 1.0), st.integers(0, 1000), st.floats(0.01, 3600.0),
                           st.integers(1, 1000)).map(
            lambda t: {"low_score": t[0][0], "high_score": t[0][1], "match_iou": t[1], "max_age": t[2],
                       "lost_seconds": t[3], "confirm": t[4]}),
    })


@FUZZ
@given(config=valid_tables(), bom=st.booleans())
def test_every_valid_config_file_is_accepted(workdir: Path, config: dict[str, Any], bom: bool) -> None:
    path = workdir / "valid.toml"
    path.write_text(document(config), encoding="utf-8-sig" if bom else "utf-8")  # Windows editors write a BOM
    code, err = run_cli(workdir, ["--config", str(path)])
    assert_one_line_error(code, err)
    assert ACCEPTED in err, err


# --- command-line values -------------------------------------------------------------------------------------------

NUMERIC_FLAGS = ["--batch", "--crf", "--queue-size", "--max-frames", "--alpha", "--camera-fps", "--score-threshold",
                 "--mask-threshold", "--min-size"]
TEXT_FLAGS = ["--engine", "--device", "--precision", "--backend", "--weights", "--classes", "--preset", "--policy",
              "--semantic", "--camera-size", "--serve", "--token", "--config"]
numbers = st.one_of(st.integers(-(2**70), 2**70).map(str), st.floats(allow_nan=True).map(repr),
                    st.sampled_from(["0", "-1", "1e999", "nan", "inf", "-0", "0x10", "1_000", "²", "٣", " 7 ", "",
                                     "1.5", "true", "[1]", "99999999999999999999999"]))
words = st.one_of(st.text(max_size=10), st.sampled_from(["motion", "maskrcnn", "cpu", "cuda:9", "fp16", "trt",
                                                         "none", "person,car", "live", "0", "1280x720", "x", ":",
                                                         "[::1]:0", "0.0.0.0:99999", "configs/../x"]))
literal = st.one_of(numbers, words, st.sampled_from(['"mog2"', "[1, [2]]", "{a = 1}", "1979-05-27", "[" * 3000]))
option = st.one_of(
    st.tuples(st.sampled_from(NUMERIC_FLAGS), numbers).map(lambda t: f"{t[0]}={t[1]}"),
    st.tuples(st.sampled_from(TEXT_FLAGS), words).map(lambda t: f"{t[0]}={t[1]}"),
    st.tuples(keys, literal).map(lambda t: f"--param={t[0]}={t[1]}"),
    st.tuples(st.sampled_from([*KNOWN_KEYS, "", "x"]), keys, literal).map(lambda t: f"--set={t[0]}.{t[1]}={t[2]}"),
    st.sampled_from(["--param=novalue", "--set=pipeline", "--set==1", "--no-boxes", "--fps-overlay", "--no-track",
                     "--bogus", "--batch", "-e"]))


@FUZZ
@given(options=st.lists(option, min_size=1, max_size=4))
def test_any_command_line_values_are_accepted_or_one_line(workdir: Path, options: list[str]) -> None:
    assert_one_line_error(*run_cli(workdir, options))


valid_options = st.lists(st.one_of(
    st.integers(1, 256).map("--batch={}".format), st.integers(0, 51).map("--crf={}".format),
    st.integers(1, 1024).map("--queue-size={}".format), st.floats(0, 1).map("--alpha={!r}".format),
    st.integers(1, 10**6).map("--max-frames={}".format), st.sampled_from(X264_PRESETS).map("--preset={}".format),
    st.sampled_from(["lossless", "auto"]).map("--policy={}".format),
    st.integers(1, 5000).map("--param=history={}".format),
    st.sampled_from(["mog2", "knn"]).map('--param=method="{}"'.format),
    st.floats(0.01, 1).map("--param=scale={!r}".format),
    st.sampled_from(["render.legend=false", "track.enabled=false", "output.audio=false", "track.iou=\"box\"",
                     "live.rtsp_transport=\"udp\"", "render.alpha=0.25"]).map("--set={}".format),
    st.sampled_from(["--no-boxes", "--no-labels", "--no-audio", "--no-track", "--fps-overlay", "--engine=motion",
                     "--quiet"])), max_size=6)


@FUZZ
@given(options=valid_options)
def test_valid_command_line_values_are_accepted(workdir: Path, options: list[str]) -> None:
    code, err = run_cli(workdir, options)
    assert_one_line_error(code, err)
    assert ACCEPTED in err, err


# --- a few through a real process: nothing but the one line reaches the terminal -----------------------------------


@pytest.mark.parametrize(("config", "args"), [
    (b"[engine.motion]\nhistory = " + b"[" * 5000 + b"]" * 5000 + b"\n", []),
    (b"\xff\xfe[pipeline]\n", []),
    (b"[engine.motion]\nhistory = 99999999999999999999\n", []),
    (b"[live]\nread_timeout = nan\n", []),
    (b"", ["--camera-size", "\u00b2x\u00b2", "--display"]),
    (b"", ["--param", "k=" + "[" * 5000]),
    (b"", ["--set", "live.open_timeout=inf", "--serve", "0"]),
])
def test_bad_values_in_a_real_process_are_one_line(workdir: Path, config: bytes, args: list[str]) -> None:
    path = workdir / "bad.toml"
    path.write_bytes(config)
    run = subprocess.run([sys.executable, "-m", "seg_video", "in.mp4", "out.mp4", "--config", str(path), *args],
                         cwd=workdir, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                         timeout=60)
    assert_one_line_error(run.returncode, run.stderr)
    assert ACCEPTED not in run.stderr, "the bad value was caught before the input was opened"
