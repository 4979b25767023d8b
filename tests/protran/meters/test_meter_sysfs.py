"""hwmon, Jetson INA3221 and RAPL meters over sysfs trees rebuilt from recorded layouts."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from protran.meters import HwmonMeter, INA3221Meter, MeterUnavailableError, RaplMeter, _sysfs
from tests.protran.meters.meter_sysfs_tree import link_class, write_tree

# -- hwmon --------------------------------------------------------------------------------------


def test_hwmon_ina219_power_in_microwatts(tmp_path, sysfs_source):
    data = sysfs_source("raspberry-pi-ups_hwmon-ina219_sysfs")
    write_tree(tmp_path, data["files"])
    meter = HwmonMeter(root=tmp_path / "sys")
    assert meter.rails == ("hwmon2/power1",) and not meter.partial
    assert meter.read_power_w() == pytest.approx(0.176)  # power1_input = 176000 uW


def test_hwmon_labels_channels_by_chip_name(tmp_path):
    chip = tmp_path / "sys" / "class" / "hwmon" / "hwmon0"
    chip.mkdir(parents=True)
    (chip / "name").write_text("ina219\n")
    (chip / "power1_input").write_text("2500000\n")
    assert HwmonMeter(root=tmp_path / "sys").rails == ("ina219/power1",)


def test_hwmon_with_several_sensors_asks_which(tmp_path):
    for number, (name, microwatts) in enumerate([("amdgpu", "30000000"), ("power_meter", "120000000")]):
        chip = tmp_path / "sys" / "class" / "hwmon" / f"hwmon{number}"
        chip.mkdir(parents=True)
        (chip / "name").write_text(name)
        (chip / "power1_average" if name == "amdgpu" else chip / "power1_input").write_text(microwatts)
    with pytest.raises(MeterUnavailableError, match="choose with rails"):
        HwmonMeter(root=tmp_path / "sys")
    meter = HwmonMeter(["power_meter/power1"], root=tmp_path / "sys")
    assert meter.read_power_w() == pytest.approx(120.0)
    assert meter.read_rails_w() == pytest.approx({"amdgpu/power1": 30.0, "power_meter/power1": 120.0})


def test_two_chips_of_one_kind_get_distinct_labels(tmp_path):
    for number, microwatts in enumerate(["1000000", "2000000"]):
        chip = tmp_path / "sys" / "class" / "hwmon" / f"hwmon{number}"
        chip.mkdir(parents=True)
        (chip / "name").write_text("ina226\n")
        (chip / "power1_input").write_text(microwatts)
    meter = HwmonMeter(["ina226/power1", "ina226/power1#2"], root=tmp_path / "sys")
    assert meter.read_power_w() == pytest.approx(3.0)


def test_no_hwmon_sensor_is_unavailable(tmp_path):
    reason = HwmonMeter.unavailable_reason(root=tmp_path)
    assert reason is not None and "no readable power sensor" in reason
    with pytest.raises(MeterUnavailableError):
        HwmonMeter(root=tmp_path)


# -- Jetson INA3221 -----------------------------------------------------------------------------


def _orin_tree(tmp_path: Path, source: dict) -> Path:
    write_tree(tmp_path, source["files"])
    for where, label in source["labels"].items():
        device, channel = where.split()
        number = channel.removeprefix("ch")
        hwmon = {"1-0040": "hwmon3", "1-0041": "hwmon4"}[device]
        directory = tmp_path / f"sys/bus/i2c/drivers/ina3221/{device}/hwmon/{hwmon}"
        (directory / "name").write_text("ina3221\n")
        if not label.startswith("("):
            (directory / f"in{number}_label").write_text(label + "\n")
    for device, hwmon in (("1-0040", "hwmon3"), ("1-0041", "hwmon4")):
        link_class(tmp_path, f"/sys/bus/i2c/drivers/ina3221/{device}/hwmon/{hwmon}", f"/sys/class/hwmon/{hwmon}")
    return tmp_path / "sys"


def test_agx_orin_hwmon_rails_sum_without_input_rail(tmp_path, sysfs_source):
    root = _orin_tree(tmp_path, sysfs_source("jetson_ina3221_layouts", "agx-orin-hwmon-fastnvmetrics-doc"))
    meter = INA3221Meter(root=root)
    rails = meter.read_rails_w()
    # hwmon ina3221 exposes mV and mA: power = mV * mA / 1e6 W.
    assert rails == pytest.approx(
        {
            "VDD_GPU_SOC": 843 * 6170e-6,
            "VDD_CPU_CV": 780 * 3437e-6,
            "VIN_SYS_5V0": 4968 * 953e-6,
            "VDDQ_VDD2_1V8AO": 1800 * 341e-6,
        }
    )
    # AGX Orin has no module input rail: the sum is used and flagged partial.
    assert meter.partial and set(meter.rails) == set(rails)
    assert meter.read_power_w() == pytest.approx(sum(rails.values()))
    assert INA3221Meter(["VDD_GPU_SOC"], root=root).read_power_w() == pytest.approx(843 * 6170e-6)


def test_xavier_nx_hwmon_uses_the_input_rail(tmp_path, sysfs_source):
    source = sysfs_source("jetson_ina3221_layouts", "xavier-nx-hwmon-alumet-readme")
    write_tree(tmp_path, source["files"])
    directory = tmp_path / "sys/bus/i2c/drivers/ina3221/7-0040/hwmon/hwmon6"
    (directory / "name").write_text("ina3221\n")
    for number, (millivolts, milliamps) in enumerate([(5000, 1200), (5000, 400), (5000, 300)], start=1):
        (directory / f"in{number}_input").write_text(f"{millivolts}\n")
        (directory / f"curr{number}_input").write_text(f"{milliamps}\n")
    (directory / "in7_input").write_text("1900\n")  # sum of shunt voltages: no current, not a rail
    link_class(tmp_path, "/sys/bus/i2c/drivers/ina3221/7-0040/hwmon/hwmon6", "/sys/class/hwmon/hwmon6")
    meter = INA3221Meter(root=tmp_path / "sys")
    assert meter.rails == ("VDD_IN",) and not meter.partial
    assert meter.read_power_w() == pytest.approx(6.0)
    assert set(meter.read_rails_w()) == {"VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"}


def test_tx2_iio_driver_rails_in_milliwatts(tmp_path, sysfs_source):
    source = sysfs_source("jetson_ina3221_layouts", "tx2-iio-jetsonTX2Power")
    write_tree(tmp_path, source["files"])
    power_mw = {"0-0040": [150, 520, 40], "0-0041": [3600, 1100, 880]}
    for device, values in power_mw.items():
        directory = tmp_path / f"sys/devices/3160000.i2c/i2c-0/{device}/iio_device"
        for number, milliwatts in enumerate(values):
            (directory / f"in_power{number}_input").write_text(f"{milliwatts}\n")
    for device in ("0-0040", "0-0041", "0-0042", "0-0043"):
        link_class(tmp_path, f"/sys/devices/3160000.i2c/i2c-0/{device}", f"/sys/bus/i2c/drivers/ina3221x/{device}")
    meter = INA3221Meter(root=tmp_path / "sys")
    assert meter.rails == ("VDD_IN",)
    assert meter.read_power_w() == pytest.approx(3.6)
    # Carrier-board chips (0x42, 0x43) list rail names but no power files here: not channels.
    assert set(meter.read_rails_w()) == {
        "VDD_SYS_GPU",
        "VDD_SYS_SOC",
        "VDD_4V0_WIFI",
        "VDD_IN",
        "VDD_SYS_CPU",
        "VDD_SYS_DDR",
    }
    with pytest.raises(MeterUnavailableError, match="VDD_NOPE"):
        INA3221Meter(["VDD_NOPE"], root=tmp_path / "sys")


def test_ina3221_absent_says_so(tmp_path):
    with pytest.raises(MeterUnavailableError, match="is this a Jetson"):
        INA3221Meter(root=tmp_path)


# -- RAPL ---------------------------------------------------------------------------------------

_RAPL_DEVICES = "/sys/devices/virtual/powercap/intel-rapl"


def _codecarbon_tree(tmp_path: Path, sysfs_source) -> Path:
    write_tree(tmp_path, sysfs_source("rapl_powercap_layouts", "codecarbon-rapl-tree")["files"])
    for zone in ("intel-rapl:0", "intel-rapl:1"):
        link_class(tmp_path, f"{_RAPL_DEVICES}/{zone}", f"/sys/class/powercap/{zone}")
    for sub in range(3):
        link_class(
            tmp_path, f"{_RAPL_DEVICES}/intel-rapl:0/intel-rapl:0:{sub}", f"/sys/class/powercap/intel-rapl:0:{sub}"
        )
    return tmp_path / "sys"


def _energy_file(tmp_path: Path, zone: str = "intel-rapl:0") -> Path:
    return tmp_path / f"sys/class/powercap/{zone}/energy_uj"


def test_rapl_names_zones_and_defaults_to_packages(tmp_path, sysfs_source):
    meter = RaplMeter(root=_codecarbon_tree(tmp_path, sysfs_source))
    assert set(meter.available_domains) == {"package-0", "package-0/core", "package-0/uncore", "package-0/dram", "psys"}
    assert [d.name for d in meter.domains] == ["package-0"]
    assert RaplMeter(["psys"], root=tmp_path / "sys").domains[0].key == "intel-rapl:1"
    assert [d.name for d in RaplMeter(["intel-rapl:0:2"], root=tmp_path / "sys").domains] == ["package-0/dram"]


def test_rapl_energy_is_the_counter_difference(tmp_path, sysfs_source):
    meter = RaplMeter(root=_codecarbon_tree(tmp_path, sysfs_source))
    assert meter.read_energy_j() == 0.0
    _energy_file(tmp_path).write_text(f"{52649883221 + 2_500_000}\n")
    assert meter.read_energy_j() == pytest.approx(2.5)


def test_rapl_counter_wraps_at_max_energy_range(tmp_path, sysfs_source):
    meter = RaplMeter(root=_codecarbon_tree(tmp_path, sysfs_source))
    max_range = 262143328850
    _energy_file(tmp_path).write_text(f"{max_range - 1_000_000}\n")
    before = meter.read_energy_j()
    _energy_file(tmp_path).write_text("3000000\n")  # wrapped past the maximum
    assert meter.read_energy_j() - before == pytest.approx(4.0)


def test_rapl_sampler_stamps_interval_power_at_midpoints(tmp_path, sysfs_source, monkeypatch):
    meter = RaplMeter(root=_codecarbon_tree(tmp_path, sysfs_source), interval_s=0.002)
    joules = iter(np.arange(0.0, 10_000.0, 0.5))
    monkeypatch.setattr(meter, "_read_counters", lambda: float(next(joules)))
    meter.start()
    time.sleep(0.02)
    trace = meter.stop()
    t, e = trace.counter_timestamps_s, trace.counter_energy_j
    assert trace.has_energy_counter and len(trace) == len(t) - 1
    assert trace.timestamps_s == pytest.approx((t[1:] + t[:-1]) / 2)
    assert trace.power_w == pytest.approx(np.diff(e) / np.diff(t))
    assert trace.energy_j() == pytest.approx(e[-1] - e[0])


def test_rapl_root_only_counter_explains_the_fix(tmp_path, sysfs_source, monkeypatch):
    root = _codecarbon_tree(tmp_path, sysfs_source)
    read_text = _sysfs._read_text

    def deny_energy(path):
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return read_text(path)

    monkeypatch.setattr(_sysfs, "_read_text", deny_energy)
    with pytest.raises(MeterUnavailableError, match="readable by root only"):
        RaplMeter(root=root)


def test_rapl_zone_that_is_not_counting_is_refused(tmp_path, sysfs_source):
    write_tree(tmp_path, sysfs_source("rapl_powercap_layouts", "powertelemetry-issue-3")["files"])
    link_class(tmp_path, f"{_RAPL_DEVICES}/intel-rapl:1", "/sys/class/powercap/intel-rapl:1")
    with pytest.raises(MeterUnavailableError, match="intel-rapl:1"):
        RaplMeter(root=tmp_path / "sys")
    with pytest.raises(MeterUnavailableError, match="wrap-around"):
        RaplMeter(["intel-rapl:1"], root=tmp_path / "sys")

    # With a maximum in place, the recorded 60293987000000 uJ exceeds it: the zone is not counting.
    (tmp_path / f"{_RAPL_DEVICES[1:]}/intel-rapl:1/max_energy_range_uj").write_text("262143328850\n")
    with pytest.raises(MeterUnavailableError, match="not counting"):
        RaplMeter(["intel-rapl:1"], root=tmp_path / "sys")


def test_rapl_partial_dump_offers_only_what_is_there(tmp_path, sysfs_source):
    write_tree(tmp_path, sysfs_source("rapl_powercap_layouts", "thermal_daemon-issue-45")["files"])
    base = "/sys/class/powercap/intel-rapl/intel-rapl:0"
    link_class(tmp_path, f"{base}/intel-rapl:0:2", "/sys/class/powercap/intel-rapl:0:2")
    with pytest.raises(MeterUnavailableError, match="no readable package or psys"):
        RaplMeter(root=tmp_path / "sys")
    meter = RaplMeter(["dram"], root=tmp_path / "sys")
    (tmp_path / f"{base[1:]}/intel-rapl:0:2/energy_uj").write_text(str(2469474853 + 1_000_000))
    assert meter.read_energy_j() == pytest.approx(1.0)


def test_rapl_absent_is_unavailable(tmp_path):
    reason = RaplMeter.unavailable_reason(root=tmp_path)
    assert reason is not None and "no powercap zones" in reason
