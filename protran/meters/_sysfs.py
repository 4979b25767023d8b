"""Meters that read Linux sysfs: hwmon power sensors (incl. Jetson INA3221 rails) and RAPL powercap.

Every path is taken relative to ``root`` (default "/sys"), so a copy of a sysfs tree can stand in
for the real one. hwmon numbers are not stable across boots or boards; everything is discovered by
globbing.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protran.meters._base import MeterError, MeterUnavailableError, PowerMeter, Reading
from protran.meters._rails import INPUT_RAILS, choose_total_rails


def _read_text(path: Path) -> str:
    with open(path, encoding="ascii", errors="replace") as handle:
        return handle.read().strip()


def _read_int(path: Path) -> int:
    text = _read_text(path)
    try:
        return int(text)
    except ValueError:
        raise MeterError(f"{path}: expected an integer, read {text!r}") from None


def _numbered(directory: Path, pattern: str) -> list[tuple[int, Path]]:
    """Files matching ``pattern`` (one ``(\\d+)`` group), sorted by their number."""
    regex = re.compile(pattern)
    found = []
    for path in directory.iterdir() if directory.is_dir() else ():
        match = regex.fullmatch(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def _sorted_by_number(paths: list[Path]) -> list[Path]:
    return sorted(paths, key=lambda p: [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", p.name)])


# -- power channels -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PowerChannel:
    """One readable power channel.

    ``kind``: "power_uw" (hwmon powerN_input/average, microwatts), "power_mw" (Jetson ina3221x IIO
    in_powerN_input, milliwatts), "mv_ma" (hwmon ina3221: bus voltage inN_input in mV times currN_input
    in mA; that driver exposes no power file).
    """

    label: str
    chip: str
    kind: str
    paths: tuple[Path, ...]

    def read_w(self) -> float:
        if self.kind == "power_uw":
            return _read_int(self.paths[0]) * 1e-6
        if self.kind == "power_mw":
            return _read_int(self.paths[0]) * 1e-3
        if self.kind == "mv_ma":
            return _read_int(self.paths[0]) * _read_int(self.paths[1]) * 1e-6
        raise ValueError(f"unknown power channel kind {self.kind!r}")


def _hwmon_channels(root: Path, chips: Sequence[str] | None = None) -> list[PowerChannel]:
    channels = []
    for directory in _sorted_by_number(list((root / "class" / "hwmon").glob("hwmon*"))):
        try:
            chip = _read_text(directory / "name")
        except OSError:
            chip = directory.name
        if chips is not None and chip not in chips:
            continue
        seen = set()
        for pattern in (r"power(\d+)_input", r"power(\d+)_average"):
            for number, path in _numbered(directory, pattern):
                if number in seen:
                    continue
                seen.add(number)
                label = _label(directory / f"power{number}_label", f"{chip}/power{number}")
                channels.append(PowerChannel(label, chip, "power_uw", (path,)))
        if chip == "ina3221":
            for number, voltage in _numbered(directory, r"in(\d+)_input"):
                current = directory / f"curr{number}_input"
                if current.exists():  # in4..in7 are shunt voltages / their sum: no current
                    label = _label(directory / f"in{number}_label", f"{chip}/ch{number}")
                    channels.append(PowerChannel(label, chip, "mv_ma", (voltage, current)))
    return channels


def _iio_ina3221x_channels(root: Path) -> list[PowerChannel]:
    """NVIDIA's downstream ina3221x IIO driver (L4T R28-R32: TX1, TX2, Nano, Xavier on JetPack 4)."""
    channels = []
    drivers = root / "bus" / "i2c" / "drivers" / "ina3221x"
    devices = sorted(drivers.glob("*/iio:device*")) + sorted(drivers.glob("*/iio_device"))
    for directory in devices:
        for number, name_path in _numbered(directory, r"rail_name_(\d+)"):
            power = directory / f"in_power{number}_input"
            if power.exists():
                label = _label(name_path, f"ina3221x/ch{number}")
                channels.append(PowerChannel(label, "ina3221x", "power_mw", (power,)))
    return channels


def _label(path: Path, default: str) -> str:
    try:
        return _read_text(path) or default
    except OSError:
        return default


def select_rails(
    labels: Sequence[str], rails: Sequence[str] | None, meter: str, sum_if_no_input: bool
) -> tuple[tuple[str, ...], bool]:
    """The rails to sum and whether they are a partial total (see :data:`INPUT_RAILS`)."""
    if rails is not None:
        missing = [r for r in rails if r not in labels]
        if missing:
            raise MeterUnavailableError(f"{meter}: rail(s) {missing} not found; available: {list(labels)}")
        return tuple(rails), False
    chosen, partial = choose_total_rails(labels)
    if not chosen:
        raise MeterUnavailableError(f"{meter}: no connected power channel found")
    if partial and not sum_if_no_input:
        raise MeterUnavailableError(
            f"{meter}: several power channels and none is a whole-board input rail {list(INPUT_RAILS)}: "
            f"{list(chosen)}; choose with rails=[...]"
        )
    return chosen, partial


class _ChannelMeter(PowerMeter):
    """Sums selected sysfs power channels."""

    default_interval_s = 0.02
    _sum_if_no_input = False

    def __init__(
        self, rails: Sequence[str] | None = None, *, root: str | Path = "/sys", interval_s: float | None = None
    ) -> None:
        super().__init__(interval_s=interval_s)
        self.root = Path(root)
        channels, self.skipped = self._usable(self._discover(self.root))
        if not channels:
            raise MeterUnavailableError(self._absent_message(self.root, self.skipped))
        self.channels = _unique_labels(channels)
        self.rails, self.partial = select_rails(list(self.channels), rails, self.name, self._sum_if_no_input)
        self._selected = [self.channels[label] for label in self.rails]

    @classmethod
    def _discover(cls, root: Path) -> list[PowerChannel]:
        raise NotImplementedError

    @classmethod
    def _absent_message(cls, root: Path, skipped: dict[str, str]) -> str:
        raise NotImplementedError

    @staticmethod
    def _usable(channels: list[PowerChannel]) -> tuple[list[PowerChannel], dict[str, str]]:
        usable, skipped = [], {}
        for channel in channels:
            try:
                channel.read_w()
            except (OSError, MeterError) as error:  # unconnected channels fail with ENODATA/EIO
                skipped[channel.label] = str(error)
            else:
                usable.append(channel)
        return usable, skipped

    @classmethod
    def unavailable_reason(cls, root: str | Path = "/sys", **options: Any) -> str | None:
        try:
            cls(options.get("rails"), root=root)
        except MeterUnavailableError as error:
            return str(error)
        return None

    def read_rails_w(self) -> dict[str, float]:
        """Every discovered channel, in watts."""
        return {label: channel.read_w() for label, channel in self.channels.items()}

    def read_power_w(self) -> float:
        try:
            return sum(channel.read_w() for channel in self._selected)
        except OSError as error:
            raise MeterError(f"{self.name}: read failed: {error}") from error

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rails={list(self.rails)}, root={str(self.root)!r}, partial={self.partial})"


def _unique_labels(channels: list[PowerChannel]) -> dict[str, PowerChannel]:
    """Channels by label; a repeated label (two chips of one kind) gets ``#2``, ``#3``, ..."""
    by_label: dict[str, PowerChannel] = {}
    for channel in channels:
        label, number = channel.label, 1
        while label in by_label:
            number += 1
            label = f"{channel.label}#{number}"
        by_label[label] = channel
    return by_label


class HwmonMeter(_ChannelMeter):
    """Any hwmon power sensor (``powerN_input``/``powerN_average`` in uW; INA3221 channels as V x I).

    With one channel it is used; with several, the whole-input rail if one is labelled so, else
    ``rails=[...]`` must name the channels to sum (summing, say, a GPU sensor and a platform meter
    would count the GPU twice).
    """

    name = "hwmon"

    @classmethod
    def _discover(cls, root: Path) -> list[PowerChannel]:
        return _hwmon_channels(root)

    @classmethod
    def _absent_message(cls, root: Path, skipped: dict[str, str]) -> str:
        where = root / "class" / "hwmon"
        detail = f" ({len(skipped)} unreadable: {sorted(skipped)})" if skipped else ""
        return f"hwmon: no readable power sensor under {where}{detail}"


class INA3221Meter(_ChannelMeter):
    """Jetson on-module INA3221 rails: hwmon ``ina3221`` driver (JetPack 5+) or ``ina3221x`` IIO
    driver (JetPack 4). Defaults to the input rail (:data:`INPUT_RAILS`), else the sum of all
    connected rails with ``partial`` set."""

    name = "ina3221"
    _sum_if_no_input = True

    @classmethod
    def _discover(cls, root: Path) -> list[PowerChannel]:
        return _hwmon_channels(root, chips=("ina3221",)) + _iio_ina3221x_channels(root)

    @classmethod
    def _absent_message(cls, root: Path, skipped: dict[str, str]) -> str:
        detail = f"; unreadable channels: {sorted(skipped)}" if skipped else ""
        return (
            f"ina3221: no Jetson INA3221 rails under {root}/class/hwmon (ina3221) or "
            f"{root}/bus/i2c/drivers/ina3221x{detail} - is this a Jetson?"
        )


# -- RAPL ------------------------------------------------------------------------------------------


@dataclass
class RaplDomain:
    """One powercap zone: ``key`` is the directory name (intel-rapl:0:1), ``name`` is qualified by
    its package for sub-zones (package-0/core)."""

    key: str
    name: str
    path: Path
    max_energy_range_uj: int | None
    problem: str | None = None
    last_uj: int | None = field(default=None, repr=False)


def _rapl_domains(root: Path) -> list[RaplDomain]:
    base = root / "class" / "powercap"
    zones = _sorted_by_number([p for p in base.glob("intel-rapl:*") if p.is_dir()])
    names = {}
    domains = []
    for zone in zones:
        key = zone.name
        own = _label(zone / "name", key)
        parent = key.rsplit(":", 1)[0]
        name = f"{names[parent]}/{own}" if parent in names else own
        names[key] = name
        try:
            max_range = _read_int(zone / "max_energy_range_uj")
        except (OSError, MeterError):
            max_range = None
        domains.append(RaplDomain(key, name, zone, max_range))
    return domains


def _probe_rapl(domain: RaplDomain) -> None:
    energy = domain.path / "energy_uj"
    try:
        value = _read_int(energy)
    except PermissionError:
        domain.problem = (
            f"{energy} is readable by root only (restricted since Linux 5.10 against the PLATYPUS attack); "
            "run as root or grant read access, e.g. `sudo chmod a+r .../intel-rapl:*/energy_uj`"
        )
        return
    except (OSError, MeterError) as error:
        domain.problem = f"{energy}: {error}"
        return
    if domain.max_energy_range_uj is None:
        domain.problem = f"{domain.path / 'max_energy_range_uj'} unreadable: counter wrap-around cannot be handled"
    elif value > domain.max_energy_range_uj:
        domain.problem = (
            f"{energy} reads {value}, above max_energy_range_uj {domain.max_energy_range_uj}: the zone is not counting"
        )


class RaplMeter(PowerMeter):
    """Intel/AMD RAPL energy counters through powercap (``intel-rapl:*/energy_uj``).

    The counter gives exact energy; power samples are averages over each sampling interval, stamped
    at the interval's midpoint. By default all ``package-N`` zones are summed (CPU packages; add
    e.g. ``"package-0/dram"`` or use ``"psys"`` for the platform zone, never both psys and package
    since psys includes it). Domains are named as in ``available_domains``.
    """

    name = "rapl"
    default_interval_s = 0.05

    def __init__(
        self, domains: Sequence[str] | None = None, *, root: str | Path = "/sys", interval_s: float | None = None
    ) -> None:
        super().__init__(interval_s=interval_s)
        self.root = Path(root)
        found = _rapl_domains(self.root)
        if not found:
            raise MeterUnavailableError(self._absent_message(self.root))
        for domain in found:
            _probe_rapl(domain)
        self.available_domains = {d.name: d for d in found}
        self.domains = self._select(found, domains)
        self._lock = threading.Lock()
        self._total_j = 0.0
        self._read_counters()  # establishes the counter origin

    @staticmethod
    def _absent_message(root: Path) -> str:
        return (
            f"rapl: no powercap zones under {root}/class/powercap (needs an Intel or AMD CPU, the "
            "intel_rapl_common module, and bare metal: virtual machines rarely expose RAPL)"
        )

    def _select(self, found: list[RaplDomain], requested: Sequence[str] | None) -> list[RaplDomain]:
        by_key = {d.key: d for d in found} | {d.name: d for d in found}
        if requested is not None:
            missing = [r for r in requested if r not in by_key]
            if missing:
                raise MeterUnavailableError(
                    f"rapl: domain(s) {missing} not found; available: {[d.name for d in found]}"
                )
            chosen = [by_key[r] for r in requested]
        else:
            chosen = [d for d in found if re.fullmatch(r"package-\d+", d.name) and d.problem is None]
            if not chosen:
                chosen = [d for d in found if d.name == "psys" and d.problem is None]
            if not chosen:
                problems = "; ".join(f"{d.name}: {d.problem}" for d in found if d.problem)
                raise MeterUnavailableError(f"rapl: no readable package or psys zone ({problems or 'none found'})")
        for domain in chosen:
            if domain.problem:
                raise MeterUnavailableError(f"rapl: {domain.name}: {domain.problem}")
        return chosen

    @classmethod
    def unavailable_reason(cls, root: str | Path = "/sys", **options: Any) -> str | None:
        try:
            cls(root=root, domains=options.get("domains"))
        except MeterUnavailableError as error:
            return str(error)
        return None

    def _read_counters(self) -> float:
        """Advance the cumulative energy (J) by every selected zone's counter difference."""
        with self._lock:
            for domain in self.domains:
                try:
                    value = _read_int(domain.path / "energy_uj")
                except OSError as error:
                    raise MeterError(f"rapl: {domain.name}: {error}") from error
                if domain.last_uj is not None:
                    delta = value - domain.last_uj
                    if delta < 0:  # the counter wrapped to 0 after max_energy_range_uj
                        delta += domain.max_energy_range_uj
                    self._total_j += delta * 1e-6
                domain.last_uj = value
            return self._total_j

    def read_energy_j(self) -> float:
        """Energy (J) used by the selected zones since the meter was created."""
        return self._read_counters()

    def _read(self) -> Reading:
        energy_j = self._read_counters()
        return Reading(time.monotonic(), None, energy_j)

    def read_power_w(self) -> float:
        """Mean power over one sampling interval (blocks for ``max(interval_s, 10 ms)``)."""
        first = self._read()
        time.sleep(max(self.interval_s, 0.01))
        second = self._read()
        return (second.energy_j - first.energy_j) / (second.t_s - first.t_s)

    def _sampling_loop(self, stop: threading.Event, emit) -> None:
        previous: Reading | None = None

        def emit_with_power(reading: Reading) -> None:
            nonlocal previous
            if previous is not None and reading.t_s > previous.t_s:
                span_s = reading.t_s - previous.t_s
                emit(Reading(previous.t_s + span_s / 2, (reading.energy_j - previous.energy_j) / span_s))
            emit(reading)
            previous = reading

        super()._sampling_loop(stop, emit_with_power)

    def __repr__(self) -> str:
        return f"RaplMeter(domains={[d.name for d in self.domains]}, root={str(self.root)!r})"
