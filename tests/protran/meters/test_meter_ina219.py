"""INA219 driver against a simulated register map, and the parser of INA219 example-program logs."""

from __future__ import annotations

import math
import time

import pytest

from protran.meters import INA219Meter, MeterError, MeterUnavailableError, ina219_calibration, parse_ina219_log
from protran.meters._ina219 import (
    ADC_MODES,
    REG_BUS_VOLTAGE,
    REG_CALIBRATION,
    REG_CONFIG,
    REG_CURRENT,
    REG_POWER,
    REG_SHUNT_VOLTAGE,
    conversion_time_s,
    decode_bus_voltage,
    ina219_config,
    swap_bytes,
)


class FakeINA219Bus:
    """An INA219 behind an SMBus: little-endian words on the wire, the datasheet's arithmetic inside.

    A conversion completes every ``reads_per_conversion`` reads of the bus-voltage register (it sets
    CNVR and latches current and power from the calibration); reading power clears CNVR.
    """

    def __init__(self, address=0x40, bus_voltage_v=5.0, current_a=0.5, shunt_ohms=0.1, reads_per_conversion=3):
        self.address = address
        self.bus_voltage_v = bus_voltage_v
        self.current_a = current_a
        self.shunt_ohms = shunt_ohms
        self.reads_per_conversion = reads_per_conversion
        self.registers = {
            REG_CONFIG: 0x399F,
            REG_SHUNT_VOLTAGE: 0,
            REG_BUS_VOLTAGE: 0,
            REG_POWER: 0,
            REG_CURRENT: 0,
            REG_CALIBRATION: 0,
        }
        self.bus_reads = 0
        self.conversions = 0
        self.fail = False

    def _check(self, address):
        if self.fail or address != self.address:
            raise OSError(121, "Remote I/O error")

    def _convert(self):
        shunt = round(self.current_a * self.shunt_ohms / 10e-6)
        bus = round(self.bus_voltage_v / 4e-3)
        cal = self.registers[REG_CALIBRATION]
        current = math.trunc(shunt * cal / 4096)
        power = math.trunc(current * bus / 5000)
        overflow = not -32768 <= current <= 32767 or not 0 <= power <= 0xFFFF
        self.registers[REG_SHUNT_VOLTAGE] = shunt & 0xFFFF
        self.registers[REG_CURRENT] = max(-32768, min(32767, current)) & 0xFFFF
        self.registers[REG_POWER] = max(0, min(0xFFFF, power))
        self.registers[REG_BUS_VOLTAGE] = (bus << 3) | 0b10 | int(overflow)
        self.conversions += 1

    def read_word_data(self, address, register):
        self._check(address)
        if register == REG_BUS_VOLTAGE:
            self.bus_reads += 1
            if self.bus_reads % self.reads_per_conversion == 0:
                self._convert()
        value = self.registers[register]
        if register == REG_POWER:
            self.registers[REG_BUS_VOLTAGE] &= ~0b10  # reading power clears CNVR
        return swap_bytes(value)

    def write_word_data(self, address, register, value):
        self._check(address)
        word = swap_bytes(value)
        self.registers[register] = word & 0xFFFE if register == REG_CALIBRATION else word


# -- calibration and configuration --------------------------------------------------------------


def test_calibration_follows_the_datasheet_equation():
    # Current_LSB = 3.2 A / 32768 = 97.66 uA; Cal = trunc(0.04096 / (97.66e-6 * 0.1)) = 4194.
    assert ina219_calibration(0.1, 3.2).calibration == 4194
    # A round 100 uA LSB (covers 3.2768 A) gives the familiar 4096.
    assert ina219_calibration(0.1, 3.2, current_lsb_a=100e-6).calibration == 4096
    assert ina219_calibration(0.1, 3.2768).calibration == 4096
    calibration = ina219_calibration(0.1, 3.2768)
    assert calibration.current_lsb_a == pytest.approx(100e-6)
    assert calibration.power_lsb_w == pytest.approx(2e-3)


def test_calibration_clears_the_read_only_bit_and_rejects_impossible_settings():
    assert ina219_calibration(0.01, 0.4).calibration % 2 == 0
    with pytest.raises(ValueError, match="cannot represent"):
        ina219_calibration(0.1, 3.2, current_lsb_a=50e-6)
    with pytest.raises(ValueError, match="outside the 16-bit"):
        ina219_calibration(0.001, 0.01)
    with pytest.raises(ValueError, match="shunt_ohms"):
        ina219_calibration(0.0, 1.0)


def test_config_word_packs_range_gain_adc_and_mode():
    # Datasheet power-on default: 32 V, /8 gain, 12-bit, continuous shunt and bus = 0x399F.
    assert ina219_config(32, 0.32, "12bit") == 0x399F
    word = ina219_config(16, 0.04, "9bit")
    assert word >> 13 & 1 == 0 and word >> 11 & 0b11 == 0 and word >> 7 & 0xF == 0 and word & 0b111 == 0b111
    assert ina219_config(32, 0.32, "12bit_x128") >> 3 & 0xF == 0b1111
    with pytest.raises(ValueError, match="bus_voltage_range_v"):
        ina219_config(24, 0.32)


def test_default_adc_setting_reaches_500_samples_per_second():
    assert 1.0 / conversion_time_s("12bit") >= 500
    assert 1.0 / conversion_time_s("9bit") > 1.0 / conversion_time_s("12bit")
    assert set(ADC_MODES) >= {"9bit", "12bit", "12bit_x128"}


def test_bus_voltage_register_fields():
    decoded = decode_bus_voltage((1250 << 3) | 0b11)
    assert decoded.volts == pytest.approx(5.0) and decoded.conversion_ready and decoded.overflow
    assert not decode_bus_voltage(1250 << 3).conversion_ready


def test_words_are_byte_swapped():
    assert swap_bytes(0x399F) == 0x9F39 and swap_bytes(swap_bytes(0x1234)) == 0x1234


# -- the driver ---------------------------------------------------------------------------------


def test_meter_programs_config_and_calibration():
    bus = FakeINA219Bus()
    meter = INA219Meter(shunt_ohms=0.1, max_current_a=3.2, smbus=bus)
    assert bus.registers[REG_CALIBRATION] == 4194
    assert bus.registers[REG_CONFIG] == meter.config == ina219_config(32, 0.32, "12bit")


def test_gain_follows_the_expected_shunt_voltage():
    meter = INA219Meter(shunt_ohms=0.1, max_current_a=0.4, smbus=FakeINA219Bus())
    assert meter.config >> 11 & 0b11 == 0b00  # 40 mV range covers 0.4 A x 0.1 ohm
    with pytest.raises(ValueError, match="320 mV"):
        INA219Meter(shunt_ohms=0.1, max_current_a=5.0, smbus=FakeINA219Bus())


def test_sample_decodes_bus_voltage_current_and_power():
    bus = FakeINA219Bus(bus_voltage_v=5.0, current_a=0.5)
    meter = INA219Meter(smbus=bus)
    sample = meter.read_sample()
    assert sample.bus_voltage_v == pytest.approx(5.0)
    assert sample.current_a == pytest.approx(0.5, abs=2 * meter.calibration.current_lsb_a)
    assert sample.power_w == pytest.approx(2.5, abs=2 * meter.calibration.power_lsb_w)
    assert not sample.overflow
    assert meter.read_shunt_voltage_v() == pytest.approx(0.05)


def test_negative_current_decodes_as_negative():
    meter = INA219Meter(smbus=FakeINA219Bus(current_a=-0.4))
    assert meter.read_sample().current_a == pytest.approx(-0.4, abs=1e-3)


def test_each_sample_waits_for_a_fresh_conversion():
    bus = FakeINA219Bus(reads_per_conversion=4)
    meter = INA219Meter(smbus=bus)
    for expected in range(1, 4):
        meter.read_sample()
        assert bus.conversions == expected
        # CNVR was seen on the read that completed the conversion, and power cleared it.
        assert bus.bus_reads == 4 * expected
        assert not decode_bus_voltage(bus.registers[REG_BUS_VOLTAGE]).conversion_ready


def test_overflow_is_flagged():
    # Calibration for 0.4 A, then 3 A flows: the current register overflows.
    bus = FakeINA219Bus(current_a=3.0)
    meter = INA219Meter(shunt_ohms=0.1, max_current_a=0.4, smbus=bus)
    assert meter.read_sample().overflow


def test_missing_conversion_times_out_with_a_clear_error():
    bus = FakeINA219Bus(reads_per_conversion=10**9)
    meter = INA219Meter(smbus=bus, conversion_timeout_s=0.01)
    with pytest.raises(MeterError, match="no conversion ready"):
        meter.read_power_w()


def test_absent_device_and_foreign_chip_are_unavailable():
    with pytest.raises(MeterUnavailableError, match="no answer at address 0x45"):
        INA219Meter(address=0x45, smbus=FakeINA219Bus(address=0x40))

    class StuckBus(FakeINA219Bus):
        def write_word_data(self, address, register, value):  # ignores writes, like another chip
            self._check(address)

    with pytest.raises(MeterUnavailableError, match="is it an INA219"):
        INA219Meter(smbus=StuckBus())


def test_device_owned_by_the_kernel_driver_points_to_hwmon():
    class BusyBus(FakeINA219Bus):
        def write_word_data(self, address, register, value):
            raise OSError(16, "Device or resource busy")

    with pytest.raises(MeterUnavailableError, match="hwmon meter"):
        INA219Meter(smbus=BusyBus())


def test_missing_bus_names_the_device_node(monkeypatch):
    monkeypatch.setattr("os.path.exists", lambda path: False)
    reason = INA219Meter.unavailable_reason(bus=7)
    assert reason is not None and "/dev/i2c-7 not found" in reason and "raspi-config" in reason
    with pytest.raises(MeterUnavailableError, match="/dev/i2c-7"):
        INA219Meter(bus=7)


def test_sampler_records_conversions_and_overflow_flags():
    bus = FakeINA219Bus(reads_per_conversion=2)
    meter = INA219Meter(smbus=bus)
    meter.start()
    time.sleep(0.02)
    trace = meter.stop()
    assert len(trace) >= 2 and trace.overflow is not None and trace.overflow_count == 0
    assert len(trace) == bus.conversions
    assert trace.power_w == pytest.approx([trace.power_w[0]] * len(trace))


def test_i2c_failure_during_sampling_is_reported():
    bus = FakeINA219Bus()
    meter = INA219Meter(smbus=bus)
    meter.start()
    bus.fail = True
    meter._thread.join(timeout=5)  # the sampler's next read fails and ends the thread
    with pytest.raises(MeterError, match="read failed"):
        meter.stop()


# -- logs of example programs -------------------------------------------------------------------


def test_parse_robtillaart_serial_table(recorded):
    records = parse_ina219_log((recorded / "ina219" / "esp32-custom-board_robtillaart-ina_demo_serial.txt").read_text())
    assert len(records) == 8
    first = records[0]
    assert first.time_of_day == "17:33:27.914"
    assert first.bus_voltage_v == pytest.approx(4.44)
    assert first.shunt_voltage_v == pytest.approx(0.11e-3)
    assert first.current_a == pytest.approx(2.20e-3)
    assert first.power_w == pytest.approx(9.16e-3)
    assert first.overflow is False and first.conversion_ready is True
    assert [r.conversion_ready for r in records].count(False) == 5


def test_parse_circuitpython_examples(recorded):
    folder = recorded / "ina219"
    (new,) = parse_ina219_log((folder / "circuitpython-ina219_pr26_new-example-format.txt").read_text())
    assert new.bus_voltage_v == pytest.approx(3.288)
    assert new.shunt_voltage_v == pytest.approx(0.00352)
    assert new.current_a == pytest.approx(0.0352)
    assert new.power_w == pytest.approx(0.115)  # the register, not the program's own product
    assert new.overflow is None

    (forced,) = parse_ina219_log(
        (folder / "circuitpython-ina219_pr26_new-example-format_forced-overflow.txt").read_text()
    )
    assert forced.overflow is True and forced.power_w == pytest.approx(10.118)

    (old,) = parse_ina219_log((folder / "circuitpython-ina219_pr26_old-example-format.txt").read_text())
    assert old.bus_voltage_v == pytest.approx(3.288) and old.current_a == pytest.approx(0.0352)
    assert old.power_w is None  # the old example printed no power


def test_parse_repeated_blocks():
    text = "Bus Voltage: 5.0 V\nCurrent: 100 mA\nPower: 500 mW\nBus Voltage: 5.1 V\nCurrent: 200 mA\n"
    records = parse_ina219_log(text)
    assert [r.bus_voltage_v for r in records] == [5.0, 5.1]
    assert records[0].power_w == pytest.approx(0.5) and records[1].current_a == pytest.approx(0.2)
