"""The cache makes each artefact once however many threads and processes want it at the same time: FCN (saved random
weights, a small input) loaded with the onnx backend by several threads, then by several spawned processes, on an
empty cache; one export, every caller on an intact one, no temporary folder left behind."""

from __future__ import annotations

import multiprocessing
import os
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from seg_video.engines.base import create_engine
from seg_video.engines.cache import locked, replace_folder, write_atomically
from seg_video.engines.models.torch_common import TorchEngine
from seg_video.engines.runners.graphs import Sidecar, is_intact

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

CALLERS = 3


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """FCN on the onnx backend with random weights saved to a file (`weights: none` draws from the process's one
    random generator, so threads building models at once would get different weights: different exports)."""
    engine = create_engine("fcn", {"device": "cpu", "weights": "none"})
    assert isinstance(engine, TorchEngine)
    engine.load()
    path = tmp_path_factory.mktemp("fcn") / "state.pt"
    torch.save(engine.loaded_model().state_dict(), path)
    return {"device": "cpu", "weights": str(path), "backend": "onnx", "min_size": 64}


def counting_exports(monkeypatch: Any) -> list[Path]:
    """Patch `TorchEngine.export_onnx` to note each export's folder (and still export)."""
    exports: list[Path] = []
    real = TorchEngine.export_onnx

    def export(self: TorchEngine, model: Any, folder: Path, **settings: Any) -> Sidecar:
        exports.append(folder)
        return real(self, model, folder, **settings)

    monkeypatch.setattr(TorchEngine, "export_onnx", export)
    return exports


def only_exports(cache: Path) -> list[Path]:
    """Everything in the cache's ONNX folder but the lock files: the exports (and any temporary folder left)."""
    return [path for path in (cache / "onnx").iterdir() if not path.name.endswith(".lock")]


def test_threads_on_an_empty_cache_export_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               settings: dict[str, Any]) -> None:
    monkeypatch.setenv("SEG_VIDEO_CACHE", str(tmp_path))
    exports = counting_exports(monkeypatch)
    engines = [create_engine("fcn", settings) for _ in range(CALLERS)]
    start, errors = threading.Barrier(CALLERS), []

    def load(engine: Any) -> None:
        start.wait()
        try:
            engine.load()
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=load, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(exports) == 1
    (folder,) = only_exports(tmp_path)
    assert is_intact(folder) is not None and exports[0].parent == folder.parent


def load_in_process(cache: str, settings: dict[str, Any], start: Any, results: Any) -> None:
    """A spawned process: load FCN on the onnx backend once `start` lets every process go; put how many exports it
    made."""
    os.environ["SEG_VIDEO_CACHE"] = cache
    with pytest.MonkeyPatch.context() as patch:
        exports = counting_exports(patch)
        engine = create_engine("fcn", settings)
        start.wait()
        engine.load()
    results.put(len(exports))


def test_processes_on_an_empty_cache_export_once(tmp_path: Path, settings: dict[str, Any]) -> None:
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(CALLERS), context.Queue()
    processes = [context.Process(target=load_in_process, args=(str(tmp_path), settings, start, results))
                 for _ in range(CALLERS)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=600)
    assert [process.exitcode for process in processes] == [0] * CALLERS
    assert sorted(results.get(timeout=5) for _ in range(CALLERS)) == [0] * (CALLERS - 1) + [1]
    (folder,) = only_exports(tmp_path)
    assert is_intact(folder) is not None


def test_a_failed_fill_leaves_the_target_as_it_was_and_no_temporary_folder(tmp_path: Path) -> None:
    target = tmp_path / "export"
    target.mkdir()
    (target / "old").write_text("kept")
    stale = tmp_path / f".{target.name}.partial-killed"  # left by a maker that was killed
    stale.mkdir()

    def fail(folder: Path) -> None:
        (folder / "half").write_text("written")
        raise OSError("disk full")

    with locked(target), pytest.raises(OSError, match="disk full"):
        replace_folder(target, fail)
    assert sorted(path.name for path in tmp_path.iterdir()) == [".export.lock", "export"]
    assert [path.name for path in target.iterdir()] == ["old"]
    with locked(target):
        assert replace_folder(target, lambda folder: (folder / "new").write_text("made")) == 4
    assert [path.name for path in target.iterdir()] == ["new"]


def test_atomic_writes_from_threads_leave_one_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "timing.cache"
    payloads = [bytes([i]) * 200_000 for i in range(8)]
    threads = [threading.Thread(target=write_atomically, args=(path, payload)) for payload in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert path.read_bytes() in payloads and [p.name for p in tmp_path.iterdir()] == ["timing.cache"]


def test_the_lock_admits_one_holder_at_a_time(tmp_path: Path) -> None:
    target, inside, most = tmp_path / "plan", [0], [0]
    guard = threading.Lock()

    def hold() -> None:
        with locked(target):
            with guard:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            threading.Event().wait(0.02)
            with guard:
                inside[0] -= 1

    threads = [threading.Thread(target=hold) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 1
