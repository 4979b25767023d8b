"""A meter on another machine: a small TCP server streams its readings, ``RemoteMeter`` collects them.

Protocol (newline-delimited JSON over TCP, one client at a time):

1. client -> server ``{"hello": 1, "token": "..."}`` (token only when the server has one)
2. server -> client ``{"meter": name, "t": server unix time, "interval_s": ...}``, or
   ``{"error": "..."}`` and the connection closes (wrong token, meter failure)
3. server -> client ``{"t": unix time of the reading, "power_w": W}`` per reading (plus
   ``"energy_j"`` where the meter has a counter), until the client closes the connection.

Clocks: readings are stamped with the server's wall clock. The client estimates the offset between
the two wall clocks from the handshake round trip (offset = t_server - midpoint of the client's
send and receive times; error at most half the round trip, assuming symmetric delays and no drift
during a measurement) and maps readings onto its own ``time.monotonic``. Sync both clocks with NTP
for long runs. The token is a shared secret sent in clear text: use it on a trusted network or
through an SSH tunnel (``ssh -L``), and keep the default loopback bind otherwise.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import select
import socket
import threading
import time
from typing import Any

from protran.meters._base import MeterError, MeterUnavailableError, PowerMeter, Reading

HANDSHAKE_TIMEOUT_S = 5.0
_MAX_LINE_BYTES = 64 * 1024


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
        self._buffer = b""

    def read(self) -> dict[str, Any] | None:
        """The next message, or None when the peer closed the connection."""
        while b"\n" not in self._buffer:
            chunk = self._connection.recv(65536)
            if not chunk:
                return None
            self._buffer += chunk
            if len(self._buffer) > _MAX_LINE_BYTES and b"\n" not in self._buffer:
                raise MeterError("remote meter: message too long")
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            message = json.loads(line)
        except json.JSONDecodeError as error:
            raise MeterError(f"remote meter: malformed message {line[:100]!r}") from error
        if not isinstance(message, dict):
            raise MeterError(f"remote meter: expected a JSON object, got {line[:100]!r}")
        return message


class MeterServer:
    """Serves one meter's readings to one client at a time (others are told it is busy).

    Binding to anything but a loopback address requires a ``token``. ``start()`` serves in a
    background thread; ``serve_forever()`` blocks.
    """

    def __init__(
        self,
        meter: PowerMeter,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        *,
        busy_wait_s: float = 2.0,
    ) -> None:
        check_bind(host, token)
        self.meter = meter
        self.token = token
        self.busy_wait_s = busy_wait_s
        self._socket = socket.create_server((host, port), family=_family(host), reuse_port=False)
        self._socket.settimeout(0.2)
        self.address: tuple[str, int] = self._socket.getsockname()[:2]
        self._closed = threading.Event()
        self._busy = threading.Lock()  # one meter, so one streaming client at a time
        self._thread: threading.Thread | None = None
        self._clients: list[threading.Thread] = []

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
                raise
            client = threading.Thread(target=self._handle, args=(connection,), name="meter-client", daemon=True)
            self._clients = [c for c in self._clients if c.is_alive()] + [client]
            client.start()

    def close(self) -> None:
        self._closed.set()
        self._socket.close()
        for thread in [self._thread, *self._clients]:
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=5.0)

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
        return isinstance(offered, str) and hmac.compare_digest(offered.encode(), self.token.encode())

    def _handle(self, connection: socket.socket) -> None:
        with connection:
            connection.settimeout(HANDSHAKE_TIMEOUT_S)
            try:
                hello = _LineReader(connection).read()
            except (OSError, MeterError):
                return
            try:
                if not self._authorised(hello):
                    _send(connection, {"error": "unauthorised: wrong or missing token"})
                    return
                # A client that just left may still be stopping the meter: wait a little for it.
                if not self._busy.acquire(timeout=self.busy_wait_s):
                    _send(connection, {"error": "busy: the meter is streaming to another client"})
                    return
            except OSError:
                return
            try:
                _send(connection, {"meter": self.meter.name, "t": time.time(), "interval_s": self.meter.interval_s})
                self._stream(connection)
            except OSError:
                return
            finally:
                self._busy.release()

    def _stream(self, connection: socket.socket) -> None:
        connection.settimeout(10.0)  # a client that stops reading for this long is dropped
        wall_minus_mono = time.time() - time.monotonic()
        gone = threading.Event()

        def forward(reading: Reading) -> None:
            if gone.is_set():
                return
            message: dict[str, Any] = {"t": reading.t_s + wall_minus_mono}
            if reading.power_w is not None:
                message["power_w"] = reading.power_w
            if reading.energy_j is not None:
                message["energy_j"] = reading.energy_j
            try:
                _send(connection, message)
            except OSError:
                gone.set()

        try:
            self.meter.start(listener=forward)
        except Exception as error:  # reported to the client rather than ending the server
            with contextlib.suppress(OSError):
                _send(connection, {"error": f"{self.meter.name}: {error}"})
            return
        try:
            # The client ends the stream by closing the connection; it sends nothing else.
            while not gone.is_set() and not self._closed.is_set():
                readable, _, _ = select.select([connection], [], [], 0.2)
                if readable:
                    try:
                        if not connection.recv(1024):
                            break
                    except OSError:
                        break
        finally:
            gone.set()
            try:
                self.meter.stop()
            except Exception as error:  # the client learns why its stream ended, if still there
                with contextlib.suppress(OSError):
                    _send(connection, {"error": f"{self.meter.name}: {error}"})


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
            welcome = reader.read()
            received_s = time.time()
        except (OSError, MeterError) as error:
            connection.close()
            raise MeterUnavailableError(f"remote: handshake with {self.host}:{self.port} failed: {error}") from error
        if welcome is None or "error" in welcome:
            connection.close()
            reason = welcome["error"] if welcome else "the server closed the connection"
            raise MeterUnavailableError(f"remote: {self.host}:{self.port} refused: {reason}")
        self.remote_meter = str(welcome.get("meter"))
        if isinstance(welcome.get("interval_s"), (int, float)):
            self.interval_s = float(welcome["interval_s"])  # informational: the server paces the stream
        self.round_trip_s = received_s - sent_s
        self.clock_offset_s = float(welcome["t"]) - (sent_s + received_s) / 2
        connection.settimeout(None)
        return connection, reader

    def _to_local(self, message: dict[str, Any], wall_minus_mono: float) -> Reading:
        if "error" in message:
            raise MeterError(f"remote: server error: {message['error']}")
        local_wall = float(message["t"]) - self.clock_offset_s
        power = message.get("power_w")
        energy = message.get("energy_j")
        return Reading(
            local_wall - wall_minus_mono,
            None if power is None else float(power),
            None if energy is None else float(energy),
        )

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
