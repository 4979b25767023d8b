"""NVIDIA Jetson ``tegrastats``: a parser of its lines and a meter that streams them.

Rails are printed as ``NAME cur/avg`` in milliwatts, in three spellings across releases:
``VDD_IN 3608/3617`` (L4T R28-R32), ``VDD_IN 5542mW/5542mW`` (JetPack 5-6) and
``VDD_GPU_SOC 5139mW/5139mW/5139mW`` (JetPack 7; the third value is not used here). Lines of
boards without readable rails (or of the old TX1 format) carry no power at all.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass

from protran.meters._base import MeterError, Reading
from protran.meters._rails import choose_total_rails
from protran.meters._tool import ToolMeter

_RAIL = re.compile(r"(?<!\S)(?P<name>[A-Z][A-Z0-9_]*) (?P<cur>\d+)(?:mW)?/(?P<avg>\d+)(?:mW)?(?:/\d+(?:mW)?)?(?=\s|$)")
_DATE = re.compile(r"^\s*(\d{2}-\d{2}-\d{4} \d{2}:\d{2}:\d{2})\s")
_CPU = re.compile(r"\bCPU \[([^\]]*)\]", re.IGNORECASE)
_GPU = re.compile(r"\bGR3D(?:_FREQ)? (?:(\d+)%|@)")


@dataclass(frozen=True)
class TegrastatsRecord:
    """One tegrastats line; power in watts.

    ``total_w`` sums ``total_rails``: the board's input rail where it has one (VDD_IN, else
    POM_5V_IN), else every connected rail with ``total_is_partial`` set; None without rails.
    """

    timestamp: dt.datetime | None
    rails_w: dict[str, float]
    rails_avg_w: dict[str, float]
    total_w: float | None
    total_rails: tuple[str, ...]
    total_is_partial: bool
    cpu_util_pct: tuple[float | None, ...] | None
    gpu_util_pct: float | None


def parse_tegrastats_line(line: str, rails: Sequence[str] | None = None) -> TegrastatsRecord:
    """Parse one line. ``rails`` overrides the rails summed into ``total_w`` (all must be present)."""
    rails_w: dict[str, float] = {}
    rails_avg_w: dict[str, float] = {}
    for match in _RAIL.finditer(line):
        name = match.group("name")
        if name in rails_w:  # e.g. two unconnected "NC" channels
            continue
        rails_w[name] = int(match.group("cur")) * 1e-3
        rails_avg_w[name] = int(match.group("avg")) * 1e-3
    if rails is not None:
        missing = [r for r in rails if r not in rails_w]
        if missing:
            raise ValueError(f"tegrastats: rail(s) {missing} not in the line; it has {list(rails_w)}")
        total_rails, partial = tuple(rails), False
    else:
        total_rails, partial = choose_total_rails(list(rails_w))
    date = _DATE.match(line)
    cpu = _CPU.search(line)
    gpu = _GPU.search(line)
    return TegrastatsRecord(
        timestamp=dt.datetime.strptime(date.group(1), "%m-%d-%Y %H:%M:%S") if date else None,
        rails_w=rails_w,
        rails_avg_w=rails_avg_w,
        total_w=sum(rails_w[r] for r in total_rails) if total_rails else None,
        total_rails=total_rails,
        total_is_partial=partial,
        cpu_util_pct=_cpu_util(cpu.group(1)) if cpu else None,
        gpu_util_pct=float(gpu.group(1)) if gpu and gpu.group(1) is not None else None,
    )


def _cpu_util(cores: str) -> tuple[float | None, ...]:
    """``2%@1036,off,...`` (or the TX1's ``17%,13%``): per-core load, None for cores that are off."""
    loads = []
    for core in cores.split(","):
        match = re.match(r"\s*(\d+(?:\.\d+)?)%", core)
        loads.append(float(match.group(1)) if match else None)
    return tuple(loads)


def parse_tegrastats(text: str, rails: Sequence[str] | None = None) -> list[TegrastatsRecord]:
    """Every non-blank line."""
    return [parse_tegrastats_line(line, rails) for line in text.splitlines() if line.strip()]


class TegrastatsMeter(ToolMeter):
    """Streams ``tegrastats --interval MS`` (Jetson; run as root for all rails on older releases).

    Records the board total (see :class:`TegrastatsRecord`) or the sum of ``rails``; ``partial``
    tells whether the default total lacks an input rail. Each line's current values are stamped
    with its arrival time.
    """

    name = "tegrastats"
    tool = "tegrastats"
    install_hint = "it ships with NVIDIA Jetson Linux (L4T)"
    default_interval_s = 0.1

    def __init__(
        self, rails: Sequence[str] | None = None, *, interval_s: float | None = None, executable: str | None = None
    ) -> None:
        super().__init__(interval_s=interval_s, executable=executable)
        if self.interval_s < 0.001:
            raise ValueError("tegrastats: interval_s must be at least 1 ms")
        self.rails = tuple(rails) if rails is not None else None
        self.partial: bool | None = None

    def command(self) -> list[str]:
        return [self.executable, "--interval", str(max(1, round(self.interval_s * 1000)))]

    def _parse(self, arrived_s: float, record: bytes) -> Reading | None:
        try:
            parsed = parse_tegrastats_line(record.decode(errors="replace"), self.rails)
        except ValueError as error:
            raise MeterError(str(error)) from error
        if parsed.total_w is None:
            raise MeterError(
                "tegrastats: the output has no power rails (this board has no readable power monitor, "
                "or older releases need root)"
            )
        self.partial = parsed.total_is_partial
        return Reading(arrived_s, parsed.total_w)
