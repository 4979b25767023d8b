"""TI INA219 current/power monitor over I2C (smbus2), and a parser of INA219 example-program logs.

Register map and arithmetic follow the INA219 datasheet (SBOS448): configuration 0x00, shunt
voltage 0x01 (10 uV LSB, signed), bus voltage 0x02 (bits 15..3, 4 mV LSB; bit 1 CNVR conversion
ready, bit 0 OVF math overflow), power 0x03, current 0x04 (signed), calibration 0x05.
Registers are big-endian; SMBus word transfers are little-endian, so every word is byte-swapped.
"""

from __future__ import annotations

import errno
import math
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from protran.meters._base import MeterError, MeterUnavailableError, PowerMeter, Reading

REG_CONFIG = 0x00
REG_SHUNT_VOLTAGE = 0x01
REG_BUS_VOLTAGE = 0x02
REG_POWER = 0x03
REG_CURRENT = 0x04
REG_CALIBRATION = 0x05

CONFIG_RESET = 0x8000
BUS_CNVR = 0x0002
BUS_OVF = 0x0001
MODE_SHUNT_BUS_CONTINUOUS = 0b111

SHUNT_VOLTAGE_LSB_V = 10e-6
BUS_VOLTAGE_LSB_V = 4e-3
# Fixed constant of the calibration equation: Cal = trunc(0.04096 / (Current_LSB * R_shunt)).
CALIBRATION_SCALE = 0.04096

# PGA: full-scale shunt voltage (V) -> PG bits 12..11.
_SHUNT_RANGES_V = {0.04: 0b00, 0.08: 0b01, 0.16: 0b10, 0.32: 0b11}
# ADC setting -> (4-bit BADC/SADC code, conversion time in seconds), datasheet table 5.
ADC_MODES: dict[str, tuple[int, float]] = {
    "9bit": (0b0000, 84e-6),
    "10bit": (0b0001, 148e-6),
    "11bit": (0b0010, 276e-6),
    "12bit": (0b0011, 532e-6),
    "12bit_x2": (0b1001, 1.06e-3),
    "12bit_x4": (0b1010, 2.13e-3),
    "12bit_x8": (0b1011, 4.26e-3),
    "12bit_x16": (0b1100, 8.51e-3),
    "12bit_x32": (0b1101, 17.02e-3),
    "12bit_x64": (0b1110, 34.05e-3),
    "12bit_x128": (0b1111, 68.10e-3),
}


def swap_bytes(word: int) -> int:
    """Convert between the INA219's big-endian registers and SMBus little-endian words."""
    return ((word & 0xFF) << 8) | ((word >> 8) & 0xFF)


def to_signed16(word: int) -> int:
    return word - 0x10000 if word & 0x8000 else word


@dataclass(frozen=True)
class INA219Calibration:
    """Calibration register value and the register LSBs it implies.

    ``current_lsb_a`` is the effective LSB of the programmed value, 0.04096 / (cal * R_shunt), so the
    decoded current equals shunt voltage / R_shunt exactly up to the register resolution.
    """

    shunt_ohms: float
    max_current_a: float
    calibration: int
    current_lsb_a: float

    @property
    def power_lsb_w(self) -> float:
        return 20.0 * self.current_lsb_a


def ina219_calibration(
    shunt_ohms: float, max_current_a: float, current_lsb_a: float | None = None
) -> INA219Calibration:
    """Calibration for a shunt and the largest expected current (datasheet section 8.5.1).

    Current_LSB defaults to max_current_a / 32768 (the finest that still covers the range); pass a
    rounder, larger ``current_lsb_a`` (e.g. 100e-6) if preferred. Cal = trunc(0.04096 / (LSB * R)),
    with bit 0 cleared because that register bit is read-only.
    """
    if not shunt_ohms > 0:
        raise ValueError(f"INA219: shunt_ohms must be > 0, got {shunt_ohms}")
    if not max_current_a > 0:
        raise ValueError(f"INA219: max_current_a must be > 0, got {max_current_a}")
    minimum_lsb_a = max_current_a / 32768
    if current_lsb_a is None:
        current_lsb_a = minimum_lsb_a
    elif current_lsb_a < minimum_lsb_a * (1 - 1e-12):
        raise ValueError(
            f"INA219: current_lsb_a={current_lsb_a} A cannot represent {max_current_a} A "
            f"(needs at least max_current_a / 32768 = {minimum_lsb_a:.6g} A)"
        )
    calibration = math.trunc(CALIBRATION_SCALE / (current_lsb_a * shunt_ohms) + 1e-9) & 0xFFFE
    if calibration == 0 or calibration > 0xFFFE:
        raise ValueError(
            f"INA219: calibration {calibration} for shunt {shunt_ohms} ohm and LSB {current_lsb_a} A is "
            "outside the 16-bit register; pick another shunt or current range"
        )
    return INA219Calibration(
        shunt_ohms=shunt_ohms,
        max_current_a=max_current_a,
        calibration=calibration,
        current_lsb_a=CALIBRATION_SCALE / (calibration * shunt_ohms),
    )


def shunt_range_v(max_shunt_voltage_v: float) -> float:
    """Smallest PGA range (40, 80, 160 or 320 mV) covering the expected shunt voltage."""
    for range_v in sorted(_SHUNT_RANGES_V):
        if max_shunt_voltage_v <= range_v + 1e-12:
            return range_v
    raise ValueError(
        f"INA219: expected shunt voltage {max_shunt_voltage_v * 1e3:.1f} mV exceeds the 320 mV range; "
        "use a smaller shunt or a lower max_current_a"
    )


def ina219_config(bus_voltage_range_v: int = 32, shunt_voltage_range_v: float = 0.32, adc: str = "12bit") -> int:
    """Configuration word: bus range (BRNG), PGA gain, bus and shunt ADC setting, continuous mode."""
    if bus_voltage_range_v not in (16, 32):
        raise ValueError(f"INA219: bus_voltage_range_v must be 16 or 32, got {bus_voltage_range_v}")
    if shunt_voltage_range_v not in _SHUNT_RANGES_V:
        raise ValueError(f"INA219: shunt range must be one of {sorted(_SHUNT_RANGES_V)} V, got {shunt_voltage_range_v}")
    if adc not in ADC_MODES:
        raise ValueError(f"INA219: adc must be one of {sorted(ADC_MODES)}, got {adc!r}")
    code = ADC_MODES[adc][0]
    return (
        (int(bus_voltage_range_v == 32) << 13)
        | (_SHUNT_RANGES_V[shunt_voltage_range_v] << 11)
        | (code << 7)
        | (code << 3)
        | MODE_SHUNT_BUS_CONTINUOUS
    )


def conversion_time_s(adc: str) -> float:
    """One shunt + bus conversion cycle in continuous mode (both ADCs use the same setting)."""
    return 2 * ADC_MODES[adc][1]


@dataclass(frozen=True)
class BusVoltage:
    volts: float
    conversion_ready: bool
    overflow: bool


def decode_bus_voltage(register: int) -> BusVoltage:
    """Bus voltage register: bits 15..3 hold the voltage (4 mV LSB), bit 1 CNVR, bit 0 OVF."""
    return BusVoltage((register >> 3) * BUS_VOLTAGE_LSB_V, bool(register & BUS_CNVR), bool(register & BUS_OVF))


@dataclass(frozen=True)
class INA219Sample:
    """One complete conversion, decoded."""

    bus_voltage_v: float
    current_a: float
    power_w: float
    overflow: bool


class INA219Meter(PowerMeter):
    """INA219 on a Linux I2C bus (Raspberry Pi: bus 1, enable I2C with raspi-config).

    The address is set by the A0/A1 straps (0x40 with both low; the EdgeTran reference setup used
    a 0.1 ohm shunt at 0x45).

    Each sample waits for the conversion-ready bit, so every sample is a fresh conversion; reading
    the power register clears the bit. The default ADC setting (12-bit, no averaging) converts
    shunt and bus in about 1.06 ms, i.e. up to ~940 samples/s when the bus keeps up (one sample is
    three word reads: ~0.3 ms at 400 kHz, ~1.2 ms at 100 kHz). Samples where the chip flags a math
    overflow are kept and flagged in the trace's ``overflow``.

    ``smbus`` may be any object with ``read_word_data``/``write_word_data`` (smbus2.SMBus API).
    """

    name = "ina219"
    default_interval_s = 0.0  # paced by conversions

    def __init__(
        self,
        bus: int = 1,
        address: int = 0x40,
        shunt_ohms: float = 0.1,
        max_current_a: float = 3.2,
        *,
        bus_voltage_range_v: int = 32,
        adc: str = "12bit",
        current_lsb_a: float | None = None,
        smbus: Any = None,
        interval_s: float | None = None,
        conversion_timeout_s: float | None = None,
    ) -> None:
        super().__init__(interval_s=interval_s)
        if not 0x03 <= address <= 0x77:
            raise ValueError(f"INA219: I2C address {address:#04x} is outside 0x03..0x77")
        self.bus = bus
        self.address = address
        self.calibration = ina219_calibration(shunt_ohms, max_current_a, current_lsb_a)
        self.config = ina219_config(bus_voltage_range_v, shunt_range_v(max_current_a * shunt_ohms), adc)
        self.adc = adc
        self.conversion_time_s = conversion_time_s(adc)
        self.conversion_timeout_s = (
            max(0.1, 20 * self.conversion_time_s) if conversion_timeout_s is None else conversion_timeout_s
        )
        self._lock = threading.Lock()
        self._owns_bus = smbus is None
        self._smbus = smbus if smbus is not None else self._open_bus(bus, address)
        try:
            self._program()
        except MeterUnavailableError:
            self.close()
            raise

    # -- detection ----------------------------------------------------------------------------

    @classmethod
    def unavailable_reason(cls, bus: int = 1, **options: Any) -> str | None:
        if options.get("smbus") is not None:
            return None
        device = f"/dev/i2c-{bus}"
        if not os.path.exists(device):
            return f"INA219: {device} not found - is I2C enabled (raspi-config) and the sensor wired?"
        try:
            # Importing (not just finding) the package also reports a broken installation as unavailable.
            import smbus2  # noqa: F401
        except ImportError:
            return "INA219: the smbus2 package is not installed (pip install 'edgetran[meters]')"
        return None

    @classmethod
    def _open_bus(cls, bus: int, address: int) -> Any:
        reason = cls.unavailable_reason(bus=bus)
        if reason:
            raise MeterUnavailableError(reason)
        import smbus2

        try:
            return smbus2.SMBus(bus)
        except OSError as error:
            raise MeterUnavailableError(
                f"INA219: cannot open /dev/i2c-{bus}: {error} (permission? try the i2c group)"
            ) from error

    def _program(self) -> None:
        try:
            self._set(REG_CONFIG, self.config)
            self._set(REG_CALIBRATION, self.calibration.calibration)
            config, calibration = self._get(REG_CONFIG), self._get(REG_CALIBRATION)
        except OSError as error:
            if error.errno == errno.EBUSY:
                raise MeterUnavailableError(
                    f"INA219: address {self.address:#04x} on /dev/i2c-{self.bus} is owned by a kernel driver "
                    "(ina2xx); read it through the hwmon meter instead, or unbind the driver"
                ) from error
            raise MeterUnavailableError(
                f"INA219: no answer at address {self.address:#04x} on /dev/i2c-{self.bus} ({error}); "
                "check wiring and the address (A0/A1 straps: 0x40..0x4F)"
            ) from error
        if config != self.config or calibration != self.calibration.calibration:
            raise MeterUnavailableError(
                f"INA219: device at {self.address:#04x} on /dev/i2c-{self.bus} read back config {config:#06x} "
                f"(wrote {self.config:#06x}) and calibration {calibration:#06x} (wrote "
                f"{self.calibration.calibration:#06x}); is it an INA219?"
            )

    # -- registers ----------------------------------------------------------------------------

    def _get(self, register: int) -> int:
        return swap_bytes(self._smbus.read_word_data(self.address, register))

    def _set(self, register: int, value: int) -> None:
        self._smbus.write_word_data(self.address, register, swap_bytes(value & 0xFFFF))

    def read_shunt_voltage_v(self) -> float:
        with self._lock:
            return to_signed16(self._get(REG_SHUNT_VOLTAGE)) * SHUNT_VOLTAGE_LSB_V

    def _wait_conversion(self) -> BusVoltage:
        deadline = time.monotonic() + self.conversion_timeout_s
        while True:
            bus = decode_bus_voltage(self._get(REG_BUS_VOLTAGE))
            if bus.conversion_ready:
                return bus
            if time.monotonic() > deadline:
                raise MeterError(
                    f"INA219 at {self.address:#04x}: no conversion ready within "
                    f"{self.conversion_timeout_s * 1e3:.0f} ms; "
                    "was the chip reset or put in power-down by another program?"
                )
            # An I2C read already takes ~0.1-0.4 ms; only long (averaged) conversions are worth a sleep.
            if self.conversion_time_s > 2e-3:
                time.sleep(self.conversion_time_s / 4)

    def read_sample(self) -> INA219Sample:
        """Wait for a fresh conversion and decode it (power first: reading it clears CNVR)."""
        with self._lock:
            try:
                bus = self._wait_conversion()
                power_register = self._get(REG_POWER)
                current_register = to_signed16(self._get(REG_CURRENT))
            except OSError as error:
                raise MeterError(
                    f"INA219 at {self.address:#04x} on /dev/i2c-{self.bus}: read failed: {error}"
                ) from error
        lsb = self.calibration.current_lsb_a
        return INA219Sample(
            bus_voltage_v=bus.volts,
            current_a=current_register * lsb,
            power_w=power_register * 20.0 * lsb,
            overflow=bus.overflow,
        )

    def read_power_w(self) -> float:
        return self.read_sample().power_w

    def _read(self) -> Reading:
        sample = self.read_sample()
        return Reading(time.monotonic(), sample.power_w, None, sample.overflow)

    def close(self) -> None:
        super().close()
        if self._owns_bus and self._smbus is not None:
            self._smbus.close()
            self._smbus = None

    def __repr__(self) -> str:
        return (
            f"INA219Meter(bus={self.bus}, address={self.address:#04x}, shunt_ohms={self.calibration.shunt_ohms}, "
            f"max_current_a={self.calibration.max_current_a}, adc={self.adc!r})"
        )


# -- logs of INA219 example programs -----------------------------------------------------------


@dataclass(frozen=True)
class INA219LogRecord:
    """One reading printed by an INA219 example program; None where the format lacks the field."""

    bus_voltage_v: float | None
    shunt_voltage_v: float | None
    current_a: float | None
    power_w: float | None
    overflow: bool | None = None
    conversion_ready: bool | None = None
    time_of_day: str | None = None


_NUMBER = r"(-?\d+(?:\.\d+)?)"
_KEYED_FIELDS = {
    # label printed by the program -> (field, scale to SI)
    "voltage (vin-)": ("bus_voltage_v", 1.0),
    "load voltage": ("bus_voltage_v", 1.0),
    "bus voltage": ("bus_voltage_v", 1.0),
    "shunt voltage": ("shunt_voltage_v", 1.0),
    "shunt current": ("current_a", 1.0),
    "current": ("current_a", 1.0),
    "power register": ("power_w", 1.0),
    "power": ("power_w", 1.0),
}
_UNIT_SCALE = {"v": 1.0, "mv": 1e-3, "a": 1.0, "ma": 1e-3, "w": 1.0, "mw": 1e-3}
_KEYED_LINE = re.compile(r"^\s*([A-Za-z][A-Za-z ()+\-.]*?)\s*:\s*" + _NUMBER + r"\s*([a-zA-Z]+)?\s*$")
_SERIAL_PREFIX = re.compile(r"^(\d{2}:\d{2}:\d{2}\.\d{3})\s*->\s*")


def parse_ina219_log(text: str) -> list[INA219LogRecord]:
    """Parse text printed by common INA219 example programs.

    Formats: ``Label : value unit`` blocks (CircuitPython ``ina219_simpletest``, old and new; a
    blank line or a repeated label starts a new reading; "Overflow" lines flag the reading), and
    tab-separated tables with a ``BUS SHUNT CURRENT POWER [OVF CNVR]`` header (RobTillaart INA219
    demo: V, mV, mA, mW), optionally prefixed by the Arduino serial monitor's ``HH:MM:SS.mmm ->``.
    Power is only what the program printed; it is never derived here.
    """
    records: list[INA219LogRecord] = []
    header: list[str] | None = None
    block: dict[str, Any] = {}

    def flush() -> None:
        if block:
            records.append(INA219LogRecord(**{name: block.get(name) for name in INA219LogRecord.__dataclass_fields__}))
            block.clear()

    for raw_line in text.splitlines():
        time_of_day = None
        match = _SERIAL_PREFIX.match(raw_line)
        line = raw_line
        if match:
            time_of_day, line = match.group(1), raw_line[match.end() :]
        stripped = line.strip()
        if not stripped:
            flush()
            continue
        tokens = stripped.split()
        if tokens[0].upper() == "BUS" and "POWER" in (t.upper() for t in tokens):
            flush()
            header = [t.upper() for t in tokens]
            continue
        if header is not None and len(tokens) == len(header) and all(re.fullmatch(_NUMBER, t) for t in tokens):
            values = dict(zip(header, (float(t) for t in tokens), strict=True))
            records.append(
                INA219LogRecord(
                    bus_voltage_v=values.get("BUS"),
                    shunt_voltage_v=values["SHUNT"] * 1e-3 if "SHUNT" in values else None,
                    current_a=values["CURRENT"] * 1e-3 if "CURRENT" in values else None,
                    power_w=values["POWER"] * 1e-3 if "POWER" in values else None,
                    overflow=bool(values["OVF"]) if "OVF" in values else None,
                    conversion_ready=bool(values["CNVR"]) if "CNVR" in values else None,
                    time_of_day=time_of_day,
                )
            )
            continue
        if "overflow" in stripped.lower():
            if block:
                block["overflow"] = True
            elif records:
                last = records[-1]
                records[-1] = INA219LogRecord(**{**last.__dict__, "overflow": True})
            continue
        match = _KEYED_LINE.match(line)
        if not match:
            continue
        label, value, unit = match.group(1).strip().lower(), float(match.group(2)), (match.group(3) or "").lower()
        if label not in _KEYED_FIELDS:
            continue  # e.g. "Voltage (VIN+)", "Power Calc." are derived or supply-side values
        field, scale = _KEYED_FIELDS[label]
        if field in block:
            flush()
        block[field] = value * _UNIT_SCALE.get(unit, scale)
        if time_of_day:
            block["time_of_day"] = time_of_day
    flush()
    return records
