"""Figures of predicted Pareto frontiers.

Every figure has its own Agg canvas, outside pyplot: a caller's backend and open figures are never
touched, so the functions are safe inside notebooks and GUIs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from protran import vocabulary
from protran._pareto import Frontier
from protran.models import target_parts
from protran.vocabulary import MEASURE_NAMES

_ERROR_BARS = 12
_LINE_STYLES = ("-", "--", ":", "-.")


def check_plot_path(path: str | Path) -> Path:
    """Refuse, before any work, a plot path that saving would refuse after it: a folder, a format
    matplotlib cannot write, or a place that is not a writable folder."""
    import os

    from matplotlib.backend_bases import FigureCanvasBase

    path = Path(path)
    if path.is_dir():
        raise ValueError(f"--plot {path}: is a folder; give a file name such as frontiers.png")
    suffix = path.suffix.lower().lstrip(".")
    formats = FigureCanvasBase.get_supported_filetypes()
    if suffix and suffix not in formats:
        raise ValueError(f"--plot {path}: cannot write .{suffix} files; use one of {', '.join(sorted(formats))}")
    folder = next(parent for parent in (path.parent, *path.parent.parents) if parent.exists())
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise ValueError(f"--plot {path}: {folder} is not a writable folder")
    return path


def legend_label(frontier: Frontier) -> str:
    """How a frontier's target is named in a legend or a table: the machine and its runtime
    (``rpi4 · onnxruntime-int8``), the machine alone where the runtime is unknown."""
    machine = _machine(frontier)
    return machine if frontier.runtime is None else f"{machine} · {frontier.runtime}"


def _machine(frontier: Frontier) -> str:
    device, runtime = target_parts(frontier.device)
    return device if runtime is not None and runtime == frontier.runtime else frontier.device


def plot_frontiers(frontiers: Sequence[Frontier], path: str | Path) -> Path:
    """One panel per measure, one frontier per target (a device under a runtime; accuracy against the
    measure on a log axis, the legend naming both), with the predicted standard deviations as error
    bars on a dozen points of each.

    The figure has its own Agg canvas, outside pyplot: the caller's backend and figures are untouched."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    measures = [m for m in MEASURE_NAMES if any(f.measure == m for f in frontiers)]
    if not measures:
        raise ValueError("no frontier to plot")
    figure = Figure(figsize=(5.2 * len(measures), 4.2))
    FigureCanvasAgg(figure)  # renders the PNG; attaches itself to the figure
    axes = figure.subplots(1, len(measures), squeeze=False)
    colours = colormaps["tab10"]
    # One curve per target: a machine keeps its colour under every runtime, each runtime its own line style.
    machines = list(dict.fromkeys(_machine(f) for f in frontiers))
    runtimes = {machine: list(dict.fromkeys(f.runtime for f in frontiers if _machine(f) == machine))
                for machine in machines}
    for axis, measure in zip(axes[0], measures):
        for frontier in (f for f in frontiers if f.measure == measure and f.points):
            machine = _machine(frontier)
            colour = colours(machines.index(machine) % 10)
            style = _LINE_STYLES[runtimes[machine].index(frontier.runtime) % len(_LINE_STYLES)]
            value = np.array([p.value for p in frontier.points])
            accuracy = np.array([p.accuracy for p in frontier.points])
            # error bars (one std) on a dozen points spread along the frontier, so the lines stay readable
            shown = np.unique(np.linspace(0, len(value) - 1, min(len(value), _ERROR_BARS)).round().astype(int))
            axis.errorbar(value[shown], accuracy[shown], xerr=[frontier.points[i].value_std for i in shown],
                          yerr=[frontier.points[i].accuracy_std for i in shown], fmt="none", ecolor=colour,
                          alpha=0.35, linewidth=0.8, capsize=2)
            axis.step(value, accuracy, where="post", color=colour, linewidth=1.5, linestyle=style,
                      label=f"{legend_label(frontier)} (HV {frontier.hypervolume:.3f})")
            axis.plot(value, accuracy, "o", color=colour, markersize=2.5)
        axis.set_xscale("log")
        axis.set_xlabel(f"predicted {measure.replace('_', ' ')} ({vocabulary.measure(measure).unit})")
        axis.set_ylabel("predicted accuracy")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7, loc="lower right")
    figure.suptitle("Predicted Pareto frontiers")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path
