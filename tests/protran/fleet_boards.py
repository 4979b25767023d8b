"""Simulated boards for the fleet tests (``PROTRAN_FLEET_FAKE_BOARD=tests.protran.fleet_boards:NAME``).

They run inside the Ray worker on the "board" (this machine), so one can kill its own worker, as a board
that disconnects mid-measurement does. Markers go to ``PROTRAN_TEST_FLEET_DIR`` (set where the test's
cluster was started, which the workers inherit); each test uses its own callable, so markers do not mix.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from protran._fleet import simulated_board


def _marker(name: str) -> Path:
    return Path(os.environ["PROTRAN_TEST_FLEET_DIR"]) / name


def _log(board: str, spec, what: str) -> None:
    """Every call, so a test can tell which architectures each board was asked to measure: ``what`` is
    the callable's name, with ``:killed`` or ``:raised`` where the call did not return."""
    from flexibert import model_hash

    with _marker("calls.log").open("a") as log:
        log.write(f"{what} {board} {model_hash(spec)}\n")


def _die_once(board: str, spec, *, on: str, at_call: int, what: str) -> None:
    """Kill this worker (SIGKILL) in its measurement number ``at_call`` (from 0) on board ``on``, once:
    the marker ``died_once_on_<on>`` holds the killed pid, ``count_<on>`` the calls so far."""
    marker, count = _marker(f"died_once_on_{on}"), _marker(f"count_{on}")
    if board == on and not marker.exists():
        calls = int(count.read_text()) if count.exists() else 0
        count.write_text(str(calls + 1))
        if calls == at_call:
            marker.write_text(str(os.getpid()))
            _log(board, spec, f"{what}:killed")
            time.sleep(0.1)
            os.kill(os.getpid(), signal.SIGKILL)


def steady(spec, *, board, **settings):
    _log(board, spec, "steady")
    return simulated_board(spec, board=board, **settings)


def slow(spec, *, board, **settings):
    """Half a second per measurement, long enough to kill the driver mid-run; board b's worker is killed
    (SIGKILL) in the middle of its second measurement, once."""
    _die_once(board, spec, on="b", at_call=1, what="slow")
    _log(board, spec, "slow")
    time.sleep(0.5)
    return simulated_board(spec, board=board, **settings)


def dies_once_on_a(spec, *, board, **settings):
    """Board a's worker is killed (SIGKILL) in the middle of its third measurement, once."""
    _die_once(board, spec, on="a", at_call=2, what="dies_once_on_a")
    _log(board, spec, "dies_once_on_a")
    return simulated_board(spec, board=board, **settings)


def b_dies_c_raises(spec, *, board, **settings):
    """Board b loses every measurement (its worker dies); on board c the measurement itself raises (not a
    lost board); board a measures normally."""
    if board == "b":
        _log(board, spec, "b_dies_c_raises:killed")
        os.kill(os.getpid(), signal.SIGKILL)
    if board == "c":
        _log(board, spec, "b_dies_c_raises:raised")
        raise RuntimeError("the runtime refused this model")
    _log(board, spec, "b_dies_c_raises")
    return simulated_board(spec, board=board, **settings)
