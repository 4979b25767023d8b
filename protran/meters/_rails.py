"""Which power rails make a board's total: shared by the Jetson sysfs meter and the tegrastats parser."""

from __future__ import annotations

from collections.abc import Sequence

#: Rails that measure a Jetson's whole input, in order of preference: ``VDD_IN`` (TX2, Xavier NX,
#: Orin NX/Nano: module input) and ``POM_5V_IN`` (Nano, TX1: 5 V input). Boards without such a rail
#: (AGX Xavier: GPU/CPU/SOC/CV/VDDRQ/SYS5V; AGX Orin: VDD_GPU_SOC/VDD_CPU_CV/VIN_SYS_5V0/...) only
#: report per-domain rails; ``VIN_SYS_5V0`` there feeds the 5 V system domain, not the module. Their
#: sum is then used and flagged partial, since it may miss or double-count domains.
INPUT_RAILS: tuple[str, ...] = ("VDD_IN", "POM_5V_IN")
#: Labels of unconnected channels.
UNCONNECTED_LABELS = frozenset({"NC", ""})


def choose_total_rails(labels: Sequence[str]) -> tuple[tuple[str, ...], bool]:
    """(rails to sum, partial): the first input rail present, else every connected rail (partial
    unless there is only one). Empty when no rail is connected."""
    for rail in INPUT_RAILS:
        if rail in labels:
            return (rail,), False
    connected = tuple(dict.fromkeys(label for label in labels if label not in UNCONNECTED_LABELS))
    return connected, len(connected) > 1
