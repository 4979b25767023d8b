"""Meter server and RemoteMeter over loopback, with a local stand-in meter."""

from __future__ import annotations

import contextlib
import json
import math
import select
import socket
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protran.meters import MeterError, MeterServer, MeterUnavailableError, PowerMeter, RemoteMeter, run_meter_server
from protran.meters._remote import is_loopback_host


class CountingMeter(PowerMeter):
    """Power 1, 2, 3, ... W, every few milliseconds."""

    name = "counting"
    default_interval_s = 0.005

    def __init__(self, fail_on_start: bool = False):
        super().__init__()
        self.count = 0
        self.fail_on_start = fail_on_start

    def read_power_w(self) -> float:
        if self.fail_on_start:
            raise MeterError("counting: sensor missing")
        self.count += 1
        return float(self.count)


@pytest.fixture
def server():
    servers = []

    def open_server(meter=None, token=None, busy_wait_s=2.0, **options):
        instance = MeterServer(meter or CountingMeter(), "127.0.0.1", 0, token, busy_wait_s=busy_wait_s, **options)
        instance.start()
        servers.append(instance)
        return instance

    yield open_server
    for instance in servers:
        instance.close()


def test_samples_arrive_and_cover_the_window(server):
    host, port = server(token="s3cret").address
    meter = RemoteMeter(host, port, token="s3cret")
    meter.start()
    t0 = time.monotonic()
    time.sleep(0.05)
    t1 = time.monotonic()
    trace = meter.stop()
    assert meter.remote_meter == "counting"
    assert len(trace) >= 2
    # The stand-in counts up: the stream arrived complete and in order.
    assert list(trace.power_w) == [float(i) for i in range(int(trace.power_w[0]), int(trace.power_w[0]) + len(trace))]
    # One clock on both ends: the offset estimate is within half the handshake's round trip, and the
    # window is covered up to that error.
    bound_s = meter.round_trip_s / 2 + 1e-3
    assert meter.round_trip_s >= 0 and abs(meter.clock_offset_s) <= bound_s
    assert trace.timestamps_s[0] <= t0 + bound_s and trace.timestamps_s[-1] >= t1 - bound_s


def test_server_serves_clients_one_after_another(server):
    host, port = server().address
    first = RemoteMeter(host, port)
    with first:
        time.sleep(0.02)
    second = RemoteMeter(host, port)
    assert second.read_power_w() >= 1.0
    with second:
        time.sleep(0.02)
    assert len(first.last_trace) >= 2 and len(second.last_trace) >= 2


def _consecutive(trace) -> bool:
    """Whether a CountingMeter's trace came through complete: 1 W more per reading, none missing."""
    return len(trace) >= 2 and list(trace.power_w) == [trace.power_w[0] + i for i in range(len(trace))]


def test_concurrent_clients_each_receive_every_reading(server):
    host, port = server().address
    first, second = RemoteMeter(host, port), RemoteMeter(host, port)
    first.start()
    try:
        second.start()
        time.sleep(0.05)
        second_trace = second.stop()
    finally:
        first_trace = first.stop()
    assert first.interval_s == CountingMeter.default_interval_s
    # One sampling session: both streams count up without gaps, and the second's lies inside the first's.
    assert _consecutive(first_trace) and _consecutive(second_trace)
    assert first_trace.power_w[0] <= second_trace.power_w[0] and second_trace.power_w[-1] <= first_trace.power_w[-1]


class StartStopCountingMeter(CountingMeter):
    """Counts its starts and stops; the first ``failing_starts`` starts fail, stops take ``stop_delay_s``."""

    def __init__(self, failing_starts: int = 0, stop_delay_s: float = 0.0):
        super().__init__()
        self.starts = self.stops = 0
        self.failing_starts, self.stop_delay_s = failing_starts, stop_delay_s

    def start(self, listener=None, **options):
        self.starts += 1
        if self.starts <= self.failing_starts:
            raise MeterError("counting: not yet")
        super().start(listener, **options)

    def stop(self):
        self.stops += 1
        time.sleep(self.stop_delay_s)
        return super().stop()


def _wait_for(condition, limit_s: float = 2.0) -> bool:
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_the_meter_starts_for_the_first_client_and_stops_after_the_last(server):
    meter = StartStopCountingMeter()
    host, port = server(meter).address
    first, second = RemoteMeter(host, port), RemoteMeter(host, port)
    first.start()
    second.start()
    assert (meter.starts, meter.stops) == (1, 0)
    first.stop()
    time.sleep(0.3)  # the server notices within its poll interval
    assert (meter.starts, meter.stops) == (1, 0) and meter.running
    assert _consecutive(second.stop())
    assert _wait_for(lambda: meter.stops == 1 and not meter.running)
    assert meter.starts == 1


def test_a_client_arriving_while_the_last_one_leaves_gets_a_fresh_session(server, escaped):
    # The stop takes a while: the newcomer's start must wait for it rather than interleave.
    meter = StartStopCountingMeter(stop_delay_s=0.2)
    host, port = server(meter).address
    with RemoteMeter(host, port):
        pass
    assert _wait_for(lambda: meter.stops == 1)  # the server is stopping the meter now
    late = RemoteMeter(host, port)
    with late:
        time.sleep(0.02)
    assert _consecutive(late.last_trace)
    assert _wait_for(lambda: (meter.starts, meter.stops) == (2, 2))
    assert not escaped


def test_a_failed_start_reaches_its_client_and_the_next_client_retries(server):
    meter = StartStopCountingMeter(failing_starts=1)
    host, port = server(meter).address
    with pytest.raises(MeterError, match="not yet"):
        RemoteMeter(host, port).start()
    assert RemoteMeter(host, port).read_power_w() >= 1.0
    assert meter.starts == 2


def test_close_with_streaming_clients_returns_promptly(server, escaped):
    meter = CountingMeter()
    instance = server(meter)
    clients = [RemoteMeter(*instance.address) for _ in range(3)]
    for client in clients:
        client.start()
    with socket.create_connection(instance.address) as idle:  # welcomed, then never reads
        idle.sendall(b'{"hello": 1}\n')
        assert select.select([idle], [], [], 5)[0]
        start = time.monotonic()
        instance.close()
        assert time.monotonic() - start < 3.0
    assert not meter.running
    for client in clients:
        with pytest.raises(MeterError, match="closed the stream"):
            client.stop()
    assert not escaped


def test_wrong_or_missing_token_is_refused(server):
    host, port = server(token="s3cret").address
    with pytest.raises(MeterUnavailableError, match="unauthorised"):
        RemoteMeter(host, port, token="guess").start()
    with pytest.raises(MeterUnavailableError, match="unauthorised"):
        RemoteMeter(host, port).start()


def test_raw_client_without_hello_gets_no_samples(server):
    host, port = server(token="s3cret").address
    with socket.create_connection((host, port), timeout=5) as connection:
        connection.sendall(b'{"hello": 1, "token": 42}\n')
        reply = json.loads(connection.makefile().readline())
    assert "error" in reply and "power_w" not in reply


def test_non_loopback_bind_needs_a_token():
    with pytest.raises(ValueError, match="without a token"):
        MeterServer(CountingMeter(), "0.0.0.0", 0)
    with pytest.raises(ValueError, match="empty"):
        MeterServer(CountingMeter(), "127.0.0.1", 0, token="")


def test_loopback_detection():
    assert is_loopback_host("127.0.0.1") and is_loopback_host("localhost")
    assert not is_loopback_host("0.0.0.0") and not is_loopback_host("")


def test_meter_failure_on_the_server_reaches_the_client(server):
    host, port = server(CountingMeter(fail_on_start=True)).address
    with pytest.raises(MeterError, match="sensor missing"):
        RemoteMeter(host, port).start()


def test_unreachable_server_is_unavailable():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert "cannot reach" in RemoteMeter.unavailable_reason("127.0.0.1", port)
    with pytest.raises(MeterUnavailableError, match="meter-server"):
        RemoteMeter("127.0.0.1", port).start()


def test_run_meter_server_checks_before_opening_anything(monkeypatch):
    opened = []
    monkeypatch.setattr("protran.meters._auto.detect_meter", lambda *a, **k: opened.append(a))
    with pytest.raises(ValueError, match="without a token"):
        run_meter_server("rapl", host="0.0.0.0", port=0)
    assert not opened
    with pytest.raises(MeterUnavailableError, match="no power meter found"):
        run_meter_server("auto", host="127.0.0.1", port=0)


# -- hostile peers ------------------------------------------------------------------------------


class FastCountingMeter(CountingMeter):
    """Counts every half millisecond: fills a non-reading client's socket buffers within a second."""

    default_interval_s = 0.0005


@contextlib.contextmanager
def _escaped_thread_exceptions():
    """Collects exceptions that escape any thread inside the block (a server thread must not let one)."""
    escaped: list[BaseException | None] = []
    previous, threading.excepthook = threading.excepthook, lambda args: escaped.append(args.exc_value)
    try:
        yield escaped
    finally:
        threading.excepthook = previous


@pytest.fixture
def escaped():
    with _escaped_thread_exceptions() as exceptions:
        yield exceptions


def _exchange(address, payload: bytes) -> list[dict]:
    """Send ``payload`` as a client; the server's replies, read until it hangs up."""
    received = b""
    # A server that stops reading may reset a long send: what it answered before that still counts.
    with socket.create_connection(address, timeout=5) as connection, contextlib.suppress(ConnectionError):
        connection.sendall(payload)
        while chunk := connection.recv(65536):
            received += chunk
    return [json.loads(line) for line in received.splitlines()]


def _assert_refused_and_still_serving(server, payload: bytes, token: str | None = None) -> None:
    replies = _exchange(server.address, payload)
    assert all(set(reply) == {"error"} for reply in replies), replies
    assert RemoteMeter(*server.address, token=token).read_power_w() >= 1.0


def _seconds_until_closed(connection: socket.socket, trickle: bool = False, limit_s: float = 5.0) -> float:
    """How long until the server hangs up on ``connection``, sending a byte every 50 ms if ``trickle``."""
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        if trickle:
            with contextlib.suppress(OSError):
                connection.send(b" ")
        if select.select([connection], [], [], 0.05)[0]:
            with contextlib.suppress(ConnectionResetError):
                if connection.recv(65536):
                    continue
            return time.monotonic() - start
    return math.inf


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"[" * 30_000 + b"]" * 30_000 + b"\n", id="deep-array"),
        pytest.param(b'{"":' * 12_000 + b"0" + b"}" * 12_000 + b"\n", id="deep-object"),
        pytest.param(b'{"hello": 1, "token": ' + b"[" * 20 + b"]" * 20 + b"}\n", id="deep-token"),
        pytest.param(b"\xff\xfe\x00garbage\n", id="not-utf8"),
        pytest.param(b"1" * 5_000 + b"\n", id="too-many-digits"),
        pytest.param(b'{"hello": 1, "token": "\\ud800"}\n', id="lone-surrogate-token"),
        pytest.param(b"[1, 2]\n", id="not-an-object"),
        pytest.param(b'{"hello": 2}\n', id="wrong-hello"),
        pytest.param(b"x" * 100_000 + b"\n", id="too-long"),
    ],
)
def test_hostile_hello_is_refused_and_the_server_keeps_serving(server, escaped, payload):
    instance = server(token="s3cret")
    _assert_refused_and_still_serving(instance, payload, token="s3cret")
    assert not escaped


def test_deep_json_gets_a_one_line_error_reply(server):
    (reply,) = _exchange(server().address, b"[" * 30_000 + b"]" * 30_000 + b"\n")
    assert reply["error"].startswith("bad hello") and "nested" in reply["error"]


@contextlib.contextmanager
def _hostile_server(*lines: bytes):
    """A one-shot server that answers the hello with ``lines``, then waits for the client to hang up."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)

    def serve() -> None:
        with listener, contextlib.suppress(OSError):
            connection, _ = listener.accept()
            with connection:
                connection.settimeout(5)
                connection.recv(65536)  # the hello
                connection.sendall(b"".join(lines))
                while connection.recv(65536):
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[:2]
    finally:
        thread.join(timeout=10)


def _welcome() -> bytes:
    return json.dumps({"meter": "evil", "t": time.time(), "interval_s": 0.01}).encode() + b"\n"


@pytest.mark.parametrize(
    ("lines", "error"),
    [
        pytest.param([b"[" * 30_000 + b"]" * 30_000 + b"\n"], MeterUnavailableError, id="deep-welcome"),
        pytest.param([b'{"meter": "evil"}\n'], MeterUnavailableError, id="welcome-without-time"),
        pytest.param([b'{"error": "line one\\nforged: line two\\u001b[2J"}\n'], MeterUnavailableError, id="error"),
        pytest.param(["deep-reading"], MeterError, id="deep-reading"),
        pytest.param(["garbage-reading"], MeterError, id="garbage-reading"),
        pytest.param(["infinite-time"], MeterError, id="infinite-time"),
        pytest.param(["text-power"], MeterError, id="text-power"),
        pytest.param(["huge-power"], MeterError, id="huge-power"),
    ],
)
def test_hostile_server_lines_are_one_line_meter_errors(lines, error):
    readings = {
        "deep-reading": b'{"t": 1, "power_w": ' + b"[" * 30_000 + b"]" * 30_000 + b"}\n",
        "garbage-reading": b"\x00\xff not json\n",
        "infinite-time": b'{"t": 1e999, "power_w": 1}\n',
        "text-power": b'{"t": 1, "power_w": "lots"}\n',
        "huge-power": b'{"t": 1, "power_w": ' + b"9" * 400 + b"}\n",
    }
    if lines[0] in readings:
        lines = [_welcome(), readings[lines[0]]]
    with _hostile_server(*lines) as (host, port), pytest.raises(error) as raised:
        RemoteMeter(host, port, connect_timeout_s=5).start()
    message = str(raised.value)
    assert "\n" not in message and "\x1b" not in message and len(message) < 600


def test_silent_or_trickling_client_is_dropped_after_the_handshake_timeout(server, escaped):
    instance = server(handshake_timeout_s=0.3)
    with socket.create_connection(instance.address) as silent, socket.create_connection(instance.address) as slow:
        slow.sendall(b'{"hello"')
        # Neither holds the meter meanwhile.
        assert RemoteMeter(*instance.address).read_power_w() >= 1.0
        assert _seconds_until_closed(silent) < 2.0
        assert _seconds_until_closed(slow, trickle=True) < 2.0  # a byte every 50 ms does not extend it
    assert not escaped


def _welcomed_idle_client(address, receive_buffer: int | None = None) -> socket.socket:
    """A client that shakes hands, reads the welcome and then never reads again."""
    idle = socket.socket()
    if receive_buffer is not None:  # fixed and small: the kernel would otherwise keep growing it
        idle.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    idle.connect(address)
    idle.settimeout(5)
    idle.sendall(b'{"hello": 1}\n')
    assert b"interval_s" in idle.recv(200)
    return idle


def test_a_client_that_stops_reading_does_not_hold_up_the_others(server, escaped):
    # Default timeouts and buffers: the idle client stays connected for the whole test, as it would
    # for minutes to an hour in the field (see the module notes).
    instance = server(busy_wait_s=0.05)
    with _welcomed_idle_client(instance.address):
        reader = RemoteMeter(*instance.address)
        start = time.monotonic()
        reader.start()
        assert time.monotonic() - start < 1.0
        time.sleep(0.05)
        assert _consecutive(reader.stop())
    assert not escaped


def test_client_that_stops_reading_is_dropped_without_disturbing_the_others(server, escaped):
    instance = server(FastCountingMeter(), send_timeout_s=0.2)
    reader = RemoteMeter(*instance.address)
    with _welcomed_idle_client(instance.address, receive_buffer=4096) as idle:
        reader.start()
        # Dropped once the buffers between the two ends fill and a send times out (the test reads
        # the server's list, since reading the socket would make the client a reading one).
        assert _wait_for(lambda: len(instance._subscribers) == 1, limit_s=5.0)
        # The idle client's connection was closed: what was buffered drains, then end of stream.
        while idle.recv(65536):
            pass
    time.sleep(0.05)
    # The reader got every reading, before, during and after the drop.
    assert _consecutive(reader.stop())
    assert not escaped


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_garbage_lines = st.one_of(
    st.binary(max_size=300).map(lambda raw: raw.replace(b"\n", b"")),
    _json_values.map(lambda value: json.dumps(value).encode()),
    st.fixed_dictionaries({"hello": _json_values}, optional={"token": _json_values}).map(
        lambda hello: json.dumps(hello).encode()
    ),
    st.integers(9, 30_000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(9, 12_000).map(lambda depth: b'{"":' * depth + b"0" + b"}" * depth),
)


def test_server_survives_arbitrary_garbage(server):
    # One server for all examples: a run of garbage must not wear it down either.
    instance = server(token="s3cret")

    @settings(max_examples=30, deadline=None)
    @given(line=_garbage_lines)
    def check(line: bytes) -> None:
        with _escaped_thread_exceptions() as escaped:
            _assert_refused_and_still_serving(instance, line + b"\n", token="s3cret")
        assert not escaped

    check()


def test_a_named_remote_meter_is_checked_when_opened(server):
    """``detect_meter("remote:...")`` shakes hands at once: an unreachable server or a wrong token
    fails before anything is measured, not at the first measurement."""
    from protran.meters import MeterUnavailableError, detect_meter

    running = server(token="t")
    host, port = running.address[:2]
    meter = detect_meter(f"remote:{host}:{port}", token="t")
    assert isinstance(meter, RemoteMeter) and (meter.host, meter.port, meter.token) == (host, port, "t")
    assert meter.remote_meter == "counting"
    with pytest.raises(MeterUnavailableError, match="refused"):
        detect_meter(f"remote:{host}:{port}", token="wrong")
    running.close()
    with pytest.raises(MeterUnavailableError, match="cannot reach"):
        detect_meter(f"remote:{host}:{port}", token="t")
