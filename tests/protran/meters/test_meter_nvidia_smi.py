"""nvidia-smi parsers on every recorded output, and the streaming meter."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from protran.meters import (
    MeterError,
    NvidiaSmiMeter,
    parse_nvidia_smi,
    parse_nvidia_smi_csv,
    parse_nvidia_smi_dmon,
    parse_nvidia_smi_query,
    parse_nvidia_smi_xml,
)
from protran.meters._nvidia_smi import parse_watts

# file -> (parser, readings, first (draw, average, instant) in W, name)
EXPECTED = {
    "a100-sxm4-40gb-mig_driver510.47.03_q-x.xml": (
        parse_nvidia_smi_xml,
        1,
        (66.92, None, None),
        "NVIDIA A100-SXM4-40GB",
    ),
    "h100-80gb-hbm3_linux_driver590.48.01_dmon_load.txt": (parse_nvidia_smi_dmon, 5, (631.0, None, None), None),
    "h100-80gb-hbm3_linux_driver590.48.01_q_idle.txt": (
        parse_nvidia_smi_query,
        1,
        (None, 69.85, 69.62),
        "NVIDIA H100 80GB HBM3",
    ),
    "h100-80gb-hbm3_linux_driver590.48.01_q_load.txt": (
        parse_nvidia_smi_query,
        1,
        (None, 629.45, 588.39),
        "NVIDIA H100 80GB HBM3",
    ),
    "h100-80gb-hbm3_linux_driver590.48.01_query-gpu_idle.csv": (
        parse_nvidia_smi_csv,
        1,
        (69.85, 69.85, 69.62),
        "NVIDIA H100 80GB HBM3",
    ),
    "h100-80gb-hbm3_linux_driver590.48.01_query-gpu_load.csv": (
        parse_nvidia_smi_csv,
        1,
        (631.95, 631.95, 625.68),
        "NVIDIA H100 80GB HBM3",
    ),
    "h200_linux_driver590.48.01_query-gpu_load.csv": (parse_nvidia_smi_csv, 1, (627.40, 627.40, 626.26), "NVIDIA H200"),
    "l40s_linux_driver595.80_query-gpu_load.csv": (parse_nvidia_smi_csv, 1, (110.23, 110.23, 112.38), "NVIDIA L40S"),
    "rtx-2080-super_windows_driver591.86_query-gpu_load.csv": (
        parse_nvidia_smi_csv,
        1,
        (97.43, None, 97.43),
        "NVIDIA GeForce RTX 2080 SUPER",
    ),
    "rtx-4080-super_linux_driver595.71.05_q_load.txt": (
        parse_nvidia_smi_query,
        1,
        (None, 84.03, 86.41),
        "NVIDIA GeForce RTX 4080 SUPER",
    ),
    "rtx-4080-super_linux_driver595.71.05_query-gpu_load.csv": (
        parse_nvidia_smi_csv,
        1,
        (84.24, 84.24, 86.41),
        "NVIDIA GeForce RTX 4080 SUPER",
    ),
    "tesla-p100-pcie-16gb_query-gpu_netdata.csv": (
        parse_nvidia_smi_csv,
        1,
        (28.16, None, None),
        "Tesla P100-PCIE-16GB",
    ),
}


def test_every_recorded_file_is_covered(recorded):
    assert {p.name for p in (recorded / "nvidia-smi").iterdir()} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recorded_output(recorded, name):
    parser, count, (draw, average, instant), gpu_name = EXPECTED[name]
    text = (recorded / "nvidia-smi" / name).read_text()
    for readings in (parser(text), parse_nvidia_smi(text)):  # the format is also recognised
        assert len(readings) == count
        first = readings[0]
        assert first.gpu_index == 0 and first.name == gpu_name
        assert first.power_draw_w == (None if draw is None else pytest.approx(draw))
        assert first.power_draw_average_w == (None if average is None else pytest.approx(average))
        assert first.power_draw_instant_w == (None if instant is None else pytest.approx(instant))
        assert first.power_w == pytest.approx(instant if instant is not None else draw if draw is not None else average)


def test_memory_and_module_blocks_are_not_gpu_power(recorded):
    # -q prints "GPU Memory Power Readings" (43.19 W average) after the GPU block: not taken.
    (reading,) = parse_nvidia_smi_query(
        (recorded / "nvidia-smi" / "h100-80gb-hbm3_linux_driver590.48.01_q_idle.txt").read_text()
    )
    assert reading.power_draw_average_w == pytest.approx(69.85)
    assert reading.timestamp == dt.datetime(2026, 7, 14, 8, 12, 38)


def test_dmon_rows(recorded):
    readings = parse_nvidia_smi_dmon(
        (recorded / "nvidia-smi" / "h100-80gb-hbm3_linux_driver590.48.01_dmon_load.txt").read_text()
    )
    assert [r.power_draw_w for r in readings] == [631.0, 634.0, 633.0, 634.0, 636.0]


def test_csv_timestamps_and_noheader_rows(recorded):
    (reading,) = parse_nvidia_smi_csv(
        (recorded / "nvidia-smi" / "h200_linux_driver590.48.01_query-gpu_load.csv").read_text()
    )
    assert reading.timestamp == dt.datetime(2026, 7, 3, 22, 11, 9, 763000)
    rows = parse_nvidia_smi_csv("1, 250.50 W\n0, [N/A]\n", fields=["index", "power.draw [W]"])
    assert [(r.gpu_index, r.power_w) for r in rows] == [(1, 250.5), (0, None)]
    with pytest.raises(ValueError, match="row 1"):
        parse_nvidia_smi_csv("a, b\n1\n")


def test_new_xml_schema():
    xml = """<?xml version="1.0" ?><nvidia_smi_log><timestamp>Mon Jun  3 10:00:00 2024</timestamp>
    <gpu id="00000000:01:00.0"><product_name>NVIDIA A10G</product_name><gpu_power_readings>
    <power_state>P0</power_state><average_power_draw>61.23 W</average_power_draw>
    <instant_power_draw>60.10 W</instant_power_draw><current_power_limit>300.00 W</current_power_limit>
    </gpu_power_readings><gpu_memory_power_readings><average_power_draw>9.00 W</average_power_draw>
    </gpu_memory_power_readings></gpu></nvidia_smi_log>"""
    (reading,) = parse_nvidia_smi_xml(xml)
    assert (reading.power_draw_average_w, reading.power_draw_instant_w, reading.power_w) == (61.23, 60.10, 60.10)
    assert reading.timestamp == dt.datetime(2024, 6, 3, 10, 0, 0)


@pytest.mark.parametrize(
    ("text", "watts"),
    [
        ("631.95 W", 631.95),
        ("28.16", 28.16),
        ("500 mW", 0.5),
        ("[N/A]", None),
        ("N/A", None),
        ("-", None),
        ("[Not Supported]", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_watts(text, watts):
    assert parse_watts(text) == watts


PROBE = """
if any(a.startswith("--query-gpu=power.draw.instant") for a in sys.argv) and "--format=csv,noheader" in sys.argv:
    print(INSTANT)
    sys.exit(0)
"""


def test_meter_streams_csv_and_probes_the_field(fake_tool):
    rows = [b"index, power.draw.instant [W]", b"0, 101.50 W", b"0, 99.25 W", b"0, 120.00 W"]
    fake_tool("nvidia-smi", rows, period_s=0.02, prelude=PROBE.replace("INSTANT", "'101.50 W'"))
    meter = NvidiaSmiMeter(interval_s=0.02)
    assert meter.field == "power.draw.instant"
    assert meter.command()[1:] == ["--query-gpu=index,power.draw.instant", "--format=csv", "-lms", "20", "-i", "0"]
    meter.start()
    time.sleep(0.1)
    trace = meter.stop()
    assert len(trace) >= 2 and set(trace.power_w) <= {101.5, 99.25, 120.0}


def test_meter_falls_back_to_power_draw(fake_tool):
    fake_tool("nvidia-smi", [b"index, power.draw [W]", b"0, 80.00 W"], prelude=PROBE.replace("INSTANT", "'[N/A]'"))
    meter = NvidiaSmiMeter(interval_s=0.02)
    assert meter.field == "power.draw"
    assert meter.read_power_w() == 80.0


def test_meter_rejects_gpu_without_power(fake_tool):
    fake_tool("nvidia-smi", [b"index, power.draw [W]", b"0, [N/A]"])
    with pytest.raises(MeterError, match="reports no power.draw"):
        NvidiaSmiMeter(field="power.draw", interval_s=0.02).read_power_w()
