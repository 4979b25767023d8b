"""Meters that run a command-line tool and parse its output as it streams."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import IO, Any, ClassVar

from protran.meters._base import MeterError, MeterUnavailableError, PowerMeter, Reading


def split_stream(stream: IO[bytes], delimiter: bytes) -> Iterator[tuple[float, bytes]]:
    """Records of a pipe, each with the ``time.monotonic()`` at which its last byte arrived.

    Reads whatever the pipe holds (``os.read``) instead of waiting for full buffers, so the arrival
    time is as close to the tool's write as the tool's own buffering allows.
    """
    fd = stream.fileno()
    buffer = b""
    while True:
        chunk = os.read(fd, 65536)
        arrived_s = time.monotonic()
        if not chunk:
            if buffer.strip():
                yield arrived_s, buffer
            return
        buffer += chunk
        *records, buffer = buffer.split(delimiter)
        for record in records:
            if record.strip():
                yield arrived_s, record


class ToolMeter(PowerMeter):
    """Runs ``command()`` and turns each record of its output into a reading (see ``_parse``)."""

    tool: ClassVar[str] = ""
    delimiter: ClassVar[bytes] = b"\n"
    install_hint: ClassVar[str] = ""

    def __init__(self, *, interval_s: float | None = None, executable: str | None = None) -> None:
        super().__init__(interval_s=interval_s)
        self.executable = executable or shutil.which(self.tool)
        if self.executable is None:
            raise MeterUnavailableError(self._missing_message())
        self._process: subprocess.Popen | None = None
        self._process_lock = threading.Lock()

    @classmethod
    def _missing_message(cls) -> str:
        return f"{cls.name}: `{cls.tool}` not found on PATH{' - ' + cls.install_hint if cls.install_hint else ''}"

    @classmethod
    def unavailable_reason(cls, **options: Any) -> str | None:
        if options.get("executable") or shutil.which(cls.tool):
            return None
        return cls._missing_message()

    # -- to be provided by each tool ------------------------------------------------------------

    def command(self) -> list[str]:
        raise NotImplementedError

    def _parse(self, arrived_s: float, record: bytes) -> Reading | None:
        """A reading from one output record, or None for records without power (headers)."""
        raise NotImplementedError

    # -- running the tool ---------------------------------------------------------------------

    def _spawn(self) -> tuple[subprocess.Popen, IO[bytes]]:
        # Handed to the subprocess and returned to the caller, which closes it: no with-block here.
        stderr = tempfile.TemporaryFile()  # noqa: SIM115
        try:
            process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                start_new_session=True,  # so that terminating it reaches a sudo child too
            )
        except OSError as error:
            stderr.close()
            raise MeterUnavailableError(f"{self.name}: cannot run {self.command()[0]}: {error}") from error
        return process, stderr

    def _stream_readings(self, process: subprocess.Popen) -> Iterator[Reading]:
        last_s = float("-inf")
        for arrived_s, record in split_stream(process.stdout, self.delimiter):
            reading = self._parse(arrived_s, record)
            if reading is not None:
                # Stamps derived from the tool's own durations may jitter backwards; keep time order.
                last_s = max(last_s, reading.t_s)
                yield reading._replace(t_s=last_s)

    def _sampling_loop(self, stop: threading.Event, emit) -> None:
        process, stderr = self._spawn()
        with self._process_lock:
            self._process = process
        try:
            for reading in self._stream_readings(process):
                emit(reading)
                if stop.is_set():
                    return
            if not stop.is_set():
                raise MeterError(self._exit_message(process, stderr))
        finally:
            self._terminate(process)
            stderr.close()
            with self._process_lock:
                self._process = None

    def _exit_message(self, process: subprocess.Popen, stderr: IO[bytes]) -> str:
        try:
            code = process.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            code = None
        stderr.seek(0)
        tail = stderr.read()[-600:].decode(errors="replace").strip()
        return f"{self.name}: `{' '.join(self.command())}` stopped (exit code {code}){': ' + tail if tail else ''}"

    @staticmethod
    def _terminate(process: subprocess.Popen) -> None:
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                process.terminate()
            try:
                process.wait(timeout=3.0)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    process.kill()
                process.wait(timeout=3.0)
        if process.stdout is not None:
            process.stdout.close()

    def _abort_sampling(self) -> None:
        with self._process_lock:
            process = self._process
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                process.terminate()

    def _first_reading_timeout_s(self) -> float:
        return 10.0 + 3 * self.interval_s

    def _stop_grace_s(self) -> float:
        # Wait for the tool's next record so that the trace covers the moment stop() was called.
        return 2.0 + 2 * self.interval_s

    def read_power_w(self) -> float:
        """Run the tool until its first power record."""
        process, stderr = self._spawn()
        try:
            for reading in self._stream_readings(process):
                return float(reading.power_w)
            raise MeterError(self._exit_message(process, stderr))
        finally:
            self._terminate(process)
            stderr.close()
