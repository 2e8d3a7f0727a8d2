"""What a run watches for and keeps besides its pictures: counting lines and zones, privacy masking, a heatmap,
and the sinks their events go to, built once per run from the config and the command line (`WatchPlan`), then
one `WatchStep` per source that the frame path runs.

In the frame path: privacy masking right after inference (before tracking, which may drop weak detections that
must still be masked, and before anything draws, writes or shows the picture), then after tracking the lines and
zones (events into `Item.events` and to every sink; sinks never block) and the heatmap, and on the rendered
picture the lines' counts and the zones' occupancy. The heatmap is written when the source's run ends, however it
ends.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seg_video.core.errors import ConfigError
from seg_video.core.settings import from_mapping
from seg_video.stages.heatmap import Heatmap
from seg_video.stages.privacy import Privacy, PrivacySettings, class_ids_of
from seg_video.stages.watch import Line, Watch, WatchSettings, Zone

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from seg_video.core.config import WatchConfig
    from seg_video.core.types import ClassTable, Item
    from seg_video.io.events import EventSink

log = logging.getLogger(__name__)


def _parts(tables: Sequence[Any], kind: type[Line] | type[Zone], name: str) -> list[Line] | list[Zone]:
    """The `[[lines]]` or `[[zones]]` of a config as objects; ConfigError naming the first bad one."""
    parts = []
    for number, table in enumerate(tables):
        if not isinstance(table, Mapping):
            raise ConfigError(f"[[{name}]] #{number + 1} must be a table")
        try:
            parts.append(kind(**table))
        except (TypeError, ValueError) as error:
            raise ConfigError(f"[[{name}]] #{number + 1}: {error}") from None
    return parts  # type: ignore[return-value]


@dataclass
class WatchPlan:
    """A run's watching: lines and zones (the config's, then the command line's), privacy, heatmap and the event
    sinks. `heatmap`: where the heatmap goes (`heat.png`; `heat-0.png`, `heat-1.png`… for several sources)."""

    lines: list[Line] = field(default_factory=list)
    zones: list[Zone] = field(default_factory=list)
    settings: WatchSettings = field(default_factory=WatchSettings)
    privacy: PrivacySettings | None = None
    heatmap: Path | None = None
    heatmap_classes: tuple[str, ...] = ()
    heatmap_scale: float = 0.25
    sinks: list[EventSink] = field(default_factory=list)

    @classmethod
    def of(cls, config: WatchConfig, *, lines: Sequence[Line] = (), zones: Sequence[Zone] = (),
           heatmap: Path | None = None, sinks: Sequence[EventSink] = ()) -> WatchPlan:
        """The plan from the config's tables plus the command line's lines, zones, heatmap path and sinks;
        raises ConfigError."""
        privacy = from_mapping(PrivacySettings, config.privacy, "privacy") if config.privacy.get("classes") else None
        heat = dict(config.heatmap)
        unknown = set(heat) - {"classes", "scale"}
        if unknown:
            raise ConfigError(f"unknown setting heatmap.{sorted(unknown)[0]} (known: classes, scale)")
        plan = cls(lines=[*_parts(config.lines, Line, "lines"), *lines],
                   zones=[*_parts(config.zones, Zone, "zones"), *zones],
                   settings=from_mapping(WatchSettings, config.settings, "watch"), privacy=privacy, heatmap=heatmap,
                   heatmap_classes=tuple(heat.get("classes", ())), heatmap_scale=float(heat.get("scale", 0.25)),
                   sinks=list(sinks))
        try:
            Watch(plan.lines, plan.zones, plan.settings)  # names given twice
            Heatmap(plan.heatmap_classes, scale=plan.heatmap_scale)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        return plan

    @property
    def active(self) -> bool:
        """Whether there is anything to do at all."""
        return bool(self.lines or self.zones or self.privacy or self.heatmap or self.sinks)

    def check(self, classes: ClassTable) -> None:
        """Raise ConfigError when a line, zone, masked or heat class is not one of the engine's `classes`."""
        try:
            Watch(self.lines, self.zones, self.settings).check_classes(classes)
            for wanted in (self.privacy.classes if self.privacy else (), self.heatmap_classes):
                class_ids_of(classes, wanted)
        except ValueError as error:
            raise ConfigError(str(error)) from None

    def heatmap_path(self, index: int, count: int) -> Path | None:
        """Where source `index` of `count` writes its heatmap."""
        if self.heatmap is None or count == 1:
            return self.heatmap
        return self.heatmap.with_name(f"{self.heatmap.stem}-{index}{self.heatmap.suffix}")

    def step(self, source: str, index: int = 0, count: int = 1) -> WatchStep | None:
        """Source `index`'s own watching (None when there is nothing to do)."""
        if not self.active:
            return None
        heatmap = self.heatmap_path(index, count)
        return WatchStep(
            watch=Watch(self.lines, self.zones, self.settings, source) if self.lines or self.zones else None,
            privacy=Privacy(self.privacy) if self.privacy else None,
            heatmap=None if heatmap is None else (Heatmap(self.heatmap_classes, scale=self.heatmap_scale), heatmap),
            sinks=self.sinks)

    def close(self) -> None:
        """Flush and stop the event sinks (each within its bounded time), however the run ended."""
        with contextlib.ExitStack() as closing:
            for sink in self.sinks:
                closing.callback(sink.close)


@dataclass
class WatchStep:
    """One source's watching, run by its frame path (see the module docstring)."""

    watch: Watch | None
    privacy: Privacy | None
    heatmap: tuple[Heatmap, Path] | None
    sinks: Sequence[EventSink]

    def protect(self, item: Item) -> None:
        """Mask the chosen classes in the frame's own picture, before anything else sees it."""
        if self.privacy is not None:
            self.privacy.apply(item.frame.image, item.result())

    def observe(self, item: Item) -> None:
        """Lines and zones (events into the item and to every sink) and the heatmap, for a tracked item."""
        if self.watch is not None:
            item.events = self.watch.update(item.frame, item.result())
            for event in item.events:
                for sink in self.sinks:
                    sink.send(event)
        if self.heatmap is not None:
            self.heatmap[0].add(item.frame.image, item.result())

    def draw(self, picture: npt.NDArray[np.uint8]) -> None:
        """The lines' counts and the zones' occupancy on the rendered picture."""
        if self.watch is not None:
            self.watch.draw(picture)

    def close(self) -> None:
        """Write the heatmap (if it saw any frame)."""
        if self.heatmap is None:
            return
        heatmap, path = self.heatmap
        if heatmap.frames:
            heatmap.write(path)
            log.info("heatmap of %d frames written to %s", heatmap.frames, path)
