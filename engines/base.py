"""The one interface every segmentation engine implements, built in or a plugin's.

Lifecycle: the engine object is created (cheap: parameters checked, nothing loaded) where the run is set up;
`load()` runs in the infer thread, which owns any GPU context, and `warm_up()` there after it for each frame size a
run sees; `prepare()` runs in the preprocess thread and must not touch state that `infer()` changes; `infer()` sees
frames in order, one batch at a time; `reset()` forgets what earlier frames taught it (a new video); `close()`
releases what `load()` acquired. When one engine serves many sources, each source runs through `for_source()`:
the engine itself when it keeps no state between frames, else a twin with state of its own. An engine is also a
context manager that closes it.

The registry finds engines by name: every entry point in the group `seg_video.engines`, the built-in engines
included (registered in seg-video's own pyproject.toml exactly as a plugin registers its own), plus engines a
program registers in-process with `register`. A third-party engine subclasses `Engine` (setting `kind`, `classes`
and `infer`; `Params`, a dataclass of its settings, when it has any), and its package declares, in its
pyproject.toml:

    [project.entry-points."seg_video.engines"]
    blur = "seg_video_blur:BlurEngine"

Nothing is imported until an engine is asked for by name, so a plugin that fails to import breaks only itself:
`engines()` lists it with where it came from, and building it raises an `EngineError` saying why.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from types import TracebackType
from typing import Any, ClassVar, Literal, cast

from seg_video.core.errors import ConfigError, EngineError
from seg_video.core.settings import from_mapping
from seg_video.core.types import ClassTable, Frame, Segmentation

NO_NEEDS = "nothing (CPU, always available)"
"""What an engine that runs anywhere, with no model files, needs."""
TORCHVISION_NEEDS = "torchvision weights (download once, or --weights PATH/none); CUDA optional"
"""What the torchvision engines need."""


@dataclass
class NoParams:
    """The settings of an engine that has none."""


class Engine(ABC):
    """A segmentation backend: frames in, one `Segmentation` per frame out."""

    name: str = ""
    """The name it is registered under (set by the registry when it builds the engine)."""
    kind: ClassVar[Literal["instance", "semantic"]]
    Params: ClassVar[type] = NoParams
    """A dataclass of the engine's settings; `[engine.<name>]` in a config and `--param` fill it."""
    summary: ClassVar[str] = ""
    """One line for `--list-engines` (default: the first line of the class's docstring)."""
    needs: ClassVar[str] = NO_NEEDS
    """What it needs to run (weights, files, hardware), for `--list-engines`."""

    @classmethod
    def from_params(cls, params: Mapping[str, Any], name: str | None = None) -> Engine:
        """Build the engine from a mapping of settings, each checked against `Params` (messages name the settings
        `engine.<name>.<key>`)."""
        label = name or cls.name or cls.__name__
        if cls.Params is NoParams:
            if params:
                raise ConfigError(f"unknown setting engine.{label}.{next(iter(params))} (known: none)")
            engine = cls()
        else:
            engine = cls(from_mapping(cls.Params, params, where=f"engine.{label}"))  # type: ignore[call-arg]
        if name is not None:
            engine.name = name
        return engine

    @classmethod
    def description(cls) -> str:
        """`summary`, or the first line of the class's docstring."""
        return cls.summary or (cls.__doc__ or "").strip().partition("\n")[0]

    @classmethod
    def availability(cls) -> str:
        """One line for `--list-engines`: can this engine run here now, and if not, what it lacks."""
        return "ready (CPU)"

    @property
    @abstractmethod
    def classes(self) -> ClassTable:
        """The class table the engine's class ids refer to."""

    def load(self) -> None:
        """Load weights / build models; called once in the infer thread before the first `infer`."""

    def warm_up(self, height: int, width: int, batch: int = 1) -> None:
        """Do now, in the infer thread after `load`, what the first `infer` on frames of this size in batches of
        `batch` would otherwise do (compile, build, capture); called once per frame size a run sees, so it returns
        at once when already warm. Nothing by default."""

    def prepare(self, frame: Frame) -> Any:
        """Per-frame work that can run ahead of inference in its own thread (resize, normalise, upload)."""
        return frame.image

    @abstractmethod
    def infer(self, frames: Sequence[Frame], prepared: Sequence[Any]) -> list[Segmentation]:
        """Segment a batch of frames (in order); returns one `Segmentation` per frame."""

    def observe(self, frames: Sequence[Frame], prepared: Sequence[Any]) -> list[Any]:
        """The part of `infer` that must see the frames in order, one call after another (a background model's
        update): the pipeline runs it in the infer thread, and `finish` turns each result into its frame's
        `Segmentation`. By default the whole of `infer`."""
        return list(self.infer(frames, prepared))

    def finish(self, frame: Frame, observed: Any) -> Segmentation:
        """The rest of `infer` for one frame, which needs no other frame (mask clean-up): the pipeline runs it in a
        stage of its own, so that it never holds up the next frame's inference. An engine that splits its work
        overrides both this and `observe`; by default `observed` is the segmentation already."""
        return cast(Segmentation, observed)

    @classmethod
    def finishes(cls) -> bool:
        """Whether the engine splits its inference into `observe` and `finish`."""
        return cls.finish is not Engine.finish

    def reset(self) -> None:
        """Forget what earlier frames taught the engine (background model, warm start): a new video begins."""

    def batches_well(self) -> bool:
        """Whether one call on several frames costs much less per frame than one call each (a network on a GPU).
        Only then does an engine shared by many sources gather a frame of each into one call by default: on a CPU
        a batch gains less (FCN, four 640×360 sources, 2 cores: 2.8 fps at batch 1, 3.3 at batch 2) than its
        activations cost in memory (about 40 MB a frame), so `--batch` is the user's choice there."""
        return False

    def for_source(self) -> Engine:
        """The engine one more source uses when several sources share this one (the live job's shared infer stage).
        An engine that learns from the frames it sees (it overrides `reset`) gets a twin with the same settings and
        state of its own, so one scene's background never leaks into another's; any other engine serves every
        source itself. An engine whose per-source state sits beside something heavy overrides this to share the
        heavy part."""
        if type(self).reset is Engine.reset:
            return self
        twin = type(self)() if self.Params is NoParams else type(self)(self.params)  # type: ignore[call-arg,attr-defined]
        twin.name = self.name
        return twin

    def close(self) -> None:
        """Release what `load` acquired."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


GROUP = "seg_video.engines"
OWN_DISTRIBUTION = "seg-video"
_REGISTERED: dict[str, type[Engine]] = {}


@dataclass(frozen=True)
class EngineInfo:
    """A registered engine: its name, what provides it, and (for entry points) where its class is."""

    name: str
    origin: str
    """`built in`, `plugin <distribution> <version>`, or `registered in-process`."""
    entry_point: EntryPoint | None = None
    registered: type[Engine] | None = None

    def engine_class(self) -> type[Engine]:
        """Import the engine's class; raises `EngineError` if it cannot be imported or is not an `Engine`."""
        if self.registered is not None:
            return self.registered
        assert self.entry_point is not None
        try:
            found = self.entry_point.load()
        except Exception as error:  # noqa: BLE001 - a broken plugin breaks only itself
            raise EngineError(f"engine {self.name!r} ({self.origin}: {self.entry_point.value}) cannot be imported: "
                              f"{type(error).__name__}: {' '.join(str(error).split())}") from None
        if not (isinstance(found, type) and issubclass(found, Engine)):
            raise EngineError(f"engine {self.name!r} ({self.origin}: {self.entry_point.value}) is not a "
                              "seg_video Engine subclass")
        return found


def engines() -> dict[str, EngineInfo]:
    """Every engine by name: seg-video's own first, then plugins, then in-process registrations.
    A name claimed twice goes to seg-video's own engine, then to the first plugin found."""
    own: dict[str, EngineInfo] = {}
    plugins: dict[str, EngineInfo] = {}
    for point in entry_points(group=GROUP):
        distribution = point.dist
        if distribution is not None and distribution.metadata["Name"] == OWN_DISTRIBUTION:
            own.setdefault(point.name, EngineInfo(point.name, "built in", point))
        else:
            origin = "plugin" if distribution is None else \
                f"plugin {distribution.metadata['Name']} {distribution.version}"
            plugins.setdefault(point.name, EngineInfo(point.name, origin, point))
    found = {**own, **{name: info for name, info in plugins.items() if name not in own}}
    for name, cls in _REGISTERED.items():
        found.setdefault(name, EngineInfo(name, "registered in-process", registered=cls))
    return found


def engine_names() -> list[str]:
    """Registered engine names, in display order."""
    return list(engines())


def engine_class(name: str) -> type[Engine]:
    """The class registered as `name`; raises `EngineError` for an unknown name or a plugin that cannot be imported."""
    known = engines()
    info = known.get(name)
    if info is None:
        raise EngineError(f"unknown engine {name!r}; choose one of: {', '.join(known)}")
    return info.engine_class()


def create_engine(name: str, params: Mapping[str, Any] | None = None) -> Engine:
    """Build the named engine with its settings checked (nothing loaded yet); raises `EngineError` or `ConfigError`."""
    return engine_class(name).from_params(params or {}, name=name)


def register(name: str, cls: type[Engine]) -> None:
    """Make `cls` available as engine `name` in this process (for programs and tests that define their own engine
    without packaging it); an installed engine of that name keeps it."""
    if not (isinstance(cls, type) and issubclass(cls, Engine)):
        raise TypeError(f"{cls!r} is not a seg_video Engine subclass")
    _REGISTERED[name] = cls
