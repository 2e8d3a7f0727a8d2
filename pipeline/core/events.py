"""What the watch stage reports (lines crossed, zones entered, left and how full they are) as one typed record,
and its JSON form: the contract every event sink (JSON Lines, webhook, MQTT) and the clips on events share."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal

EventType = Literal["line_cross", "zone_enter", "zone_exit", "zone_occupancy"]
EVENT_TYPES: tuple[EventType, ...] = ("line_cross", "zone_enter", "zone_exit", "zone_occupancy")
Direction = Literal["in", "out"]


@dataclass(frozen=True)
class Event:
    """One event in a source's timeline. `time` is the frame's time in seconds (its pts), `source` the source's
    name; `line` and `direction` are set for `line_cross`, `zone` for the zone events, `track_id` and `class_name`
    for the events of one tracked instance, `occupancy` (0..1, the zone's area covered by masks) and `count`
    (tracked instances inside) for `zone_occupancy`."""

    type: EventType
    frame: int
    time: float
    source: str
    track_id: int | None = None
    class_name: str | None = None
    line: str | None = None
    direction: Direction | None = None
    zone: str | None = None
    occupancy: float | None = None
    count: int | None = None

    @property
    def name(self) -> str:
        """The line's or zone's name."""
        return self.line or self.zone or ""

    def to_json(self) -> dict[str, Any]:
        """The JSON object of the contract: the fields that are set, `class_name` as `class`, time in seconds
        rounded to milliseconds and occupancy to 0.1 %."""
        data: dict[str, Any] = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if value is None:
                continue
            if field.name in ("time", "occupancy"):
                value = round(value, 3)
            data["class" if field.name == "class_name" else field.name] = value
        return data
