"""Run configuration: TOML presets (configs/*.toml) mapped one-to-one onto dataclasses, CLI flags on top.

A config file has up to six tables; every key is optional and checked:

    [engine]            name = "motion"; a sub-table per engine holds that engine's settings: [engine.motion]
    [pipeline]          queue_size, policy, batch
    [render]            pipeline.render.RenderSettings
    [output]            pipeline.video_io.EncoderSettings
    [live]              pipeline.live.LiveSettings (cameras and streams: timeouts, reconnection, camera size)
    [track]             pipeline.tracking.TrackSettings (instance identities across frames)
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from engines.base import ENGINES
from pipeline.live import LiveSettings
from pipeline.render import RenderSettings
from pipeline.settings import ConfigError, from_mapping
from pipeline.tracking import TrackSettings
from pipeline.video_io import EncoderSettings

DEFAULT_ENGINE = "motion"


@dataclass
class PipelineSettings:
    """How the stages are connected: queue bound, drop policy, frames per inference call, the infer watchdog."""

    queue_size: int = 8
    policy: Literal["auto", "lossless", "live"] = "auto"
    batch: int = 1
    infer_timeout: float = 120.0
    """Seconds one inference call may take before the run is stopped as hung (0: no limit); generous for a big
    network on a CPU."""
    load_timeout: float = 1800.0
    """Seconds the engine's load (a weights download included) and its first, warm-up inference may take (0: no
    limit)."""

    def validate(self) -> None:
        """Reject bounds the runner cannot work with."""
        if not 1 <= self.queue_size <= 1024:
            raise ValueError(f"queue_size must be 1..1024; got {self.queue_size}")
        if not 1 <= self.batch <= 256:
            raise ValueError(f"batch must be 1..256; got {self.batch}")
        if min(self.infer_timeout, self.load_timeout) < 0:
            raise ValueError("infer_timeout and load_timeout must be 0 (no limit) or positive seconds")


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


def preset_names() -> list[str]:
    """Names of the presets shipped in configs/ (usable as `--config NAME`)."""
    return sorted(p.name.removesuffix(".toml") for p in resources.files("configs").iterdir()
                  if p.name.endswith(".toml"))


def read_config_file(name_or_path: str) -> dict[str, Any]:
    """Parse a config given as a file path or a shipped preset name; raises ConfigError."""
    path = Path(name_or_path)
    if path.is_file():
        text = _read_text(path)
    elif name_or_path in preset_names():
        text = resources.files("configs").joinpath(f"{name_or_path}.toml").read_text(encoding="utf-8")
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
    engine: str | None = None,
    engine_params: Mapping[str, Any] | None = None,
    sections: Mapping[str, Mapping[str, Any]] | None = None,
) -> RunConfig:
    """Check a parsed config and apply overrides: an engine name, engine settings, other tables' settings."""
    unknown = set(data) - {"engine", "pipeline", "render", "output", "live", "track"}
    if unknown:
        raise ConfigError(f"unknown config table [{sorted(unknown)[0]}] (known: engine, pipeline, render, output, "
                          "live, track)")
    engine_table = _table(data, "engine")
    engine_name = engine or engine_table.get("name", DEFAULT_ENGINE)
    if not isinstance(engine_name, str) or engine_name not in ENGINES:
        raise ConfigError(f"unknown engine {engine_name!r}; choose one of: {', '.join(ENGINES)}")
    for key, value in engine_table.items():
        if key != "name" and (key not in ENGINES or not isinstance(value, Mapping)):
            raise ConfigError(f"unknown setting engine.{key} (use name, or a table per engine: "
                              f"{', '.join(ENGINES)})")
    params = dict(engine_table.get(engine_name, {}))
    params.update(engine_params or {})
    overrides = sections or {}
    merged = {name: {**_table(data, name), **overrides.get(name, {})}
              for name in ("pipeline", "render", "output", "live", "track")}
    return RunConfig(
        engine=engine_name,
        engine_params=params,
        pipeline=from_mapping(PipelineSettings, merged["pipeline"], "pipeline"),
        render=from_mapping(RenderSettings, merged["render"], "render"),
        output=from_mapping(EncoderSettings, merged["output"], "output"),
        live=from_mapping(LiveSettings, merged["live"], "live"),
        track=from_mapping(TrackSettings, merged["track"], "track"),
    )


def _table(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    table = data.get(name, {})
    if not isinstance(table, Mapping):
        raise ConfigError(f"[{name}] must be a table of settings")
    return table
