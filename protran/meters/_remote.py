"""A meter on another machine: a small TCP server streams its readings, ``RemoteMeter`` collects them.

Protocol (newline-delimited JSON over TCP; any number of clients at once, up to 16 connections,
each receiving every reading):

1. client -> server ``{"hello": 1, "token": "..."}`` (token only when the server has one)
2. server -> client ``{"meter": name, "t": server unix time, "interval_s": ...}``, or
   ``{"error": "..."}`` and the connection closes (wrong token, malformed hello)
3. server -> client ``{"t": unix time of the reading, "power_w": W}`` per reading (plus
   ``"energy_j"`` where the meter has a counter), until the client closes the connection, or
   ``{"error": "..."}`` before the server closes it (the meter failed to start or to stop).

Clients share one sampling session of the meter: it starts when the first client has been welcomed
and stops when the last one leaves, so a client's readings are those of the session from its
arrival on, in order and without gaps, the same readings every other client gets meanwhile.

Clocks: readings are stamped with the server's wall clock. The client estimates the offset between
the two wall clocks from the handshake round trip (offset = t_server - midpoint of the client's
send and receive times; error at most half the round trip, assuming symmetric delays and no drift
during a measurement) and maps readings onto its own ``time.monotonic``. Sync both clocks with NTP
for long runs. The token is a shared secret sent in clear text: use it on a trusted network or
through an SSH tunnel (``ssh -L``), and keep the default loopback bind otherwise.

Hostile peers: either side treats a line that is not a flat JSON object -- not UTF-8, longer than
64 KiB, nested deeper than a few levels, or with fields of the wrong type -- as malformed: the
server answers a bad hello with ``{"error": ...}`` and closes that connection, the client raises a
``MeterError``. The server drops a client that has not sent its hello within
``handshake_timeout_s`` (5 s) however it trickles bytes, and a streaming client whose connection
has taken no data for ``send_timeout_s`` (5 s). TCP does not tell the server whether the client
application reads, only whether the client's kernel still accepts data, so a client that stops
reading is dropped ``send_timeout_s`` after the buffers between the two ends fill: the server
keeps its side to a few tens of KB, but Linux grows an idle receiver's buffer up to
``net.ipv4.tcp_rmem``'s maximum (often 6-32 MB: minutes to an hour at a meter's few KB/s). A
tighter bound needs the client to acknowledge readings, which this protocol does not have. Such a
client only loses its own stream, though: the meter's sampler hands each reading to a bounded
per-client queue without waiting, and each client's own thread does the (blocking) sends, so the
other clients keep receiving every reading meanwhile. A client whose queue overflows (``_QUEUE_S``,
10 s of readings, behind) is dropped at once, as is one whose send times out.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import math
import queue
import select
import socket
import threading
import time
from typing import Any

from protran.meters._base import MeterError, MeterUnavailableError, PowerMeter, Reading

HANDSHAKE_TIMEOUT_S = 5.0
#: A streaming client whose connection takes no data for this long is dropped.
SEND_TIMEOUT_S = 5.0
_MAX_LINE_BYTES = 64 * 1024
#: Messages are flat objects (depth 1); anything much deeper is hostile, and bounding it keeps
#: json.loads, which recurses once per level, far from the recursion limit and the thread's stack.
_MAX_DEPTH = 8
#: The server's send buffer (Linux doubles it). Small, so that a client that stops reading fills
#: it -- and is noticed -- quickly; a meter's stream needs far less than this per round trip.
_SEND_BUFFER_BYTES = 16 * 1024
#: Connections handled at once (streaming or shaking hands): a flood of them must not exhaust
#: threads or file descriptors.
_MAX_CONNECTIONS = 16
#: Each streaming client's queue holds this many seconds of readings (within the bounds below); a
#: client whose sends fall that far behind is dropped. The meter's listener only ever appends to
#: the queues, so a slow client cannot hold up the meter or the other clients.
_QUEUE_S = 10.0
_MIN_QUEUED = 64
_MAX_QUEUED = 16384
#: Queued readings sent to a client in one write.
_MAX_BATCH = 256
#: How often a client's thread looks for its client leaving or the server closing while no
#: reading is queued.
_POLL_S = 0.2
#: How long close() waits for the server's threads, all together.
_CLOSE_WAIT_S = 10.0


def is_loopback_host(host: str) -> bool:
    """True when every address ``host`` resolves to is a loopback address."""
    if host in ("", "0.0.0.0", "::"):
        return False
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def check_bind(host: str, token: str | None) -> None:
    """Refuse an empty token, and a non-loopback bind without a token."""
    if token is not None and not token:
        raise ValueError("meter server: the token must not be empty")
    if token is None and not is_loopback_host(host):
        raise ValueError(
            f"meter server: refusing to serve on {host!r} without a token; anyone who can reach the "
            "port could read this machine's power. Pass a token (and the same one to the client), or "
            "bind to 127.0.0.1 and tunnel with `ssh -L`"
        )


def _send(connection: socket.socket, message: dict[str, Any]) -> None:
    connection.sendall(json.dumps(message, separators=(",", ":")).encode() + b"\n")


class _LineReader:
    """Newline-delimited JSON from a socket."""

    def __init__(self, connection: socket.socket) -> None:
        self._connection = connection
        self._buffer = bytearray()

    def read(self, deadline: float | None = None) -> dict[str, Any] | None:
        """The next message, or None when the peer closed the connection.

        ``deadline`` (a ``time.monotonic()`` value) bounds the whole read, where a socket timeout
        would bound each ``recv`` only and let a peer that trickles a byte at a time stall it for
        ever; past it, ``TimeoutError`` (an ``OSError``). A line that is not a JSON object raises
        ``MeterError``.
        """
        end = self._buffer.find(b"\n")
        while end < 0:
            if len(self._buffer) > _MAX_LINE_BYTES:
                raise MeterError("remote meter: message too long")
            if deadline is not None:
                remaining_s = deadline - time.monotonic()
                if remaining_s <= 0:
                    raise TimeoutError("remote meter: no complete message in time")
                self._connection.settimeout(remaining_s)
            chunk = self._connection.recv(65536)
            if not chunk:
                return None
            start = len(self._buffer)  # search only the new bytes: a trickling peer stays linear
            self._buffer += chunk
            end = self._buffer.find(b"\n", start)
        if end > _MAX_LINE_BYTES:
            raise MeterError("remote meter: message too long")
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        return _parse(line)


def _parse(line: bytes) -> dict[str, Any]:
    """One protocol line as a JSON object; anything else raises ``MeterError``."""
    try:
        text = line.decode("utf-8")  # decoded here so the depth scan sees what json.loads sees
        if _too_deep(text):
            raise ValueError(f"nested more than {_MAX_DEPTH} levels deep")
        message = json.loads(text)
    except ValueError as error:  # also JSONDecodeError, UnicodeDecodeError, too many digits
        raise MeterError(f"remote meter: malformed message {line[:100]!r} ({_printable(error)})") from error
    if not isinstance(message, dict):
        raise MeterError(f"remote meter: expected a JSON object, got {line[:100]!r}")
    return message


def _too_deep(text: str) -> bool:
    """Whether json.loads could recurse more than ``_MAX_DEPTH`` levels parsing ``text``.

    Counts brackets outside strings, with the parser's own string rules (a quote opens and closes,
    a backslash escapes the next character). A stray closer doesn't take the count below zero, so
    for malformed text the count can only over-estimate the parser's depth, which is never more than
    the openers minus the closers it has accepted. Cheap for flat messages: fewer openers than the
    limit cannot nest deeper, so the character loop only runs on odd lines.
    """
    if text.count("[") + text.count("{") <= _MAX_DEPTH:
        return False
    depth, in_string, escaped = 0, False, False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > _MAX_DEPTH:
                return True
        elif char in "]}":
            depth = max(depth - 1, 0)
    return False


def _printable(value: object, limit: int = 200) -> str:
    """``value`` as one short printable line: a hostile peer's text must not forge log lines or
    drive a terminal."""
    text = "".join(c if c.isprintable() else "?" for c in " ".join(str(value).split()))
    return text if len(text) <= limit else text[:limit] + "..."


def _number(message: dict[str, Any], key: str) -> float | None:
    """``message[key]`` as a float, None when absent or null; anything but a number is malformed."""
    value = message.get(key)
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        with contextlib.suppress(OverflowError):  # an integer too large for a float
            return float(value)
    raise MeterError(f"remote: malformed {key!r} in {_printable(message)}")


def _timestamp(message: dict[str, Any]) -> float:
    """``message["t"]``, which must be a finite number: readings are placed in time by it."""
    t = _number(message, "t")
    if t is None or not math.isfinite(t):
        raise MeterError(f"remote: missing or malformed 't' in {_printable(message)}")
    return t


class _Subscriber:
    """One streaming client: the meter's listener queues its readings, its own thread sends them."""

    __slots__ = ("connection", "dropped", "lines")

    def __init__(self, connection: socket.socket, size: int) -> None:
        self.connection = connection
        self.lines: queue.Queue[bytes] = queue.Queue(maxsize=size)
        self.dropped = threading.Event()  # set when its queue overflowed: it lost readings


def _queue_size(interval_s: float) -> int:
    """Queued readings per client: ``_QUEUE_S`` of the meter's stream, within bounds."""
    if not interval_s > 0:  # as fast as the sensor converts: rate unknown
        return _MAX_QUEUED
    return max(_MIN_QUEUED, min(_MAX_QUEUED, math.ceil(_QUEUE_S / interval_s)))


class MeterServer:
    """Serves one meter's readings to any number of clients at once, each receiving every reading.

    The clients share one sampling session: the meter starts when the first one subscribes and
    stops when the last one leaves. Binding to anything but a loopback address requires a
    ``token``. ``start()`` serves in a background thread; ``serve_forever()`` blocks.
    ``handshake_timeout_s`` and ``send_timeout_s`` bound how long a silent or a non-reading client
    keeps its own connection (see the module notes); neither holds up the other clients.
    ``busy_wait_s`` is accepted for compatibility and unused: no client waits for another any more.
    """

    def __init__(
        self,
        meter: PowerMeter,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        *,
        busy_wait_s: float = 2.0,  # unused: kept so that older callers still work
        handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S,
        send_timeout_s: float = SEND_TIMEOUT_S,
    ) -> None:
        check_bind(host, token)
        self.meter = meter
        self.token = token
        self.busy_wait_s = busy_wait_s
        self.handshake_timeout_s = handshake_timeout_s
        self.send_timeout_s = send_timeout_s
        self._socket = socket.create_server((host, port), family=_family(host), reuse_port=False)
        self._socket.settimeout(0.2)
        self.address: tuple[str, int] = self._socket.getsockname()[:2]
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._clients: list[threading.Thread] = []
        # Held around subscribing, unsubscribing and the meter's start and stop, so that a start
        # never interleaves with a stop. The meter's listener never takes it: stop() waits for
        # the sampling thread, which calls the listener.
        self._session_lock = threading.Lock()
        # Replaced, never mutated, under the session lock: the listener reads it without a lock.
        self._subscribers: tuple[_Subscriber, ...] = ()
        self._wall_minus_mono = 0.0  # of the current session: readings carry the wall clock
        # Open client connections, so that close() and a drop can wake a thread blocked on one.
        # A connection leaves the set (under the lock) before it is closed, so nobody shuts down
        # a descriptor that was closed and reused.
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def start(self) -> MeterServer:
        self._thread = threading.Thread(target=self.serve_forever, name="meter-server", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        while not self._closed.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._closed.is_set():
                    return
                time.sleep(0.1)  # out of descriptors, or a connection aborted before accept: keep serving
                continue
            self._clients = [c for c in self._clients if c.is_alive()]
            if len(self._clients) >= _MAX_CONNECTIONS:
                connection.close()  # slots free up as clients leave or time out
                continue
            client = threading.Thread(target=self._handle, args=(connection,), name="meter-client", daemon=True)
            self._clients.append(client)
            client.start()

    def close(self) -> None:
        """Stop serving: hang up on every client and wait (a bounded time) for their threads, the
        last of which stops the meter."""
        self._closed.set()
        self._socket.close()
        with self._connections_lock:
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv or send
        deadline = time.monotonic() + _CLOSE_WAIT_S
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=max(deadline - time.monotonic(), 0.0))
        for thread in list(self._clients):
            if thread is not threading.current_thread():
                thread.join(timeout=max(deadline - time.monotonic(), 0.0))

    def __enter__(self) -> MeterServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _authorised(self, hello: dict[str, Any] | None) -> bool:
        if hello is None or hello.get("hello") != 1:
            return False
        if self.token is None:
            return True
        offered = hello.get("token")
        # surrogatepass: JSON can carry lone surrogates ("\ud800"), which plain encode() rejects
        return isinstance(offered, str) and hmac.compare_digest(
            offered.encode("utf-8", "surrogatepass"), self.token.encode()
        )

    def _refusal(self, connection: socket.socket) -> str | None:
        """Read the client's hello: why it is refused, or None when it may stream.

        Raises ``OSError`` when the client is gone or sends no complete line within the handshake
        timeout; such a client just loses its connection.
        """
        try:
            hello = _LineReader(connection).read(deadline=time.monotonic() + self.handshake_timeout_s)
        except MeterError as error:
            return f"bad hello: {error}"
        if hello is not None and hello.get("hello") != 1:
            return 'bad hello: expected {"hello": 1}'
        return None if self._authorised(hello) else "unauthorised: wrong or missing token"

    def _handle(self, connection: socket.socket) -> None:
        with connection:
            with self._connections_lock:
                if self._closed.is_set():
                    return
                self._connections.add(connection)
            try:
                with contextlib.suppress(OSError):  # where refused, the system's default buffer applies
                    connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SEND_BUFFER_BYTES)
                try:
                    refusal = self._refusal(connection)
                    connection.settimeout(self.send_timeout_s)  # from here on, bounds every send
                    if refusal is not None:
                        _send(connection, {"error": refusal})
                        return
                    _send(connection, {"meter": self.meter.name, "t": time.time(), "interval_s": self.meter.interval_s})
                except OSError:
                    return
                self._serve(connection)
            finally:
                with self._connections_lock:
                    self._connections.discard(connection)

    def _serve(self, connection: socket.socket) -> None:
        """Stream the shared session's readings to a welcomed client until it leaves or is dropped."""
        subscriber = _Subscriber(connection, _queue_size(self.meter.interval_s))
        error = self._subscribe(subscriber)
        if error is None:
            try:
                self._stream(subscriber)
            except OSError:  # the client is gone, or took no data for send_timeout_s: dropped
                pass
            finally:
                error = self._unsubscribe(subscriber)
        if error is not None and not self._closed.is_set():
            with contextlib.suppress(OSError):  # the client learns why its stream ended, if still there
                _send(connection, {"error": error})

    def _subscribe(self, subscriber: _Subscriber) -> str | None:
        """Add a client to the session, starting the meter for the first one; why not, or None."""
        with self._session_lock:
            if self._closed.is_set():
                return "the meter server is shutting down"
            first = not self._subscribers
            if first:
                self._wall_minus_mono = time.time() - time.monotonic()
            # Subscribed before the start, so that the first client also gets the first reading.
            self._subscribers = (*self._subscribers, subscriber)
            if first:
                try:
                    self.meter.start(listener=self._broadcast, keep_readings=False)
                except Exception as error:  # reported to the client rather than ending the server
                    self._subscribers = ()
                    return f"{self.meter.name}: {error}"
        return None

    def _unsubscribe(self, subscriber: _Subscriber) -> str | None:
        """Remove a client, stopping the meter after the last one; why the stop failed, or None."""
        with self._session_lock:
            self._subscribers = tuple(s for s in self._subscribers if s is not subscriber)
            if self._subscribers:
                return None
            try:
                self.meter.stop()
            except Exception as error:
                return f"{self.meter.name}: {error}"
        return None

    def _broadcast(self, reading: Reading) -> None:
        """The meter's listener, on its sampling thread: queue the reading for every client.

        Never blocks on a client: one whose queue is full has fallen ``_QUEUE_S`` behind, and is
        dropped (its connection shut down, which wakes its thread) rather than waited for.
        """
        message: dict[str, Any] = {"t": reading.t_s + self._wall_minus_mono}
        if reading.power_w is not None:
            message["power_w"] = reading.power_w
        if reading.energy_j is not None:
            message["energy_j"] = reading.energy_j
        line = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        for subscriber in self._subscribers:
            if subscriber.dropped.is_set():
                continue
            try:
                subscriber.lines.put_nowait(line)
            except queue.Full:
                subscriber.dropped.set()
                with self._connections_lock:
                    if subscriber.connection in self._connections:
                        with contextlib.suppress(OSError):
                            subscriber.connection.shutdown(socket.SHUT_RDWR)

    def _stream(self, subscriber: _Subscriber) -> None:
        """Send a client its queued readings until it leaves, is dropped or the server closes.

        Each send blocks this client's thread only, for at most ``send_timeout_s`` (the
        connection's timeout); one that times out raises ``OSError``, which drops the client.
        """
        connection = subscriber.connection
        while not subscriber.dropped.is_set() and not self._closed.is_set():
            lines = []
            with contextlib.suppress(queue.Empty):
                lines.append(subscriber.lines.get(timeout=_POLL_S))
                while len(lines) < _MAX_BATCH:
                    lines.append(subscriber.lines.get_nowait())
            if lines and not subscriber.dropped.is_set():
                connection.sendall(b"".join(lines))
            # The client ends the stream by closing the connection; it sends nothing else.
            if select.select([connection], [], [], 0)[0] and not connection.recv(1024):
                return


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def serve_meter(meter: PowerMeter, host: str = "127.0.0.1", port: int = 8765, token: str | None = None) -> None:
    """Serve ``meter`` until interrupted (Ctrl-C)."""
    server = MeterServer(meter, host, port, token)
    try:
        server.serve_forever()
    finally:
        server.close()


def run_meter_server(
    meter_name: str, host: str = "127.0.0.1", port: int = 8765, token: str | None = None, **meter_options: Any
) -> None:
    """``protran meter-server``: open the named meter and serve it until Ctrl-C."""
    from protran.meters._auto import detect_meter

    check_bind(host, token)  # before opening the meter
    meter = detect_meter(meter_name, **meter_options)
    if meter is None:
        raise MeterUnavailableError("meter server: no power meter found on this machine; name one explicitly")
    try:
        server = MeterServer(meter, host, port, token)
    except BaseException:
        meter.close()
        raise
    print(f"serving {meter.name} on {server.address[0]}:{server.address[1]} (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        meter.close()


class RemoteMeter(PowerMeter):
    """Readings of a meter served by ``protran meter-server`` on another machine.

    Timestamps are mapped onto this process's ``time.monotonic`` (see the module notes on clocks);
    ``clock_offset_s`` and ``round_trip_s`` hold the last handshake's estimate.
    """

    name = "remote"
    default_interval_s = 0.0  # paced by the server

    def __init__(self, host: str, port: int, token: str | None = None, *, connect_timeout_s: float = 5.0) -> None:
        super().__init__(interval_s=None)
        self.host, self.port, self.token = host, int(port), token
        self.connect_timeout_s = connect_timeout_s
        self.remote_meter: str | None = None
        self.clock_offset_s: float | None = None
        self.round_trip_s: float | None = None
        self._connection: socket.socket | None = None
        self._connection_lock = threading.Lock()

    @classmethod
    def unavailable_reason(cls, host: str = "127.0.0.1", port: int = 8765, **options: Any) -> str | None:
        try:
            with socket.create_connection((host, int(port)), timeout=options.get("connect_timeout_s", 2.0)):
                return None
        except OSError as error:
            return f"remote: cannot reach a meter server at {host}:{port} ({error}); is `protran meter-server` running?"

    def check(self) -> RemoteMeter:
        """Shake hands with the server once and hang up: a meter that is unreachable or refuses the
        token fails here, as :class:`MeterUnavailableError`, before anything is measured."""
        connection, _ = self._connect()
        connection.close()
        return self

    def _connect(self) -> tuple[socket.socket, _LineReader]:
        try:
            connection = socket.create_connection((self.host, self.port), timeout=self.connect_timeout_s)
        except OSError as error:
            raise MeterUnavailableError(
                f"remote: cannot reach a meter server at {self.host}:{self.port} ({error}); "
                "is `protran meter-server` running?"
            ) from error
        reader = _LineReader(connection)
        try:
            sent_s = time.time()
            _send(connection, {"hello": 1, **({"token": self.token} if self.token is not None else {})})
            welcome = reader.read(deadline=time.monotonic() + self.connect_timeout_s)
            received_s = time.time()
            if welcome is not None and "error" not in welcome:
                self._accept_welcome(welcome, sent_s, received_s)
        except (OSError, MeterError) as error:
            connection.close()
            raise MeterUnavailableError(f"remote: handshake with {self.host}:{self.port} failed: {error}") from error
        if welcome is None or "error" in welcome:
            connection.close()
            reason = _printable(welcome["error"]) if welcome else "the server closed the connection"
            raise MeterUnavailableError(f"remote: {self.host}:{self.port} refused: {reason}")
        connection.settimeout(None)
        return connection, reader

    def _accept_welcome(self, welcome: dict[str, Any], sent_s: float, received_s: float) -> None:
        """Take the meter's name, pace and clock offset from the server's welcome."""
        t_server = _timestamp(welcome)
        self.remote_meter = _printable(welcome.get("meter"))
        interval_s = _number(welcome, "interval_s")
        if interval_s is not None and 0 <= interval_s < math.inf:
            self.interval_s = interval_s  # informational: the server paces the stream
        self.round_trip_s = received_s - sent_s
        self.clock_offset_s = t_server - (sent_s + received_s) / 2

    def _to_local(self, message: dict[str, Any], wall_minus_mono: float) -> Reading:
        if "error" in message:
            raise MeterError(f"remote: server error: {_printable(message['error'])}")
        assert self.clock_offset_s is not None  # set by the handshake
        local_wall = _timestamp(message) - self.clock_offset_s
        return Reading(local_wall - wall_minus_mono, _number(message, "power_w"), _number(message, "energy_j"))

    def _sampling_loop(self, stop: threading.Event, emit) -> None:
        connection, reader = self._connect()
        with self._connection_lock:
            self._connection = connection
        wall_minus_mono = time.time() - time.monotonic()
        try:
            while True:
                message = reader.read()
                if message is None:
                    if stop.is_set():
                        return
                    raise MeterError(f"remote: {self.host}:{self.port} closed the stream")
                emit(self._to_local(message, wall_minus_mono))
                if stop.is_set():
                    return
        except OSError:
            if not stop.is_set():
                raise
        finally:
            with self._connection_lock:
                self._connection = None
            connection.close()

    def _abort_sampling(self) -> None:
        with self._connection_lock:
            if self._connection is not None:
                with contextlib.suppress(OSError):
                    self._connection.shutdown(socket.SHUT_RDWR)

    def read_power_w(self) -> float:
        connection, reader = self._connect()
        with connection:
            while True:
                message = reader.read()
                if message is None:
                    raise MeterError(f"remote: {self.host}:{self.port} closed the stream")
                reading = self._to_local(message, 0.0)
                if reading.power_w is not None:
                    return reading.power_w

    def __repr__(self) -> str:
        return f"RemoteMeter(host={self.host!r}, port={self.port})"
