"""``nvidia-smi``: parsers of its four output formats and a meter that streams ``--query-gpu`` CSV.

Power fields differ across drivers: ``power.draw`` alone on old drivers; ``power.draw.average`` and
``power.draw.instant`` since about R535, where ``power.draw`` became the ~1 s average on recent GPUs.
``-q`` text prints them as ``Power Draw`` (old ``Power Readings``) or ``Average Power Draw`` /
``Instantaneous Power Draw`` (``GPU Power Readings``); ``-q -x`` XML as ``<power_readings><power_draw>``
(old) or ``<gpu_power_readings>`` (R535+). Values may carry units ("631.95 W") or be "[N/A]".
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import subprocess
import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from protran.meters._base import MeterError, Reading
from protran.meters._tool import ToolMeter


@dataclass(frozen=True)
class NvidiaSmiReading:
    """Power of one GPU in one report; watts, None where absent or N/A."""

    gpu_index: int | None
    name: str | None = None
    timestamp: dt.datetime | None = None
    power_draw_w: float | None = None
    power_draw_average_w: float | None = None
    power_draw_instant_w: float | None = None

    @property
    def power_w(self) -> float | None:
        """The most instantaneous value present: instant, else draw, else the average."""
        for value in (self.power_draw_instant_w, self.power_draw_w, self.power_draw_average_w):
            if value is not None:
                return value
        return None


_NUMBER = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(mW|W)?\s*$")


def parse_watts(text: str | None) -> float | None:
    """``"631.95 W"``, ``"28.16"``, ``"500 mW"`` -> watts; ``"[N/A]"``, ``"N/A"``, ``"-"`` and other
    non-numbers -> None."""
    if text is None:
        return None
    match = _NUMBER.match(text)
    if not match:
        return None
    value = float(match.group(1))
    return value * 1e-3 if match.group(2) == "mW" else value


def _field_name(header: str) -> str:
    """``"power.draw [W]"`` -> ``"power.draw"``."""
    return re.sub(r"\s*\[[^\]]*\]\s*$", "", header.strip())


def _parse_timestamp(text: str | None, patterns: Sequence[str]) -> dt.datetime | None:
    for pattern in patterns:
        try:
            return dt.datetime.strptime((text or "").strip(), pattern)
        except ValueError:
            continue
    return None


_CSV_TIME = ("%Y/%m/%d %H:%M:%S.%f", "%Y/%m/%d %H:%M:%S")
_LOG_TIME = ("%a %b %d %H:%M:%S %Y",)


def _reading_from_fields(values: dict[str, str], position: int) -> NvidiaSmiReading:
    index_text = values.get("index", "").strip()
    return NvidiaSmiReading(
        gpu_index=int(index_text) if index_text.isdigit() else (position if "index" not in values else None),
        name=values.get("name", "").strip() or None,
        timestamp=_parse_timestamp(values.get("timestamp"), _CSV_TIME),
        power_draw_w=parse_watts(values.get("power.draw")),
        power_draw_average_w=parse_watts(values.get("power.draw.average")),
        power_draw_instant_w=parse_watts(values.get("power.draw.instant")),
    )


def parse_nvidia_smi_csv(text: str, fields: Sequence[str] | None = None) -> list[NvidiaSmiReading]:
    """``--query-gpu=... --format=csv[,nounits]`` output. The first line is the header unless
    ``fields`` names the columns (``noheader``). Without an ``index`` column GPUs are numbered by
    row; with ``-l``/``-lms`` loops that numbering is meaningless, so query ``index``."""
    rows = [row for row in csv.reader(io.StringIO(text), skipinitialspace=True) if row]
    if fields is None:
        if not rows:
            return []
        names, rows = [_field_name(h) for h in rows[0]], rows[1:]
    else:
        names = [_field_name(f) for f in fields]
    readings = []
    for position, row in enumerate(rows):
        if len(row) != len(names):
            raise ValueError(f"nvidia-smi CSV: row {position + 1} has {len(row)} values for {len(names)} fields")
        readings.append(_reading_from_fields(dict(zip(names, (v.strip() for v in row), strict=True)), position))
    return readings


def parse_nvidia_smi_query(text: str) -> list[NvidiaSmiReading]:
    """``nvidia-smi -q`` text: the ``GPU Power Readings`` (or old ``Power Readings``) block of each GPU."""
    timestamp = None
    readings: list[dict[str, Any]] = []
    section = None
    for line in text.splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        key, _, value = (part.strip() for part in line.partition(":"))
        if indent == 0:
            if key == "Timestamp":
                timestamp = _parse_timestamp(value, _LOG_TIME)
            elif re.fullmatch(r"GPU [0-9A-Fa-f:.]+", line.strip()):
                readings.append({"gpu_index": len(readings), "timestamp": timestamp})
            continue
        if not readings:
            continue
        current = readings[-1]
        if indent == 4:
            section = key if ":" not in line else None  # a block title has no value
            if key == "Product Name":
                current["name"] = value
            continue
        if section in ("GPU Power Readings", "Power Readings"):
            target = {
                "Power Draw": "power_draw_w",
                "Average Power Draw": "power_draw_average_w",
                "Instantaneous Power Draw": "power_draw_instant_w",
            }.get(key)
            if target:
                current[target] = parse_watts(value)
    return [NvidiaSmiReading(**fields) for fields in readings]


def parse_nvidia_smi_xml(text: str) -> list[NvidiaSmiReading]:
    """``nvidia-smi -q -x`` XML, old (``power_readings``) and new (``gpu_power_readings``) schema."""
    root = ElementTree.fromstring(text.encode() if isinstance(text, str) else text)
    timestamp = _parse_timestamp(root.findtext("timestamp"), _LOG_TIME)
    readings = []
    for position, gpu in enumerate(root.findall("gpu")):
        block = gpu.find("gpu_power_readings")
        if block is None:
            block = gpu.find("power_readings")
        if block is None:
            block = ElementTree.Element("none")
        readings.append(
            NvidiaSmiReading(
                gpu_index=position,
                name=(gpu.findtext("product_name") or "").strip() or None,
                timestamp=timestamp,
                power_draw_w=parse_watts(block.findtext("power_draw")),
                power_draw_average_w=parse_watts(block.findtext("average_power_draw")),
                power_draw_instant_w=parse_watts(block.findtext("instant_power_draw")),
            )
        )
    return readings


def parse_nvidia_smi_dmon(text: str) -> list[NvidiaSmiReading]:
    """``nvidia-smi dmon`` output: ``# gpu pwr ...`` header, a units line, then rows (``pwr`` in W,
    ``-`` when unsupported). The ``pwr`` column is the driver's power reading."""
    columns: list[str] | None = None
    readings = []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            names = [t.lower() for t in line.lstrip()[1:].split()]
            if "pwr" in names:  # the units line below the header has none
                columns = names
            continue
        tokens = line.split()
        if columns is None or len(tokens) != len(columns):
            continue
        values = dict(zip(columns, tokens, strict=True))
        readings.append(
            NvidiaSmiReading(
                gpu_index=int(values["gpu"]) if values.get("gpu", "").isdigit() else None,
                power_draw_w=parse_watts(values.get("pwr")),
            )
        )
    return readings


def parse_nvidia_smi(text: str) -> list[NvidiaSmiReading]:
    """Any of the four formats, told apart by their first characters."""
    stripped = text.lstrip()
    if stripped.startswith("<?xml") or stripped.startswith("<nvidia_smi_log"):
        return parse_nvidia_smi_xml(stripped)
    if stripped.startswith("#"):
        return parse_nvidia_smi_dmon(text)
    if "NVSMI LOG" in text[:200]:
        return parse_nvidia_smi_query(text)
    return parse_nvidia_smi_csv(text)


class NvidiaSmiMeter(ToolMeter):
    """Streams ``nvidia-smi --query-gpu=index,<field> --format=csv -lms N -i GPU``.

    ``field="auto"`` uses ``power.draw.instant`` where the driver knows it and ``power.draw``
    otherwise. Prefer :class:`NvmlMeter`, which also reads the energy counter; this meter serves
    where the Python bindings cannot be installed.
    """

    name = "nvidia-smi"
    tool = "nvidia-smi"
    install_hint = "it ships with the NVIDIA driver"
    default_interval_s = 0.1

    def __init__(
        self, index: int = 0, *, field: str = "auto", interval_s: float | None = None, executable: str | None = None
    ) -> None:
        super().__init__(interval_s=interval_s, executable=executable)
        if self.interval_s < 0.001:
            raise ValueError("nvidia-smi: interval_s must be at least 1 ms")
        self.index = index
        self.field = self._probe_field() if field == "auto" else field
        self._columns: list[str] | None = None

    def _probe_field(self) -> str:
        try:
            result = subprocess.run(
                [self.executable, "--query-gpu=power.draw.instant", "--format=csv,noheader", "-i", str(self.index)],
                capture_output=True,
                text=True,
                timeout=15,
            )
        except (OSError, subprocess.TimeoutExpired):
            return "power.draw"
        lines = result.stdout.strip().splitlines()
        if result.returncode == 0 and len(lines) == 1 and parse_watts(lines[0]) is not None:
            return "power.draw.instant"
        return "power.draw"

    def command(self) -> list[str]:
        interval_ms = max(1, round(self.interval_s * 1000))
        return [
            self.executable,
            f"--query-gpu=index,{self.field}",
            "--format=csv",
            "-lms",
            str(interval_ms),
            "-i",
            str(self.index),
        ]

    def _parse(self, arrived_s: float, record: bytes) -> Reading | None:
        line = record.decode(errors="replace").strip()
        if line.startswith("index"):
            self._columns = [_field_name(h) for h in next(csv.reader([line], skipinitialspace=True))]
            return None
        if self._columns is None:
            raise MeterError(f"nvidia-smi: unexpected output before the CSV header: {line[:200]!r}")
        (reading,) = parse_nvidia_smi_csv(line, fields=self._columns)
        power_w = reading.power_w
        if power_w is None:
            raise MeterError(f"nvidia-smi: GPU {self.index} reports no {self.field} ({line!r})")
        return Reading(arrived_s, power_w)
