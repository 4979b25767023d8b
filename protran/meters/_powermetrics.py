"""Apple ``powermetrics`` (macOS, Apple silicon): parsers of its text and plist output, and a meter.

Power keys changed across macOS releases; the parsers take what is there and leave the rest None:
- text: ``CPU Power: N mW`` (macOS 12+; ``Clusters Total Power`` on macOS 11), ``GPU Power``,
  ``ANE Power``, ``DRAM Power`` and ``Package Power`` (macOS 11/12), ``Combined Power (CPU + GPU +
  ANE)`` (macOS 13+).
- plist: ``processor`` with ``cpu_power``/``gpu_power``/``ane_power``/``combined_power`` (mW) or
  ``*_energy`` (mJ over the sample), ``package_energy`` on macOS 12, and a ``gpu`` dict with
  ``gpu_energy`` (the only power data of the ``gpu_power`` sampler).
"""

from __future__ import annotations

import datetime as dt
import os
import plistlib
import re
from dataclasses import dataclass
from typing import Any

from protran.meters._base import MeterError, Reading
from protran.meters._tool import ToolMeter

_COMPONENTS = ("cpu", "gpu", "ane", "dram")


@dataclass(frozen=True)
class PowermetricsSample:
    """One powermetrics sample; power in watts, None where the output lacks it.

    ``total_w`` is the most complete total printed: ``package`` (macOS 11/12; includes DRAM) over
    ``combined`` (CPU + GPU + ANE, macOS 13+) over the sum of the components present
    (``total_source`` names which, e.g. "sum(cpu,gpu)").
    """

    timestamp: dt.datetime | None
    elapsed_s: float | None
    cpu_w: float | None = None
    gpu_w: float | None = None
    ane_w: float | None = None
    dram_w: float | None = None
    combined_w: float | None = None
    package_w: float | None = None

    @property
    def total_source(self) -> str | None:
        if self.package_w is not None:
            return "package"
        if self.combined_w is not None:
            return "combined"
        present = [c for c in _COMPONENTS if getattr(self, f"{c}_w") is not None]
        return f"sum({','.join(present)})" if present else None

    @property
    def total_w(self) -> float | None:
        source = self.total_source
        if source is None:
            return None
        if source in ("package", "combined"):
            return getattr(self, f"{source}_w")
        return sum(getattr(self, f"{c}_w") for c in _COMPONENTS if getattr(self, f"{c}_w") is not None)


# -- plist ---------------------------------------------------------------------------------------


def _plist_power_w(section: dict[str, Any], key: str, elapsed_s: float | None) -> float | None:
    """``key_power`` (mW), else ``key_watts`` (W), else ``key_energy`` (mJ over the sample)."""
    if isinstance(section.get(f"{key}_power"), (int, float)):
        return float(section[f"{key}_power"]) * 1e-3
    if isinstance(section.get(f"{key}_watts"), (int, float)):
        return float(section[f"{key}_watts"])
    energy = section.get(f"{key}_energy")
    if isinstance(energy, (int, float)) and elapsed_s:
        return float(energy) * 1e-3 / elapsed_s
    return None


def parse_powermetrics_plist_sample(data: bytes | dict[str, Any]) -> PowermetricsSample:
    """One plist sample (bytes, or an already loaded dict)."""
    sample = plistlib.loads(data.strip(b"\0\n\r\t ")) if isinstance(data, bytes) else data
    elapsed_ns = sample.get("elapsed_ns")
    elapsed_s = float(elapsed_ns) * 1e-9 if isinstance(elapsed_ns, (int, float)) and elapsed_ns > 0 else None
    timestamp = sample.get("timestamp")
    processor = sample.get("processor") if isinstance(sample.get("processor"), dict) else {}
    gpu = sample.get("gpu") if isinstance(sample.get("gpu"), dict) else {}
    values = {key: _plist_power_w(processor, key, elapsed_s) for key in (*_COMPONENTS, "combined", "package")}
    if values["gpu"] is None:
        values["gpu"] = _plist_power_w(gpu, "gpu", elapsed_s)
    if isinstance(timestamp, dt.datetime) and timestamp.tzinfo is None:
        timestamp = timestamp.replace(tzinfo=dt.timezone.utc)  # plist dates are UTC
    return PowermetricsSample(
        timestamp=timestamp if isinstance(timestamp, dt.datetime) else None,
        elapsed_s=elapsed_s,
        **{f"{key}_w": value for key, value in values.items()},
    )


def parse_powermetrics_plist(data: bytes) -> list[PowermetricsSample]:
    """``powermetrics -f plist`` output: plists separated by NUL bytes (the last may lack one)."""
    return [parse_powermetrics_plist_sample(part) for part in data.split(b"\0") if part.strip()]


# -- text ----------------------------------------------------------------------------------------

_SAMPLE_HEADER = re.compile(
    r"^\*\*\* Sampled system activity \((?P<when>[^)]*)\)(?: \((?P<elapsed>[\d.]+)ms elapsed\))? \*\*\*", re.M
)
_POWER_LINE = re.compile(
    r"^(?P<label>[A-Za-z][A-Za-z0-9 ()+\-]*?) Power(?: \([^)]*\))?: (?P<mw>\d+(?:\.\d+)?) mW\s*$", re.M
)
_TEXT_LABELS = {
    "CPU": "cpu",
    "Clusters Total": "clusters",
    "GPU": "gpu",
    "ANE": "ane",
    "DRAM": "dram",
    "Package": "package",
    "Combined": "combined",
}


def _parse_text_timestamp(text: str) -> dt.datetime | None:
    for pattern in ("%a %b %d %H:%M:%S %Y %z", "%a %b %d %H:%M:%S %Y"):
        try:
            return dt.datetime.strptime(text.strip(), pattern)
        except ValueError:
            continue
    return None


def parse_powermetrics_text_sample(
    text: str, when: str | None = None, elapsed_ms: str | None = None
) -> PowermetricsSample:
    """The power lines of one text sample (the first occurrence of each label wins: ``GPU Power``
    is printed again in the GPU section)."""
    values: dict[str, float] = {}
    for match in _POWER_LINE.finditer(text):
        key = _TEXT_LABELS.get(match.group("label"))
        if key is not None and key not in values:
            values[key] = float(match.group("mw")) * 1e-3
    cpu_w = values.get("cpu", values.get("clusters"))
    return PowermetricsSample(
        timestamp=_parse_text_timestamp(when) if when else None,
        elapsed_s=float(elapsed_ms) * 1e-3 if elapsed_ms else None,
        cpu_w=cpu_w,
        gpu_w=values.get("gpu"),
        ane_w=values.get("ane"),
        dram_w=values.get("dram"),
        combined_w=values.get("combined"),
        package_w=values.get("package"),
    )


def parse_powermetrics_text(text: str) -> list[PowermetricsSample]:
    """Default ``powermetrics`` text output: one sample per ``*** Sampled system activity`` header."""
    headers = list(_SAMPLE_HEADER.finditer(text))
    samples = []
    for index, header in enumerate(headers):
        end = headers[index + 1].start() if index + 1 < len(headers) else len(text)
        samples.append(
            parse_powermetrics_text_sample(text[header.end() : end], header.group("when"), header.group("elapsed"))
        )
    return samples


def parse_powermetrics(data: bytes | str) -> list[PowermetricsSample]:
    """Either format, told apart by the plist XML header."""
    raw = data.encode() if isinstance(data, str) else data
    if raw.lstrip(b"\0\n\r\t ").startswith((b"<?xml", b"<plist")):
        return parse_powermetrics_plist(raw)
    return parse_powermetrics_text(raw.decode(errors="replace"))


# -- meter ---------------------------------------------------------------------------------------


class PowermetricsMeter(ToolMeter):
    """``powermetrics -f plist`` streaming (macOS on Apple silicon; needs root).

    Each sample is an average over its interval, so it is stamped at the interval's midpoint
    (arrival time minus half of ``elapsed_ns``). ``component`` picks what to record: "total" (see
    :attr:`PowermetricsSample.total_w`), or "cpu", "gpu", "ane", "dram", "combined", "package".
    With ``sudo=None`` the tool runs through ``sudo -n`` unless this process is root; allow it with a
    sudoers rule for /usr/bin/powermetrics.
    """

    name = "powermetrics"
    tool = "powermetrics"
    delimiter = b"\0"
    install_hint = "it ships with macOS on Apple silicon"
    default_interval_s = 0.1

    def __init__(
        self,
        component: str = "total",
        *,
        interval_s: float | None = None,
        sudo: bool | None = None,
        samplers: str = "cpu_power,gpu_power",
        executable: str | None = None,
    ) -> None:
        super().__init__(interval_s=interval_s, executable=executable)
        valid = ("total", *_COMPONENTS, "combined", "package")
        if component not in valid:
            raise ValueError(f"powermetrics: component must be one of {valid}, got {component!r}")
        self.component = component
        self.samplers = samplers
        self.sudo = (os.geteuid() != 0) if sudo is None else sudo
        if self.interval_s < 0.001:
            raise ValueError("powermetrics: interval_s must be at least 1 ms")

    @classmethod
    def unavailable_reason(cls, **options: Any) -> str | None:
        reason = super().unavailable_reason(**options)
        if reason is None and options.get("sudo") is None and os.geteuid() != 0 and not _sudo_allowed(options):
            return "powermetrics: needs root: run as root or allow passwordless `sudo powermetrics`"
        return reason

    def command(self) -> list[str]:
        interval_ms = max(1, round(self.interval_s * 1000))
        prefix = ["sudo", "-n"] if self.sudo else []
        # -b 0: unbuffered output, so each sample arrives when it is taken.
        return [*prefix, self.executable, "-f", "plist", "-b", "0", "-i", str(interval_ms), "--samplers", self.samplers]

    def _parse(self, arrived_s: float, record: bytes) -> Reading | None:
        try:
            sample = parse_powermetrics_plist_sample(record)
        except Exception as error:  # plistlib raises several types on a malformed plist
            raise MeterError(f"powermetrics: unreadable plist sample: {error}") from error
        power_w = sample.total_w if self.component == "total" else getattr(sample, f"{self.component}_w")
        if power_w is None:
            raise MeterError(
                f"powermetrics: the samples hold no {self.component} power (samplers {self.samplers!r}); "
                "add the cpu_power sampler"
            )
        midpoint_s = arrived_s - (sample.elapsed_s or self.interval_s) / 2
        return Reading(midpoint_s, power_w)


def _sudo_allowed(options: dict[str, Any]) -> bool:
    import shutil
    import subprocess

    executable = options.get("executable") or shutil.which("powermetrics")
    if shutil.which("sudo") is None or executable is None:
        return False
    try:
        result = subprocess.run(["sudo", "-n", "-l", executable], capture_output=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0
