"""Meter server and RemoteMeter over loopback, with a local stand-in meter."""

from __future__ import annotations

import json
import socket
import time

import pytest

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

    def open_server(meter=None, token=None, busy_wait_s=2.0):
        instance = MeterServer(meter or CountingMeter(), "127.0.0.1", 0, token, busy_wait_s=busy_wait_s).start()
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


def test_second_client_is_told_the_meter_is_busy(server):
    host, port = server(busy_wait_s=0.05).address
    first = RemoteMeter(host, port)
    first.start()
    try:
        with pytest.raises(MeterUnavailableError, match="busy"):
            RemoteMeter(host, port).start()
    finally:
        first.stop()
    assert first.interval_s == CountingMeter.default_interval_s


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
