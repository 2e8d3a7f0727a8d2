"""Run configuration: TOML presets (configs/*.toml) mapped one-to-one onto dataclasses, CLI flags on top.

A config file has up to six tables; every key is optional and checked:

    [engine]            name = "motion"; a sub-table per engine holds that engine's settings: [engine.motion]
    [pipeline]          queue_size, policy, batch
    [render]            RenderSettings (what the renderer draws)
    [output]            EncoderSettings (how the video is encoded)
    [live]              LiveSettings (cameras and streams: timeouts, reconnection, camera size)
    [track]             TrackSettings (instance identities across frames)
"""

from __future__ import annotations

import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import av

from seg_video.core.errors import ConfigError
from seg_video.core.settings import from_mapping

DEFAULT_ENGINE = "motion"
WATCH_TABLES = ("watch", "privacy", "heatmap")
"""The watch stage's tables (`WatchConfig`)."""
AUTO_BATCH = 16
"""The most frames an automatic batch gathers from sources sharing an engine."""


@dataclass
class PipelineSettings:
    """How the stages are connected: queue bound, drop policy, frames per inference call, the infer watchdog."""

    queue_size: int = 8
    policy: Literal["auto", "lossless", "live"] = "auto"
    batch: int = 0
    """Frames per inference call; 0: automatic (1 for a file; for live sources sharing an engine that batches well,
    a network on a GPU, one per source, up to AUTO_BATCH)."""
    infer_timeout: float = 120.0
    """Seconds one inference call may take before the run is stopped as hung (0: no limit); generous for a big
    network on a CPU."""
    load_timeout: float = 1800.0
    """Seconds the engine's load (a weights download included) and its first, warm-up inference may take (0: no
    limit)."""
    opencv_threads: int = 0
    """Threads OpenCV's parallel loops may use while a file run lasts; 0: automatic, the cores less the run's own
    stage threads, at least one (see seg_video.core.threads)."""

    def validate(self) -> None:
        """Reject bounds the runner cannot work with."""
        if not 1 <= self.queue_size <= 1024:
            raise ValueError(f"queue_size must be 1..1024; got {self.queue_size}")
        if not 0 <= self.batch <= 256:
            raise ValueError(f"batch must be 0 (automatic) or 1..256; got {self.batch}")
        if min(self.infer_timeout, self.load_timeout) < 0:
            raise ValueError("infer_timeout and load_timeout must be 0 (no limit) or positive seconds")
        if not 0 <= self.opencv_threads <= 1024:
            raise ValueError(f"opencv_threads must be 0 (automatic) or 1..1024; got {self.opencv_threads}")

    def frames_per_call(self, sources: int = 1) -> int:
        """The batch: as set, or automatically one frame per source (at most AUTO_BATCH)."""
        return self.batch or min(sources, AUTO_BATCH)


@dataclass(frozen=True)
class RenderSettings:
    """What the renderer draws; the `[render]` table of a config maps onto it one-to-one."""

    alpha: float = 0.5
    """Opacity of mask and label-map fills, 0..1."""
    contours: bool = True
    """Outline each instance mask: a line along its edge, inside the mask."""
    boxes: bool = True
    labels: bool = True
    """Class name and score in each box's top-left corner, e.g. `person 0.87` (`#12 person 0.87` when tracked); inside
    the box, so that annotations stay on their object."""
    semantic: Literal["overlay", "labels"] = "overlay"
    """Label maps: blended over the frame (background class 0 left untouched), or the colour map alone."""
    legend: bool = True
    """For label maps: a key of the classes present, in the top-right corner."""
    fps_overlay: bool = False
    """Draw the fps passed to `Renderer.render` in the top-left corner."""

    def validate(self) -> None:
        """Reject values the renderer cannot draw with."""
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be 0..1; got {self.alpha}")
        if self.semantic not in ("overlay", "labels"):
            raise ValueError(f"semantic must be overlay or labels; got {self.semantic!r}")


@dataclass(frozen=True)
class TrackSettings:
    """How instances are tracked; the `[track]` table of a config maps onto it one-to-one."""

    enabled: bool = True
    """Give the instances of instance engines track ids (semantic engines are never tracked)."""
    iou: Literal["mask", "box"] = "mask"
    """Overlap that matches an instance to a track: of masks (boxes for instances without masks), or of boxes."""
    high_score: float = 0.5
    """Instances scored at least this are matched first and start new tracks."""
    low_score: float = 0.0
    """Least score of an instance to start a track; those below it that continue no track are dropped as clutter
    (0: none is; ByteTrack's rule is `high_score`)."""
    match_iou: float = 0.3
    """Least IoU between a track's predicted place and a high-scored instance to match them."""
    low_match_iou: float = 0.5
    """Least IoU to match a low-scored instance."""
    max_age: int = 0
    """Frames a track may go unmatched (its object hidden or missed) and still resume; 0: `lost_seconds` of the
    video, at its frame rate."""
    lost_seconds: float = 1.0
    """How long, in time, a lost object's track waits to be picked up again."""
    confirm: int = 3
    """Frames in a row a new object must be seen before it gets an id (ByteTrack's confirmation): a flicker never
    gets one. Until then it is drawn without an id and exported without one (track id 0)."""

    def validate(self) -> None:
        """Reject scores and IoUs outside 0..1, a low score above the high one, a negative age."""
        if not 0.0 <= self.low_score <= self.high_score <= 1.0:
            raise ValueError(f"need 0 <= low_score <= high_score <= 1; got {self.low_score}, {self.high_score}")
        for name in ("match_iou", "low_match_iou"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1]; got {getattr(self, name)}")
        if self.max_age < 0:
            raise ValueError(f"max_age must be at least 0; got {self.max_age}")
        if not 0 < self.lost_seconds <= 3600:
            raise ValueError(f"lost_seconds must be in (0, 3600]; got {self.lost_seconds}")
        if not 1 <= self.confirm <= 1000:
            raise ValueError(f"confirm must be 1..1000; got {self.confirm}")


X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                "placebo")
"""x264's speed presets, fastest first; other encoders get the nearest speed they have."""


@dataclass
class EncoderSettings:
    """How the output video is encoded (the `[output]` config table). `codec` and `pix_fmt` are `auto` by default:
    the output's container chooses them (H.264 4:2:0 in MP4, MOV, Matroska, AVI and MPEG-TS; VP9 in WebM; GIF's own
    codec; README: Usage), else they must be an encoder this FFmpeg has and a pixel format it takes."""

    codec: str = "auto"
    crf: int = 23
    preset: str = "veryfast"
    pix_fmt: str = "auto"
    audio: bool = True

    def validate(self) -> None:
        """Raise `ValueError` naming the first setting the encoder cannot take."""
        if not 0 <= self.crf <= 51:
            raise ValueError(f"crf must be 0..51; got {self.crf}")
        if self.preset not in X264_PRESETS:
            raise ValueError(f"preset must be one of {', '.join(X264_PRESETS)}; got {self.preset!r}")
        if self.codec == "auto":
            return
        try:
            codec = av.Codec(self.codec, "w")
        except av.codec.codec.UnknownCodecError:
            raise ValueError(f"codec {self.codec!r} is not an encoder this FFmpeg has") from None
        if codec.type != "video":
            raise ValueError(f"codec {self.codec!r} is a {codec.type} encoder, not a video one")
        formats = [f.name for f in codec.video_formats or ()]
        if self.pix_fmt != "auto" and formats and self.pix_fmt not in formats:
            raise ValueError(f"pix_fmt {self.pix_fmt!r} is not one {self.codec} takes ({', '.join(formats)})")


@dataclass
class LiveSettings:
    """How live sources connect and recover, and how they share an engine (the `[live]` config table)."""

    open_timeout: float = 10.0
    """Seconds to connect and read a stream's header (or open a camera)."""
    read_timeout: float = 5.0
    """Seconds without data after which a stream counts as stalled and is reconnected."""
    reconnect_min: float = 0.5
    """Seconds before the first reconnection attempt; each failed attempt doubles the wait..."""
    reconnect_max: float = 30.0
    """...up to this many seconds."""
    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    """RTSP over TCP by default: no lost packets, no grey smears; `udp` for cameras that only offer it."""
    camera_width: int = 0
    """Camera picture size and rate to ask for; 0 keeps the camera's default."""
    camera_height: int = 0
    camera_fps: float = 0.0
    engine_restarts: int = 0
    """Times an engine that raises is replaced by a new one (the run goes on) before the run fails; 0: never."""
    engine_per_source: bool = False
    """Give each source an engine of its own (the network loaded once per source) instead of one engine serving
    every source in batches: for comparison, and for engines that cannot batch."""
    gather_ms: float = 5.0
    """Milliseconds the shared engine waits for the other sources' frames once one has come, before it runs the
    batch without them."""

    def validate(self) -> None:
        """Reject timings that cannot work."""
        if self.open_timeout <= 0 or self.read_timeout <= 0:
            raise ValueError("open_timeout and read_timeout must be positive")
        if not 0 < self.reconnect_min <= self.reconnect_max:
            raise ValueError(f"need 0 < reconnect_min <= reconnect_max; got {self.reconnect_min}, "
                             f"{self.reconnect_max}")
        if min(self.camera_width, self.camera_height, self.camera_fps) < 0:
            raise ValueError("camera_width, camera_height and camera_fps must be 0 (default) or positive")
        if self.engine_restarts < 0:
            raise ValueError(f"engine_restarts must be 0 or more; got {self.engine_restarts}")
        if not 0 <= self.gather_ms <= 1000:
            raise ValueError(f"gather_ms must be 0..1000; got {self.gather_ms}")



@dataclass
class WatchConfig:
    """What the watch stage looks for and keeps, as the config gives it: the `[watch]` table (anchor,
    hysteresis_px, occupancy_period, lost_seconds), the `[[lines]]` (name, start = [x, y], end = [x, y], classes)
    and `[[zones]]` (name, points = [[x, y], …], classes) arrays, the `[privacy]` table (classes, style, dilate,
    strength) and the `[heatmap]` table (classes, scale); `seg_video.jobs.watching` checks them."""

    settings: dict[str, Any] = field(default_factory=dict)
    lines: list[Any] = field(default_factory=list)
    zones: list[Any] = field(default_factory=list)
    privacy: dict[str, Any] = field(default_factory=dict)
    heatmap: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunConfig:
    """Everything one run needs besides its input and output paths."""

    engine: str = DEFAULT_ENGINE
    engine_params: dict[str, Any] = field(default_factory=dict)
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)
    render: RenderSettings = field(default_factory=RenderSettings)
    output: EncoderSettings = field(default_factory=EncoderSettings)
    live: LiveSettings = field(default_factory=LiveSettings)
    track: TrackSettings = field(default_factory=TrackSettings)
    watch: WatchConfig = field(default_factory=WatchConfig)


def preset_names() -> list[str]:
    """Names of the presets shipped in configs/ (usable as `--config NAME`)."""
    return sorted(p.name.removesuffix(".toml") for p in resources.files("seg_video.configs").iterdir()
                  if p.name.endswith(".toml"))


def read_config_file(name_or_path: str) -> dict[str, Any]:
    """Parse a config given as a file path or a shipped preset name; raises ConfigError."""
    path = Path(name_or_path)
    if path.is_file():
        text = _read_text(path)
    elif name_or_path in preset_names():
        text = resources.files("seg_video.configs").joinpath(f"{name_or_path}.toml").read_text(encoding="utf-8")
    else:
        raise ConfigError(
            f"config not found: {name_or_path} (not a file, nor a preset: {', '.join(preset_names())})"
        )
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config {name_or_path} is not valid TOML: {error}") from None
    except RecursionError:  # tomllib recurses per nesting level
        raise ConfigError(f"config {name_or_path} nests arrays or tables too deeply") from None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # a byte-order mark (Windows editors) is not TOML
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read config {path}: {error}") from None


def build_config(
    data: Mapping[str, Any],
    *,
    engines: Collection[str],
    engine: str | None = None,
    engine_params: Mapping[str, Any] | None = None,
    sections: Mapping[str, Mapping[str, Any]] | None = None,
) -> RunConfig:
    """Check a parsed config and apply overrides: an engine name (one of `engines`, the registered names), engine
    settings, other tables' settings."""
    unknown = set(data) - {"engine", "pipeline", "render", "output", "live", "track", *WATCH_TABLES, "lines", "zones"}
    if unknown:
        raise ConfigError(f"unknown config table [{sorted(unknown)[0]}] (known: engine, pipeline, render, output, "
                          "live, track, watch, privacy, heatmap, [[lines]], [[zones]])")
    engine_table = _table(data, "engine")
    engine_name = engine or engine_table.get("name", DEFAULT_ENGINE)
    if not isinstance(engine_name, str) or engine_name not in engines:
        raise ConfigError(f"unknown engine {engine_name!r}; choose one of: {', '.join(engines)}")
    for key, value in engine_table.items():
        if key != "name" and (key not in engines or not isinstance(value, Mapping)):
            raise ConfigError(f"unknown setting engine.{key} (use name, or a table per engine: "
                              f"{', '.join(engines)})")
    params = dict(engine_table.get(engine_name, {}))
    params.update(engine_params or {})
    overrides = sections or {}
    merged = {name: {**_table(data, name), **overrides.get(name, {})}
              for name in ("pipeline", "render", "output", "live", "track")}
    watched = {name: {**_table(data, name), **overrides.get(name, {})} for name in WATCH_TABLES}
    return RunConfig(
        engine=engine_name,
        engine_params=params,
        pipeline=from_mapping(PipelineSettings, merged["pipeline"], "pipeline"),
        render=from_mapping(RenderSettings, merged["render"], "render"),
        output=from_mapping(EncoderSettings, merged["output"], "output"),
        live=from_mapping(LiveSettings, merged["live"], "live"),
        track=from_mapping(TrackSettings, merged["track"], "track"),
        watch=WatchConfig(settings=watched["watch"], privacy=watched["privacy"], heatmap=watched["heatmap"],
                          lines=_array(data, "lines"), zones=_array(data, "zones")),
    )


def _array(data: Mapping[str, Any], name: str) -> list[Any]:
    array = data.get(name, [])
    if not isinstance(array, list):
        raise ConfigError(f"[[{name}]] must be an array of tables")
    return array


def _table(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    table = data.get(name, {})
    if not isinstance(table, Mapping):
        raise ConfigError(f"[{name}] must be a table of settings")
    return table
