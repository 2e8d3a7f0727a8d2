"""The Python API: what a program embeds, the same pipeline and defaults as the `seg-video` command.

    import seg_video

    for frame, seg in seg_video.segment("clip.mp4", engine="motion"):     # in frame order, tracked
        print(frame.index, len(seg), seg.track_ids)

    seg_video.annotate("clip.mp4", "out.mp4", engine="kmeans", k=5)        # the CLI's file run
    with seg_video.load_engine("fcn", weights="none") as engine:          # loaded once, reused
        summary = seg_video.annotate("clip.mp4", "fcn.mp4", engine=engine, overwrite=True)
    picture = seg_video.draw(frame.image, seg, alpha=0.3)                # the renderer, stateless

Engine settings are keyword arguments (`score_threshold=0.7`, `device="cuda"`, `--param` names); the other tables
of a config file come as `config`: a preset name, a TOML file, or a mapping of the same shape
(`{"render": {"alpha": 0.3}, "track": {"enabled": False}}`). Errors are `seg_video.SegVideoError`s.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from seg_video.core.config import RenderSettings, RunConfig, build_config, read_config_file
from seg_video.core.errors import UsageError
from seg_video.core.settings import from_mapping
from seg_video.core.types import Segmentation
from seg_video.engines.base import Engine, create_engine, engine_names
from seg_video.jobs.annotate import RunSummary, annotation_job
from seg_video.jobs.segment import Segments, segments
from seg_video.stages.render import Renderer

Config = str | Path | Mapping[str, Any] | None
"""A preset name, a TOML config file, or a mapping shaped like one."""


def run_config(engine: str | Engine | None = None, config: Config = None, settings: Mapping[str, Any] | None = None,
               sections: Mapping[str, Mapping[str, Any]] | None = None) -> RunConfig:
    """The checked settings of a run: `config`'s tables, the engine chosen by name (or the one given), its
    `settings`, and `sections` overriding the other tables (`{"render": {"alpha": 0.3}}`)."""
    data = read_config_file(str(config)) if isinstance(config, (str, Path)) else dict(config or {})
    names = engine_names()
    if isinstance(engine, Engine):
        if settings:
            raise UsageError(f"engine settings ({', '.join(settings)}) belong to load_engine(), not to a run given a "
                             "loaded engine")
        name = engine.name or type(engine).__name__
        return build_config(data, engines=[*names, name], engine=name, sections=sections)
    return build_config(data, engines=names, engine=engine, engine_params=settings, sections=sections)


def load_engine(name: str | None = None, *, config: Config = None, **settings: Any) -> Engine:
    """Build and load the engine `name` (default: the config's, else `motion`) with its `settings` checked; pass it
    to any number of `segment`/`annotate` runs (each resets what the last one taught it) and `close()` it when done
    (or use it in a `with` block).
    """
    chosen = run_config(name, config, settings)
    engine = create_engine(chosen.engine, chosen.engine_params)
    engine.load()
    return engine


def segment(source: str | Path | int, engine: str | Engine | None = None, *, config: Config = None,
            max_frames: int | None = None, **settings: Any) -> Segments:
    """Segment a video file, camera (`0`, `/dev/video0`) or stream URL: an iterator of `(Frame, Segmentation)` in
    frame order, tracked for instance engines (`seg.track_ids`), running the CLI's threaded pipeline.

    Breaking out of the loop or `close()` stops every thread within about a second and releases the source. Raises
    `MediaError` for a source that cannot be opened, `ConfigError`/`EngineError` for bad settings, and while
    iterating `StageFailed` if a stage fails.
    """
    chosen, running, owned = _engine_for_run(engine, config, settings)
    return segments(source, chosen, running, owned=owned, max_frames=max_frames)


def annotate(source: str | Path, output: str | Path | None = None, engine: str | Engine | None = None, *,
             config: Config = None, coco: str | Path | None = None, masks_dir: str | Path | None = None,
             overwrite: bool = False, max_frames: int | None = None, **settings: Any) -> RunSummary:
    """Write the annotated copy of the video `source` to `output` (its audio and timing kept), and/or COCO results
    (`coco`) and label-map PNGs (`masks_dir`); returns the run's summary (frames, seconds, fps, output).

    Nothing is written when a path is wrong (`UsageError`): no output is ever the input, and an existing one is
    replaced only with `overwrite`. A run that fails part-way (`StageFailed`) or is interrupted finalizes what it
    wrote.
    """
    chosen, running, owned = _engine_for_run(engine, config, settings)
    job = annotation_job(Path(source), _path(output), chosen, running, owned=owned, coco=_path(coco),
                         masks_dir=_path(masks_dir), overwrite=overwrite, max_frames=max_frames)
    return job.run()


def draw(image: npt.NDArray[np.uint8], segmentation: Segmentation, **render_settings: Any) -> npt.NDArray[np.uint8]:
    """`image` (BGR) with `segmentation` drawn over it (masks, outlines, boxes, labels; label maps with a legend), as
    a new picture; `render_settings` are the `[render]` table's (`alpha`, `boxes`, `labels`, …)."""
    return Renderer(from_mapping(RenderSettings, render_settings, "render")).render(image, segmentation)


def _engine_for_run(engine: str | Engine | None, config: Config, settings: Mapping[str, Any]
                    ) -> tuple[RunConfig, Engine, bool]:
    """The run's settings and its engine: the one given (loaded, the caller's), or one built by name that the run
    will load and close (owned: True)."""
    chosen = run_config(engine, config, settings)
    if isinstance(engine, Engine):
        return chosen, engine, False
    return chosen, create_engine(chosen.engine, chosen.engine_params), True


def _path(value: str | Path | None) -> Path | None:
    return None if value is None else Path(value)
