"""The Ray pool of `seg-video batch`: one actor per worker, each holding a loaded engine (see `seg_video.batch.run`).

The same on one machine (`ray start --head`, or a local instance started for the batch) as on a cluster. On a
cluster every node needs seg-video installed, and the inputs and DIR on a shared file system under the same paths:
actors read the inputs and write the temporary outputs there, the batch renames them and keeps the manifest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import ray
from ray.exceptions import GetTimeoutError, RayError, RayTaskError

from seg_video.batch.messages import MakeWorker, Result, Task, Update, Worker
from seg_video.core.errors import EngineError

if TYPE_CHECKING:
    from seg_video.core.config import RunConfig

FRAMES_TIMEOUT = 1.0
"""Seconds to wait for the actors' frame counts before drawing the progress without them."""


class RayWorker:
    """A Ray actor around a worker; a second thread answers `frames` while `annotate` runs."""

    def __init__(self, make_worker: MakeWorker, config: RunConfig, name: str) -> None:
        self._make_worker = make_worker
        self._config = config
        self._name = name
        self._worker: Worker | None = None
        self._frames = 0

    def load(self) -> str:
        """Load the engine (outside the constructor, so a failure reaches the caller as the exception it is);
        returns the worker's name, with the node it runs on."""
        self._worker = self._make_worker(self._config, f"{self._name} ({ray.util.get_node_ip_address()})")
        return self._worker.name

    def annotate(self, task: Task) -> Result:
        """Annotate one video (see `Worker.annotate`)."""
        assert self._worker is not None, "load() first"
        self._frames = 0
        return self._worker.annotate(task, on_frame=self._count)

    def frames(self) -> int:
        """Frames done in the current video."""
        return self._frames

    def _count(self, frames: int) -> None:
        self._frames = frames


class RayPool:
    """Ray actors as the batch's workers, on the cluster `address` names ("auto": this machine's, or a new local one).

    Each actor reserves one CPU, or one GPU for an engine that uses one (shares of them when `size` exceeds what the
    cluster has, so every actor can be placed).
    """

    def __init__(self, config: RunConfig, address: str, size: int | None, *, make_worker: MakeWorker, pending: int,
                 gpu: bool) -> None:
        self._owned = not ray.is_initialized()
        if self._owned:
            ray.init(address=None if address == "auto" else address, include_dashboard=False)
        resources = ray.cluster_resources()
        cpus, gpus = resources.get("CPU", 1.0), resources.get("GPU", 0.0) if gpu else 0.0
        count = max(1, min(size or int(gpus or cpus), pending))
        self.names = [_label(slot) for slot in range(count)]
        self._config = config
        self._make_worker = make_worker
        self._actor_class = ray.remote(RayWorker).options(
            num_cpus=min(1.0, cpus / count), num_gpus=min(1.0, gpus / count), max_concurrency=2)
        self._actors: list[Any] = [None] * count
        self._running: dict[int, Any] = {}

    def start(self) -> None:
        """Create the actors, and wait while they load their engines (all at once)."""
        for slot in range(len(self.names)):
            self._actors[slot] = self._actor_class.remote(self._make_worker, self._config, _label(slot))
        loading = [actor.load.remote() for actor in self._actors]  # all at once
        for slot, ref in enumerate(loading):
            self._loaded(slot, ref)

    def submit(self, slot: int, task: Task) -> None:
        """Start the task on the slot's actor."""
        self._running[slot] = self._actors[slot].annotate.remote(task)

    def poll(self, timeout: float) -> list[Update]:
        """Results of the tasks that ended within `timeout` (lost: the actor died), then the others' frame counts."""
        refs = {ref: slot for slot, ref in self._running.items()}
        done, _ = ray.wait(list(refs), num_returns=len(refs), timeout=timeout, fetch_local=False) if refs else ([], [])
        updates = []
        for ref in done:
            slot = refs[ref]
            del self._running[slot]
            try:
                updates.append(Update(slot, result=ray.get(ref)))
            except RayError as error:
                updates.append(Update(slot, lost=_reason(error)))
        counts = {slot: self._actors[slot].frames.remote() for slot in self._running}
        try:
            frames = ray.get(list(counts.values()), timeout=FRAMES_TIMEOUT)
        except (GetTimeoutError, RayError):
            return updates  # a busy or dying actor: its news comes with the next poll
        return updates + [Update(slot, frames=n) for slot, n in zip(counts, frames, strict=True)]

    def restart(self, slot: int) -> None:
        """Replace the slot's lost actor."""
        ray.kill(self._actors[slot], no_restart=True)
        self._actors[slot] = self._actor_class.remote(self._make_worker, self._config, _label(slot))
        self._loaded(slot, self._actors[slot].load.remote())

    def close(self) -> None:
        """End the actors, and the local Ray instance if this pool started it."""
        for actor in self._actors:
            if actor is not None:
                ray.kill(actor, no_restart=True)
        self._actors = [None] * len(self.names)
        self._running.clear()
        if self._owned:
            ray.shutdown()

    def abort(self) -> None:
        """Kill the actors mid-video (their temporary outputs are the batch's to delete)."""
        self.close()

    def _loaded(self, slot: int, loading: Any) -> None:
        """Wait for the actor to load its engine; one that cannot stops the batch with the reason."""
        try:
            self.names[slot] = ray.get(loading)
        except RayError as error:
            raise EngineError(f"{self.names[slot]} cannot load the {self._config.engine} engine: "
                              f"{_reason(error)}") from None


def _label(slot: int) -> str:
    return f"ray worker {slot + 1}"


def _reason(error: RayError) -> str:
    """A Ray error as one line: the remote exception's message, or the first line of Ray's own."""
    if isinstance(error, RayTaskError) and error.cause is not None:
        return " ".join(str(error.cause).split())
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
