"""Security: model files, the cache, the browser view (token, loopback, Host, no file serving) and stream
credentials, each checked against the real code path (a running server, a real FFmpeg connection, the CLI).

Pickled weights are refused without being unpickled: tests/test_torch_engines.py
::test_pickled_objects_are_refused_and_never_run. Here: that no code path loads any other way.
"""

from __future__ import annotations

import ast
import base64
import hmac
import json
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from live_helpers import SlowEngine, free_port, wait_until

import seg_video.live.web
import seg_video.live.window
from seg_video.api import run_config
from seg_video.cli.main import main
from seg_video.core.config import LiveSettings
from seg_video.core.errors import MediaError
from seg_video.core.runner import RunStats
from seg_video.engines.cache import cached_file, file_sha256
from seg_video.engines.runners.graphs import PartInfo, Sidecar, TensorInfo, is_intact
from seg_video.engines.runners.plans import Profile, cached_plan, plan_path
from seg_video.io.sample import write_sample_clip
from seg_video.io.streams import SourceState, open_input, source_kind
from seg_video.live.feed import Feed
from seg_video.live.job import LiveJob, LiveOptions
from seg_video.live.web import WebView, parse_address

ROOT = Path(__file__).resolve().parent.parent
SECRET = "s3cr3t-Pw"
USER = "cam-admin"


# --- model files -------------------------------------------------------------------------------------------------


def calls(tree: ast.AST, dotted: str) -> Iterator[ast.Call]:
    """Every call of `dotted` (e.g. `torch.load`) spelled out in full in `tree`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == dotted:
            yield node


def test_every_torch_load_in_the_code_is_weights_only() -> None:
    sources = [path for folder in ("pipeline", "engines", "tools") for path in (ROOT / folder).rglob("*.py")]
    loads = 0
    for path in sources:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for call in calls(tree, "torch.load"):
            loads += 1
            flag = next((k.value for k in call.keywords if k.arg == "weights_only"), None)
            assert isinstance(flag, ast.Constant) and flag.value is True, f"{path}:{call.lineno}: not weights_only=True"
        for unsafe in ("pickle.load", "pickle.loads", "pickle.Unpickler", "torch.jit.load", "torch.hub.load",
                       "torch.serialization.load", "torch.hub.load_state_dict_from_url", "joblib.load", "dill.load"):
            assert not list(calls(tree, unsafe)), f"{path} calls {unsafe}"
        for call in [*calls(tree, "np.load"), *calls(tree, "numpy.load")]:
            assert not any(k.arg == "allow_pickle" for k in call.keywords), f"{path}:{call.lineno}: allow_pickle"
        for node in ast.walk(tree):  # `from torch import load`, `import torch as t` would hide a call from the scan
            if isinstance(node, ast.ImportFrom) and node.module in ("torch", "pickle", "torch.serialization"):
                assert not {"load", "loads", "Unpickler"} & {alias.name for alias in node.names}, path
            if isinstance(node, ast.Import):
                renamed = {alias.name for alias in node.names if alias.asname not in (None, "np")}
                assert not renamed & {"torch", "pickle", "numpy"}, path
    assert loads >= 1, "the scan found engines/weights.py's torch.load"


# --- the cache: only our own files, never through a link or a doctored name ----------------------------------------


def sidecar_for(folder: Path, file: str) -> Sidecar:
    """A one-part sidecar naming `file` with the sha256 of whatever `folder/file` resolves to now."""
    part = PartInfo(name="net", file=file, sha256=file_sha256(folder / file), inputs=(TensorInfo("x", (1, 3)),),
                    outputs=(TensorInfo("y", (1, 3)),), rows=(1, 1), operators=("Conv",))
    return Sidecar(model="fcn", precision="fp32", opset=17, weights_sha256="w", model_sha256="m", versions={},
                   preprocessing={}, classes=("background",), parts=(part,))


def test_an_export_is_read_only_from_inside_its_cache_folder(tmp_path: Path) -> None:
    folder = tmp_path / "cache" / "onnx" / "fcn-fp32-key"
    folder.mkdir(parents=True)
    outside = tmp_path / "elsewhere.onnx"
    outside.write_bytes(b"a graph someone else controls")
    (folder / "net.onnx").write_bytes(b"our graph")
    sidecar_for(folder, "net.onnx").write(folder)
    assert is_intact(folder) is not None  # the honest export is used

    for name in ("../../../elsewhere.onnx", str(outside)):  # a sidecar naming a file outside the folder
        sidecar_for(folder, name).write(folder)
        assert is_intact(folder) is None, name
    (folder / "net.onnx").unlink()
    (folder / "net.onnx").symlink_to(outside)  # a planted link, with the sidecar's checksum matching its target
    sidecar_for(folder, "net.onnx").write(folder)
    assert is_intact(folder) is None
    assert cached_file(folder, "net.onnx") is None and cached_file(folder, "..") is None


def test_a_linked_tensorrt_plan_in_the_cache_is_not_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEG_VIDEO_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "net.onnx").write_bytes(b"graph")
    sidecar = sidecar_for(folder, "net.onnx")
    part = sidecar.parts[0]
    profile: Profile = {"x": ((1, 3), (1, 3), (4, 3))}
    plan = plan_path(sidecar, part, profile, "10.0", "GPU")
    plan.parent.mkdir(parents=True)
    plan.with_suffix(".json").write_text(json.dumps(profile))
    plan.write_bytes(b"plan")
    assert cached_plan(sidecar, part, "10.0", "GPU", profile) == (plan, profile)
    plan.unlink()
    (tmp_path / "planted.plan").write_bytes(b"someone else's plan")
    plan.symlink_to(tmp_path / "planted.plan")
    assert cached_plan(sidecar, part, "10.0", "GPU", profile) is None


# --- the browser view ----------------------------------------------------------------------------------------------


@contextmanager
def viewing(address: tuple[str, int], token: str | None = None) -> Iterator[WebView]:
    """A running view of one feed (no frames needed: every route but a stream answers at once)."""
    view = WebView([Feed("cam", SourceState(), RunStats())], address, token=token)
    view.start()
    try:
        yield view
    finally:
        view.close()


def raw_get(port: int, target: str, host: str | None = "127.0.0.1", extra: str = "") -> tuple[int, bytes]:
    """Send one request line as given (no client-side normalisation); the status code and the whole reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        head = f"GET {target} HTTP/1.1\r\n" + (f"Host: {host}\r\n" if host is not None else "")
        client.sendall(f"{head}{extra}Connection: close\r\n\r\n".encode("latin-1"))
        reply = b""
        while chunk := client.recv(1 << 16):
            reply += chunk
    return int(reply.split(b" ", 2)[1]), reply


TRAVERSALS = ["/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/static/../",
              "/static/", "/stream/", "/stream/../../../../etc/passwd", "/stream/0.mjpg/../../etc/passwd",
              "/stream/-1.mjpg", "/stream/99999999999999999999.mjpg", "/stream/0.mjpg%00.html", "//etc/passwd",
              "/..", "/./", "/etc/passwd", "/tests/test_security.py", "http://127.0.0.1/../../etc/passwd",
              "/..%5c..%5cetc%5cpasswd", "/%c0%ae%c0%ae/etc/passwd", "*"]


def assert_no_file_served(status: int, reply: bytes) -> None:
    assert status in (400, 401, 403, 404), (status, reply[:200])
    assert b"root:" not in reply and b"Directory listing" not in reply and b"import " not in reply


def test_no_path_reaches_the_file_system() -> None:
    with viewing(("127.0.0.1", 0)) as view:
        for target in TRAVERSALS:
            assert_no_file_served(*raw_get(view.address[1], target))
        assert raw_get(view.address[1], "/stats.json")[0] == 200  # the view works: its routes answer
    with viewing(("0.0.0.0", 0)) as view:  # needs the token: refused before routing, and after it, not found
        assert view.token is not None
        for target in TRAVERSALS:
            status = raw_get(view.address[1], target)[0]
            assert status in (400, 401), (target, status)
            status, reply = raw_get(view.address[1], target, extra=f"Authorization: Bearer {view.token}\r\n")
            assert status in (400, 404), (target, status)
            assert_no_file_served(status, reply)


def test_the_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def compare_digest(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return original(a, b)

    monkeypatch.setattr(seg_video.live.web.hmac, "compare_digest", compare_digest)
    with viewing(("0.0.0.0", 0), token="right-token") as view:
        port = view.address[1]
        assert raw_get(port, "/stats.json?token=wrong-token", host="cam.example")[0] == 401
        assert raw_get(port, "/stats.json?token=right-token", host="cam.example")[0] == 200
        assert raw_get(port, "/stats.json", extra="Authorization: Bearer right-tokeN\r\n")[0] == 401
        assert raw_get(port, "/stats.json", extra="Authorization: Bearer right-token\r\n")[0] == 200
        assert raw_get(port, "/stats.json?token=%ff%00", extra="Authorization: Basic cmlnaHQtdG9rZW4=\r\n")[0] == 401
    assert [a for a, _ in compared] == [b"wrong-token", b"right-token", b"right-tokeN", b"right-token",
                                        "\ufffd\x00".encode()]
    assert {b for _, b in compared} == {b"right-token"}, "every check went through hmac.compare_digest"


def test_a_view_without_a_token_answers_only_to_loopback_names() -> None:
    """Against DNS rebinding: a page on evil.example re-pointed at 127.0.0.1 must not read the camera."""
    with viewing(parse_address("0")) as view:
        port = view.address[1]
        assert view.address[0] == "127.0.0.1" and view.token is None
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "127.0.0.2", f"cam.localhost:{port}",
                     None):
            assert raw_get(port, "/stats.json", host=host)[0] == 200, host
        for host in (f"evil.example:{port}", "192.168.1.10", "127.0.0.1.evil.example", "[::1", "", "localhost@evil"):
            status, reply = raw_get(port, "/stats.json", host=host)
            assert status == 403 and b"[" not in reply.partition(b"\r\n\r\n")[2], host


def test_the_view_binds_loopback_unless_told(sample_clip: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(sample_clip), "--serve", "0", "--max-frames", "3", "--engine", "threshold"]) == 0
    err = capsys.readouterr().err
    assert "watch in a browser: http://127.0.0.1:" in err and "token=" not in err
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:  # this machine's outward address, if any
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent
            outward = probe.getsockname()[0]
    except OSError:  # no route at all
        outward = "127.0.0.1"
    if outward.startswith("127."):
        pytest.skip("no non-loopback address to try the loopback binding from")
    with viewing(parse_address("0")) as view, pytest.raises(ConnectionRefusedError):
        socket.create_connection((outward, view.address[1]), timeout=5).close()


# --- stream credentials ----------------------------------------------------------------------------------------------


class ClipServer(ThreadingHTTPServer):
    """Serves one clip at /clip.mkv behind HTTP Basic authentication (USER:SECRET); counts the authorized GETs."""

    daemon_threads = True

    def __init__(self, clip: Path) -> None:
        self.clip = clip.read_bytes()
        self.served = 0
        super().__init__(("127.0.0.1", 0), _ClipHandler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _ClipHandler(BaseHTTPRequestHandler):
    server: ClipServer
    expected = "Basic " + base64.b64encode(f"{USER}:{SECRET}".encode()).decode()

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != self.expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="cam"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.server.served += 1
        self.send_response(200)
        self.send_header("Content-Type", "video/x-matroska")
        self.send_header("Content-Length", str(len(self.server.clip)))
        self.end_headers()
        self.wfile.write(self.server.clip)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def clip_server(tmp_path: Path) -> Iterator[ClipServer]:
    clip = write_sample_clip(tmp_path / "clip.mkv", seconds=1.0, width=160, height=120, audio=False)
    server = ClipServer(clip)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_a_stream_password_is_used_but_never_shown(clip_server: ClipServer, capfd: pytest.CaptureFixture[str],
                                                   caplog: pytest.LogCaptureFixture,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Logs (ours and FFmpeg's), reconnection states, the window's overlay, the web page and its stats."""
    caplog.set_level(logging.DEBUG)
    drawn: list[str] = []
    monkeypatch.setattr(seg_video.live.window.cv2, "putText", lambda image, text, *a, **k: drawn.append(text))
    url = f"http://{USER}:{SECRET}@127.0.0.1:{clip_server.port}/clip.mkv"
    stop = threading.Event()
    settings = LiveSettings(open_timeout=2.0, read_timeout=1.0, reconnect_min=0.2, reconnect_max=0.4)
    source = open_input(url, settings, policy="auto", stop=stop)
    job = LiveJob(run_config(), [source], LiveOptions(serve=("127.0.0.1", 0)), stop=stop,
                  engine_factory=lambda: SlowEngine(0.0))
    assert job.web is not None
    seen: list[str] = []

    def look() -> None:
        """What a viewer sees now: the overlay drawn on a tile, the page, the stats."""
        stats = job.feeds[0].stats()
        seen.append(stats.status)
        seg_video.live.window.draw_overlay(np.zeros((120, 160, 3), np.uint8), stats)
        seen.extend(raw_get(job.web.address[1], path)[1].decode("latin-1") for path in ("/", "/stats.json"))

    thread = threading.Thread(target=job.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: bool(source.state.gaps), 15, "a reconnection after the clip ended")  # the password works
        look()
        clip_server.shutdown()
        clip_server.server_close()  # now every reconnection attempt is refused, and its reason shown
        wait_until(lambda: "attempt 2" in source.state.status, 10, "a failed reconnection attempt")
        look()
    finally:
        job.stop()
        thread.join(10)
    assert clip_server.served >= 2, "the real credentials reached the server, twice"
    assert any("Connection refused" in text for text in seen), "the failure's reason is shown"
    assert any(f"http://***@127.0.0.1:{clip_server.port}/clip.mkv" in text for text in drawn)
    out, err = capfd.readouterr()
    for where, text in {"logs": caplog.text, "stdout": out, "stderr": err, "overlay": "\n".join(drawn),
                        "viewer": "\n".join(seen), "name": source.name}.items():
        assert SECRET not in text and USER not in text, where


def test_a_wrong_password_is_one_line_without_it(clip_server: ClipServer, tmp_path: Path) -> None:
    """The whole process's stderr (FFmpeg's own messages included), through the command line."""
    url = f"http://{USER}:wrong-{SECRET}@127.0.0.1:{clip_server.port}/clip.mkv"
    run = subprocess.run([sys.executable, "-m", "seg_video", url, "--serve", "0", "--set", "live.open_timeout=3"],
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and run.stderr.startswith(
        f"seg-video: error: cannot open http://***@127.0.0.1:{clip_server.port}/clip.mkv: "), run.stderr
    assert SECRET not in run.stderr + run.stdout and clip_server.served == 0
    with pytest.raises(MediaError) as caught:  # the same through the API
        open_input(url, LiveSettings(open_timeout=3), policy="auto", stop=threading.Event())
    assert SECRET not in str(caught.value) and "401" in str(caught.value)


@pytest.mark.parametrize("url", [f"hls+http://{USER}:{SECRET}@127.0.0.1:{{port}}/live.m3u8",
                                 f"rtsp://{USER}:{SECRET}@127.0.0.1:{{port}}/live?password={SECRET}"])
def test_every_error_line_masks_a_stream_url(url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A nested FFmpeg scheme counts as a stream; COCO, for files only, is refused without naming the URL."""
    url = url.format(port=free_port())
    assert source_kind(url) == "stream"
    assert main([url, str(tmp_path / "out.mp4"), "--set", "live.open_timeout=1"]) == 2
    assert main([url, "--serve", "0", "--coco", str(tmp_path / "out.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and SECRET not in err and "://***@127.0.0.1:" in err
    assert not (tmp_path / "out.json").exists() and not (tmp_path / "out.mp4").exists()


def test_coco_names_a_video_file_by_its_base_name_only(sample_clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    assert main([str(sample_clip), "--no-video", "--coco", str(out), "--max-frames", "2", "--quiet"]) == 0
    document = json.loads(out.read_text())
    assert [video["name"] for video in document["videos"]] == [sample_clip.name]
    assert str(sample_clip.parent) not in out.read_text()
