"""The ground-truth world of benchmarks/codesign_oracle.py, served over the --oracle-command protocol.

One fitted model behind the protocol, so that every searcher sees the world the same way and only that way.

``serve`` fits :class:`boshcode.SurrogateOracle` ONCE on every public row (the four boards'
profiles and the accuracy records, seed 0) and takes its predicted MEANS as the world's true values:
accuracy, latency, energy and peak power of any (architecture, device) pair, exact (std 0), the same
for every method, seed and normalisation. It then listens on a Unix socket; each connection is one
session of the JSON-lines protocol of :mod:`boshcode._external`: the header line first
(``{"devices": [...], "bounds": {...}}``, the bounds of the rows the model was fitted on), then one
answer line per request line (``{"device", "model_dict"}`` -> ``{"accuracy", "latency_s",
"energy_j", "peak_power_w"}``, or ``{"error": why}`` for a request it cannot answer). Connections are
served concurrently, a thread each; the predictions themselves take turns (a lock), as the fitted
models are not documented as thread-safe. A predicted cost below zero (a regressor's undershoot) is
answered as 0, which the protocol allows and which scores exactly as the negative value would in
either normalisation (both read it as the best cost). When the socket is up, the server writes the
header, its pid and the fit time to ``--ready-file`` (atomically), so a driver knows when to start;
with ``--watch-stdin`` it stops when its stdin ends, so it never outlives a driver that holds that pipe.

``connect PATH`` is the command a searcher runs (``CommandOracle``, ``boshcode codesign
--oracle-command``): a relay between its stdin/stdout and the socket, stdlib only, so it starts in
tens of milliseconds whatever the server had to load. Closing its stdin ends the session.

Usage::

    python benchmarks/truth_oracle.py serve --socket /tmp/truth.sock --ready-file /tmp/truth.json &
    boshcode codesign --oracle-command "python benchmarks/truth_oracle.py connect /tmp/truth.sock"
    taskset -c 0 python benchmarks/truth_oracle.py serve --socket /tmp/truth.sock \\
        --profile ../shared/data/protran/cpu_rpi_b1_r1.json --accuracy datasets/accuracy/nasbench_bert_250.json
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse
import contextlib
import json
import math
import signal
import socket
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: The seed the truth model is fitted with (the ``boshcode`` command's ORACLE_SEED).
TRUTH_SEED = 0
#: The measures of an answer, accuracy first (``boshcode._oracle.MEASURES``).
ANSWER_MEASURES = ("accuracy", "latency_s", "energy_j", "peak_power_w")
#: How long ``connect`` retries a socket that is not there yet (seconds).
CONNECT_WAIT_S = 30.0


def data_dir() -> Path:
    return Path(os.environ.get("EDGETRAN_DATA", REPO.parent / "shared" / "data"))


def default_profiles() -> list[Path]:
    """The four public boards (``../shared/data/protran/*.json``)."""
    public = sorted((data_dir() / "protran").glob("*.json"))
    if not public:
        raise SystemExit(f"no public profiles in {data_dir() / 'protran'} (set EDGETRAN_DATA or pass --profile)")
    return public


def default_accuracy() -> Path:
    return REPO / "datasets" / "accuracy" / "nasbench_bert_250.json"


# -- the relay (stdlib only) ---------------------------------------------------------------------------


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _open_socket(path: str, wait_s: float) -> socket.socket:
    deadline = time.monotonic() + wait_s
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return sock
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            if time.monotonic() > deadline:
                raise SystemExit(f"truth_oracle connect: no server on {path} after {wait_s:g} s; start "
                                 "`python benchmarks/truth_oracle.py serve --socket PATH` first") from None
            time.sleep(0.05)


def connect(path: str, wait_s: float = CONNECT_WAIT_S) -> int:
    """Relay stdin to the socket and the socket to stdout until the server closes the session."""
    sock = _open_socket(path, wait_s)
    stdin_done = threading.Event()

    def pump_stdin() -> None:
        try:
            while chunk := os.read(0, 65536):
                sock.sendall(chunk)
        except OSError:
            pass
        stdin_done.set()
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)  # the server sees the end of the session

    threading.Thread(target=pump_stdin, name="stdin", daemon=True).start()
    try:
        while chunk := sock.recv(65536):
            _write_all(1, chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        sock.close()
    if not stdin_done.is_set():
        print(f"truth_oracle connect: the server on {path} closed the session", file=sys.stderr, flush=True)
        return 1
    return 0


# -- the server ----------------------------------------------------------------------------------------


class Truth:
    """The fitted model's predicted means as answers; the header of the protocol."""

    def __init__(self, profiles: list[Path], accuracy: Path) -> None:
        from boshcode import SurrogateOracle

        started = time.perf_counter()
        self.oracle = SurrogateOracle.from_files(profiles, accuracy, seed=TRUTH_SEED)
        self.fit_s = time.perf_counter() - started
        self.devices = self.oracle.devices
        self.header = {"devices": self.devices, "bounds": self.oracle.bounds.to_json(),
                       "truth": {"profiles": [str(p) for p in profiles], "accuracy": str(accuracy),
                                 "seed": TRUTH_SEED, "values": "the surrogate's predicted means, exact (std 0)"}}
        self.lock = threading.Lock()
        self.n_answers = 0
        self.n_clamped = 0

    def answer(self, line: bytes) -> dict:
        from flexibert import ArchSpec

        try:
            request = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {"error": f"the request is not JSON: {line[:200]!r}"}
        if not isinstance(request, dict) or "device" not in request or "model_dict" not in request:
            return {"error": "a request is {\"device\": name, \"model_dict\": {...}}"}
        if request["device"] not in self.devices:
            return {"error": f"unknown device {request['device']!r}; the header lists {self.devices}"}
        try:
            spec = ArchSpec.from_model_dict(request["model_dict"])
        except Exception as error:  # any malformed architecture is this request's error, not the server's
            return {"error": f"invalid model_dict: {type(error).__name__}: {error}"}
        with self.lock:
            prediction = self.oracle.predict([spec], request["device"])
            self.n_answers += 1
        return self._values(prediction)

    def _values(self, prediction: dict) -> dict:
        values: dict[str, float | None] = {}
        for name in ANSWER_MEASURES:
            entry = prediction.get(name)
            value = None if entry is None else float(entry["mean"][0])
            if value is not None and not math.isfinite(value):
                value = None
            if value is not None and name != "accuracy" and value < 0:
                value = 0.0  # scores as the negative value would (the best cost) in both normalisations
                self.n_clamped += 1
            values[name] = value
        if values["accuracy"] is None:
            return {"error": "the accuracy model gave no finite prediction"}
        return values


def _session(conn: socket.socket, truth: Truth) -> None:
    try:
        with conn, conn.makefile("rb") as lines:
            conn.sendall((json.dumps(truth.header) + "\n").encode())
            for line in lines:
                if line.strip():
                    conn.sendall((json.dumps(truth.answer(line)) + "\n").encode())
    except (BrokenPipeError, ConnectionResetError):
        pass


def _exit_at_eof() -> None:
    """Stop the server (as SIGTERM does) once stdin ends: the process that started it has gone."""
    with contextlib.suppress(OSError, ValueError):
        sys.stdin.buffer.read()
    os.kill(os.getpid(), signal.SIGTERM)


def _write_ready(path: Path, content: dict) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(content) + "\n")
    partial.replace(path)


def serve(args: argparse.Namespace) -> int:
    profiles = args.profile or default_profiles()
    accuracy = args.accuracy or default_accuracy()
    truth = Truth(profiles, accuracy)
    path = str(args.socket)
    if os.path.exists(path):
        os.unlink(path)  # a stale socket of a killed server
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(64)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if args.watch_stdin:
        threading.Thread(target=_exit_at_eof, name="watch-stdin", daemon=True).start()
    print(f"truth_oracle: fitted on {truth.devices} in {truth.fit_s:.1f} s; listening on {path}",
          file=sys.stderr, flush=True)
    if args.ready_file:
        _write_ready(args.ready_file, {"socket": path, "pid": os.getpid(), "fit_s": truth.fit_s, **truth.header})
    try:
        while True:
            conn, _ = server.accept()
            threading.Thread(target=_session, args=(conn, truth), daemon=True).start()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        if os.path.exists(path):
            os.unlink(path)
        print(f"truth_oracle: {truth.n_answers} answers, {truth.n_clamped} negative costs answered as 0",
              file=sys.stderr, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("serve", help="fit the truth model once and serve the protocol on a Unix socket")
    p.add_argument("--socket", type=Path, required=True, help="the Unix socket to listen on")
    p.add_argument("--profile", action="append", type=Path,
                   help="a hardware profile (repeat; default: the four public boards)")
    p.add_argument("--accuracy", type=Path, help="accuracy data (default: datasets/accuracy/nasbench_bert_250.json)")
    p.add_argument("--ready-file", type=Path, help="written (header, pid, fit time) once the socket is up")
    p.add_argument("--watch-stdin", action="store_true",
                   help="exit when stdin ends (a driver keeps it open while it lives)")
    c = commands.add_parser("connect", help="relay stdin/stdout to a serving socket (the --oracle-command)")
    c.add_argument("socket", help="the server's Unix socket")
    c.add_argument("--wait", type=float, default=CONNECT_WAIT_S, help="seconds to wait for the socket")
    args = parser.parse_args(argv)
    if args.command == "connect":
        return connect(args.socket, args.wait)
    sys.path.insert(0, str(REPO))
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
