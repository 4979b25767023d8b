"""Power meters: read a board's power now, or sample it in the background while a model runs.

Typical use::

    from protran.meters import detect_meter

    meter = detect_meter("auto")  # None when this machine has no power sensor
    if meter is not None:
        with meter:  # samples in a background thread
            run_workload()
        trace = meter.last_trace
        trace.energy_j(t0, t1), trace.peak_power_w(t0, t1)

Each tool's output has a pure parser (``parse_*``), tested on recorded output; the meters that run
the tools are separate classes. ``protran meters`` lists what this machine has.
"""

from protran.meters._auto import METER_NAMES, available_meters, detect_meter
from protran.meters._base import MeterError, MeterUnavailableError, PowerMeter, PowerTrace, Reading
from protran.meters._ina219 import INA219Calibration, INA219LogRecord, INA219Meter, ina219_calibration, parse_ina219_log
from protran.meters._nvidia_smi import (
    NvidiaSmiMeter,
    NvidiaSmiReading,
    parse_nvidia_smi,
    parse_nvidia_smi_csv,
    parse_nvidia_smi_dmon,
    parse_nvidia_smi_query,
    parse_nvidia_smi_xml,
)
from protran.meters._nvml import NvmlMeter
from protran.meters._powermetrics import (
    PowermetricsMeter,
    PowermetricsSample,
    parse_powermetrics,
    parse_powermetrics_plist,
    parse_powermetrics_text,
)
from protran.meters._rails import INPUT_RAILS
from protran.meters._remote import MeterServer, RemoteMeter, run_meter_server, serve_meter
from protran.meters._sysfs import HwmonMeter, INA3221Meter, RaplMeter
from protran.meters._tegrastats import TegrastatsMeter, TegrastatsRecord, parse_tegrastats, parse_tegrastats_line
from protran.meters._zeus import ZeusMeter

__all__ = [
    "HwmonMeter",
    "INA219Calibration",
    "INA219LogRecord",
    "INA219Meter",
    "INA3221Meter",
    "INPUT_RAILS",
    "METER_NAMES",
    "MeterError",
    "MeterServer",
    "MeterUnavailableError",
    "NvidiaSmiMeter",
    "NvidiaSmiReading",
    "NvmlMeter",
    "PowerMeter",
    "PowerTrace",
    "PowermetricsMeter",
    "PowermetricsSample",
    "RaplMeter",
    "Reading",
    "RemoteMeter",
    "TegrastatsMeter",
    "TegrastatsRecord",
    "ZeusMeter",
    "available_meters",
    "detect_meter",
    "ina219_calibration",
    "parse_ina219_log",
    "parse_nvidia_smi",
    "parse_nvidia_smi_csv",
    "parse_nvidia_smi_dmon",
    "parse_nvidia_smi_query",
    "parse_nvidia_smi_xml",
    "parse_powermetrics",
    "parse_powermetrics_plist",
    "parse_powermetrics_text",
    "parse_tegrastats",
    "parse_tegrastats_line",
    "run_meter_server",
    "serve_meter",
]
