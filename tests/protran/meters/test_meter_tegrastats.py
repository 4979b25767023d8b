"""tegrastats parser on every recorded format, and the streaming meter."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from protran.meters import INPUT_RAILS, MeterError, TegrastatsMeter, parse_tegrastats, parse_tegrastats_line

# file -> (lines, first line's rails in W, total rails, partial, first total W)
EXPECTED = {
    "jetson-agx-orin-64gb_jp6-format.txt": (
        43,
        {"VDD_GPU_SOC": 2.797, "VDD_CPU_CV": 0.799, "VIN_SYS_5V0": 3.215},
        None,
        True,
        6.811,
    ),
    "jetson-agx-orin-64gb_single-line_jetson_exporter-issue14.txt": (
        1,
        {"VDD_GPU_SOC": 2.340, "VDD_CPU_CV": 0.390, "VIN_SYS_5V0": 4.025, "NC": 0.0, "VDDQ_VDD2_1V8AO": 0.301},
        ("VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"),
        True,
        7.056,
    ),
    "jetson-agx-orin-devkit_jp7.2-l4t-r39.2_single-line.txt": (
        1,
        {"VDD_GPU_SOC": 5.139, "VDD_CPU_CV": 3.268, "VIN_SYS_5V0": 5.500},
        None,
        True,
        13.907,
    ),
    "jetson-agx-xavier_jp4.2_single-line_gtop-pr7.txt": (
        1,
        {"GPU": 0.463, "CPU": 0.618, "SOC": 2.936, "CV": 0.0, "VDDRQ": 0.309, "SYS5V": 3.306},
        None,
        True,
        7.632,
    ),
    "jetson-nano-4gb_2-cores-off_no-rails_single-line_hexapod.txt": (1, {}, (), False, None),
    "jetson-nano_root_pom-rails_100lines.txt": (
        100,
        {"POM_5V_IN": 0.920, "POM_5V_GPU": 0.0, "POM_5V_CPU": 0.119},
        ("POM_5V_IN",),
        False,
        0.920,
    ),
    "jetson-orin-nano-or-nx-8gb_jp5-deepstream6.3_gpu-burn_103lines.txt": (
        103,
        {"VDD_IN": 5.542, "VDD_CPU_GPU_CV": 1.594, "VDD_SOC": 1.234},
        ("VDD_IN",),
        False,
        5.542,
    ),
    "jetson-tx1_l4t28.1_legacy-format_2-lines.txt": (2, {}, (), False, None),
    "jetson-tx2_nonroot-then-root_100lines.txt": (
        100,
        {"VDD_IN": 3.608, "VDD_CPU": 0.697, "VDD_GPU": 0.371, "VDD_SOC": 0.651, "VDD_WIFI": 0.0, "VDD_DDR": 0.881},
        ("VDD_IN",),
        False,
        3.608,
    ),
    "jetson-tx2_root_gr3d-off_2-lines_tx2-bsp.txt": (
        2,
        {
            "VDD_SYS_GPU": 0.192,
            "VDD_SYS_SOC": 0.529,
            "VDD_4V0_WIFI": 0.038,
            "VDD_IN": 3.566,
            "VDD_SYS_CPU": 1.156,
            "VDD_SYS_DDR": 0.902,
        },
        ("VDD_IN",),
        False,
        3.566,
    ),
    "jetson-tx2_vdd_sys-rails_single-line_tx-utils-issue3.txt": (
        1,
        {
            "VDD_SYS_GPU": 0.153,
            "VDD_SYS_SOC": 0.536,
            "VDD_4V0_WIFI": 0.633,
            "VDD_IN": 3.140,
            "VDD_SYS_CPU": 0.536,
            "VDD_SYS_DDR": 0.557,
        },
        ("VDD_IN",),
        False,
        3.140,
    ),
}


def test_every_recorded_file_is_covered(recorded):
    assert {p.name for p in (recorded / "tegrastats").iterdir()} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recorded_file(recorded, name):
    count, rails, total_rails, partial, total_w = EXPECTED[name]
    records = parse_tegrastats((recorded / "tegrastats" / name).read_text())
    assert len(records) == count
    first = records[0]
    assert first.rails_w == pytest.approx(rails)
    assert first.total_rails == (total_rails if total_rails is not None else tuple(rails))
    assert first.total_is_partial is partial
    assert first.total_w == (None if total_w is None else pytest.approx(total_w))
    # Every line of a file has the same rails (the TX2 file switches root mode, not rails).
    assert all(set(r.rails_w) == set(rails) for r in records)


def test_input_rail_preference_is_documented_order():
    assert INPUT_RAILS == ("VDD_IN", "POM_5V_IN")


def test_averages_dates_and_utilisation(recorded):
    folder = recorded / "tegrastats"
    nano = parse_tegrastats((folder / "jetson-nano_root_pom-rails_100lines.txt").read_text())
    assert nano[1].rails_avg_w["POM_5V_IN"] == pytest.approx(1.228)
    assert nano[0].cpu_util_pct == (10.0, 3.0, 0.0, 0.0) and nano[2].gpu_util_pct == 42.0
    orin = parse_tegrastats((folder / "jetson-orin-nano-or-nx-8gb_jp5-deepstream6.3_gpu-burn_103lines.txt").read_text())
    assert orin[0].timestamp == dt.datetime(2025, 10, 1, 20, 5, 55)
    assert orin[0].cpu_util_pct == (99.0, 100.0, 100.0, 98.0, None, None)
    assert max(r.total_w for r in orin) == pytest.approx(max(r.rails_w["VDD_IN"] for r in orin))
    jp7 = parse_tegrastats((folder / "jetson-agx-orin-devkit_jp7.2-l4t-r39.2_single-line.txt").read_text())[0]
    assert jp7.gpu_util_pct == 12.0 and jp7.rails_avg_w["VIN_SYS_5V0"] == pytest.approx(5.5)
    tx2_off = parse_tegrastats((folder / "jetson-tx2_root_gr3d-off_2-lines_tx2-bsp.txt").read_text())[0]
    assert tx2_off.gpu_util_pct is None  # GR3D_FREQ @0: GPU rail-gated
    tx1 = parse_tegrastats((folder / "jetson-tx1_l4t28.1_legacy-format_2-lines.txt").read_text())
    assert tx1[1].cpu_util_pct == (17.0, 11.0, 65.0, 0.0) and tx1[1].gpu_util_pct == 39.0


def test_memory_fields_are_not_rails():
    record = parse_tegrastats_line(
        "RAM 2630/7850MB (lfb 3x4MB) SWAP 0/4096MB (cached 0MB) IRAM 0/252kB(lfb 252kB) VDD_IN 100/200"
    )
    assert record.rails_w == {"VDD_IN": 0.1}


def test_chosen_rails_override_the_total():
    line = "VDD_IN 5000mW/5000mW VDD_CPU_GPU_CV 1500mW/1400mW VDD_SOC 1200mW/1200mW"
    record = parse_tegrastats_line(line, rails=["VDD_CPU_GPU_CV", "VDD_SOC"])
    assert record.total_w == pytest.approx(2.7) and not record.total_is_partial
    with pytest.raises(ValueError, match="VDD_GPU"):
        parse_tegrastats_line(line, rails=["VDD_GPU"])


def test_meter_streams_lines(recorded, fake_tool):
    lines = (
        recorded / "tegrastats" / "jetson-orin-nano-or-nx-8gb_jp5-deepstream6.3_gpu-burn_103lines.txt"
    ).read_bytes()
    fake_tool("tegrastats", lines.splitlines()[:5], period_s=0.02)
    meter = TegrastatsMeter(interval_s=0.02)
    assert meter.command()[1:] == ["--interval", "20"]
    meter.start()
    time.sleep(0.1)
    trace = meter.stop()
    assert len(trace) >= 2 and meter.partial is False
    expected = {r.total_w for r in parse_tegrastats(lines.decode())[:5]}
    assert set(trace.power_w.round(6)) <= {round(w, 6) for w in expected}
    assert TegrastatsMeter(["VDD_SOC"], interval_s=0.02).read_power_w() == pytest.approx(1.234)


def test_meter_without_rails_explains(recorded, fake_tool):
    line = (
        (recorded / "tegrastats" / "jetson-nano-4gb_2-cores-off_no-rails_single-line_hexapod.txt").read_bytes().strip()
    )
    fake_tool("tegrastats", [line])
    with pytest.raises(MeterError, match="no power rails"):
        TegrastatsMeter(interval_s=0.02).start()
