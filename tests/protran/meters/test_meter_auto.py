"""Choosing meters by name and detecting what a machine has."""

from __future__ import annotations

import pytest

from protran.meters import (
    METER_NAMES,
    HwmonMeter,
    MeterUnavailableError,
    NvmlMeter,
    RaplMeter,
    available_meters,
    detect_meter,
)
from protran.meters._auto import AUTO_ORDER, METERS, parse_remote


@pytest.fixture
def bare_machine(tmp_path, monkeypatch):
    """No tools on PATH, no NVML, an empty sysfs: nothing to measure with."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.setattr(NvmlMeter, "unavailable_reason", classmethod(lambda cls, **o: "nvml: no driver"))
    root = tmp_path / "sys"
    root.mkdir()
    return root


def _fake_rapl(root):
    zone = root / "class" / "powercap" / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "name").write_text("package-0\n")
    (zone / "energy_uj").write_text("1000\n")
    (zone / "max_energy_range_uj").write_text("262143328850\n")


def _fake_hwmon(root):
    chip = root / "class" / "hwmon" / "hwmon0"
    chip.mkdir(parents=True)
    (chip / "name").write_text("ina219\n")
    (chip / "power1_input").write_text("3300000\n")


def test_none_means_no_meter():
    assert detect_meter("none") is None


def test_auto_returns_none_when_nothing_exists(bare_machine):
    assert detect_meter("auto", root=bare_machine) is None
    rows = available_meters(root=bare_machine)
    assert [name for name, _, _ in rows] == list(METERS)
    assert not any(available for _, available, _ in rows)
    assert all(reason and reason != "available" for _, _, reason in rows)


def test_auto_takes_the_first_meter_that_exists(bare_machine):
    _fake_hwmon(bare_machine)
    assert isinstance(detect_meter("auto", root=bare_machine), HwmonMeter)
    _fake_rapl(bare_machine)
    meter = detect_meter("auto", root=bare_machine)
    assert isinstance(meter, RaplMeter)  # RAPL comes before hwmon
    assert {n: a for n, a, _ in available_meters(root=bare_machine)} == {
        **{name: False for name in METERS},
        "rapl": True,
        "hwmon": True,
    }


def test_auto_order_puts_the_gpu_first_and_never_probes_i2c():
    assert AUTO_ORDER[0] == "nvml" and "ina219" not in AUTO_ORDER
    assert set(AUTO_ORDER) <= set(METERS)


def test_named_meter_that_is_absent_raises_with_the_reason(bare_machine):
    with pytest.raises(MeterUnavailableError, match="no powercap zones"):
        detect_meter("rapl", root=bare_machine)
    with pytest.raises(MeterUnavailableError, match="tegrastats"):
        detect_meter("tegrastats")


def test_named_meter_gets_its_options(bare_machine):
    _fake_hwmon(bare_machine)
    meter = detect_meter("hwmon", root=bare_machine, interval_s=0.5)
    assert isinstance(meter, HwmonMeter) and meter.interval_s == 0.5
    with pytest.raises(TypeError, match="shunt_ohms"):
        detect_meter("hwmon", root=bare_machine, shunt_ohms=0.1)


def test_command_line_strings_become_typed_options():
    from protran.meters import INA219Meter, INA3221Meter, PowermetricsMeter
    from protran.meters._auto import coerce_options

    assert coerce_options(INA219Meter, {"address": "0x45", "shunt_ohms": "0.1", "bus": "1"}) == {
        "address": 0x45,
        "shunt_ohms": 0.1,
        "bus": 1,
    }
    assert coerce_options(INA3221Meter, {"rails": "VDD_IN, VDD_SOC"}) == {"rails": ["VDD_IN", "VDD_SOC"]}
    assert coerce_options(PowermetricsMeter, {"sudo": "false", "component": "gpu"}) == {
        "sudo": False,
        "component": "gpu",
    }
    assert coerce_options(INA219Meter, {"address": 0x45}) == {"address": 0x45}  # typed values pass through
    with pytest.raises(ValueError, match="shunt_ohms='small'"):
        coerce_options(INA219Meter, {"shunt_ohms": "small"})


def test_named_meter_takes_command_line_strings(bare_machine):
    _fake_hwmon(bare_machine)
    meter = detect_meter("hwmon", root=str(bare_machine), interval_s="0.25", rails="ina219/power1")
    assert meter.interval_s == 0.25 and meter.rails == ("ina219/power1",)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="ina219"):
        detect_meter("multimeter")
    assert {"auto", "none", "ina219", "hwmon", "ina3221", "rapl", "nvml", "powermetrics", "tegrastats"} <= set(
        METER_NAMES
    )


def test_remote_names():
    assert parse_remote("remote:192.168.0.161:8765") == ("192.168.0.161", 8765)
    assert parse_remote("remote:[::1]:9000") == ("::1", 9000)
    for bad in ("remote:host", "remote::80", "remote:host:http", "remote:host:70000"):
        with pytest.raises(ValueError, match="remote:HOST:PORT"):
            parse_remote(bad)
    # detect_meter on a remote name shakes hands with the server: tests/protran/meters/test_meter_remote.py
