"""powermetrics parsers on every recorded capture, tolerance to key changes, and the streaming meter."""

from __future__ import annotations

import datetime as dt
import plistlib
import time

import pytest

from protran.meters import (
    MeterError,
    MeterUnavailableError,
    PowermetricsMeter,
    parse_powermetrics,
    parse_powermetrics_plist,
    parse_powermetrics_text,
)

# file -> (samples, first sample's (cpu, gpu, ane, dram, combined, package) in W, total source)
EXPECTED = {
    "m1-macmini9_1_macos11-20D80_text_cinebench-r23.txt": (3, (8.263, 0.0, 0.0, 0.314, None, 8.821), "package"),
    "m1-macmini9_1_macos11-20D80_text_geekbench5-metal.txt": (3, (0.010, 10.439, 0.0, 0.492, None, 11.288), "package"),
    "m1-macbookair10_1_macos12-21G115_text_100ms.txt": (3, (0.947, 0.153, 0.0, 0.220, None, 1.473), "package"),
    "m1max-macbookpro18_2_macos14-23G93_text_samplers-all.txt": (1, (0.044, 0.010, 0.0, None, 0.054, None), "combined"),
    "mac16_6_macos15-24F74_text_all-samplers.txt": (1, (0.954, 0.028, 0.0, None, 0.983, None), "combined"),
    "m1pro-macbookpro18_3_macos14-23H311_plist_2samples_nul.plist": (
        2,
        (2.09208, 0.0978311, 0.0, None, 2.18991, None),
        "combined",
    ),
    "m1pro-macbookpro18_3_macos15-24D81_plist_show-all_1sample.plist": (
        1,
        (0.453198, 0.0263147, 0.0, None, 0.479512, None),
        "combined",
    ),
    "mac16_5_macos26-25C56_plist_all-samplers_1task.plist": (
        1,
        (2.97845, 0.269614, 0.0, None, 3.24807, None),
        "combined",
    ),
    # gpu_power sampler only: 19 mJ over 5.004758375 s.
    "mac16_8_macos15-24F74_plist_gpu_power_5samples_nul.plist": (
        5,
        (None, 0.019 / 5.004758375, None, None, None, None),
        "sum(gpu)",
    ),
}
FIELDS = ("cpu_w", "gpu_w", "ane_w", "dram_w", "combined_w", "package_w")


def test_every_recorded_capture_is_covered(recorded):
    assert {p.name for p in (recorded / "powermetrics").iterdir()} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recorded_capture(recorded, name):
    count, first, source = EXPECTED[name]
    samples = parse_powermetrics((recorded / "powermetrics" / name).read_bytes())
    assert len(samples) == count
    for field, expected in zip(FIELDS, first, strict=True):
        value = getattr(samples[0], field)
        assert value == (None if expected is None else pytest.approx(expected)), field
    assert samples[0].total_source == source
    for sample in samples:
        assert sample.total_w is not None and sample.total_w >= 0
        assert sample.timestamp is not None and sample.timestamp.tzinfo is not None
        assert sample.elapsed_s is not None and sample.elapsed_s > 0


def test_text_details(recorded):
    folder = recorded / "powermetrics"
    cinebench = parse_powermetrics_text((folder / "m1-macmini9_1_macos11-20D80_text_cinebench-r23.txt").read_text())
    assert cinebench[0].timestamp == dt.datetime(2021, 3, 1, 10, 45, 50, tzinfo=dt.timezone(dt.timedelta(hours=-8)))
    assert cinebench[0].elapsed_s == pytest.approx(1.01133)
    assert [s.package_w for s in cinebench] == pytest.approx([8.821, 7.975, 7.461])
    # GPU Power is printed twice per sample (10439 then 10432 mW): the processor section's wins.
    metal = parse_powermetrics_text((folder / "m1-macmini9_1_macos11-20D80_text_geekbench5-metal.txt").read_text())
    assert [s.gpu_w for s in metal] == pytest.approx([10.439, 9.320, 9.634])


def test_plist_stream_details(recorded):
    data = (recorded / "powermetrics" / "mac16_8_macos15-24F74_plist_gpu_power_5samples_nul.plist").read_bytes()
    samples = parse_powermetrics_plist(data)
    energy_mj = [19, 107, 788, 146, 126]
    assert [s.gpu_w * s.elapsed_s * 1e3 for s in samples] == pytest.approx(energy_mj)
    assert samples[0].timestamp == dt.datetime(2025, 7, 6, 5, 15, 15, tzinfo=dt.timezone.utc)
    assert all(s.cpu_w is None for s in samples)


def _plist(**sample) -> bytes:
    return plistlib.dumps(sample)


def test_plist_tolerates_renamed_and_missing_keys():
    # macOS 12 style: energies over the sample and package_energy instead of combined_power.
    old = parse_powermetrics_plist(
        _plist(
            elapsed_ns=500_000_000,
            processor={
                "cpu_energy": 1000,
                "gpu_energy": 250,
                "ane_energy": 0,
                "package_energy": 1500,
            },
        )
    )[0]
    assert (old.cpu_w, old.gpu_w, old.ane_w, old.package_w) == pytest.approx((2.0, 0.5, 0.0, 3.0))
    assert old.total_source == "package" and old.total_w == pytest.approx(3.0)
    # Watts spelled out, no elapsed time, no timestamp.
    watts = parse_powermetrics_plist(_plist(processor={"package_watts": 4.25, "cpu_watts": 3.0}))[0]
    assert watts.package_w == 4.25 and watts.cpu_w == 3.0 and watts.elapsed_s is None and watts.timestamp is None
    # Energies cannot become power without the sample length.
    assert parse_powermetrics_plist(_plist(processor={"cpu_energy": 10}))[0].cpu_w is None
    # Nothing at all.
    empty = parse_powermetrics_plist(_plist(hw_model="Mac14,2"))[0]
    assert empty.total_w is None and empty.total_source is None


def test_sum_of_components_when_no_total_is_printed():
    text = (
        "*** Sampled system activity (Mon Mar  1 10:45:50 2021 -0800) (100.0ms elapsed) ***\n"
        "CPU Power: 500 mW\nGPU Power: 250 mW\n"
    )
    (sample,) = parse_powermetrics_text(text)
    assert sample.total_source == "sum(cpu,gpu)" and sample.total_w == pytest.approx(0.75)


def test_meter_streams_plist_samples(recorded, fake_tool):
    data = (recorded / "powermetrics" / "m1pro-macbookpro18_3_macos14-23H311_plist_2samples_nul.plist").read_bytes()
    records = [part for part in data.split(b"\0") if part.strip()]
    fake_tool("powermetrics", records, delimiter=b"\0", period_s=0.02)
    meter = PowermetricsMeter(sudo=False, interval_s=0.02)
    assert meter.command()[1:] == ["-f", "plist", "-b", "0", "-i", "20", "--samplers", "cpu_power,gpu_power"]
    meter.start()
    time.sleep(0.1)
    trace = meter.stop()
    assert len(trace) >= 2
    assert set(trace.power_w.round(5)) <= {2.18991, 2.71579}
    assert meter.read_power_w() == pytest.approx(2.18991)
    gpu = PowermetricsMeter("gpu", sudo=False, interval_s=0.02)
    assert gpu.read_power_w() == pytest.approx(0.0978311)


def test_meter_uses_sudo_when_not_root(fake_tool):
    fake_tool("powermetrics", [b"x"])
    assert PowermetricsMeter(sudo=True).command()[:2] == ["sudo", "-n"]


def test_meter_reports_a_tool_that_stops(fake_tool):
    fake_tool("powermetrics", [_plist(processor={"cpu_power": 100.0})], delimiter=b"\0", repeat=False)
    meter = PowermetricsMeter(sudo=False, interval_s=0.01)
    meter.start()
    meter._thread.join(timeout=5)
    with pytest.raises(MeterError, match="stopped"):
        meter.stop()


def test_meter_without_tool_is_unavailable(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert "not found" in PowermetricsMeter.unavailable_reason()
    with pytest.raises(MeterUnavailableError, match="powermetrics"):
        PowermetricsMeter()
