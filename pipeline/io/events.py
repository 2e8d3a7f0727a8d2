"""Event sinks: the watch stage's events written as JSON Lines, POSTed to a webhook or published over MQTT, without
ever holding up the pipeline.

Every sink has a bounded queue and a thread of its own: `send` only appends to the queue (a full queue, or a closed
sink, drops the event and counts it) and the thread delivers. A slow sink fills its queue and then drops (one warning
line each time that starts); a sink whose file, endpoint or broker fails says so in one line, and in one more when it
works again; nothing is held beyond the bound. `close` delivers what is queued within `close_timeout` seconds, counts
the rest as dropped and stops the thread.

Every event travels as the JSON object of `Event.to_json()` (the contract), compact, UTF-8. Credentials never leave
this module unmasked: names, log lines, statuses and errors go through `mask_credentials`.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import threading
import time
import urllib.request
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

from seg_video.core.text import mask_credentials, one_line
from seg_video.core.types import Event

if TYPE_CHECKING:
    import paho.mqtt.client as paho

log = logging.getLogger(__name__)

CLOSE_GRACE = 2.0
"""Seconds `close` waits beyond `close_timeout` for the thread to finish (paho's network thread takes up to a second
to stop) before it is abandoned."""
WEBHOOK_SCHEMES = ("http", "https")
MQTT_PORTS = {"mqtt": 1883, "mqtts": 8883}
"""The MQTT schemes and their default ports (mqtts: TLS)."""
MQTT_WINDOW = 20
"""QoS 1 messages handed to the MQTT client and not yet acknowledged, at most (paho keeps them and sends them again
after a reconnection); the sink's queue holds the rest."""


class EventSink(Protocol):
    """Where the pipeline hands its events: `send` never blocks, `close` ends within a bounded time."""

    name: str
    """What the sink writes to, credentials masked."""
    sent: int
    """Events delivered (written, answered 2xx, acknowledged by the broker)."""
    dropped: int
    """Events given up: queue full, delivery failed after retries, or left undelivered at close."""
    status: str
    """The sink's state in a few words: `connecting`, `live`, `down: …`, `closed`."""

    def send(self, event: Event) -> None:
        """Queue `event` for delivery; a full queue drops it (counted)."""

    def close(self) -> None:
        """Deliver what is queued within a bounded time, count the rest as dropped and stop the thread."""


@dataclass(frozen=True)
class SinkCounts:
    """One sink's numbers for the run's summary line."""

    name: str
    sent: int
    dropped: int

    @classmethod
    def of(cls, sink: EventSink) -> SinkCounts:
        """The sink's numbers now."""
        return cls(sink.name, sink.sent, sink.dropped)

    def __str__(self) -> str:
        return f"{self.name}: {self.sent} events sent, {self.dropped} dropped"


def encode(event: Event) -> str:
    """The event's contract object as compact JSON, non-ASCII kept (NumPy scalars become plain numbers)."""
    return json.dumps(event.to_json(), separators=(",", ":"), ensure_ascii=False, default=_plain)


def _plain(value: Any) -> Any:
    """A NumPy scalar (a track id taken from an array) as its Python number; anything else cannot be encoded."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


class _QueuedSink:
    """The queue, thread, counters and bounded close that every sink shares; a sink delivers in `_deliver`."""

    def __init__(self, name: str, *, queue_size: int, close_timeout: float) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be 1 or more; got {queue_size}")
        if close_timeout < 0:
            raise ValueError(f"close_timeout must be 0 or more; got {close_timeout}")
        self.name = name
        self.sent = 0
        self.dropped = 0
        self.status = "connecting"
        self.queue_size = queue_size
        self.close_timeout = close_timeout
        self._queue: deque[Event] = deque()
        self._ready = threading.Condition()
        self._closing = False
        self._deadline = 0.0  # when close() stops waiting for deliveries
        self._abandoned = False  # close() gave up on the thread: later outcomes are no longer counted
        self._holding = False  # the thread has taken an event and not finished delivering it
        self._overflowing = False  # the queue is dropping events (warned once)
        self._thread = threading.Thread(target=self._run, name=f"events {name}", daemon=True)

    def send(self, event: Event) -> None:
        """Queue `event` for the sink's thread; never blocks. A full queue or a closed sink drops it (counted)."""
        with self._ready:
            if not self._closing and len(self._queue) < self.queue_size:
                self._queue.append(event)
                self._ready.notify()
                return
            self.dropped += 1
            warn = not self._closing and not self._overflowing
            self._overflowing = self._overflowing or warn
        if warn:
            log.warning("%s: cannot keep up (%d events queued); events are dropped", self.name, self.queue_size)

    def close(self) -> None:
        """Deliver what is queued within `close_timeout` seconds, count the rest as dropped and stop the thread (a
        thread stuck beyond `CLOSE_GRACE` more is abandoned). Idempotent."""
        with self._ready:
            if not self._closing:
                self._closing = True
                self._deadline = time.monotonic() + self.close_timeout
            self._ready.notify_all()
        self._thread.join(max(0.0, self._deadline - time.monotonic()) + CLOSE_GRACE)
        with self._ready:
            if self._thread.is_alive() and not self._abandoned:
                self._abandoned = True
                self.dropped += len(self._queue) + self._holding  # the queue and the event in the thread's hands
                self._queue.clear()
                log.warning("%s: did not finish within %.1f s; abandoned", self.name, self.close_timeout)
        self.status = "closed"

    def _start(self) -> None:
        """Start the sink's thread (once the subclass is set up)."""
        self._thread.start()

    def _run(self) -> None:
        """The sink's thread: deliver each queued event until closed, then finish."""
        while (event := self._take()) is not None:
            try:
                self._deliver(event)
            except Exception:  # a sink's bug must not silence the sink: the event is dropped, the thread goes on
                log.exception("%s: could not deliver an event", self.name)
                self._count(sent=False)
            finally:
                with self._ready:
                    self._holding = False
        try:
            self._finish()
        finally:
            with self._ready:
                if not self._abandoned:
                    self.dropped += len(self._queue)
                    self._queue.clear()

    def _take(self) -> Event | None:
        """The next queued event, waiting for one; None once closing and the queue is empty or time is up."""
        with self._ready:
            while not self._queue and not self._closing:
                self._ready.wait()
            if not self._queue or self._expired():
                return None
            if self._overflowing and len(self._queue) < self.queue_size // 2:
                self._overflowing = False
            self._holding = True
            return self._queue.popleft()

    def _count(self, *, sent: bool) -> None:
        """Count an event as delivered or dropped (unless close already counted it)."""
        with self._ready:
            if self._abandoned:
                return
            if sent:
                self.sent += 1
            else:
                self.dropped += 1

    def _expired(self) -> bool:
        """True once `close` has been called and its time is up."""
        return self._closing and time.monotonic() >= self._deadline

    def _pause(self, seconds: float) -> bool:
        """Wait `seconds` (less once closing: at most until close's deadline); False when close's time is up."""
        with self._ready:
            end = time.monotonic() + seconds
            while not self._expired():
                until = min(end, self._deadline) if self._closing else end
                if until <= time.monotonic():
                    break
                self._ready.wait(until - time.monotonic())
            return not self._expired()

    def _deliver(self, event: Event) -> None:
        """Deliver one event and count it (the subclass's work)."""
        raise NotImplementedError

    def _finish(self) -> None:
        """Release what the sink holds once the queue is done (the subclass's work, if any)."""


class JsonLines(_QueuedSink):
    """Events written to a file as JSON Lines, one object per line, flushed per line (a reader sees each event at
    once, and a run that stops leaves every line whole). The file is created (or replaced: the command line asks for
    `--overwrite` first) here: an unwritable path raises `OSError` before anything starts. A failed write (a full
    disk) drops the event, warning once until writing works again."""

    def __init__(self, path: Path, *, queue_size: int = 1000, close_timeout: float = 5.0) -> None:
        super().__init__(str(path), queue_size=queue_size, close_timeout=close_timeout)
        self.path = path
        self._file = path.open("w", encoding="utf-8")
        self._failing = False
        self.status = "live"
        self._start()

    def _deliver(self, event: Event) -> None:
        """Write and flush the event's line."""
        try:
            self._file.write(encode(event) + "\n")
            self._file.flush()
        except OSError as error:
            self._count(sent=False)
            self.status = f"down: {one_line(error)}"
            if not self._failing:
                self._failing = True
                log.warning("%s: cannot write (%s); events are dropped", self.name, one_line(error))
            return
        self._count(sent=True)
        if self._failing:
            self._failing = False
            self.status = "live"
            log.warning("%s: writing again", self.name)

    def _finish(self) -> None:
        try:
            self._file.close()
        except OSError as error:
            log.warning("%s: cannot close (%s)", self.name, one_line(error))


class Webhook(_QueuedSink):
    """Each event POSTed as JSON to an http(s) URL. A failed POST (no connection, a timeout, a status other than
    2xx) is retried up to `retries` times, waiting `backoff` seconds and twice as long each time after, up to
    `backoff_max`; then the event is dropped (counted) and the endpoint counts as down (one warning) until a POST
    succeeds (one more). A user:password in the URL is sent as HTTP basic authentication and masked everywhere."""

    def __init__(self, url: str, *, queue_size: int = 1000, timeout: float = 5.0, retries: int = 3,
                 backoff: float = 0.5, backoff_max: float = 30.0, close_timeout: float = 5.0) -> None:
        parts = _split(url, WEBHOOK_SCHEMES, "a webhook")
        if timeout <= 0 or retries < 0 or not 0 < backoff <= backoff_max:
            raise ValueError(f"need timeout > 0, retries >= 0, 0 < backoff <= backoff_max; got {timeout}, "
                             f"{retries}, {backoff}, {backoff_max}")
        super().__init__(mask_credentials(url), queue_size=queue_size, close_timeout=close_timeout)
        self.timeout, self.retries, self.backoff, self.backoff_max = timeout, retries, backoff, backoff_max
        self._target = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        self._headers = {"Content-Type": "application/json", "User-Agent": "seg-video"}
        if parts.username is not None:
            secret = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(secret).decode("ascii")
        self._failures = 0  # POSTs failed in a row
        self._error = ""  # why the last one failed
        self._down = False
        self.status = "live"
        self._start()

    def _deliver(self, event: Event) -> None:
        """POST the event, retrying with backoff; count it sent or dropped."""
        body = encode(event).encode()
        for _ in range(self.retries + 1):
            if self._failures and not self._pause(min(self.backoff * 2 ** (self._failures - 1), self.backoff_max)):
                break
            try:
                self._post(body)
            except (OSError, http.client.HTTPException) as error:
                self._failures, self._error = self._failures + 1, _reason(error)
                self.status = f"retrying: {self._error}"
                log.debug("%s: POST failed: %s", self.name, self._error)
                continue
            self._count(sent=True)
            if self._down:
                log.warning("%s: delivering again", self.name)
            self._failures, self._down, self.status = 0, False, "live"
            return
        self._count(sent=False)
        self.status = f"down: {self._error}"
        if not self._down:
            self._down = True
            log.warning("%s: down (%s); events are dropped until it answers", self.name, self._error)

    def _post(self, body: bytes) -> None:
        """One POST within `timeout` (less once closing); raises on a failure or a status other than 2xx (urllib
        follows redirects and raises `HTTPError` for the rest)."""
        timeout = self.timeout
        if self._closing:
            timeout = max(0.1, min(timeout, self._deadline - time.monotonic()))
        request = urllib.request.Request(self._target, data=body, headers=self._headers, method="POST")
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()


def _reason(error: BaseException) -> str:
    """Why a POST failed, in one credential-free line."""
    code, reason = getattr(error, "code", None), getattr(error, "reason", None)
    if isinstance(code, int):
        text = f"HTTP {code} {reason or ''}".strip()
    elif isinstance(reason, BaseException):
        text = one_line(reason)
    else:
        text = str(reason) if isinstance(reason, str) else one_line(error)
    return mask_credentials(text)


class Mqtt(_QueuedSink):
    """Each event published with QoS 1 to an MQTT broker: `mqtt://[user:pass@]host[:port]/topic` (`mqtts://`: TLS
    with the system's certificates). paho-mqtt's network thread keeps the connection, reconnecting with backoff
    (1 s, doubling up to 30 s); messages not acknowledged when it is lost are sent again. An event counts as sent
    once the broker acknowledges it. While the broker is away, events wait (`MQTT_WINDOW` in the client, the rest in
    the queue up to its bound), then are dropped (counted); one warning line when the connection is lost, one when it
    is back."""

    def __init__(self, url: str, *, queue_size: int = 1000, client_id: str | None = None,
                 close_timeout: float = 5.0) -> None:
        parts, topic = _mqtt_target(url)
        super().__init__(mask_credentials(url), queue_size=queue_size, close_timeout=close_timeout)
        self.topic = topic
        self._unacked = 0  # messages handed to paho and not acknowledged yet
        self._lost_since: float | None = None
        self._connected_once = False
        import paho.mqtt.client as paho  # here, not at the top: only an MQTT sink needs paho-mqtt loaded
        from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

        self._kept = (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN)
        """What `publish` answers for a message it keeps (NO_CONN: kept, sent once connected)."""
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id or "")
        if parts.username is not None:
            self._client.username_pw_set(unquote(parts.username), unquote(parts.password or "") or None)
        if parts.scheme.lower() == "mqtts":
            self._client.tls_set()
        self._client.reconnect_delay_set(1, 30)
        self._client.max_inflight_messages_set(MQTT_WINDOW)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_publish = self._on_publish
        self._client.connect_async(parts.hostname or "", parts.port or MQTT_PORTS[parts.scheme.lower()])
        self._client.loop_start()
        self._start()

    def _deliver(self, event: Event) -> None:
        """Hand the event to paho once fewer than `MQTT_WINDOW` messages await their acknowledgement; the broker's
        acknowledgement counts it (`_on_publish`)."""
        with self._ready:
            while self._unacked >= MQTT_WINDOW and not self._expired():
                self._ready.wait(self._deadline - time.monotonic() if self._closing else None)
            room = self._unacked < MQTT_WINDOW
            if room:
                self._unacked += 1
        if not room:
            self._count(sent=False)
            return
        info = self._client.publish(self.topic, encode(event), qos=1)
        if info.rc not in self._kept:
            with self._ready:
                self._unacked -= 1
            self._count(sent=False)

    def _finish(self) -> None:
        """Wait (until close's deadline) for the last acknowledgements, count the missing ones as dropped,
        disconnect and stop paho's thread."""
        with self._ready:
            while self._unacked and not self._expired():
                self._ready.wait(self._deadline - time.monotonic())
            if not self._abandoned:
                self.dropped += self._unacked
            self._unacked = 0
        self._client.disconnect()
        self._client.loop_stop()

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        """paho: the broker acknowledged a message."""
        with self._ready:
            self._unacked = max(0, self._unacked - 1)
            if not self._abandoned:
                if getattr(reason, "is_failure", False):
                    self.dropped += 1
                else:
                    self.sent += 1
            self._ready.notify_all()

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        """paho: the broker answered the connection (accepted, or refused with a reason)."""
        if getattr(reason, "is_failure", False):
            self._went_down(f"refused: {reason}")
            return
        if self._lost_since is not None:
            log.warning("%s: connected again after %.1f s", self.name, time.monotonic() - self._lost_since)
        elif not self._connected_once:
            log.info("%s: connected", self.name)
        self._connected_once, self._lost_since, self.status = True, None, "live"

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        """paho: the connection ended (lost, or closed by `close`)."""
        if not self._closing:
            self._went_down(f"lost: {reason}")

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        """paho: a connection attempt failed (the broker is unreachable)."""
        if not self._closing:
            self._went_down("unreachable")

    def _went_down(self, why: str) -> None:
        """Note the connection is down, warning once until it is back."""
        self.status = f"down: {mask_credentials(why)}"
        if self._lost_since is None:
            self._lost_since = time.monotonic()
            log.warning("%s: %s; reconnecting, events wait in the queue (up to %d)", self.name,
                        self.status.removeprefix("down: "), self.queue_size)


def _split(url: str, schemes: tuple[str, ...], what: str) -> SplitResult:
    """`url` split, checked to have one of `schemes`, a host and a valid port; `ValueError` in one masked line."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme.lower() not in schemes or not parts.hostname or port == -1:
        raise ValueError(f"not {what} URL ({' or '.join(f'{s}://host[:port]/…' for s in schemes)}): "
                         f"{mask_credentials(url)}")
    return parts


def _mqtt_target(url: str) -> tuple[SplitResult, str]:
    """An MQTT URL split, and its topic (all after the host and its slash, decoded; no wildcards: a `#` would
    otherwise pass as the URL's fragment); `ValueError` else."""
    parts = _split(url, tuple(MQTT_PORTS), "an MQTT")
    topic = unquote(url.partition("://")[2][len(parts.netloc):].removeprefix("/"))
    if not topic or "+" in topic or "#" in topic:
        raise ValueError(f"an MQTT URL needs a topic without wildcards (mqtt://host/topic): {mask_credentials(url)}")
    return parts, topic


def open_sinks(events: Path | None, webhook: str | None, mqtt: str | None) -> list[EventSink]:
    """The sinks a run asks for (JSON Lines file, webhook URL, MQTT URL; None: not wanted). Every URL is checked
    before any sink starts (`ValueError`, one line, credentials masked); an unwritable file raises `OSError`."""
    if webhook is not None:
        _split(webhook, WEBHOOK_SCHEMES, "a webhook")
    if mqtt is not None:
        _mqtt_target(mqtt)
    sinks: list[EventSink] = []
    try:
        if events is not None:
            sinks.append(JsonLines(events))
        if webhook is not None:
            sinks.append(Webhook(webhook))
        if mqtt is not None:
            sinks.append(Mqtt(mqtt))
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    return sinks
