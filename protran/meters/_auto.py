"""Choosing a power meter by name, and finding which ones this machine has."""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Sequence
from typing import Any

from protran.meters._base import MeterUnavailableError, PowerMeter
from protran.meters._ina219 import INA219Meter
from protran.meters._nvidia_smi import NvidiaSmiMeter
from protran.meters._nvml import NvmlMeter
from protran.meters._powermetrics import PowermetricsMeter
from protran.meters._remote import RemoteMeter
from protran.meters._sysfs import HwmonMeter, INA3221Meter, RaplMeter
from protran.meters._tegrastats import TegrastatsMeter
from protran.meters._zeus import ZeusMeter
from protran.vocabulary import AUTO_ORDER, METER_NAMES
from protran.vocabulary import METERS as VOCABULARY_METERS

#: Meters by name, in the order "auto" tries them. INA219 is never probed automatically: reading an
#: I2C address that holds another chip could disturb it, so it must be named; nor is Zeus (optional,
#: and it reads the same NVML and RAPL counters as the meters before it).
METERS: dict[str, type[PowerMeter]] = {
    "nvml": NvmlMeter,
    "rapl": RaplMeter,
    "ina3221": INA3221Meter,
    "hwmon": HwmonMeter,
    "tegrastats": TegrastatsMeter,
    "powermetrics": PowermetricsMeter,
    "nvidia-smi": NvidiaSmiMeter,
    "ina219": INA219Meter,
    "zeus": ZeusMeter,
}
# The names and the probing order live in protran.vocabulary (torch-free, for command-line choices).
assert tuple(METERS) == VOCABULARY_METERS, "protran.vocabulary.METERS is out of step with the meter classes"


def _accepted(meter: type[PowerMeter], options: dict[str, Any]) -> dict[str, Any]:
    """The options that ``meter``'s constructor takes (auto passes one set of options to all)."""
    parameters = inspect.signature(meter.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return dict(options)
    return {key: value for key, value in options.items() if key in parameters}


def _coerce(name: str, text: str, hint: Any) -> Any:
    """A command-line string as the type the constructor declares (``0x45`` -> 69, ``a,b`` -> [a, b])."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    kinds = [typing.get_origin(option) or option for option in options if option is not type(None)]
    try:
        if bool in kinds:
            lowered = text.strip().lower()
            if lowered not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                raise ValueError(text)
            return lowered in ("1", "true", "yes", "on")
        if int in kinds:
            return int(text, 0)
        if float in kinds:
            return float(text)
        if any(kind in (list, tuple, Sequence) for kind in kinds):
            return [part.strip() for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(
            f"meter option {name}={text!r} is not a valid {' or '.join(k.__name__ for k in kinds)}"
        ) from None
    return text


def coerce_options(meter: type[PowerMeter], options: dict[str, Any]) -> dict[str, Any]:
    """Convert string option values (from a command line) to the types ``meter`` takes."""
    hints = typing.get_type_hints(meter.__init__)
    return {
        key: _coerce(key, value, hints[key]) if isinstance(value, str) and key in hints else value
        for key, value in options.items()
    }


def parse_remote(name: str) -> tuple[str, int]:
    """``remote:HOST:PORT`` (IPv6 hosts in brackets: ``remote:[::1]:8765``) -> (host, port)."""
    spec = name[len("remote:") :]
    host, _, port = spec.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"meter name {name!r}: expected remote:HOST:PORT, e.g. remote:192.168.0.161:8765")
    return host, int(port)


def detect_meter(name: str = "auto", **options: Any) -> PowerMeter | None:
    """Open the meter called ``name`` (see :data:`METER_NAMES`).

    "auto" returns the first meter in :data:`AUTO_ORDER` that opens here, or None when there is none
    (measure latency only; energy and power are then not available, not zero). "none" returns None.
    A named meter that cannot be opened raises :class:`MeterUnavailableError` with the reason.
    ``options`` go to the meter's constructor (for "auto", each meter gets those it accepts); string
    values, as from a command line, are converted to the declared types (``address="0x45"``).
    """
    if name == "none":
        return None
    if name.startswith("remote:"):
        host, port = parse_remote(name)
        return RemoteMeter(host, port, **coerce_options(RemoteMeter, _accepted(RemoteMeter, options))).check()
    if name == "auto":
        for candidate in AUTO_ORDER:
            meter_class = METERS[candidate]
            if meter_class.unavailable_reason(**options) is not None:
                continue
            try:
                return meter_class(**coerce_options(meter_class, _accepted(meter_class, options)))
            except MeterUnavailableError:
                continue
        return None
    if name not in METERS:
        raise ValueError(f"unknown power meter {name!r}; known: {list(METER_NAMES)}")
    meter_class = METERS[name]
    unknown = sorted(set(options) - set(_accepted(meter_class, options)))
    if unknown:
        raise TypeError(f"power meter {name!r} does not take option(s) {unknown}")
    return meter_class(**coerce_options(meter_class, options))


def available_meters(**options: Any) -> list[tuple[str, bool, str]]:
    """(name, available, reason) for every meter, for a listing; the check opens nothing but sysfs
    files, NVML and the tools' presence (INA219: only whether the I2C device node exists)."""
    rows = []
    for name, meter_class in METERS.items():
        try:
            reason = meter_class.unavailable_reason(**options)
        except Exception as error:  # a listing must not fail on one odd meter
            reason = f"{name}: check failed: {error}"
        rows.append((name, reason is None, reason or "available"))
    return rows
