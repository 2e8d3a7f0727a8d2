"""Event sinks against the real thing: a JSON Lines file read while it is written, a local HTTP server that is slow,
then down, then back, and a Mosquitto broker restarted mid-run; `send` never blocks, drops are counted."""

from __future__ import annotations

import base64
import json
import logging
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from live_helpers import free_port, need, wait_until
from paho.mqtt.enums import CallbackAPIVersion

from seg_video.core.types import Event
from seg_video.io.events import EventSink, JsonLines, Mqtt, SinkCounts, Webhook, open_sinks

SEND_LIMIT = 0.010
"""Seconds one `send` may take at most: it only queues."""


def crossing(frame: int, track_id: int = 7) -> Event:
    """A line crossing at `frame` (30 fps), the contract's example at frame 412."""
    return Event(type="line_cross", frame=frame, time=frame / 10, source="0", track_id=track_id,
                 class_name="person", line="door", direction="in")


def send_all(sink: EventSink, events: list[Event]) -> float:
    """Send `events`, timing each call; the longest call's seconds."""
    longest = 0.0
    for event in events:
        start = time.perf_counter()
        sink.send(event)
        longest = max(longest, time.perf_counter() - start)
    return longest


def test_json_lines_contract(tmp_path: Path) -> None:
    """Each line is the event's contract object, compact and UTF-8, readable as soon as it is sent."""
    path = tmp_path / "events.jsonl"
    events = [crossing(412),
              Event(type="zone_enter", frame=413, time=41.3, source="cam 1", track_id=8, class_name="car",
                    zone="café"),
              Event(type="zone_exit", frame=500, time=50.0, source="cam 1", track_id=8, class_name="car",
                    zone="café"),
              Event(type="zone_occupancy", frame=510, time=51.0004, source="0", zone="café", occupancy=0.12345,
                    count=2)]
    sink = JsonLines(path)
    try:
        assert send_all(sink, events) < SEND_LIMIT
        wait_until(lambda: len(path.read_text(encoding="utf-8").splitlines()) == len(events), 10,
                   "every line written before close")
        lines = path.read_text(encoding="utf-8").splitlines()
    finally:
        sink.close()
    assert [json.loads(line) for line in lines] == [event.to_json() for event in events]
    assert json.loads(lines[0]) == {"type": "line_cross", "line": "door", "direction": "in", "track_id": 7,
                                    "class": "person", "frame": 412, "time": 41.2, "source": "0"}
    assert json.loads(lines[3]) == {"type": "zone_occupancy", "zone": "café", "occupancy": 0.123, "count": 2,
                                    "frame": 510, "time": 51.0, "source": "0"}
    assert '"zone":"café"' in lines[1] and ", " not in lines[0]  # UTF-8 as is, compact separators
    assert (sink.sent, sink.dropped, sink.status) == (4, 0, "closed")
    sink.send(crossing(600))  # after close: dropped, counted, nothing written
    assert sink.dropped == 1 and len(path.read_text(encoding="utf-8").splitlines()) == 4
    assert str(SinkCounts.of(sink)) == f"{path}: 4 events sent, 1 dropped"


class Hook:
    """A local HTTP endpoint in a thread that keeps the JSON bodies and authorizations POSTed to it, answering
    after `delay` seconds."""

    def __init__(self, port: int, delay: float = 0.0) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.authorizations: list[str] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(delay)
                hook.bodies.append(json.loads(body))
                hook.authorizations.append(self.headers.get("Authorization", ""))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                """Quiet."""

        self.server = HTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def frames(self) -> list[int]:
        return [body["frame"] for body in self.bodies]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def test_webhook_slow_down_back(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow endpoint fills the queue (drops counted), a closed one drops after retries, a new server on the same
    port gets the events sent after it is back; `send` never blocks and the password never shows."""
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    caplog.set_level(logging.DEBUG, logger="seg_video.io.events")
    port = free_port()
    hook = Hook(port, delay=0.2)
    sink = Webhook(f"http://watch:s3cret@127.0.0.1:{port}/hook", queue_size=4, timeout=5.0, retries=2,
                   backoff=0.05, backoff_max=0.2, close_timeout=10.0)
    try:
        assert "s3cret" not in sink.name and "***" in sink.name
        # slow: 12 events at once, 4 fit in the queue (and one or two the thread takes meanwhile)
        longest = send_all(sink, [crossing(frame) for frame in range(12)])
        wait_until(lambda: sink.sent + sink.dropped == 12, 30, "the slow endpoint to take what was queued")
        assert 4 <= sink.sent <= 6 and len(hook.frames()) == sink.sent and hook.frames() == sorted(hook.frames())
        assert set(hook.authorizations) == {"Basic " + base64.b64encode(b"watch:s3cret").decode()}
        # down: each event is retried, then dropped; the queue fills meanwhile
        hook.close()
        dropped = sink.dropped
        longest = max(longest, send_all(sink, [crossing(frame) for frame in range(100, 110)]))
        wait_until(lambda: sink.status.startswith("down"), 30, "the sink to call the endpoint down")
        assert sink.dropped >= dropped + 6  # at most 4 queued and 1 in hand may still get through
        # back: a new server on the same port gets what is sent from now on
        hook = Hook(port)
        wait_until(lambda: sink.status == "live", 30, "the sink to deliver again")
        for frame in range(200, 205):
            longest = max(longest, send_all(sink, [crossing(frame)]))
            time.sleep(0.05)
        wait_until(lambda: set(range(200, 205)) <= set(hook.frames()), 30, "the events sent after it is back")
    finally:
        sink.close()
        hook.close()
    assert longest < SEND_LIMIT
    assert sink.sent + sink.dropped == 27 and sink.status == "closed"
    assert all(100 <= frame < 110 or frame >= 200 for frame in hook.frames())  # only these reached the new server
    warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert sum("down" in line for line in warnings) == 1 and sum("delivering again" in line for line in warnings) == 1
    assert "s3cret" not in caplog.text and "://***@127.0.0.1" in caplog.text


class Broker:
    """Mosquitto on a loopback port, in the foreground of a child process; stoppable and restartable."""

    def __init__(self, folder: Path, port: int) -> None:
        self.port = port
        self.config = folder / "mosquitto.conf"
        self.config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self.binary = need("mosquitto", "mosquitto")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen([self.binary, "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        wait_until(self._listening, 15, f"mosquitto on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True


class Subscriber:
    """A paho client subscribed with QoS 1 to `topic`, subscribing again after each reconnection."""

    def __init__(self, port: int, topic: str) -> None:
        self.frames: list[int] = []
        self.subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2)
        self.client.reconnect_delay_set(1, 2)
        self.client.on_connect = lambda client, *_: client.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_disconnect = lambda *_: self.subscribed.clear()
        self.client.on_message = lambda _client, _data, message: self.frames.append(
            json.loads(message.payload)["frame"])
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A running Mosquitto broker on a free port."""
    broker = Broker(tmp_path, free_port())
    broker.start()
    yield broker
    broker.stop()


def test_mqtt_broker_restart(broker: Broker, caplog: pytest.LogCaptureFixture) -> None:
    """Events arrive with QoS 1; the broker restarts mid-run: `send` never blocks, the sink reconnects and later
    events arrive; every event is counted sent or dropped; the password never shows."""
    caplog.set_level(logging.INFO, logger="seg_video.io.events")
    subscriber = Subscriber(broker.port, "site/events")
    sink = Mqtt(f"mqtt://watch:s3cret@127.0.0.1:{broker.port}/site/events", close_timeout=10.0)
    try:
        assert subscriber.subscribed.wait(15)
        wait_until(lambda: sink.status == "live", 15, "the sink to connect")
        longest = send_all(sink, [crossing(frame) for frame in range(10)])
        wait_until(lambda: subscriber.frames == list(range(10)), 15, "the first events")
        broker.stop()
        wait_until(lambda: sink.status.startswith("down"), 15, "the sink to see the broker gone")
        longest = max(longest, send_all(sink, [crossing(frame) for frame in range(100, 105)]))
        broker.start()
        wait_until(lambda: sink.status == "live", 30, "the sink to reconnect")
        assert subscriber.subscribed.wait(30)
        longest = max(longest, send_all(sink, [crossing(frame) for frame in range(200, 205)]))
        wait_until(lambda: set(range(200, 205)) <= set(subscriber.frames), 15, "the events after the restart")
    finally:
        sink.close()
        subscriber.close()
    assert longest < SEND_LIMIT
    assert sink.sent + sink.dropped == 20 and sink.sent >= 15 and sink.status == "closed"
    warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert sum("lost" in line for line in warnings) == 1 and sum("connected again" in line for line in warnings) == 1
    assert "s3cret" not in caplog.text and "://***@127.0.0.1" in caplog.text


def test_mqtt_unreachable_close_is_bounded() -> None:
    """With no broker at all, events wait and are dropped at close, which returns within its bound."""
    sink = Mqtt(f"mqtt://127.0.0.1:{free_port()}/events", queue_size=3, close_timeout=1.0)
    assert send_all(sink, [crossing(frame) for frame in range(5)]) < SEND_LIMIT
    start = time.monotonic()
    sink.close()
    assert time.monotonic() - start < 10
    assert (sink.sent, sink.dropped, sink.status) == (0, 5, "closed")


@pytest.mark.parametrize(("webhook", "mqtt", "message"), [
    ("ftp://u:pw@host/x", None, "not a webhook URL"),
    ("http://u:pw@:80/x", None, "not a webhook URL"),
    ("http://u:pw@host:99999/x", None, "not a webhook URL"),
    (None, "tcp://u:pw@host/topic", "not an MQTT URL"),
    (None, "mqtt://u:pw@host", "needs a topic"),
    (None, "mqtt://u:pw@host/site/#", "needs a topic without wildcards"),
])
def test_bad_urls_refused_before_anything_starts(tmp_path: Path, webhook: str | None, mqtt: str | None,
                                                 message: str) -> None:
    """A bad URL is one masked line, raised before the events file is even created."""
    path = tmp_path / "events.jsonl"
    with pytest.raises(ValueError, match=message) as refused:
        open_sinks(path, webhook, mqtt)
    assert "pw" not in str(refused.value) and "\n" not in str(refused.value) and not path.exists()


def test_open_sinks(tmp_path: Path, broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sinks a run asks for, in order; none when none is asked for."""
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    assert open_sinks(None, None, None) == []
    hook = Hook(free_port())
    sinks = open_sinks(tmp_path / "events.jsonl", f"http://127.0.0.1:{hook.server.server_port}/",
                       f"mqtt://127.0.0.1:{broker.port}/events")
    try:
        assert [type(sink) for sink in sinks] == [JsonLines, Webhook, Mqtt]
        for sink in sinks:
            sink.send(crossing(1))
    finally:
        for sink in sinks:
            sink.close()
        hook.close()
    assert [SinkCounts.of(sink).sent for sink in sinks] == [1, 1, 1] and hook.frames() == [1]
